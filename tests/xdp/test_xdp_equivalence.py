"""Generated configurations and traffic: XdpDataplane and ReferenceDataplane packet by packet.

Hypothesis draws services, targets, tables (also naming absent targets), routes, and a sequence of
events: client frames, target replies, ICMP errors quoting either, malformed and random frames,
clock steps beyond timeouts, and control changes (state, next hop, removal). After every frame the
two engines must agree on the result, the session table, the session events and the counters.

Random methods: generated runs inject rand32 (drawn by hypothesis) into both engines; the last test
leaves XDP on the kernel's bpf_get_prandom_u32, checks the choice is in the table and then feeds the
same choice to the reference.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsrlb.engine.dataplane import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    Change,
    NextHop,
    RemoveService,
    RemoveTarget,
    ServiceKey,
    ServiceSpec,
    SetLocalAddress,
    SetNextHop,
    SetRoute,
    SetTable,
    SetTargetState,
    TargetSpec,
    TargetState,
    UpsertService,
    UpsertTarget,
)
from dsrlb.engine.packet import build_echo, build_icmp_error, build_l4, strip_ethernet
from dsrlb.engine.reference import COUNTER_NAMES, ReferenceDataplane
from dsrlb.model import Method, ReturnMatch, SessionKey
from dsrlb.xdp.dataplane import ETH_HLEN, XdpDataplane

pytestmark = pytest.mark.root

SECOND = 1_000_000_000
VIPS = {4: ["192.0.2.10", "192.0.2.11"], 6: ["2001:db8:a::10"]}
CLIENTS = {4: ["198.51.100.7", "198.51.100.8", "203.0.113.99"], 6: ["2001:db8:c::7", "2001:db8:d::9"]}
OTHER = {4: "192.0.2.99", 6: "2001:db8:a::99"}  # not a VIP
ROUTERS = {4: "203.0.113.1", 6: "2001:db8:b::1"}  # a router on the targets' side
LOCAL = {4: "192.0.2.2", 6: "2001:db8:a::2"}
PORTS = [80, 443, 53, 8080]
LB_MAC = {1: bytes.fromhex("0200000000b1"), 2: bytes.fromhex("0200000000b2")}
ROUTER_MAC = bytes.fromhex("0200000000c1")


def target_address(tid: int, family: int) -> IPv4Address | IPv6Address:
    return ip_address(f"203.0.113.{10 + tid}" if family == 4 else f"2001:db8:b::{10 + tid}")


def hop(ifindex: int, tid: int) -> NextHop:
    return NextHop(ifindex, LB_MAC[ifindex], bytes.fromhex(f"0200000001{tid:02x}"))


@st.composite
def setups(draw: st.DrawFn) -> tuple[list[Change], dict[int, int], list[ServiceKey]]:
    """Changes programming a random but mostly working data path; target families; service keys."""
    changes: list[Change] = []
    families: dict[int, int] = {}
    for tid in range(1, draw(st.integers(1, 6)) + 1):
        family = draw(st.sampled_from([4, 4, 6]))
        families[tid] = family
        dsr = draw(st.booleans())
        next_hop = draw(st.sampled_from([hop(1 if dsr else 2, tid)] * 4 + [hop(1, tid), hop(2, tid), None]))
        state = draw(st.sampled_from([TargetState.UP] * 4 + [TargetState.NO_NEW, TargetState.DOWN]))
        changes.append(UpsertTarget(TargetSpec(
            tid, target_address(tid, family), None if dsr else draw(st.sampled_from([None, 80, 8080])),
            dsr, draw(st.sampled_from(list(ReturnMatch))), 1, state, next_hop)))
    keys: list[ServiceKey] = []
    for sid in range(1, draw(st.integers(1, 3)) + 1):
        family = draw(st.sampled_from([4, 4, 6]))
        vip = ip_address(draw(st.sampled_from(VIPS[family])))
        protocols = draw(st.sampled_from([(IPPROTO_TCP,), (IPPROTO_UDP,), (IPPROTO_TCP, IPPROTO_UDP)]))
        ports = draw(st.sampled_from([(80,), (0,), (80, 443), (53,), (8080,)]))
        service_keys = tuple(ServiceKey(vip, proto, port) for proto in protocols for port in ports)
        keys.extend(service_keys)
        changes.append(UpsertService(ServiceSpec(
            sid, service_keys, draw(st.sampled_from(list(Method))), draw(st.sampled_from(list(SessionKey))),
            draw(st.integers(1, 5)))))
        # Same-family targets only: NAT across families is not a thing either engine does.
        same = [tid for tid, f in families.items() if f == family]
        pool = st.sampled_from(same * 4 + [99]) if same else st.just(99)
        table = tuple(draw(st.lists(pool, min_size=draw(st.sampled_from([0, 1, 1, 1])), max_size=6)))
        changes.append(SetTable(sid, table))  # 99: a target that is never upserted
    for prefix in ("198.51.100.0/24", "2001:db8:c::/48", "203.0.113.0/24", "2001:db8:d::/64"):
        if draw(st.integers(0, 3)):
            changes.append(SetRoute(ip_network(prefix), NextHop(1, LB_MAC[1], ROUTER_MAC)))
    for family in (4, 6):
        if draw(st.booleans()):
            changes.append(SetLocalAddress(ip_address(LOCAL[family]), True))
    return changes, families, keys


def client_frame(data: st.DataObject, keys: list[ServiceKey], fragment: bool = False) -> bytes:
    """A client's frame, usually to one of the service keys, sometimes to no service at all."""
    to_a_service: bool = data.draw(st.integers(0, 4)) > 0
    if keys and to_a_service:
        key: ServiceKey = data.draw(st.sampled_from(keys))
        family, proto = key.address.version, key.protocol
        dst, dport = str(key.address), key.port or data.draw(st.sampled_from(PORTS))
    else:
        family = data.draw(st.sampled_from([4, 6]))
        proto = data.draw(st.sampled_from([IPPROTO_TCP, IPPROTO_UDP]))
        dst = data.draw(st.sampled_from([OTHER[family], *VIPS[family]]))
        dport = data.draw(st.sampled_from(PORTS))
    options = data.draw(st.sampled_from([b"", b"", b"\x01\x01\x01\x00"])) if family == 4 else b""
    extra: dict[str, object] = {}
    if fragment:  # IPv4 MF, or an IPv6 fragment header after a hop-by-hop header
        extra = ({"flags_fragment": 0x2000} if family == 4
                 else {"extension_headers": ((0, bytes(6)), (44, bytes(6)))})
    return build_l4(
        proto, ip_address(data.draw(st.sampled_from(CLIENTS[family]))), ip_address(dst),
        data.draw(st.sampled_from([40000, 40001])), dport, b"data",
        ttl=data.draw(st.sampled_from([64] * 6 + [2, 1])),
        vlan=data.draw(st.sampled_from([None, None, 7])), options=options,
        udp_checksum=data.draw(st.sampled_from([None, None, 0])), **extra)  # type: ignore[arg-type]


def _ip_fields(frame: bytes) -> tuple[bytes, int, bytes, bytes, int, int, int]:
    """(packet, proto, src, dst, sport, dport, l4 offset in packet) of one of our own TCP/UDP frames."""
    packet = strip_ethernet(frame)
    if packet[0] >> 4 == 4:
        l4, proto, src, dst = (packet[0] & 15) * 4, packet[9], packet[12:16], packet[16:20]
    else:
        l4, proto, src, dst = 40, packet[6], packet[8:24], packet[24:40]
    return packet, proto, src, dst, int.from_bytes(packet[l4:l4 + 2], "big"), \
        int.from_bytes(packet[l4 + 2:l4 + 4], "big"), l4


def reply_to(data: st.DataObject, sent: bytes) -> bytes:
    """The answer of whoever received `sent`: addresses and ports swapped."""
    _, proto, src, dst, sport, dport, _ = _ip_fields(sent)
    return build_l4(proto, ip_address(dst), ip_address(src), dport, sport, b"reply",
                    ttl=data.draw(st.sampled_from([64, 64, 1])))


def icmp_about(data: st.DataObject, sent: bytes) -> bytes:
    """An ICMP error about `sent`, from its destination or a router on the way, to its source."""
    packet, _, src, dst, _, _, _ = _ip_fields(sent)
    family = 4 if len(src) == 4 else 6
    outer_src = data.draw(st.sampled_from([ip_address(dst), ip_address(ROUTERS[family]),
                                           ip_address(LOCAL[family])]))
    return build_icmp_error(outer_src, ip_address(src), packet,
                            kind=data.draw(st.sampled_from(["unreach", "frag", "time"])),
                            quote_len=data.draw(st.sampled_from([None, None, 28, 48, 64, 66])),
                            ttl=data.draw(st.sampled_from([64, 64, 1])))


FRAME_KINDS = ["client"] * 4 + ["again"] * 2 + ["reply"] * 3 + ["icmp"] * 2 + [
    "malformed", "random", "echo", "fragment"]


def next_frame(
    data: st.DataObject, keys: list[ServiceKey], sent: list[bytes], received: list[bytes]
) -> bytes:
    kind = data.draw(st.sampled_from(FRAME_KINDS))
    if kind == "again" and received:  # the same flow once more: session hits, moves and expiry
        return data.draw(st.sampled_from(received))
    if kind == "random":
        return data.draw(st.binary(min_size=ETH_HLEN, max_size=120))
    if kind == "echo":
        family = data.draw(st.sampled_from([4, 6]))
        return build_echo(CLIENTS[family][0], VIPS[family][0])
    if kind in ("reply", "icmp") and sent:
        about = data.draw(st.sampled_from(sent))
        return reply_to(data, about) if kind == "reply" else icmp_about(data, about)
    base = client_frame(data, keys, fragment=kind == "fragment")
    if kind == "icmp":
        return icmp_about(data, base)
    if kind == "malformed":
        mutated = bytearray(base)
        for _ in range(data.draw(st.integers(1, 3))):
            mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
        return bytes(mutated[: data.draw(st.integers(ETH_HLEN, len(mutated)))])
    return base


def control_change(data: st.DataObject, families: dict[int, int]) -> Change:
    tid = data.draw(st.sampled_from(sorted(families)))
    choices: list[Change] = [
        SetTargetState(tid, TargetState.DOWN), SetTargetState(tid, TargetState.UP),
        SetTargetState(tid, TargetState.NO_NEW), SetNextHop(tid, None), SetNextHop(tid, hop(2, tid)),
        RemoveTarget(tid), RemoveService(1),
    ]
    return data.draw(st.sampled_from(choices))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_traffic_matches_reference(xdp: XdpDataplane, data: st.DataObject) -> None:
    xdp.reset()
    setup, families, keys = data.draw(setups())
    rand_value = [0]
    reference = ReferenceDataplane(rand32=lambda: rand_value[0])
    xdp.apply(setup)
    reference.apply(setup)
    now = 10 * SECOND
    sent: list[bytes] = []  # frames the engines forwarded (replies and ICMP errors quote them)
    received: list[bytes] = []  # client frames that were forwarded (sent again later)
    for number in range(data.draw(st.integers(1, 40))):
        kind = data.draw(st.sampled_from(["frame"] * 8 + ["time", "change", "change"]))
        if kind == "time":
            now += data.draw(st.sampled_from([SECOND // 2, 2 * SECOND, 6 * SECOND]))
            continue
        if kind == "change":
            change = control_change(data, families)
            xdp.apply([change])
            reference.apply([change])
            continue
        frame = next_frame(data, keys, sent, received)
        ingress = data.draw(st.sampled_from([1, 2]))
        rand_value[0] = data.draw(st.integers(0, 2**32 - 1))
        xdp.inject_rand32(rand_value[0])
        expected = reference.run(frame, ingress, now)
        result = xdp.run(frame, ingress, now)
        where = f"event {number}: {frame.hex()}"
        assert result.verdict == expected.verdict, where
        assert result.frame.hex() == expected.frame.hex(), where
        assert result.ifindex == expected.ifindex, where
        assert set(xdp.sessions()) == set(reference.sessions()), where
        assert xdp.drain_session_events() == reference.drain_session_events(), where
        stats = xdp.stats()
        assert {name: stats[name] for name in COUNTER_NAMES} == dict(reference.stats()), where
        if result.verdict in (3, 4) and len(result.frame) > 34:
            sent.append(result.frame)
            received.append(frame)
        now += 1000


def test_kernel_random_choice_is_a_member_and_aligns_the_reference(xdp: XdpDataplane) -> None:
    """Method random on the kernel's prandom: every choice is in the table; fed to the reference,
    both engines then hold the same sessions and give the same frames."""
    vip = ip_address("192.0.2.10")
    table = (1, 2, 3, 2)
    setup: list[Change] = [
        *(UpsertTarget(TargetSpec(tid, target_address(tid, 4), None, True, ReturnMatch.DST_PORT, 1,
                                  TargetState.UP, hop(1, tid))) for tid in (1, 2, 3)),
        UpsertService(ServiceSpec(1, (ServiceKey(vip, IPPROTO_TCP, 80),), Method.RANDOM,
                                  SessionKey.SRC_PORT, 300)),
        SetTable(1, table),
    ]
    chosen_index = [0]
    reference = ReferenceDataplane(rand32=lambda: chosen_index[0])
    xdp.apply(setup)
    reference.apply(setup)
    seen: set[int] = set()
    for port in range(1024, 1024 + 64):
        frame = build_l4(IPPROTO_TCP, ip_address("198.51.100.7"), vip, port, 80)
        result = xdp.run(frame, 1, SECOND)
        (event,) = xdp.drain_session_events()
        assert event.target_id in table
        seen.add(event.target_id)
        chosen_index[0] = table.index(event.target_id)
        assert reference.run(frame, 1, SECOND) == result
        assert reference.drain_session_events() == [event]
    assert set(xdp.sessions()) == set(reference.sessions())
    assert seen == {1, 2, 3}  # 64 draws over 3 targets: all are hit (p(miss) ~ 1e-8)


def test_udp_checksum_that_computes_to_zero_is_sent_as_ffff(xdp: XdpDataplane) -> None:
    """RFC 768: a NAT rewrite whose UDP checksum comes out 0 sends 0xFFFF (rare: searched for)."""
    vip = ip_address("192.0.2.10")
    setup: list[Change] = [
        UpsertTarget(TargetSpec(1, target_address(1, 4), 53, False, ReturnMatch.DST_PORT, 1, TargetState.UP,
                                hop(2, 1))),
        UpsertService(ServiceSpec(1, (ServiceKey(vip, IPPROTO_UDP, 53),), Method.RR, SessionKey.SRC, 300)),
        SetTable(1, (1,)),
    ]
    reference = ReferenceDataplane(rand32=lambda: 0)
    reference.apply(setup)
    xdp.apply(setup)
    for word in range(65536):
        frame = build_l4(IPPROTO_UDP, ip_address("198.51.100.7"), vip, 40000, 53, word.to_bytes(2, "big"))
        expected = reference.run(frame, 1, SECOND)
        if expected.frame[40:42] == b"\xff\xff":  # the UDP checksum of the rewritten frame
            break
    else:
        pytest.fail("no payload gives a zero checksum")
    assert xdp.run(frame, 1, SECOND) == expected
