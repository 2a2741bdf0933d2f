"""The DSR and NAT proofs: capture the replies on the client's side and show where they came from.

Under DSR the targets answer the client directly, so on the client's side of the LAN (the router's
LAN interface) every reply from VIP:port carries a target's MAC as Ethernet source, never the
balancer's. An AF_PACKET socket made inside the router's namespace sees exactly that wire.

Under NAT the balancer rewrites the replies: on the client's side every TCP frame to a client comes
from VIP:port (never from a target's own address or port), and the targets saw the clients' real
addresses (each lab target reports the peer it saw; see dsrlb.lab.httpd).
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from types import TracebackType

from dsrlb.lab.topology import IPAddress
from dsrlb.netlink import run_in_netns

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
PACKET_OUTGOING = 4
IPPROTO_TCP = 6


@dataclass(frozen=True)
class ReplyFrame:
    src_mac: str
    src: IPAddress
    src_port: int
    dst: IPAddress | None = None
    dst_port: int = 0


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def parse_tcp_source(frame: bytes) -> ReplyFrame | None:
    """Ethernet source MAC, IP source and TCP source port of a TCP frame; None for anything else."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    offset = 14
    if ethertype == ETH_P_8021Q and len(frame) >= 18:
        ethertype = struct.unpack_from("!H", frame, 16)[0]
        offset = 18
    if ethertype == ETH_P_IP and len(frame) >= offset + 20:
        ihl = (frame[offset] & 0x0F) * 4
        if frame[offset + 9] != IPPROTO_TCP or ihl < 20 or len(frame) < offset + ihl + 4:
            return None
        src: IPAddress = IPv4Address(frame[offset + 12:offset + 16])
        dst: IPAddress = IPv4Address(frame[offset + 16:offset + 20])
        l4 = offset + ihl
    elif ethertype == ETH_P_IPV6 and len(frame) >= offset + 40 + 4:
        if frame[offset + 6] != IPPROTO_TCP:
            return None  # extension headers: not produced by the lab's HTTP servers
        src = IPv6Address(frame[offset + 8:offset + 24])
        dst = IPv6Address(frame[offset + 24:offset + 40])
        l4 = offset + 40
    else:
        return None
    src_port, dst_port = struct.unpack_from("!HH", frame, l4)
    return ReplyFrame(mac_text(frame[6:12]), src, src_port, dst, dst_port)


@dataclass(frozen=True)
class DsrProof:
    """Source MACs of the replies from VIP:ports seen on the capture point."""

    reply_macs: dict[str, int]  # MAC -> frames
    target_macs: dict[str, str]  # MAC -> target name
    balancer_macs: tuple[str, ...]

    @property
    def frames(self) -> int:
        return sum(self.reply_macs.values())

    @property
    def holds(self) -> bool:
        """Replies were seen, all from targets, none from a balancer."""
        return (self.frames > 0 and all(m in self.target_macs for m in self.reply_macs)
                and not any(m in self.balancer_macs for m in self.reply_macs))

    def describe(self) -> str:
        parts = [f"{self.target_macs.get(m, 'BALANCER' if m in self.balancer_macs else 'unknown')} "
                 f"({m}): {n}" for m, n in sorted(self.reply_macs.items())]
        verdict = "DSR holds" if self.holds else "DSR NOT shown"
        return f"{verdict}: {self.frames} reply frames; " + (", ".join(parts) or "none seen")


def endpoint(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


@dataclass(frozen=True)
class NatProof:
    """Where the TCP frames to the clients came from on the capture point, and whom the targets saw."""

    reply_sources: dict[str, int]  # "address:port" -> frames to a client address
    service: tuple[str, ...]  # the VIP:port endpoints replies must come from
    peers: dict[str, int]  # client address as the targets saw it -> replies
    clients: tuple[str, ...]  # the client addresses the traffic used

    @property
    def frames(self) -> int:
        return sum(self.reply_sources.values())

    @property
    def replies_from_vip(self) -> bool:
        return self.frames > 0 and all(source in self.service for source in self.reply_sources)

    @property
    def clients_seen(self) -> bool:
        return bool(self.peers) and all(peer in self.clients for peer in self.peers)

    @property
    def holds(self) -> bool:
        """Replies were seen, all from VIP:port; every target saw a real client address."""
        return self.replies_from_vip and self.clients_seen

    def describe(self) -> str:
        verdict = "NAT holds" if self.holds else "NAT NOT shown"
        sources = ", ".join(f"{s}: {n}" for s, n in sorted(self.reply_sources.items())) or "none seen"
        strangers = sorted(set(self.peers) - set(self.clients))
        seen = (f"targets saw {len(self.peers)} client address(es), all real" if self.clients_seen
                else f"targets saw {', '.join(strangers) or 'no address'} instead of the clients")
        return f"{verdict}: {self.frames} frames to the clients from {sources}; {seen}"


class ReplyCapture:
    """Counts frames from `service` (address, ports) and frames to `clients` arriving at netns:ifname,
    in a thread."""

    def __init__(self, netns: str, ifname: str, service: IPAddress | str, ports: tuple[int, ...],
                 clients: tuple[IPAddress, ...] = ()) -> None:
        self.service = ip_address(service)
        self.ports = ports
        self.clients = frozenset(clients)
        self._macs: Counter[str] = Counter()
        self._sources: Counter[str] = Counter()
        self._stop = threading.Event()

        def make() -> socket.socket:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sock.bind((ifname, ETH_P_ALL))
            sock.setblocking(False)
            return sock

        self._sock = run_in_netns(netns, make)
        self._thread = threading.Thread(target=self._run, name="dsrlb-capture", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.1)
            if not ready:
                continue
            try:
                frame, addr = self._sock.recvfrom(65535)
            except BlockingIOError:
                continue
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            reply = parse_tcp_source(frame)
            if reply is None:
                continue
            if reply.src == self.service and reply.src_port in self.ports:
                self._macs[reply.src_mac] += 1
            if reply.dst in self.clients:
                self._sources[endpoint(reply.src, reply.src_port)] += 1

    def __enter__(self) -> ReplyCapture:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sock.close()

    def proof(self, target_macs: dict[str, str], balancer_macs: tuple[str, ...]) -> DsrProof:
        return DsrProof(dict(self._macs), dict(target_macs), balancer_macs)

    def nat_proof(self, peers: dict[str, int]) -> NatProof:
        """`peers`: the client addresses the targets reported (TrafficReport.peers)."""
        service = tuple(endpoint(self.service, port) for port in self.ports)
        return NatProof(dict(self._sources), service, dict(peers), tuple(sorted(map(str, self.clients))))
