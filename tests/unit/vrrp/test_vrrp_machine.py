"""One VRRP router fed by hand: timers, transitions and every counted drop."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

import pytest
from vrrp_sim import router_config

from dsrlb.vrrp.codec import VRRP_GROUP_V4, Advertisement, IPAddress, decode, encode, simple_auth_data
from dsrlb.vrrp.machine import (
    DROP_REASONS,
    DropCounted,
    Output,
    RouterConfig,
    State,
    StateChanged,
    VrrpRouter,
    master_down_interval,
    skew_time,
)

PEER = IPv4Address("192.0.2.9")
VIPS = (ip_address("192.0.2.100"),)


def advert(priority: int = 100, *, version: int = 3, vrid: int = 7, interval: int | None = None,
           auth: str | None = None, src: IPAddress = PEER) -> bytes:
    if interval is None:
        interval = 100 if version == 3 else 1
    auth_fields = (1, simple_auth_data(auth)) if auth else ()
    return encode(Advertisement(version, vrid, priority, interval, VIPS, *auth_fields), src=src)


def backup(**kw: object) -> VrrpRouter:
    r = VrrpRouter(router_config(1, **{"priority": 100, **kw}))  # type: ignore[arg-type]
    out = r.start(0.0)
    assert r.state is State.BACKUP
    assert out.events == (StateChanged(State.INITIALIZE, State.BACKUP, "start", 0.0),)
    return r


def test_timing_formulas() -> None:
    # RFC 5798 §6.1 (v3, centiseconds on the wire, seconds here) and RFC 3768 §6.1 (v2)
    assert skew_time(3, 100, 1.0) == pytest.approx(156 / 256)
    assert master_down_interval(3, 100, 1.0) == pytest.approx(3 + 156 / 256)
    assert skew_time(3, 200, 0.5) == pytest.approx(56 * 0.5 / 256)
    assert skew_time(2, 100, 5.0) == pytest.approx(156 / 256)  # v2: not scaled by the interval
    assert master_down_interval(2, 100, 5.0) == pytest.approx(15 + 156 / 256)


def test_start_as_backup_then_master_down_timer() -> None:
    r = backup()
    assert r.next_deadline == pytest.approx(r.master_down_interval) and r.master_address is None
    assert r.timer(1.0) == Output()  # not due yet
    out = r.timer(r.master_down_interval)
    assert r.state is State.MASTER and r.master_address == r.config.primary_address
    assert [e.reason for e in out.events if isinstance(e, StateChanged)] == ["master down"]
    sent = decode(out.packets[0], src=r.config.primary_address, dst=VRRP_GROUP_V4, family=4)
    assert sent == Advertisement(3, 7, 100, 100, VIPS)
    # Adver_Timer: one advertisement per interval, re-armed from when the driver calls
    deadline = r.next_deadline
    assert deadline is not None and r.timer(deadline + 0.5).packets and r.next_deadline == deadline + 1.5
    assert r.counters["tx"] == 2 and r.counters["became_master"] == 1 and r.counters["became_backup"] == 1


def test_address_owner_starts_as_master() -> None:
    r = VrrpRouter(router_config(1, priority=255))
    out = r.start(5.0)
    assert r.state is State.MASTER and len(out.packets) == 1 and r.next_deadline == 6.0
    assert out.events == (StateChanged(State.INITIALIZE, State.MASTER, "address owner (priority 255)", 5.0),)
    assert r.start(5.5) == Output()  # already running


def test_backup_resets_on_higher_or_equal_and_learns_the_interval() -> None:
    r = backup()
    r.receive(advert(100, interval=50), PEER, 255, 1.0)  # equal priority: reset (RFC 5798 §6.4.2)
    assert r.master_address == PEER and r.master_adver_interval == 0.5
    assert r.next_deadline == pytest.approx(1.0 + 3 * 0.5 + 156 * 0.5 / 256)


def test_backup_discards_lower_priority_when_preempting() -> None:
    r = backup()
    deadline = r.next_deadline
    r.receive(advert(50, interval=50), PEER, 255, 1.0)
    assert r.next_deadline == deadline and r.master_adver_interval == 1.0  # discarded; timer runs on
    assert r.master_address == PEER  # but it is the master for now
    nopreempt = backup(preempt=False)
    nopreempt.receive(advert(50), PEER, 255, 1.0)
    assert nopreempt.next_deadline == pytest.approx(1.0 + nopreempt.master_down_interval)


def test_priority_zero_makes_the_backup_take_over_after_skew_time() -> None:
    r = backup(priority=200)
    r.receive(advert(250), PEER, 255, 1.0)
    r.receive(advert(0), PEER, 255, 2.0)
    assert r.next_deadline == pytest.approx(2.0 + 56 / 256) and r.master_address is None
    out = r.timer(2.0 + 56 / 256)
    assert r.state is State.MASTER
    reasons = [e.reason for e in out.events if isinstance(e, StateChanged)]
    assert reasons == [f"master down ({PEER} sent priority 0)"]


def test_master_yields_to_higher_priority_and_higher_address() -> None:
    r = backup()
    r.timer(10.0)
    assert r.receive(advert(50), PEER, 255, 11.0) == Output() and r.state is State.MASTER
    low = IPv4Address("192.0.2.0")  # equal priority, lower address than our 192.0.2.1: we stay
    assert r.receive(advert(100, src=low), low, 255, 11.1) == Output() and r.state is State.MASTER
    out = r.receive(advert(100, interval=200), PEER, 255, 11.2)  # equal priority, higher address
    assert out.events == (StateChanged(State.MASTER, State.BACKUP,
                                       f"equal priority master {PEER} with higher address", 11.2),)
    assert r.master_address == PEER and r.master_adver_interval == 2.0
    assert r.next_deadline == pytest.approx(11.2 + 6 + 156 * 2 / 256)
    r.timer(30.0)
    out = r.receive(advert(101), PEER, 255, 31.0)
    assert out.events[0].reason == f"higher priority master {PEER}"


def test_master_answers_priority_zero_at_once() -> None:
    r = backup()
    r.timer(10.0)
    out = r.receive(advert(0), PEER, 255, 10.3)
    assert len(out.packets) == 1 and r.next_deadline == pytest.approx(11.3) and r.state is State.MASTER


def test_two_owners_resolve_by_address() -> None:
    r = VrrpRouter(router_config(1, priority=255))
    r.start(0.0)
    r.receive(advert(255), PEER, 255, 0.5)
    assert r.state is State.BACKUP  # PEER 192.0.2.9 > 192.0.2.1


def test_shutdown() -> None:
    r = backup()
    assert r.shutdown(1.0).events == (StateChanged(State.BACKUP, State.INITIALIZE, "shutdown", 1.0),)
    assert r.next_deadline is None and r.shutdown(2.0) == Output()
    r.start(3.0)
    r.timer(10.0)
    out = r.shutdown(11.0)
    assert decode(out.packets[0], src=r.config.primary_address, dst=VRRP_GROUP_V4, family=4).priority == 0
    assert r.state is State.INITIALIZE and r.master_address is None
    assert r.receive(advert(), PEER, 255, 12.0).events == (DropCounted("initialize"),)


def test_set_priority() -> None:
    r = backup()
    r.set_priority(200, 1.0)
    assert r.priority == 200 and r.skew_time == pytest.approx(56 / 256)
    r.timer(10.0)
    r.set_priority(20, 10.5)
    out = r.timer(11.0)
    assert decode(out.packets[0], src=r.config.primary_address, dst=VRRP_GROUP_V4, family=4).priority == 20
    for bad in (0, 256):
        with pytest.raises(ValueError):
            r.set_priority(bad, 12.0)


def _dropped(r: VrrpRouter, data: bytes, reason: str, *, src: IPAddress = PEER, ttl: int = 255) -> None:
    before = (r.state, r.next_deadline, r.master_address, r.counters)
    out = r.receive(data, src, ttl, 1.0)
    assert out == Output(events=(DropCounted(reason),))
    after = r.counters
    assert (r.state, r.next_deadline, r.master_address) == before[:3]
    assert after[f"drop_{reason}"] == before[3][f"drop_{reason}"] + 1 and after["rx"] == before[3]["rx"] + 1


def test_every_invalid_datagram_is_a_counted_drop() -> None:
    r = backup()
    assert set(DROP_REASONS) <= {k.removeprefix("drop_") for k in r.counters}
    _dropped(r, advert(), "ttl", ttl=254)  # RFC 5798 §7.1: TTL must be 255
    _dropped(r, advert(), "ttl", ttl=1)
    _dropped(r, advert(vrid=8), "vrid")
    bad = bytearray(advert())
    bad[7] ^= 0xFF
    _dropped(r, bytes(bad), "checksum")
    _dropped(r, advert()[:5], "short")
    _dropped(r, advert()[:-2], "count")
    _dropped(r, advert(version=2), "version")  # a v2 router on our v3 VRID
    _dropped(r, advert(src=r.config.primary_address), "own", src=r.config.primary_address)
    _dropped(r, advert(), "family", src=ip_address("fe80::9"))
    # a valid one is still accepted after all that
    r.receive(advert(), PEER, 255, 2.0)
    assert r.master_address == PEER and r.next_deadline == pytest.approx(2.0 + r.master_down_interval)


def test_v2_authentication_and_interval_must_match() -> None:
    r = backup(version=2, auth_pass="secret")
    _dropped(r, advert(version=2), "auth")  # none where we want a password
    _dropped(r, advert(version=2, auth="wrong"), "auth")
    _dropped(r, advert(version=2, auth="secret", interval=2), "interval")  # RFC 3768 §7.1
    _dropped(r, advert(version=3), "version")
    r.receive(advert(version=2, auth="secret"), PEER, 255, 2.0)
    assert r.master_address == PEER
    plain = backup(version=2)
    _dropped(plain, advert(version=2, auth="secret"), "auth")  # a password where we have none
    # auth type 0 carries data that is ignored (RFC 3768 §5.3.10)
    data = encode(Advertisement(2, 7, 100, 1, VIPS, 0, b"garbage!"), src=PEER)
    plain.receive(data, PEER, 255, 2.0)
    assert plain.master_address == PEER


def test_v2_master_sends_the_password() -> None:
    r = backup(version=2, auth_pass="pw")
    out = r.timer(r.master_down_interval)
    sent = decode(out.packets[0], src=r.config.primary_address, dst=VRRP_GROUP_V4, family=4)
    assert (sent.version, sent.interval, sent.auth_type, sent.auth_data) == (2, 1, 1, b"pw\0\0\0\0\0\0")


def test_unicast_destination_is_checked_with_the_given_dst() -> None:
    r = backup()
    me = r.config.primary_address
    data = encode(Advertisement(3, 7, 100, 100, VIPS), src=PEER, dst=me)
    _dropped(r, data, "checksum")  # checked against the group by default
    r.receive(data, PEER, 255, 2.0, dst=me)
    assert r.master_address == PEER


def test_config_validation() -> None:
    base: dict[str, object] = dict(vrid=1, primary_address=ip_address("192.0.2.1"), addresses=VIPS)
    for bad in (dict(vrid=0), dict(priority=0), dict(priority=256), dict(version=4), dict(family=5),
                dict(version=2, family=6), dict(advert_interval=0.001), dict(advert_interval=41.0),
                dict(version=2, advert_interval=1.5), dict(version=2, advert_interval=256),
                dict(preempt_delay=-1), dict(auth_pass="x"), dict(version=2, auth_pass="toolongpw"),
                dict(family=6), dict(unicast_peers=(ip_address("2001:db8::1"),)), dict(addresses=())):
        with pytest.raises(ValueError):
            RouterConfig(**(base | bad))  # type: ignore[arg-type]
    assert RouterConfig(**base, advert_interval=0.3).interval_units == 30  # type: ignore[arg-type]
    assert RouterConfig(**base, version=2, advert_interval=3).interval_units == 3  # type: ignore[arg-type]


def test_same_inputs_same_outputs() -> None:
    def run() -> list[Output]:
        r = backup()
        return [r.receive(advert(50), PEER, 255, 1.0), r.timer(5.0), r.receive(advert(0), PEER, 255, 5.5),
                r.set_priority(30, 6.0), r.receive(advert(60), PEER, 255, 6.5), r.shutdown(7.0)]
    assert run() == run()
