"""Properties of the reference path: NAT round trips, DSR touches only MACs, bad frames never raise."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from hypothesis import given, settings
from hypothesis import strategies as st

from dsrlb.engine.checksum import ones_complement_sum, pseudo_header_sum
from dsrlb.engine.dataplane import Verdict
from dsrlb.engine.fixtures import (
    CLIENT_IF,
    CLIENT_ROUTES,
    SECOND,
    TARGET_IF,
    VIP4,
    VIP6,
    cfg,
    fixture_changes,
    lab_environment,
    server,
    simple,
    t4,
    t6,
    target,
    target_mac,
)
from dsrlb.engine.packet import IPPROTO_TCP, IPPROTO_UDP, build_l4, parse_frame
from dsrlb.engine.reference import ReferenceDataplane
from dsrlb.model import PortRange, Protocol

ROUTE = next(iter(CLIENT_ROUTES.values()))


def _dataplane(v6: bool, dsr: bool, proto: int) -> ReferenceDataplane:
    vip = VIP6 if v6 else VIP4
    protocol = Protocol.TCP if proto == IPPROTO_TCP else Protocol.UDP
    config = cfg(server(vip=vip, ports=(), protocol=protocol, targets=(1,)),
                 targets=(target(1, v6=v6, dsr=dsr),))
    everywhere = {ip_network("0.0.0.0/0"): ROUTE, ip_network("::/0"): ROUTE}
    dataplane = ReferenceDataplane(rand32=lambda: 0)
    environment = lab_environment(config, routes=everywhere)
    dataplane.apply(fixture_changes(simple("property", config, [], environment)))
    return dataplane


def _l4_valid(frame: bytes) -> bool:
    view = parse_frame(frame)
    src, dst = ip_address(view.src), ip_address(view.dst or b"")
    segment = frame[view.l4 : view.ip_end]
    if view.proto == IPPROTO_UDP and segment[6:8] == b"\x00\x00":
        return True  # "no checksum" stays so (IPv6: left for the target to drop, docs/datapath.md §3)
    initial = pseudo_header_sum(src, dst, view.proto, len(segment))
    return ones_complement_sum(segment, initial) % 0xFFFF == 0


def _ipv4_header_valid(frame: bytes) -> bool:
    view = parse_frame(frame)
    return view.version == 6 or ones_complement_sum(frame[view.l3 : view.l4]) == 0xFFFF


clients4 = st.integers(0, 2**32 - 1).map(lambda n: str(IPv4Address(n)))
clients6 = st.integers(0, 2**128 - 1).map(lambda n: str(IPv6Address(n)))


@settings(max_examples=100, deadline=None)
@given(
    v6=st.booleans(), proto=st.sampled_from([IPPROTO_TCP, IPPROTO_UDP]), data=st.data(),
    sport=st.integers(1, 65535), dport=st.integers(1, 65535), payload=st.binary(max_size=64),
    ttl=st.integers(2, 255), udp_zero=st.booleans(),
)
def test_nat_forward_then_return_restores_addresses_with_valid_checksums(
    v6: bool, proto: int, data: st.DataObject, sport: int, dport: int, payload: bytes, ttl: int,
    udp_zero: bool,
) -> None:
    client = data.draw(clients6 if v6 else clients4)
    vip = VIP6 if v6 else VIP4
    dataplane = _dataplane(v6, False, proto)
    udp_checksum = 0 if (udp_zero and proto == IPPROTO_UDP) else None
    inbound = build_l4(proto, client, vip, sport, dport, payload, ttl=ttl, udp_checksum=udp_checksum)
    out = dataplane.run(inbound, CLIENT_IF, SECOND)
    assert out.verdict == Verdict.REDIRECT and out.ifindex == TARGET_IF
    view = parse_frame(out.frame)
    assert view.dst == ip_address(t6(1) if v6 else t4(1)).packed
    assert _l4_valid(out.frame) and _ipv4_header_valid(out.frame)
    # the target answers from its address with the ports swapped
    reply = build_l4(proto, t6(1) if v6 else t4(1), client, dport, sport, payload[::-1], ttl=ttl,
                     udp_checksum=udp_checksum, src_mac=target_mac(1))
    back = dataplane.run(reply, TARGET_IF, 2 * SECOND)
    assert back.verdict == Verdict.REDIRECT and back.ifindex == CLIENT_IF
    restored = parse_frame(back.frame)
    assert restored.src == ip_address(vip).packed
    assert back.frame[restored.l4 : restored.l4 + 4] == dport.to_bytes(2, "big") + sport.to_bytes(2, "big")
    assert _l4_valid(back.frame) and _ipv4_header_valid(back.frame)


@settings(max_examples=60, deadline=None)
@given(v6=st.booleans(), proto=st.sampled_from([IPPROTO_TCP, IPPROTO_UDP]), data=st.data(),
       sport=st.integers(1, 65535), dport=st.integers(1, 65535), payload=st.binary(max_size=64),
       vlan=st.one_of(st.none(), st.integers(1, 4094)))
def test_dsr_changes_only_the_mac_bytes(
    v6: bool, proto: int, data: st.DataObject, sport: int, dport: int, payload: bytes, vlan: int | None
) -> None:
    client = data.draw(clients6 if v6 else clients4)
    dataplane = _dataplane(v6, True, proto)
    inbound = build_l4(proto, client, VIP6 if v6 else VIP4, sport, dport, payload, vlan=vlan)
    out = dataplane.run(inbound, CLIENT_IF, SECOND)
    assert out.verdict == Verdict.TX
    assert out.frame[12:] == inbound[12:]
    assert out.frame[:6] == target_mac(1)


def _fuzz_dataplane() -> ReferenceDataplane:
    config = cfg(server(ports=(PortRange(80, 80),), protocol=None, targets=(1, 2)),
                 server(2, vip=VIP6, ports=(), protocol=None, targets=(3,)),
                 targets=(target(1), target(2, dsr=True), target(3, v6=True)))
    dataplane = ReferenceDataplane(rand32=lambda: 7, session_capacity=64)
    dataplane.apply(fixture_changes(simple("fuzz", config, [], lab_environment(config))))
    return dataplane


_FUZZ = _fuzz_dataplane()
_SEEDS = [
    build_l4(IPPROTO_TCP, "198.51.100.7", VIP4, 40000, 80, b"x" * 20),
    build_l4(IPPROTO_UDP, "198.51.100.7", VIP4, 40000, 80, b"x" * 20, vlan=5),
    build_l4(IPPROTO_TCP, "2001:db8:c::7", VIP6, 40000, 443, b"y" * 8),
    build_l4(IPPROTO_TCP, t4(1), "198.51.100.7", 80, 40000, b"z"),
]


def _check(frame: bytes) -> None:
    result = _FUZZ.run(frame, CLIENT_IF, SECOND)
    assert isinstance(result.verdict, Verdict)
    if result.verdict in (Verdict.PASS, Verdict.DROP):
        assert result.frame == frame


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(frame: bytes) -> None:
    _check(frame)


@settings(max_examples=300, deadline=None)
@given(seed=st.sampled_from(_SEEDS), cut=st.integers(0, 120))
def test_truncations_never_raise(seed: bytes, cut: int) -> None:
    _check(seed[:cut])


@settings(max_examples=300, deadline=None)
@given(seed=st.sampled_from(_SEEDS), flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 7)),
                                                     min_size=1, max_size=6))
def test_bit_flips_never_raise(seed: bytes, flips: list[tuple[int, int]]) -> None:
    frame = bytearray(seed)
    for position, bit in flips:
        frame[position % len(frame)] ^= 1 << bit
    _check(bytes(frame))
