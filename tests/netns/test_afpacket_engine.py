"""The AF_PACKET engine on real veths in namespaces: ring, socket filter, restore, bounded bursts.

Wiring (a lab of three namespaces): sender `g` eth0 <-> eth0 balancer `b` eth1 <-> eth0 sink `s`.
The engine runs on b's two interfaces over the reference data path with a DSR service on
192.0.2.10 / 2001:db8::10 whose target's next hop is the sink. Frames are written raw into g's eth0;
what the data path saw is recorded by a thin wrapper that hands every frame on to the reference
(the engine under test is real, so is the data path), and what left is read on s's eth0.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from dsrlb.afpacket.engine import AfPacketEngine
from dsrlb.afpacket.sockfilter import BalancedAddresses, attach, build_program, install
from dsrlb.engine import checksum
from dsrlb.engine.dataplane import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    Change,
    NextHop,
    Result,
    ServiceKey,
    ServiceSpec,
    SetTable,
    TargetSpec,
    TargetState,
    UpsertService,
    UpsertTarget,
)
from dsrlb.engine.packet import build_l4, ethernet, ipv4, ipv6, mac, parse_frame
from dsrlb.engine.reference import ReferenceDataplane
from dsrlb.lab import Lab
from dsrlb.model import Method, ReturnMatch, SessionKey
from dsrlb.netlink import run_in_netns

pytestmark = pytest.mark.root

VIP4, VIP6 = "192.0.2.10", "2001:db8::10"
NAT4, NAT6 = "198.51.100.20", "2001:db8:1::20"
CLIENT4, CLIENT6 = "203.0.113.7", "2001:db8:c::7"
OTHER4, OTHER6 = "192.0.2.99", "2001:db8::99"
SO_RCVBUFFORCE = 33
WAIT = 10.0  # upper bound for frames to come through; never reached when the engine works


class RecordingDataplane(ReferenceDataplane):
    """The reference data path, remembering the frames it was given (in order)."""

    def __init__(self) -> None:
        super().__init__(rand32=lambda: 0)
        self.seen: list[bytes] = []
        self.arrived = threading.Condition()

    def run(self, frame: bytes, ingress_ifindex: int, now_ns: int) -> Result:
        with self.arrived:
            self.seen.append(bytes(frame))
            self.arrived.notify_all()
        return super().run(frame, ingress_ifindex, now_ns)

    def wait_for(self, marker: bytes) -> list[bytes]:
        with self.arrived:
            if not self.arrived.wait_for(lambda: any(marker in f for f in self.seen), WAIT):
                raise AssertionError(f"{marker!r} never reached the data path; saw {len(self.seen)} frames")
            return list(self.seen)


@dataclass
class Wire:
    lab: Lab
    dataplane: RecordingDataplane
    engine: AfPacketEngine
    balancer_mac: bytes
    sink_mac: bytes
    changes: list[Change] = field(default_factory=list)

    def send(self, frames: list[bytes]) -> None:
        def body() -> None:
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
                sock.bind(("eth0", 0))
                for frame in frames:
                    while True:
                        try:
                            sock.send(frame)
                            break
                        except BlockingIOError:  # the veth's queue is full: retry, never drop
                            time.sleep(0.001)

        run_in_netns(self.lab.ns("g"), body)

    def to_balancer(self, frame: bytes) -> bytes:
        return self.balancer_mac + frame[6:]


def service_changes(sink_ifindex: int, balancer_mac: bytes, sink_mac: bytes) -> list[Change]:
    hop = NextHop(sink_ifindex, balancer_mac, sink_mac)
    return [
        UpsertTarget(TargetSpec(1, ip_address("192.0.2.100"), None, True, ReturnMatch.DST_PORT, 1,
                                TargetState.UP, hop)),
        UpsertTarget(TargetSpec(2, ip_address("2001:db8::100"), None, True, ReturnMatch.DST_PORT, 1,
                                TargetState.UP, hop)),
        # NAT targets, not in any table: only their addresses matter here (return traffic comes from them)
        UpsertTarget(TargetSpec(3, ip_address(NAT4), 8080, False, ReturnMatch.DST_PORT, 1, TargetState.UP,
                                hop)),
        UpsertTarget(TargetSpec(4, ip_address(NAT6), 8080, False, ReturnMatch.DST_PORT, 1, TargetState.UP,
                                hop)),
        UpsertService(ServiceSpec(1, (ServiceKey(ip_address(VIP4), IPPROTO_TCP, 80),
                                      ServiceKey(ip_address(VIP4), IPPROTO_UDP, 53)),
                                  Method.RR, SessionKey.SRC, 60)),
        UpsertService(ServiceSpec(2, (ServiceKey(ip_address(VIP6), IPPROTO_TCP, 80),), Method.RR,
                                  SessionKey.SRC, 60)),
        SetTable(1, (1,)),
        SetTable(2, (2,)),
    ]


@pytest.fixture
def wire() -> Iterator[Wire]:
    with Lab("afp") as lab:
        for role in ("g", "b", "s"):
            lab.add_node(role)
        lab.veth("g", "eth0", "b", "eth0")
        lab.veth("b", "eth1", "s", "eth0")
        balancer_mac = mac(lab.netlink("b").link("eth0").mac or "")
        sink_link = lab.netlink("s").link("eth0")
        sink_mac = mac(sink_link.mac or "")
        b_eth1 = run_in_netns(lab.ns("b"), lambda: socket.if_nametoindex("eth1"))
        dataplane = RecordingDataplane()
        engine = AfPacketEngine(dataplane, ("eth0", "eth1"))
        run_in_netns(lab.ns("b"), engine.start)  # its sockets and thread live in b
        try:
            yield Wire(lab, dataplane, engine, balancer_mac, sink_mac,
                       service_changes(b_eth1, mac(lab.netlink("b").link("eth1").mac or ""), sink_mac))
        finally:
            engine.stop()


class Sink:
    """A packet socket on the sink's eth0 that keeps every frame arriving there."""

    def __init__(self, wire: Wire) -> None:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
            sock.bind(("eth0", 0x0003))
            sock.settimeout(WAIT)
            return sock

        self.sock = run_in_netns(wire.lab.ns("s"), make)

    def read(self, count: int, marker: bytes = b"") -> list[bytes]:
        frames: list[bytes] = []
        try:
            while len(frames) < count:
                data, address = self.sock.recvfrom(65536)
                if address[2] != socket.PACKET_OUTGOING and marker in data:
                    frames.append(data)
        except TimeoutError:
            pass
        return frames

    def close(self) -> None:
        self.sock.close()


def marked(i: int) -> bytes:
    return b"frame-%06d" % i


def test_unknown_addresses_let_up_all_ip_but_not_arp(wire: Wire) -> None:
    arp_body = b"\x00\x01\x08\x00\x06\x04\x00\x01" + bytes(20)
    arp = ethernet(wire.balancer_mac, mac("02:00:00:00:00:c1"), 0x0806, arp_body)
    other = wire.to_balancer(build_l4(IPPROTO_TCP, CLIENT4, OTHER4, 1, 80, marked(1)))
    sentinel = wire.to_balancer(build_l4(IPPROTO_TCP, CLIENT4, VIP4, 1, 80, marked(2)))
    wire.send([arp, other, sentinel])
    seen = wire.dataplane.wait_for(marked(2))
    assert other in seen and arp not in seen


def test_filter_lets_up_exactly_what_the_data_path_acts_on(wire: Wire) -> None:
    wire.engine.apply(wire.changes)
    assert wire.engine.counters.filter_updates == 1
    hop_by_hop = ((0, b"\x01\x00"),)
    client_mac = mac("02:00:00:00:00:c1")
    echo = b"\x80\x00\x00\x00"  # ICMPv6 echo request (the checksum does not matter to the filter)
    cases: list[tuple[bytes, bool]] = [
        (build_l4(IPPROTO_TCP, CLIENT4, VIP4, 1000, 80, marked(0)), True),
        (build_l4(IPPROTO_UDP, CLIENT4, VIP4, 1000, 9, marked(1)), True),  # a VIP, any port
        (build_l4(IPPROTO_TCP, CLIENT4, OTHER4, 1000, 80, marked(2)), False),
        (build_l4(IPPROTO_TCP, NAT4, CLIENT4, 8080, 1000, marked(3)), True),  # NAT return
        (build_l4(IPPROTO_TCP, "192.0.2.100", CLIENT4, 80, 1000, marked(4)), False),  # DSR target
        (build_l4(IPPROTO_UDP, CLIENT4, VIP4, 1000, 53, marked(5), flags_fragment=0x2000), True),
        (ethernet(wire.balancer_mac, client_mac, 0x0800,
                  ipv4(IPv4Address(CLIENT4), IPv4Address(OTHER4), 1, b"\x08\x00\x00\x00" + marked(6))), True),
        (build_l4(IPPROTO_TCP, CLIENT6, VIP6, 1000, 80, marked(7)), True),
        (build_l4(IPPROTO_TCP, CLIENT6, OTHER6, 1000, 80, marked(8)), False),
        (build_l4(IPPROTO_UDP, CLIENT6, OTHER6, 1000, 80, marked(9)), False),
        (build_l4(IPPROTO_UDP, NAT6, CLIENT6, 8080, 1000, marked(10)), True),
        (build_l4(IPPROTO_TCP, CLIENT6, OTHER6, 1000, 80, marked(11), extension_headers=hop_by_hop), True),
        (ethernet(wire.balancer_mac, client_mac, 0x86DD,
                  ipv6(IPv6Address(CLIENT6), IPv6Address(OTHER6), 58, echo + marked(12))), True),
        (build_l4(IPPROTO_TCP, CLIENT4, VIP4, 1000, 80, marked(13), vlan=7), True),  # tag stripped
        (build_l4(IPPROTO_TCP, CLIENT4, OTHER4, 1000, 80, marked(14), vlan=7), False),
    ]
    # QinQ: the kernel strips the outer 802.1ad tag; the inner 802.1Q tag stays in the data.
    inner = build_l4(IPPROTO_TCP, CLIENT4, VIP4, 1000, 80, marked(15), vlan=8)
    cases.append((inner[:12] + struct.pack("!HH", 0x88A8, 9) + inner[12:], True))
    inner = build_l4(IPPROTO_TCP, CLIENT4, OTHER4, 1000, 80, marked(16), vlan=8)
    cases.append((inner[:12] + struct.pack("!HH", 0x88A8, 9) + inner[12:], False))
    frames = [wire.to_balancer(frame) for frame, _ in cases]
    sentinel = wire.to_balancer(build_l4(IPPROTO_TCP, CLIENT4, VIP4, 1, 80, marked(99)))
    wire.send([*frames, sentinel])
    seen = wire.dataplane.wait_for(marked(99))
    let_up = {i for i in range(len(cases)) if any(marked(i) in f for f in seen)}
    assert let_up == {i for i, (_, up) in enumerate(cases) if up}
    # The data path saw each frame as sent: the stripped VLAN tags are back in place.
    assert frames[13] in seen and frames[15] in seen


def test_filter_program_keeps_every_jump_in_range() -> None:
    many = [ip_address(f"192.0.2.{i}") for i in range(1, 201)] + [ip_address(f"2001:db8::{i:x}")
                                                                   for i in range(1, 151)]
    program = build_program(many, many)
    assert 3000 < len(program) <= 4096
    assert all(insn.jt <= 255 and insn.jf <= 255 for insn in program)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
        attach(sock, build_program(many[:60], many[200:230]))  # the kernel's checker accepts it
        install(sock, program)  # narrow if the kernel takes it, else all IP; never an error
    # Too many addresses for one program: the filter falls back to all IP, never to nothing.
    addresses = BalancedAddresses()
    huge = [ip_address(f"2001:db8::{i:x}") for i in range(1, 1000)]
    addresses.apply([UpsertService(ServiceSpec(1, tuple(ServiceKey(a, IPPROTO_TCP, 80) for a in huge),
                                               Method.RR, SessionKey.SRC, 60))])
    assert addresses.program() == build_program(None)


def test_a_bounded_burst_arrives_whole_and_as_the_reference_makes_it(wire: Wire) -> None:
    wire.engine.apply(wire.changes)
    oracle = ReferenceDataplane(rand32=lambda: 0)
    oracle.apply(wire.changes)
    burst = 3000  # below the ring's 4096 slots, so even a slow engine must lose nothing
    frames = [wire.to_balancer(build_l4(IPPROTO_TCP, f"203.0.113.{1 + i % 8}", VIP4, 1024 + i, 80,
                                        marked(i), tcp_flags=0x10)) for i in range(burst)]
    expected = [oracle.run(frame, 2, 0).frame for frame in frames]
    sink = Sink(wire)
    try:
        wire.send(frames)
        arrived = sink.read(burst, b"frame-")
    finally:
        sink.close()
    assert len(arrived) == burst
    assert sorted(arrived) == sorted(expected)
    stats = wire.engine.stats()
    assert stats["afpacket_ring_drops"] == 0 and stats["afpacket_tx_errors"] == 0
    assert stats["session_hit"] == burst - 8  # eight clients, `sessionid src`


def test_a_partial_checksum_from_a_local_sender_is_completed(wire: Wire) -> None:
    # A UDP socket in g sends over its veth with checksum offload: the frame arrives CHECKSUM_PARTIAL.
    wire.engine.apply(wire.changes)
    wire.lab.address("g", "eth0", "203.0.113.1/24")
    balancer_mac = ":".join(f"{b:02x}" for b in wire.balancer_mac)
    for argv in (["ip", "route", "add", f"{VIP4}/32", "dev", "eth0"],
                 ["ip", "neigh", "replace", VIP4, "lladdr", balancer_mac, "dev", "eth0"]):
        subprocess.run(["ip", "netns", "exec", wire.lab.ns("g"), *argv], check=True)
    sink = Sink(wire)

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"partial-" + bytes(range(200)), (VIP4, 53))

    try:
        run_in_netns(wire.lab.ns("g"), send)
        (frame,) = sink.read(1, b"partial-")
    finally:
        sink.close()
    view = parse_frame(frame)
    src, dst = ip_address(view.src or b""), ip_address(view.dst or b"")
    header = checksum.pseudo_header_sum(src, dst, IPPROTO_UDP, view.ip_end - view.l4)
    assert checksum.verifies(frame[view.l4 : view.ip_end], header)
    assert wire.engine.counters.checksum_completed >= 1
