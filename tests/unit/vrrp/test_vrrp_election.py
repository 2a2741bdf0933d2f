"""Several VRRP routers on a fake link with a fake clock: elections, failover, preemption, partitions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from ipaddress import ip_address
from typing import Any

import pytest
from vrrp_sim import PRIMARY, Link, router_config

from dsrlb.vrrp.codec import VRRP_GROUP_V4, VRRP_GROUP_V6, decode, encode
from dsrlb.vrrp.machine import State, master_down_interval, skew_time

# (version, family): VRRPv2 over IPv4 (keepalived's default), VRRPv3 over IPv4 and IPv6
FLAVOURS = [pytest.param(2, 4, id="v2-ipv4"), pytest.param(3, 4, id="v3-ipv4"),
            pytest.param(3, 6, id="v3-ipv6")]
DELAY = 0.002


def mdi(version: int, priority: int, interval: float = 1.0) -> float:
    return master_down_interval(version, priority, interval)


@pytest.mark.parametrize(("version", "family"), FLAVOURS)
def test_higher_priority_is_elected_within_master_down_interval(version: int, family: int) -> None:
    link = Link.of([router_config(1, priority=200, version=version, family=family),
                    router_config(2, priority=100, version=version, family=family)], delay=DELAY)
    link.start()
    link.run_until(60.0)
    assert link.masters() == [0]
    became = link.became(0, State.MASTER)
    assert became is not None and became <= mdi(version, 200)
    assert link.became(1, State.MASTER) is None  # the lower one never even tried
    assert link.routers[1].master_address == link.routers[0].config.primary_address
    # the advertisements on the wire are what the router says they are
    group = VRRP_GROUP_V4 if family == 4 else VRRP_GROUP_V6
    last = decode(link.sent[-1].data, src=link.routers[0].config.primary_address, dst=group, family=family)
    assert (last.version, last.priority, last.vrid) == (version, 200, 7)


@pytest.mark.parametrize(("version", "family"), FLAVOURS)
def test_equal_priority_higher_address_wins(version: int, family: int) -> None:
    link = Link.of([router_config(n, priority=100, version=version, family=family) for n in (1, 3, 2)],
                   delay=DELAY)
    link.start()
    link.run_until(30.0)
    assert link.masters() == [1]  # 192.0.2.3 / fe80::3
    # all three timers ran out together; the two lower addresses stepped down on hearing the highest
    last = link.last_multi_master(after=0.0)
    assert last is not None and last <= mdi(version, 100) + 2 * DELAY


def test_equal_priority_joining_later_does_not_preempt() -> None:
    """RFC 5798 §6.4.2: a backup accepts an advertisement of equal priority whatever the address."""
    link = Link.of([router_config(1, priority=100), router_config(9, priority=100)], delay=DELAY)
    link.start(0)
    link.run_until(10.0)
    link.start(1)
    link.run_until(60.0)
    assert link.masters() == [0]


@pytest.mark.parametrize(("version", "family"), FLAVOURS)
def test_silent_master_is_replaced_within_master_down_interval(version: int, family: int) -> None:
    link = Link.of([router_config(1, priority=200, version=version, family=family),
                    router_config(2, priority=100, version=version, family=family)], delay=DELAY)
    link.start()
    link.run_until(20.0)
    link.crash(0)
    link.run_until(40.0)
    took_over = link.became(1, State.MASTER, after=20.0)
    assert took_over is not None
    bound = mdi(version, 100)
    assert took_over - 20.0 <= bound
    assert took_over - 20.0 >= bound - 1.0 - DELAY  # not before: the last advert came at most 1 s before


@pytest.mark.parametrize(("version", "family"), FLAVOURS)
def test_master_shutdown_hands_over_within_skew_time(version: int, family: int) -> None:
    link = Link.of([router_config(1, priority=200, version=version, family=family),
                    router_config(2, priority=100, version=version, family=family),
                    router_config(3, priority=50, version=version, family=family)], delay=DELAY)
    link.start()
    link.run_until(20.0)
    link.shutdown(0)
    link.run_until(40.0)
    took_over = link.became(1, State.MASTER, after=20.0)
    assert took_over is not None
    assert took_over - 20.0 <= DELAY + skew_time(version, 100, 1.0) + 1e-9  # ~0.61 s, not ~3.6 s
    assert link.masters() == [1] and link.became(2, State.MASTER) is None  # the larger skew lost


@pytest.mark.parametrize("preempt", [True, False])
def test_higher_priority_joining_later_takes_over_only_with_preempt(preempt: bool) -> None:
    link = Link.of([router_config(1, priority=100), router_config(2, priority=200, preempt=preempt)],
                   delay=DELAY)
    link.start(0)
    link.run_until(10.0)
    assert link.masters() == [0]
    link.start(1)
    link.run_until(60.0)
    if not preempt:  # keepalived `nopreempt`
        assert link.masters() == [0] and link.became(1, State.MASTER) is None
        return
    took_over = link.became(1, State.MASTER)
    assert took_over is not None and took_over - 10.0 <= mdi(3, 200)  # it discards the lower adverts
    assert link.masters() == [1] and link.became(0, State.BACKUP, after=10.0) is not None
    assert link.routers[0].master_address == link.routers[1].config.primary_address


def test_preempt_delay_holds_the_takeover_back() -> None:
    link = Link.of([router_config(1, priority=100), router_config(2, priority=200, preempt_delay=15.0)],
                   delay=DELAY)
    link.start(0)
    link.run_until(10.0)
    link.start(1)
    link.run_until(24.9)
    assert link.masters() == [0]  # still held: 15 s from its start
    link.run_until(60.0)
    took_over = link.became(1, State.MASTER)
    assert took_over is not None and 25.0 <= took_over <= 25.0 + mdi(3, 200)


def test_preempt_delay_restarts_on_seeing_a_lower_master_after_a_higher_one() -> None:
    """keepalived: the delay runs from start-up, or from the first lower-priority master seen since."""
    link = Link.of([router_config(1, priority=200), router_config(2, priority=150, preempt_delay=5.0)],
                   delay=DELAY)
    link.start()
    link.run_until(30.0)
    assert link.masters() == [0]
    link.set_priority(0, 100)  # tracking: the master falls below the backup
    link.run_until(60.0)
    took_over = link.became(1, State.MASTER)
    assert took_over is not None
    assert 35.0 <= took_over <= 30.0 + 1.0 + 5.0 + mdi(3, 150)  # first lower advert by 31, delay 5


@pytest.mark.parametrize(("version", "family"), FLAVOURS)
def test_lowering_the_masters_priority_hands_over_when_preempting(version: int, family: int) -> None:
    link = Link.of([router_config(1, priority=200, version=version, family=family),
                    router_config(2, priority=100, version=version, family=family)], delay=DELAY)
    link.start()
    link.run_until(20.0)
    link.set_priority(0, 50)
    link.run_until(40.0)
    took_over = link.became(1, State.MASTER)
    assert took_over is not None and took_over - 20.0 <= mdi(version, 100) + DELAY
    assert link.masters() == [1]
    assert link.became(0, State.BACKUP, after=20.0) == pytest.approx(took_over + DELAY)


def test_lowering_the_masters_priority_keeps_it_without_preempt() -> None:
    link = Link.of([router_config(1, priority=200), router_config(2, priority=100, preempt=False)],
                   delay=DELAY)
    link.start()
    link.run_until(20.0)
    link.set_priority(0, 50)
    link.run_until(60.0)
    assert link.masters() == [0]


@pytest.mark.parametrize("priorities", [(150, 100, 50), (100, 100, 100)], ids=["ordered", "equal"])
@pytest.mark.parametrize(("version", "family"), FLAVOURS)
def test_partition_then_heal_never_two_masters_beyond_one_master_down_interval(
    version: int, family: int, priorities: tuple[int, int, int],
) -> None:
    link = Link.of([router_config(n + 1, priority=p, version=version, family=family)
                    for n, p in enumerate(priorities)], delay=DELAY)
    link.start()
    link.run_until(20.0)
    assert len(link.masters()) == 1
    link.partition([0], [1], [2])  # every router alone: each becomes master
    link.run_until(40.0)
    assert link.masters() == [0, 1, 2]
    link.heal()
    link.run_until(80.0)
    worst = max(mdi(version, p) for p in priorities)
    last = link.last_multi_master(after=40.0)
    assert last is not None and last - 40.0 <= worst
    expected = 0 if priorities[0] > priorities[1] else 2  # highest priority, else highest address
    assert link.masters() == [expected]
    changes_after = [c for c in link.changes if c[0] > 40.0 + worst]
    assert changes_after == []  # and it is stable


def test_two_against_one_partition() -> None:
    link = Link.of([router_config(n, priority=p) for n, p in ((1, 150), (2, 100), (3, 50))], delay=DELAY)
    link.start()
    link.run_until(20.0)
    link.partition([0], [1, 2])
    link.run_until(40.0)
    assert link.masters() == [0, 1]  # the minority side elects its best
    link.heal()
    link.run_until(60.0)
    assert link.masters() == [0]
    last = link.last_multi_master(after=40.0)
    assert last is not None and last - 40.0 <= 1.0 + DELAY  # the next advert of the higher master settles it


def _reencode(**change: object) -> Callable[[int, bytes], bytes]:
    """A tamper function: router 0's packets re-encoded with some fields changed."""
    def tamper(sender: int, data: bytes) -> bytes:
        if sender != 0:
            return data
        src = ip_address(PRIMARY[4].format(1))
        advert = decode(data, src=src, dst=VRRP_GROUP_V4, family=4)
        return encode(replace(advert, **change), src=src)  # type: ignore[arg-type]
    return tamper


def _flip_checksum(sender: int, data: bytes) -> bytes:
    return data if sender != 0 else data[:7] + bytes([data[7] ^ 0x5A]) + data[8:]


@pytest.mark.parametrize(("reason", "version", "tamper", "ttl"), [
    ("ttl", 3, None, 254),  # a router in between: RFC 5798 §7.1
    ("vrid", 3, _reencode(vrid=8), 255),
    ("checksum", 3, _flip_checksum, 255),
    ("checksum", 2, _flip_checksum, 255),
    ("auth", 2, _reencode(auth_type=1, auth_data=b"wrong\0\0\0"), 255),
    ("interval", 2, _reencode(interval=2), 255),
    ("version", 3, _reencode(version=2, auth_type=0, auth_data=b""), 255),
])
def test_bad_advertisements_on_the_link_are_counted_and_ignored(
    reason: str, version: int, tamper: Callable[[int, bytes], bytes] | None, ttl: int,
) -> None:
    """Router 0 (priority 200) sends only bad packets: router 1 counts them, ignores them and is master."""
    extra: dict[str, Any] = {"auth_pass": "secret"} if reason == "auth" else {}
    link = Link.of([router_config(1, priority=200, version=version, **extra),
                    router_config(2, priority=100, version=version, **extra)],
                   delay=DELAY, ttl=ttl, tamper=tamper)
    link.start()
    link.run_until(30.0)
    assert 1 in link.masters()
    counters = link.routers[1].counters
    assert counters[f"drop_{reason}"] >= 25  # one per advertisement of router 0
    assert sum(v for k, v in counters.items() if k.startswith("drop_")) == counters[f"drop_{reason}"]
