"""The fast-path structures of the XDP program: the service key table the control plane places keys
in (open addressing, probes, deletions), the table slot hints, and the coarse production clock."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from dsrlb.engine.dataplane import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    Change,
    NextHop,
    RemoveService,
    RemoveTarget,
    ServiceKey,
    ServiceSpec,
    SessionEntry,
    SetTable,
    TargetSpec,
    TargetState,
    UpsertService,
    UpsertTarget,
)
from dsrlb.engine.packet import build_l4
from dsrlb.engine.reference import ReferenceDataplane
from dsrlb.model import Method, ReturnMatch, SessionKey
from dsrlb.xdp import layout
from dsrlb.xdp.clock import COARSE, KNOWN_HZ
from dsrlb.xdp.dataplane import XdpDataplane, XdpDataplaneError, XdpSizes
from dsrlb.xdp.slots import ServiceTable, service_hash, service_table_size
from netns import ScratchNamespace

pytestmark = pytest.mark.root

SECOND = 1_000_000_000
CLIENT = ip_address("198.51.100.7")
VIPS = [ip_address("192.0.2.10"), ip_address("192.0.2.11"), ip_address("2001:db8:a::10")]
SMALL_KEYS = 16  # service_keys: a 64-entry service table, so probes wrap and collide


def target(tid: int, ifindex: int = 1) -> UpsertTarget:
    address = ip_address(f"203.0.113.{tid}")
    hop = NextHop(ifindex, bytes.fromhex("0200000000b1"), bytes.fromhex(f"0200000001{tid:02x}"))
    return UpsertTarget(TargetSpec(tid, address, None, True, ReturnMatch.DST_PORT, 1, TargetState.UP, hop))


def service(sid: int, keys: tuple[ServiceKey, ...], timeout: int = 300) -> UpsertService:
    return UpsertService(ServiceSpec(sid, keys, Method.RR, SessionKey.SRC, timeout))


@pytest.fixture(scope="module")
def small_loaded() -> Iterator[XdpDataplane]:
    sizes = XdpSizes(services=SMALL_KEYS, service_keys=SMALL_KEYS, targets=16, sessions=256, nat_returns=256,
                     routes=8, local_addresses=4, vips=32, ring_bytes=1 << 16)
    dataplane = XdpDataplane(sizes, test_inputs=True)
    try:
        yield dataplane
    finally:
        dataplane.close()


@pytest.fixture
def small_xdp(small_loaded: XdpDataplane, test_namespace: ScratchNamespace) -> Iterator[XdpDataplane]:
    """A dataplane whose service table has 64 entries, reset, inside the test namespace."""
    small_loaded.reset()
    with test_namespace.entered():
        yield small_loaded


def frame_to(key: ServiceKey, dport: int) -> bytes:
    client = CLIENT if key.address.version == 4 else ip_address("2001:db8:c::7")
    return build_l4(key.protocol, client, key.address, 40000, dport, b"x")


def assert_same_as_reference(
    xdp: XdpDataplane, reference: ReferenceDataplane, keys: list[ServiceKey]
) -> None:
    for key in keys:
        for dport in {key.port or 8080, 81}:
            frame = frame_to(key, dport)
            assert xdp.run(frame, 1, SECOND) == reference.run(frame, 1, SECOND), (key, dport)
    assert set(xdp.sessions()) == set(reference.sessions())
    assert xdp.drain_session_events() == reference.drain_session_events()


def test_service_table_finds_every_key_through_collisions_and_removals(small_xdp: XdpDataplane) -> None:
    """16 keys in 64 entries, removed and re-placed in waves: every key (and every key that is gone)
    gives the reference's answer, so no probe chain is ever broken by a deletion."""
    keys = [ServiceKey(vip, proto, port) for vip in VIPS for proto in (IPPROTO_TCP, IPPROTO_UDP)
            for port in (80, 443, 0)][:SMALL_KEYS]
    reference = ReferenceDataplane(rand32=lambda: 0)
    setup: list[Change] = [target(1), target(2)]
    setup += [service(sid, (key,)) for sid, key in enumerate(keys, start=1)]
    setup += [SetTable(sid, (1 + sid % 2,)) for sid in range(1, len(keys) + 1)]
    for engine in (small_xdp, reference):
        engine.apply(setup)
    assert_same_as_reference(small_xdp, reference, keys)
    # Remove every other service, then put its key back under a new id, twice.
    for wave in (100, 200):
        removed = [RemoveService(sid) for sid in range(1, len(keys) + 1, 2)] + [
            RemoveService(wave - 100 + sid) for sid in range(1, len(keys) + 1, 2) if wave == 200]
        for engine in (small_xdp, reference):
            engine.apply(removed)
        assert_same_as_reference(small_xdp, reference, keys)
        readded: list[Change] = []
        for sid in range(1, len(keys) + 1, 2):
            readded += [service(wave + sid, (keys[sid - 1],)), SetTable(wave + sid, (2,))]
        for engine in (small_xdp, reference):
            engine.apply(readded)
        assert_same_as_reference(small_xdp, reference, keys)


def colliding_keys(count: int) -> list[ServiceKey]:
    """`count` TCP keys of one VIP whose home in the 64-entry table is the same (a probe chain)."""
    by_home: dict[int, list[ServiceKey]] = {}
    for port in range(1, 65536):
        key = ServiceKey(VIPS[0], IPPROTO_TCP, port)
        packed = bytes(layout.service_key(addr=layout.addr_of(key.address), port=port, protocol=IPPROTO_TCP,
                                          family=4))
        words = struct.unpack("<5I", packed)
        home = service_hash(words[:4], words[4]) % service_table_size(SMALL_KEYS)
        by_home.setdefault(home, []).append(key)
        if len(by_home[home]) == count:
            return by_home[home]
    raise AssertionError("no colliding keys")


def test_removing_the_head_of_a_probe_chain_keeps_the_rest(small_xdp: XdpDataplane) -> None:
    """Three keys with one home sit in consecutive entries; removing the first (then the second)
    must leave the later ones reachable, and a re-added key takes the freed entry."""
    first, second, third = colliding_keys(3)
    reference = ReferenceDataplane(rand32=lambda: 0)
    setup: list[Change] = [target(1), target(2)]
    for sid, key in enumerate((first, second, third), start=1):
        setup += [service(sid, (key,)), SetTable(sid, (1 + sid % 2,))]
    for engine in (small_xdp, reference):
        engine.apply(setup)
    assert_same_as_reference(small_xdp, reference, [first, second, third])
    for sid in (1, 2):
        for engine in (small_xdp, reference):
            engine.apply([RemoveService(sid)])
        assert_same_as_reference(small_xdp, reference, [first, second, third])
    for engine in (small_xdp, reference):
        engine.apply([service(4, (second,)), SetTable(4, (1,))])
    assert_same_as_reference(small_xdp, reference, [first, second, third])


def test_more_keys_than_sized_for_is_a_clear_error(small_xdp: XdpDataplane) -> None:
    keys = tuple(ServiceKey(VIPS[0], IPPROTO_TCP, port) for port in range(1, SMALL_KEYS + 2))
    with pytest.raises(XdpDataplaneError, match="service table is full"):
        small_xdp.apply([service(1, keys)])


def test_removed_entries_become_empty_again(small_xdp: XdpDataplane) -> None:
    """After every key is removed the table holds no key and no deleted marker: probes stay short."""
    keys = tuple(ServiceKey(VIPS[0], IPPROTO_TCP, port) for port in range(1, SMALL_KEYS + 1))
    small_xdp.apply([service(1, keys)])
    small_xdp.apply([RemoveService(1)])
    table = small_xdp.maps["service_table"]
    families = {layout.service_entry.from_buffer_copy(table.lookup(i.to_bytes(4, "little")) or b"").key.family
                for i in range(service_table_size(SMALL_KEYS))}
    assert families == {layout.SERVICE_EMPTY}


def test_service_table_rejects_a_size_that_is_no_power_of_two(small_xdp: XdpDataplane) -> None:
    with pytest.raises(ValueError, match="power of two"):
        ServiceTable(small_xdp.maps["service_table"], 48)


def test_table_slot_hints_follow_target_slots(small_xdp: XdpDataplane) -> None:
    """A table naming a target before it exists, and after it was removed and re-added in another
    slot, holds the target's current slot as its hint and selects it."""
    key = ServiceKey(VIPS[0], IPPROTO_TCP, 80)
    small_xdp.apply([target(1), service(1, (key,), timeout=1), SetTable(1, (2,))])
    assert table_entry(small_xdp, 1) == (2, layout.SLOT_NONE)
    small_xdp.apply([target(2)])  # slot 1
    assert table_entry(small_xdp, 1) == (2, 1)
    result = small_xdp.run(frame_to(key, 80), 1, SECOND)
    assert result.ifindex == 1 and result.frame[:6] == bytes.fromhex("020000000102")
    small_xdp.apply([RemoveTarget(2)])
    assert table_entry(small_xdp, 1) == (2, layout.SLOT_NONE)
    small_xdp.apply([target(3), target(2)])  # 3 takes slot 1, so 2 comes back in slot 2
    assert table_entry(small_xdp, 1) == (2, 2)
    result = small_xdp.run(frame_to(key, 80), 1, 3 * SECOND)  # the session expired: a new selection
    assert result.frame[:6] == bytes.fromhex("020000000102")


def table_entry(dataplane: XdpDataplane, service_id: int) -> tuple[int, int]:
    """(target id, slot hint) of entry 0 of the service's table."""
    slot = dataplane._services[service_id].slot
    raw = dataplane.maps["tables"].lookup((slot * layout.TABLE_MAX).to_bytes(4, "little")) or b""
    entry = layout.table_entry.from_buffer_copy(raw)
    return entry.target_id, entry.target_slot


@pytest.fixture
def production_xdp(test_namespace: ScratchNamespace) -> Iterator[XdpDataplane]:
    sizes = XdpSizes(services=4, service_keys=16, targets=8, sessions=64, nat_returns=64, routes=4,
                     local_addresses=4, vips=16, ring_bytes=1 << 16)
    dataplane = XdpDataplane(sizes)
    try:
        with test_namespace.entered():
            yield dataplane
    finally:
        dataplane.close()


@pytest.mark.parametrize("clock", ["jiffies", "coarse"])
def test_production_clock_is_monotonic_time_and_timeout_zero_never_reuses(
    production_xdp: XdpDataplane, clock: str,
) -> None:
    """The production object reads jiffies turned into CLOCK_MONOTONIC ns (calibrated at load), or
    bpf_ktime_get_coarse_ns() when not calibrated: either way monotonic time a few ticks behind, so
    last_seen_ns compares with time.monotonic_ns(); within one tick a timeout of 0 still selects
    anew on every packet, as it would with a nanosecond clock."""
    assert production_xdp.clock.hz in KNOWN_HZ  # this kernel's HZ was recognised
    if clock == "coarse":
        production_xdp.maps["clock_base"].update(bytes(4), COARSE.to_bytes())
    sticky, fresh = ServiceKey(VIPS[0], IPPROTO_TCP, 80), ServiceKey(VIPS[0], IPPROTO_TCP, 81)
    production_xdp.apply([target(1), service(1, (sticky,), timeout=900), SetTable(1, (1,)),
                          service(2, (fresh,), timeout=0), SetTable(2, (1,))])
    before = time.monotonic_ns()
    for _ in range(3):
        production_xdp.run(frame_to(sticky, 80), 1, 0)
        production_xdp.run(frame_to(fresh, 81), 1, 0)
    after = time.monotonic_ns()
    stats = production_xdp.stats()
    assert (stats["session_new"], stats["session_hit"]) == (1 + 3, 2)
    # The coarse clock lags by up to a tick, the jiffies one by up to two (xdp/clock.py), each plus
    # how late the current tick's handler ran; neither is ever ahead.
    lag_ns = 3 * (SECOND // 100)  # HZ >= 100
    for entry in production_xdp.sessions():
        assert before - lag_ns <= entry.last_seen_ns <= after


def test_installed_sessions_steer_both_engines_alike(small_xdp: XdpDataplane) -> None:
    """Session sync (Dataplane.install_sessions): a session learnt from the peer sends the client's
    next packet to the peer's target in both engines; an older copy does not replace a newer one; an
    unknown target or service is skipped; installing emits no session events (no echo to the peer)."""
    reference = ReferenceDataplane()
    key = ServiceKey(VIPS[0], IPPROTO_TCP, 80)
    setup: list[Change] = [target(1), target(2), service(1, (key,), timeout=900), SetTable(1, (1, 2))]
    now = 50 * SECOND
    peer = [SessionEntry(1, CLIENT, 0, 2, now - SECOND),  # rr alone would pick 1 first
            SessionEntry(1, ip_address("198.51.100.8"), 0, 9, now),  # no target 9 here
            SessionEntry(7, CLIENT, 0, 1, now)]  # no service 7 here
    for dataplane in (small_xdp, reference):
        dataplane.apply(setup)
        assert dataplane.install_sessions(peer) == 1
        assert dataplane.install_sessions([SessionEntry(1, CLIENT, 0, 1, now - 2 * SECOND)]) == 0  # older
        assert dataplane.drain_session_events() == []
        result = dataplane.run(frame_to(key, 80), 1, now)
        assert result.frame[:6] == bytes.fromhex("020000000102")  # target 2's MAC
        assert [(e.client, e.target_id, e.last_seen_ns) for e in dataplane.sessions()] == [(CLIENT, 2, now)]
        assert dataplane.stats()["session_hit"] == 1 and dataplane.stats()["session_new"] == 0
