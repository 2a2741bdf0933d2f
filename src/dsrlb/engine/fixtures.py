"""The fixtures table: configs, environments and frame sequences with their expected results.

Shared by the reference tests (tests/unit/engine) and the XDP tests (tests/xdp): every engine, given
`fixture_changes(fixture)` and then each step's `changes`, must turn every step's frame into exactly
the expected verdict, frame and egress interface. Expected frames are built with the packet builders
from the rewritten fields (full checksums), never by running an engine.

The lab in every fixture (documentation ranges only):

    clients 198.51.100.0/24, 2001:db8:c::/48 --- router (MAC c1) --- if 1 (MAC b1) balancer if 2 (MAC b2)
    VIPs 192.0.2.10-13, 2001:db8:a::10                                            |
    targets 203.0.113.11-15, 2001:db8:b::11-15 (MAC 02:00:00:00:01:<id>): NAT behind if 2;
    DSR targets sit on if 1 (single-legged, TX) unless a fixture says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, ip_address, ip_network
from typing import Any

from dsrlb.engine.compile import Environment, compile_state, diff
from dsrlb.engine.dataplane import Change, NextHop, TargetState, Verdict
from dsrlb.engine.hashing import hash_client, hash_session_key
from dsrlb.engine.packet import (
    ETH_P_IP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV6_EXT_DEST_OPTS,
    IPV6_EXT_FRAGMENT,
    IPV6_EXT_HOP_BY_HOP,
    build_arp_request,
    build_echo,
    build_icmp_error,
    build_l4,
    ethernet,
    ipv4,
    mac,
    strip_ethernet,
    with_macs,
)
from dsrlb.engine.tables import Candidate, maglev_ring
from dsrlb.model import Config, Method, PortRange, Protocol, ReturnMatch, Server, SessionKey, Target

SECOND = 1_000_000_000


@dataclass(frozen=True)
class Step:
    """One frame and what must come out. `changes` are applied before the frame (default none);
    `rand32` is what the engine's random source returns for this frame (None: not consulted)."""

    frame: bytes
    ingress_ifindex: int
    now_ns: int
    expected_verdict: Verdict
    expected_frame: bytes
    expected_ifindex: int | None
    rand32: int | None = None
    changes: tuple[Change, ...] = ()


@dataclass(frozen=True)
class Fixture:
    """A scenario. `expected_stats` are global counters that must hold after the last step."""

    description: str
    config: Config
    environment: Environment
    steps: tuple[Step, ...]
    expected_stats: tuple[tuple[str, int], ...] = ()


def fixture_changes(fixture: Fixture) -> list[Change]:
    """The Change list that programs an empty data path for this fixture (compile + diff from None)."""
    return diff(None, compile_state(fixture.config, fixture.environment))


def environment_changes(config: Config, before: Environment, after: Environment) -> tuple[Change, ...]:
    """What the control plane sends when the environment changes (health, admin, next hops)."""
    return tuple(diff(compile_state(config, before), compile_state(config, after)))


# --- the lab ---------------------------------------------------------------------------------------------

CLIENT_IF, TARGET_IF = 1, 2
ROUTER_MAC = mac("02:00:00:00:00:c1")
LB_MAC_1 = mac("02:00:00:00:00:b1")
LB_MAC_2 = mac("02:00:00:00:00:b2")
VIP4, VIP6 = "192.0.2.10", "2001:db8:a::10"
CLIENT4, CLIENT4B, CLIENT6 = "198.51.100.7", "198.51.100.8", "2001:db8:c::7"
ROUTER4, ROUTER6 = "198.51.100.1", "2001:db8:c::1"
CLIENT_ROUTES = {
    ip_network("198.51.100.0/24"): NextHop(CLIENT_IF, LB_MAC_1, ROUTER_MAC),
    ip_network("2001:db8:c::/48"): NextHop(CLIENT_IF, LB_MAC_1, ROUTER_MAC),
}


def target_mac(tid: int) -> bytes:
    return mac(f"02:00:00:00:01:{tid:02x}")


def t4(tid: int) -> str:
    return f"203.0.113.{10 + tid}"


def t6(tid: int) -> str:
    return f"2001:db8:b::{10 + tid}"


def target(tid: int, *, v6: bool = False, dsr: bool = False, port: int | None = None, weight: int = 1,
           sessionid: ReturnMatch | None = None) -> Target:
    address = ip_address(t6(tid) if v6 else t4(tid))
    return Target(tid, address, port=port, dsr=dsr, weight=weight, sessionid=sessionid,
                  registered=True, enabled=True)


def server(sid: int = 1, vip: str = VIP4, ports: tuple[PortRange, ...] = (PortRange(80, 80),),
           protocol: Protocol | None = Protocol.TCP, method: Method = Method.RR,
           targets: tuple[int, ...] = (1, 2), backup: tuple[int, ...] = (),
           sessionid: SessionKey = SessionKey.SRC, timeout: int | None = None) -> Server:
    return Server(sid, ip_address(vip), ports=ports, protocol=protocol, method=method, targets=targets,
                  backup=backup, sessionid=sessionid, timeout=timeout, registered=True, enabled=True)


def lab_environment(config: Config, **overrides: Any) -> Environment:
    """Next hops for every target (DSR on if 1, NAT on if 2) and routes to the clients."""
    hops = {
        t.id: NextHop(CLIENT_IF, LB_MAC_1, target_mac(t.id)) if t.dsr
        else NextHop(TARGET_IF, LB_MAC_2, target_mac(t.id))
        for t in config.targets
    }
    base = Environment(next_hops=hops, routes=CLIENT_ROUTES)
    return replace(base, **overrides)


def frame(proto: int, src: str, dst: str, sport: int, dport: int, payload: bytes = b"data", *,
          from_target: int | None = None, **kw: Any) -> bytes:
    """A frame arriving at the balancer: from the client router, or from target `from_target`."""
    if from_target is not None:
        kw.setdefault("src_mac", target_mac(from_target))
        kw.setdefault("dst_mac", LB_MAC_2)
    return build_l4(proto, src, dst, sport, dport, payload, **kw)


def to_target(proto: int, src: str, tid: int, v6: bool, sport: int, dport: int, payload: bytes = b"data",
              **kw: Any) -> bytes:
    """A NAT-forwarded frame as it must leave towards target `tid` (TTL already decremented)."""
    kw.setdefault("ttl", 63)
    return build_l4(proto, src, t6(tid) if v6 else t4(tid), sport, dport, payload,
                    src_mac=LB_MAC_2, dst_mac=target_mac(tid), **kw)


def to_client(proto: int, vip: str, client: str, vport: int, cport: int, payload: bytes = b"data",
              **kw: Any) -> bytes:
    """A NAT return frame as it must leave towards the client router."""
    kw.setdefault("ttl", 63)
    return build_l4(proto, vip, client, vport, cport, payload,
                    src_mac=LB_MAC_1, dst_mac=ROUTER_MAC, **kw)


def dsr_out(frame_in: bytes, tid: int) -> bytes:
    return with_macs(frame_in, target_mac(tid), LB_MAC_1)


def fwd(frame_in: bytes, out: bytes, now: int, ingress: int = CLIENT_IF, egress: int = TARGET_IF,
        rand32: int | None = None, changes: tuple[Change, ...] = ()) -> Step:
    verdict = Verdict.TX if ingress == egress else Verdict.REDIRECT
    return Step(frame_in, ingress, now, verdict, out, egress, rand32, changes)


def passes(frame_in: bytes, now: int = SECOND, ingress: int = CLIENT_IF, rand32: int | None = None,
           changes: tuple[Change, ...] = ()) -> Step:
    return Step(frame_in, ingress, now, Verdict.PASS, frame_in, None, rand32, changes)


def drops(frame_in: bytes, now: int = SECOND, ingress: int = CLIENT_IF, rand32: int | None = None,
          changes: tuple[Change, ...] = ()) -> Step:
    return Step(frame_in, ingress, now, Verdict.DROP, frame_in, None, rand32, changes)


def dsr_step(tid: int, now: int, src: str = CLIENT4, dst: str = VIP4, sport: int = 40000, dport: int = 80,
             proto: int = IPPROTO_TCP, rand32: int | None = None, changes: tuple[Change, ...] = (),
             **kw: Any) -> Step:
    """A client frame to a DSR service that must go to target `tid` on if 1 (TX)."""
    frame_in = frame(proto, src, dst, sport, dport, **kw)
    return fwd(frame_in, dsr_out(frame_in, tid), now, CLIENT_IF, CLIENT_IF, rand32, changes)


def nat_step(tid: int, now: int, src: str = CLIENT4, dst: str = VIP4, sport: int = 40000, dport: int = 80,
             tport: int | None = None, proto: int = IPPROTO_TCP, rand32: int | None = None,
             changes: tuple[Change, ...] = (), **kw: Any) -> Step:
    """A client frame to a NAT service that must go to target `tid` (rewritten) on if 2."""
    v6 = ":" in dst
    frame_in = frame(proto, src, dst, sport, dport, **kw)
    out_kw = {k: v for k, v in kw.items() if k not in ("ttl",)}
    ttl = kw.get("ttl", 64)
    assert isinstance(ttl, int)
    out = to_target(proto, src, tid, v6, sport, dport if tport is None else tport, ttl=ttl - 1, **out_kw)
    return fwd(frame_in, out, now, CLIENT_IF, TARGET_IF, rand32, changes)


def return_step(tid: int, now: int, client: str = CLIENT4, vip: str = VIP4, cport: int = 40000,
                vport: int = 80, tport: int | None = None, proto: int = IPPROTO_TCP, **kw: Any) -> Step:
    """A reply from target `tid` that must leave to the client as from VIP:vport."""
    v6 = ":" in vip
    src = t6(tid) if v6 else t4(tid)
    frame_in = frame(proto, src, client, vport if tport is None else tport, cport, b"reply",
                     from_target=tid, **kw)
    out = to_client(proto, vip, client, vport, cport, b"reply", **kw)
    return fwd(frame_in, out, now, TARGET_IF, CLIENT_IF)


def cfg(*servers: Server, targets: tuple[Target, ...]) -> Config:
    return Config(servers=tuple(servers), targets=targets)


def simple(description: str, config: Config, steps: list[Step], env: Environment | None = None,
           stats: dict[str, int] | None = None) -> Fixture:
    return Fixture(description, config, env or lab_environment(config), tuple(steps),
                   tuple(sorted((stats or {}).items())))


# --- the fixtures ----------------------------------------------------------------------------------------

TCP, UDP = IPPROTO_TCP, IPPROTO_UDP
DSR2 = (target(1, dsr=True), target(2, dsr=True))
NAT2 = (target(1), target(2))
NAT2_V6 = (target(1, v6=True), target(2, v6=True))


def _forwarding() -> list[Fixture]:
    dsr = cfg(server(), targets=DSR2)
    dsr6 = cfg(server(vip=VIP6), targets=(target(1, v6=True, dsr=True), target(2, v6=True, dsr=True)))
    dsr_udp = cfg(server(protocol=Protocol.UDP, ports=(PortRange(5060, 5060),)), targets=DSR2)
    nat = cfg(server(), targets=NAT2)
    nat_udp = cfg(server(protocol=Protocol.UDP, ports=(PortRange(53, 53),)), targets=NAT2)
    nat6 = cfg(server(vip=VIP6), targets=NAT2_V6)
    nat6_udp = cfg(server(vip=VIP6, protocol=Protocol.UDP, ports=(PortRange(53, 53),)), targets=NAT2_V6)
    nat_port = cfg(server(vip=VIP6, ports=(PortRange(8080, 8080),)),
                   targets=(target(1, v6=True, port=80), target(2, v6=True, port=80)))
    two_legged = cfg(server(), targets=DSR2)
    two_legged_env = replace(lab_environment(two_legged), next_hops={
        1: NextHop(TARGET_IF, LB_MAC_2, target_mac(1)), 2: NextHop(TARGET_IF, LB_MAC_2, target_mac(2))})
    redirect_in = frame(TCP, CLIENT4, VIP4, 40000, 80)
    return [
        simple("DSR IPv4 TCP: new session, then a hit; a second client goes round-robin to target 2",
               dsr, [dsr_step(1, SECOND), dsr_step(1, 2 * SECOND, payload=b"more"),
                     dsr_step(2, 3 * SECOND, src=CLIENT4B)],
               stats={"session_new": 2, "session_hit": 1, "tx": 3}),
        simple("DSR IPv6 TCP: MAC rewrite only", dsr6, [dsr_step(1, SECOND, src=CLIENT6, dst=VIP6)]),
        simple("DSR IPv4 UDP (SIP)", dsr_udp, [dsr_step(1, SECOND, proto=UDP, dport=5060)]),
        simple("DSR to a target on another interface: REDIRECT with that interface's MAC", two_legged,
               [fwd(redirect_in, with_macs(redirect_in, target_mac(1), LB_MAC_2), SECOND)],
               env=two_legged_env, stats={"redirect": 1}),
        simple("NAT IPv4 TCP: forward then return", nat,
               [nat_step(1, SECOND), return_step(1, 2 * SECOND)], stats={"nat_return": 1}),
        simple("NAT IPv4 UDP: forward then return", nat_udp,
               [nat_step(1, SECOND, proto=UDP, dport=53), return_step(1, 2 * SECOND, proto=UDP, vport=53)]),
        simple("NAT IPv6 TCP: forward then return", nat6,
               [nat_step(1, SECOND, src=CLIENT6, dst=VIP6),
                return_step(1, 2 * SECOND, client=CLIENT6, vip=VIP6)]),
        simple("NAT IPv6 UDP: forward then return", nat6_udp,
               [nat_step(1, SECOND, src=CLIENT6, dst=VIP6, proto=UDP, dport=53),
                return_step(1, 2 * SECOND, client=CLIENT6, vip=VIP6, proto=UDP, vport=53)]),
        simple("NAT IPv6 with port rewrite 8080 -> 80 (seed 003), forward and return", nat_port,
               [nat_step(1, SECOND, src=CLIENT6, dst=VIP6, dport=8080, tport=80),
                return_step(1, 2 * SECOND, client=CLIENT6, vip=VIP6, vport=8080, tport=80)]),
        simple("NAT TTL 1: PASS so the kernel answers time exceeded", nat,
               [passes(frame(TCP, CLIENT4, VIP4, 40000, 80, ttl=1))]),
        simple("NAT IPv6 hop limit 1: PASS", nat6, [passes(frame(TCP, CLIENT6, VIP6, 40000, 80, ttl=1))]),
        simple("NAT UDP checksum 0 stays 0 both ways", nat_udp,
               [nat_step(1, SECOND, proto=UDP, dport=53, udp_checksum=0),
                return_step(1, 2 * SECOND, proto=UDP, vport=53, udp_checksum=0)]),
        simple("NAT return without a route to the client: PASS, no_route", nat,
               [nat_step(1, SECOND), passes(frame(TCP, t4(1), CLIENT4, 80, 40000, from_target=1),
                                            2 * SECOND, TARGET_IF)],
               env=replace(lab_environment(nat), routes={}), stats={"no_route": 1}),
        simple("NAT return with `sessionid dst`: matched without the client port", cfg(
            server(), targets=(target(1, sessionid=ReturnMatch.DST), target(2, sessionid=ReturnMatch.DST))),
               [nat_step(1, SECOND), return_step(1, 2 * SECOND, cport=40001)]),
        simple("NAT return with the default `dst+port`: another client port is not ours", nat,
               [nat_step(1, SECOND), passes(frame(TCP, t4(1), CLIENT4, 80, 40001, from_target=1),
                                            2 * SECOND, TARGET_IF)]),
        simple("NAT return after the session timed out: PASS", cfg(server(timeout=10), targets=NAT2),
               [nat_step(1, SECOND), passes(frame(TCP, t4(1), CLIENT4, 80, 40000, from_target=1),
                                            20 * SECOND, TARGET_IF)]),
    ]


def _encapsulation() -> list[Fixture]:
    dsr = cfg(server(), targets=DSR2)
    nat = cfg(server(), targets=NAT2)
    nat6 = cfg(server(vip=VIP6), targets=NAT2_V6)
    dsr6 = cfg(server(vip=VIP6), targets=(target(1, v6=True, dsr=True), target(2, v6=True, dsr=True)))
    options = bytes((7, 7, 4, 0, 0, 0, 0, 1))  # record route with one empty slot, then end of list
    exts = ((IPV6_EXT_HOP_BY_HOP, bytes(4)), (IPV6_EXT_DEST_OPTS, bytes(12)))
    vlan_in = frame(TCP, CLIENT4, VIP4, 40000, 80, vlan=100)
    return [
        simple("802.1Q-tagged DSR: the tag is kept", dsr, [fwd(vlan_in, dsr_out(vlan_in, 1), SECOND,
                                                                CLIENT_IF, CLIENT_IF)]),
        simple("802.1Q-tagged NAT forward and return", nat,
               [nat_step(1, SECOND, vlan=100), return_step(1, 2 * SECOND, vlan=100)]),
        simple("IPv4 options: DSR", dsr, [dsr_step(1, SECOND, options=options)]),
        simple("IPv4 options: NAT forward", nat, [nat_step(1, SECOND, options=options)]),
        simple("IPv6 extension headers (hop-by-hop, destination options): DSR", dsr6,
               [dsr_step(1, SECOND, src=CLIENT6, dst=VIP6, extension_headers=exts)]),
        simple("IPv6 extension headers: NAT forward", nat6,
               [nat_step(1, SECOND, src=CLIENT6, dst=VIP6, extension_headers=exts)]),
        simple("IPv4 fragment to a VIP: DROP, fragment", dsr,
               [drops(frame(TCP, CLIENT4, VIP4, 40000, 80, flags_fragment=0x2000))], stats={"fragment": 1}),
        simple("IPv4 non-first fragment to a VIP: DROP", dsr,
               [drops(frame(TCP, CLIENT4, VIP4, 40000, 80, flags_fragment=0x0010))], stats={"fragment": 1}),
        simple("IPv4 fragment to another address: PASS", dsr,
               [passes(frame(TCP, CLIENT4, "192.0.2.99", 40000, 80, flags_fragment=0x2000))]),
        simple("IPv6 fragment header to a VIP: DROP", dsr6,
               [drops(frame(TCP, CLIENT6, VIP6, 40000, 80, extension_headers=((IPV6_EXT_FRAGMENT,
                                                                               bytes(6)),)))],
               stats={"fragment": 1}),
    ]


def _passing_and_malformed() -> list[Fixture]:
    dsr = cfg(server(), targets=DSR2)
    dsr6 = cfg(server(vip=VIP6), targets=(target(1, v6=True, dsr=True),))
    good = frame(TCP, CLIENT4, VIP4, 40000, 80)
    too_long = bytearray(good)
    too_long[16:18] = (len(good) - 14 + 20).to_bytes(2, "big")  # IPv4 total length beyond the frame
    bad_version = bytearray(good)
    bad_version[14] = 0x55
    short_tcp = ethernet(LB_MAC_1, ROUTER_MAC, ETH_P_IP,
                         ipv4(IPv4Address(CLIENT4), IPv4Address(VIP4), TCP, good[34:46]))
    return [
        simple("ICMP echo to the VIP: PASS (the kernel answers)", dsr, [passes(build_echo(CLIENT4, VIP4))]),
        simple("ICMPv6 echo to the VIP: PASS", dsr6, [passes(build_echo(CLIENT6, VIP6))]),
        simple("TCP to a non-VIP address: PASS", dsr, [passes(frame(TCP, CLIENT4, "192.0.2.99", 40000, 80))]),
        simple("TCP to the VIP on a port it does not serve: PASS", dsr,
               [passes(frame(TCP, CLIENT4, VIP4, 40000, 81))]),
        simple("UDP to a TCP-only VIP port: PASS", dsr, [passes(frame(UDP, CLIENT4, VIP4, 40000, 80))]),
        simple("ARP: PASS", dsr, [passes(build_arp_request(ROUTER_MAC, ROUTER4, VIP4))]),
        simple("Truncated Ethernet header: PASS, malformed", dsr, [passes(good[:10])],
               stats={"malformed": 1}),
        simple("IPv4 header cut short (destination unseen): PASS, malformed", dsr, [passes(good[:30])],
               stats={"malformed": 1}),
        simple("IPv4 total length beyond the frame, to a VIP: DROP, malformed", dsr,
               [drops(bytes(too_long))], stats={"malformed": 1}),
        simple("IPv4 bad version to a VIP: DROP, malformed", dsr, [drops(bytes(bad_version))],
               stats={"malformed": 1}),
        simple("TCP header cut short (12 bytes in a consistent IPv4 packet), to a VIP: DROP", dsr,
               [drops(short_tcp)], stats={"malformed": 1}),
        simple("IPv6 header cut short: PASS, malformed", dsr6,
               [passes(frame(TCP, CLIENT6, VIP6, 40000, 80)[:40])], stats={"malformed": 1}),
    ]


def _method_fixture(method: Method, expected: list[int], rand: list[int | None] | None = None,
                    weights: tuple[int, ...] = (1, 1, 1), metrics: dict[int, float] | None = None) -> Fixture:
    config = cfg(server(method=method, targets=(1, 2, 3)),
                 targets=tuple(target(i + 1, dsr=True, weight=w) for i, w in enumerate(weights)))
    env = lab_environment(config, metrics=metrics or {})
    rands = rand or [None] * len(expected)
    steps = [dsr_step(tid, (i + 1) * SECOND, src=f"198.51.100.{20 + i}", rand32=r)
             for i, (tid, r) in enumerate(zip(expected, rands, strict=True))]
    return simple(f"method {method}: {expected}", config, steps, env=env)


def _ring_choices(count: int, with_port: bool) -> list[int]:
    """The targets the Maglev ring of targets 1-3 gives the method fixtures' clients (port 40000).

    Computed from tables.maglev_ring and the jhash2 port (both pinned by their own tests against
    the paper's properties and the kernel's C), not by running an engine.
    """
    ring = maglev_ring([Candidate(1), Candidate(2), Candidate(3)])
    choices = []
    for i in range(count):
        packed = ip_address(f"198.51.100.{20 + i}").packed
        digest = hash_session_key(packed, 0) if with_port else hash_client(packed)
        choices.append(ring[digest % len(ring)])
    return choices


def _methods() -> list[Fixture]:
    return [
        _method_fixture(Method.RR, [1, 2, 3, 1]),
        _method_fixture(Method.WRR, [1, 1, 2, 1, 3, 1, 1], weights=(5, 1, 1)),
        _method_fixture(Method.RANDOM, [3, 1, 1], rand=[5, 9, 0xFFFFFFFF]),
        _method_fixture(Method.WRANDOM, [1, 2, 3], rand=[1, 2, 3], weights=(2, 1, 1)),
        _method_fixture(Method.HASH, _ring_choices(4, with_port=False)),
        _method_fixture(Method.MAGLEV, _ring_choices(4, with_port=True)),
        _method_fixture(Method.FIRST, [1, 1, 1]),
        _method_fixture(Method.SESSION, [2, 3, 2], metrics={1: 10, 2: 3, 3: 3}),
        _method_fixture(Method.BANDWIDTH, [3, 3], metrics={1: 5e6, 2: 7e6, 3: 1e6}),
        _method_fixture(Method.AGENT, [1, 1], metrics={1: 20, 2: 50, 3: 90}),
        # spare capacity 80, 50, 10 -> /10 -> t1 x8, t2 x5, t3 x1: indexes 0, 10, 13
        _method_fixture(Method.RNDAGENT, [1, 2, 3], rand=[0, 80, 13], metrics={1: 20, 2: 50, 3: 90}),
    ]


def _sessions() -> list[Fixture]:
    dsr = cfg(server(), targets=DSR2)
    env = lab_environment(dsr)
    t1_down = environment_changes(dsr, env, replace(env, health={1: TargetState.DOWN}))
    t1_quiet = environment_changes(dsr, env, replace(env, health={1: TargetState.NO_NEW}))
    backup = cfg(server(targets=(1, 2), backup=(3,)), targets=(*DSR2, target(3, dsr=True)))
    backup_env = lab_environment(backup, health={1: TargetState.DOWN, 2: TargetState.DOWN})
    multi = cfg(server(ports=(PortRange(80, 80), PortRange(443, 443)), protocol=None), targets=DSR2)
    ranged = cfg(server(ports=(PortRange(33000, 33999),)), targets=DSR2)
    anyport = cfg(server(ports=(), protocol=None), targets=NAT2)
    per_port = cfg(server(sessionid=SessionKey.SRC_PORT), targets=DSR2)
    short = cfg(server(timeout=30), targets=DSR2)
    none_up = lab_environment(dsr, health={1: TargetState.DOWN, 2: TargetState.DOWN})
    return [
        simple("DOWN target: its session moves on the next packet", dsr,
               [dsr_step(1, SECOND), dsr_step(2, 2 * SECOND, changes=t1_down)],
               stats={"session_moved": 1, "session_new": 1}),
        simple("NO_NEW (quiesced) target keeps its sessions, gets no new ones", dsr,
               [dsr_step(1, SECOND), dsr_step(1, 2 * SECOND, changes=t1_quiet),
                dsr_step(2, 3 * SECOND, src=CLIENT4B)], stats={"session_hit": 1}),
        simple("backup target serves when all primaries are down", backup, [dsr_step(3, SECOND)],
               env=backup_env),
        simple("no target UP: DROP, no_target", dsr, [drops(frame(TCP, CLIENT4, VIP4, 40000, 80))],
               env=none_up, stats={"no_target": 1}),
        simple("session timeout: an idle session expires and is selected anew", short,
               [dsr_step(1, SECOND), dsr_step(1, 30 * SECOND), dsr_step(2, 61 * SECOND)],
               stats={"session_new": 2, "session_hit": 1}),
        simple("multi-port server: one session spans ports 80 and 443 (tcp and udp)", multi,
               [dsr_step(1, SECOND), dsr_step(1, 2 * SECOND, sport=40001, dport=443),
                dsr_step(1, 3 * SECOND, proto=UDP, dport=443)]),
        simple("port range 33000-33999: inside balanced, outside passes", ranged,
               [dsr_step(1, SECOND, dport=33500), passes(frame(TCP, CLIENT4, VIP4, 40000, 34000))]),
        simple("any-port NAT server keeps the client's port; UDP too", anyport,
               [nat_step(1, SECOND, dport=12345), return_step(1, 2 * SECOND, vport=12345),
                nat_step(1, 3 * SECOND, proto=UDP, dport=5353)]),
        simple("sessionid src+port: each connection is its own session", per_port,
               [dsr_step(1, SECOND), dsr_step(2, 2 * SECOND, sport=40001), dsr_step(1, 3 * SECOND)]),
    ]


def _icmp() -> list[Fixture]:
    nat = cfg(server(), targets=(target(1, port=8080), target(2, port=8080)))
    nat_udp = cfg(server(protocol=Protocol.UDP, ports=(PortRange(53, 53),)), targets=NAT2)
    nat6 = cfg(server(vip=VIP6), targets=NAT2_V6)
    dsr = cfg(server(), targets=DSR2)

    def client_side(v6: bool, kind: str, quote_len: int | None, tport: int) -> tuple[bytes, bytes]:
        vip, client, router = (VIP6, CLIENT6, ROUTER6) if v6 else (VIP4, CLIENT4, ROUTER4)
        quoted_in = strip_ethernet(build_l4(TCP, vip, client, 80, 40000, b"reply", ttl=63))
        quoted_out = strip_ethernet(build_l4(TCP, t6(1) if v6 else t4(1), client, tport, 40000, b"reply",
                                             ttl=63))
        ql = quote_len
        frame_in = build_icmp_error(router, vip, quoted_in, kind=kind, quote_len=ql)
        out = build_icmp_error(router, t6(1) if v6 else t4(1), quoted_out, kind=kind, quote_len=ql, ttl=63,
                               src_mac=LB_MAC_2, dst_mac=target_mac(1))
        return frame_in, out

    def target_side(proto: int, v6: bool) -> tuple[bytes, bytes]:
        vip, client = (VIP6, CLIENT6) if v6 else (VIP4, CLIENT4)
        tgt = t6(1) if v6 else t4(1)
        dport = 53 if proto == UDP else 80
        quoted_in = strip_ethernet(build_l4(proto, client, tgt, 40000, dport, b"data", ttl=63))
        quoted_out = strip_ethernet(build_l4(proto, client, vip, 40000, dport, b"data", ttl=63))
        frame_in = build_icmp_error(tgt, client, quoted_in, src_mac=target_mac(1), dst_mac=LB_MAC_2)
        out = build_icmp_error(vip, client, quoted_out, ttl=63, src_mac=LB_MAC_1, dst_mac=ROUTER_MAC)
        return frame_in, out

    a_in, a_out = client_side(False, "frag", None, 8080)
    b_in, b_out = client_side(False, "frag", 28, 8080)
    c_in, c_out = client_side(True, "frag", None, 80)
    d_in, d_out = target_side(UDP, False)
    f_in, f_out = target_side(TCP, True)
    dsr_icmp = build_icmp_error(ROUTER4, VIP4, strip_ethernet(build_l4(TCP, VIP4, CLIENT4, 80, 40000)),
                                kind="frag")
    orphan = build_icmp_error(ROUTER4, VIP4, strip_ethernet(build_l4(TCP, VIP4, CLIENT4B, 80, 40000)),
                              kind="frag")
    return [
        simple("ICMP fragmentation-needed to the VIP about a NAT session: translated to the target", nat,
               [nat_step(1, SECOND, tport=8080), fwd(a_in, a_out, 2 * SECOND)],
               stats={"icmp_translated": 1}),
        simple("ICMP quoting only 8 bytes of TCP: the quoted TCP checksum is left alone", nat,
               [nat_step(1, SECOND, tport=8080), fwd(b_in, b_out, 2 * SECOND)]),
        simple("ICMPv6 packet-too-big to the VIP about a NAT session: translated", nat6,
               [nat_step(1, SECOND, src=CLIENT6, dst=VIP6), fwd(c_in, c_out, 2 * SECOND)]),
        simple("ICMP port unreachable from a NAT target: translated to the client", nat_udp,
               [nat_step(1, SECOND, proto=UDP, dport=53),
                fwd(d_in, d_out, 2 * SECOND, TARGET_IF, CLIENT_IF)]),
        simple("ICMPv6 unreachable from a NAT target: translated to the client", nat6,
               [nat_step(1, SECOND, src=CLIENT6, dst=VIP6),
                fwd(f_in, f_out, 2 * SECOND, TARGET_IF, CLIENT_IF)]),
        simple("ICMP to the VIP about a DSR session: forwarded unchanged to the target", dsr,
               [dsr_step(1, SECOND), fwd(dsr_icmp, dsr_out(dsr_icmp, 1), 2 * SECOND, CLIENT_IF, CLIENT_IF)]),
        simple("ICMP to the VIP about no session: PASS", dsr, [passes(orphan)]),
    ]


def _router_icmp_fixture() -> Fixture:
    """Separate because the target port differs from the client's: the quoted port must become 80."""
    nat = cfg(server(), targets=NAT2)
    quoted_in = strip_ethernet(build_l4(TCP, CLIENT4, t4(1), 40000, 80, b"data", ttl=63))
    quoted_out = strip_ethernet(build_l4(TCP, CLIENT4, VIP4, 40000, 80, b"data", ttl=63))
    frame_in = build_icmp_error("203.0.113.1", CLIENT4, quoted_in, kind="time", src_mac=target_mac(1),
                                dst_mac=LB_MAC_2)
    out = build_icmp_error("203.0.113.1", CLIENT4, quoted_out, kind="time", ttl=63, src_mac=LB_MAC_1,
                           dst_mac=ROUTER_MAC)
    return simple("ICMP time exceeded from a router behind the balancer: translated, router source kept",
                  nat, [nat_step(1, SECOND), fwd(frame_in, out, 2 * SECOND, TARGET_IF, CLIENT_IF)])


def _all() -> tuple[Fixture, ...]:
    groups: list[Callable[[], list[Fixture]]] = [
        _forwarding, _encapsulation, _passing_and_malformed, _methods, _sessions, _icmp,
    ]
    found = [f for group in groups for f in group()]
    found.append(_router_icmp_fixture())
    return tuple(found)


FIXTURES: tuple[Fixture, ...] = _all()

