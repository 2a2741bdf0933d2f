"""ICMP and ICMPv6 errors about balanced flows (docs/datapath.md §5): translated or forwarded.

Path-MTU discovery and quick failure reporting need the ICMP errors that routers and hosts send about
a flow to reach the host that has the flow's socket. For a NAT flow that means rewriting the outer
address, the quoted packet's addresses and ports, and every checksum involved, in the exact order
and with the exact old/new words docs/datapath.md §5 lists (the XDP program does the same).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsrlb.engine.checksum import update_checksum_field, update_udp_checksum_field
from dsrlb.engine.dataplane import Result
from dsrlb.engine.packet import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, FrameView

if TYPE_CHECKING:
    from dsrlb.engine.reference import ReferenceDataplane

ICMP4_ERRORS = frozenset({3, 11})  # destination unreachable (incl. fragmentation needed), time exceeded
ICMP6_ERRORS = frozenset({1, 2, 3})  # destination unreachable, packet too big, time exceeded


class QuotedPacket:
    """Offsets of the packet quoted in an ICMP error."""

    __slots__ = ("dport", "l3", "l4", "proto", "sport", "version")

    def __init__(self, version: int, l3: int, l4: int, proto: int, sport: int, dport: int) -> None:
        self.version = version
        self.l3 = l3
        self.l4 = l4
        self.proto = proto
        self.sport = sport
        self.dport = dport

    @property
    def src_at(self) -> int:
        return self.l3 + (12 if self.version == 4 else 8)

    @property
    def dst_at(self) -> int:
        return self.l3 + (16 if self.version == 4 else 24)

    @property
    def addr_len(self) -> int:
        return 4 if self.version == 4 else 16


def parse_quoted(frame: bytes | bytearray, view: FrameView) -> QuotedPacket | None:
    """The quoted TCP/UDP packet of an ICMP error we translate, or None (not an error, too short ...)."""
    icmp, end = view.l4, view.ip_end
    if icmp + 8 > end:
        return None
    errors = ICMP4_ERRORS if view.proto == IPPROTO_ICMP else ICMP6_ERRORS
    if frame[icmp] not in errors:
        return None
    q = icmp + 8
    if view.version == 4:
        if q + 20 > end or frame[q] >> 4 != 4:
            return None
        ihl = (frame[q] & 0x0F) * 4
        proto, l4 = frame[q + 9], q + ihl
        if ihl < 20:
            return None
    else:
        if q + 40 > end or frame[q] >> 4 != 6:
            return None
        proto, l4 = frame[q + 6], q + 40
    if proto not in (IPPROTO_TCP, IPPROTO_UDP) or l4 + 8 > end:
        return None
    sport = (frame[l4] << 8) | frame[l4 + 1]
    dport = (frame[l4 + 2] << 8) | frame[l4 + 3]
    return QuotedPacket(view.version, q, l4, proto, sport, dport)


class IcmpTranslator:
    """The ICMP part of the reference path; it reads the dataplane's tables, never changes them."""

    def __init__(self, dataplane: ReferenceDataplane) -> None:
        self._dp = dataplane

    def translate(self, frame: bytes, view: FrameView, ingress_ifindex: int, now_ns: int) -> Result | None:
        """The result for an ICMP error about a session, or None: the caller PASSes the frame."""
        quoted = parse_quoted(frame, view)
        if quoted is None or view.dst is None:
            return None
        dp = self._dp
        outer_dst = view.dst
        q_src = bytes(frame[quoted.src_at : quoted.src_at + quoted.addr_len])
        q_dst = bytes(frame[quoted.dst_at : quoted.dst_at + quoted.addr_len])
        if q_src != outer_dst:
            return None  # an error about a packet that was not sent to where the error goes
        if outer_dst in dp._vips:
            return self._towards_target(frame, view, quoted, q_src, q_dst, ingress_ifindex, now_ns)
        if outer_dst in dp._local:
            return None
        return self._towards_client(frame, view, quoted, q_dst, ingress_ifindex, now_ns)

    def _towards_target(
        self, frame: bytes, view: FrameView, quoted: QuotedPacket, vip: bytes, client: bytes,
        ingress_ifindex: int, now_ns: int,
    ) -> Result | None:
        dp = self._dp
        service = dp._keys.get((vip, quoted.proto, quoted.sport))
        if service is None:
            service = dp._keys.get((vip, quoted.proto, 0))
            if service is None:
                return None
        session = dp._sessions.get((service.id, client, quoted.dport if service.per_port else 0))
        if session is None or now_ns - session[1] > service.timeout_ns:
            return None
        target = dp._targets.get(session[0])
        if target is None or not target.usable or target.next_hop is None:
            return None
        if target.dsr:
            dp.counters["icmp_translated"] += 1
            return dp._send(frame, target.next_hop, ingress_ifindex)
        new_sport = quoted.sport if target.port is None else target.port
        buf = _rewrite(
            frame, view, quoted, quoted.src_at, target.address, new_sport, quoted.dport,
            view.l3 + (16 if view.version == 4 else 24), target.address,
        )
        if buf is None:
            return None
        dp.counters["icmp_translated"] += 1
        return dp._send(buf, target.next_hop, ingress_ifindex)

    def _towards_client(
        self, frame: bytes, view: FrameView, quoted: QuotedPacket, target_addr: bytes,
        ingress_ifindex: int, now_ns: int,
    ) -> Result | None:
        dp = self._dp
        client = view.dst
        assert client is not None
        returns = dp._returns
        entry = returns.get((quoted.proto, target_addr, quoted.dport, client, quoted.sport))
        if entry is None:
            entry = returns.get((quoted.proto, target_addr, quoted.dport, client, 0))
        if entry is None or now_ns - entry.last_seen_ns > entry.timeout_ns:
            return None
        next_hop = dp.route(client)
        if next_hop is None:
            dp.counters["no_route"] += 1
            return None
        outer_src_at = view.l3 + (12 if view.version == 4 else 8)
        outer_src = bytes(frame[outer_src_at : outer_src_at + quoted.addr_len])
        new_outer = entry.vip if outer_src == target_addr else outer_src
        buf = _rewrite(
            frame, view, quoted, quoted.dst_at, entry.vip, quoted.sport, entry.vip_port,
            outer_src_at, new_outer,
        )
        if buf is None:
            return None
        dp.counters["icmp_translated"] += 1
        return dp._send(buf, next_hop, ingress_ifindex)


def _rewrite(
    frame: bytes, view: FrameView, quoted: QuotedPacket, q_addr_at: int, new_q_addr: bytes,
    new_sport: int, new_dport: int, outer_addr_at: int, new_outer_addr: bytes,
) -> bytearray | None:
    """Steps 1-4 of §5: quoted L4 checksum, quoted IPv4 checksum, ICMP checksum, outer header.

    Returns None when the outer TTL / hop limit is 0 or 1 (the kernel answers, PASS).
    """
    buf = bytearray(frame)
    l3, icmp, end = view.l3, view.l4, view.ip_end
    v4 = view.version == 4
    ttl_at = l3 + 8 if v4 else l3 + 7
    ttl = buf[ttl_at]
    if ttl <= 1:
        return None
    alen = quoted.addr_len
    ql4 = quoted.l4
    old_q_addr = bytes(buf[q_addr_at : q_addr_at + alen])
    old_ports = bytes(buf[ql4 : ql4 + 4])
    new_ports = bytes((new_sport >> 8, new_sport & 0xFF, new_dport >> 8, new_dport & 0xFF))
    old_outer = bytes(buf[outer_addr_at : outer_addr_at + alen])
    old_q_head = bytes(buf[quoted.l3 + 8 : quoted.l3 + 12]) if v4 else b""
    # 1. the quoted L4 checksum, when its word is inside the frame
    word_at = ql4 + 16 if quoted.proto == IPPROTO_TCP else ql4 + 4
    has_l4_word = word_at + 4 <= end
    old_word = bytes(buf[word_at : word_at + 4]) if has_l4_word else b""
    if has_l4_word:
        if quoted.proto == IPPROTO_TCP:
            update_checksum_field(buf, ql4 + 16, old_q_addr + old_ports, new_q_addr + new_ports)
        else:
            update_udp_checksum_field(buf, ql4 + 6, old_q_addr + old_ports, new_q_addr + new_ports)
    new_word = bytes(buf[word_at : word_at + 4]) if has_l4_word else b""
    buf[q_addr_at : q_addr_at + alen] = new_q_addr
    buf[ql4 : ql4 + 4] = new_ports
    # 2. the quoted IPv4 header checksum
    if v4:
        update_checksum_field(buf, quoted.l3 + 10, old_q_addr, new_q_addr)
    new_q_head = bytes(buf[quoted.l3 + 8 : quoted.l3 + 12]) if v4 else b""
    # 3. the ICMP checksum (ICMPv6: the outer address is in its pseudo-header)
    if v4:
        old_words = old_q_head + old_q_addr + old_ports + old_word
        new_words = new_q_head + new_q_addr + new_ports + new_word
    else:
        old_words = old_outer + old_q_addr + old_ports + old_word
        new_words = new_outer_addr + new_q_addr + new_ports + new_word
    update_checksum_field(buf, icmp + 2, old_words, new_words)
    # 4. the outer header
    buf[outer_addr_at : outer_addr_at + alen] = new_outer_addr
    if v4:
        proto = buf[l3 + 9]
        old_head = old_outer + bytes((ttl, proto, 0, 0))
        update_checksum_field(buf, l3 + 10, old_head, new_outer_addr + bytes((ttl - 1, proto, 0, 0)))
    buf[ttl_at] = ttl - 1
    return buf
