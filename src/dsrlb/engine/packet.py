"""Frame parsing for the data path, and frame builders for fixtures, tests and tools.

`parse_frame` is on the hot path: it reads a frame (bytes or bytearray) with `struct` and returns
one flat `FrameView` of offsets and a few fields, following docs/datapath.md §1 step by step. It
never raises on any input: what it cannot make sense of gets a status instead.

The builders (`ethernet`, `ipv4`, `ipv6`, `tcp`, `udp`, `build_tcp4` ...) compute every checksum in
full (RFC 1071), independently of the incremental arithmetic the data path uses, so a fixture's
expected frame is an independent statement of the right answer.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from dsrlb.engine.checksum import internet_checksum, l4_checksum

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPV6_EXT_HOP_BY_HOP = 0
IPV6_EXT_ROUTING = 43
IPV6_EXT_FRAGMENT = 44
IPV6_EXT_DEST_OPTS = 60
IPV6_WALKED_EXT = (IPV6_EXT_HOP_BY_HOP, IPV6_EXT_ROUTING, IPV6_EXT_DEST_OPTS)
IPV6_MAX_EXT_HEADERS = 4

# FrameView.status
ST_OK = 0  # IP with a complete TCP/UDP header, or another protocol (l4 points at it)
ST_NOT_IP = 1  # not IPv4/IPv6: the kernel's
ST_MALFORMED = 2  # too short or inconsistent; `dst` is set when the destination could be read
ST_FRAGMENT = 3
ST_UNWALKED = 4  # IPv6 with extension headers we do not walk (or too many): not balanced

_H = struct.Struct("!H")
_HH = struct.Struct("!HH")

IPAddress = IPv4Address | IPv6Address


class FrameView:
    """Offsets into a frame; all positions are absolute (from the start of the Ethernet header)."""

    __slots__ = ("dst", "ip_end", "l3", "l4", "proto", "src", "status", "version")

    def __init__(self, status: int) -> None:
        self.status = status
        self.l3 = 0
        self.l4 = 0
        self.ip_end = 0
        self.version = 0
        self.proto = -1
        self.src = b""
        self.dst: bytes | None = None


def parse_frame(frame: bytes | bytearray) -> FrameView:
    """Parse Ethernet (one optional VLAN tag), IPv4 or IPv6 (+ extension headers), and check L4 length."""
    n = len(frame)
    if n < 14:
        return FrameView(ST_MALFORMED)
    ethertype = (frame[12] << 8) | frame[13]
    l3 = 14
    if ethertype in (ETH_P_8021Q, ETH_P_8021AD):
        if n < 18:
            return FrameView(ST_MALFORMED)
        ethertype = (frame[16] << 8) | frame[17]
        l3 = 18
    if ethertype == ETH_P_IP:
        return _parse_ipv4(frame, l3, n)
    if ethertype == ETH_P_IPV6:
        return _parse_ipv6(frame, l3, n)
    return FrameView(ST_NOT_IP)


def _malformed(dst: bytes | None) -> FrameView:
    view = FrameView(ST_MALFORMED)
    view.dst = dst
    return view


def _parse_ipv4(frame: bytes | bytearray, l3: int, n: int) -> FrameView:
    if n < l3 + 20:
        return _malformed(None)
    dst = bytes(frame[l3 + 16 : l3 + 20])
    first = frame[l3]
    ihl = (first & 0x0F) * 4
    total = (frame[l3 + 2] << 8) | frame[l3 + 3]
    if first >> 4 != 4 or ihl < 20 or total < ihl or l3 + total > n:
        return _malformed(dst)
    view = FrameView(ST_OK)
    view.version = 4
    view.l3 = l3
    view.l4 = l3 + ihl
    view.ip_end = l3 + total
    view.src = bytes(frame[l3 + 12 : l3 + 16])
    view.dst = dst
    view.proto = frame[l3 + 9]
    if ((frame[l3 + 6] << 8) | frame[l3 + 7]) & 0x3FFF:  # MF flag or a fragment offset
        view.status = ST_FRAGMENT
        return view
    return _check_l4(view)


def _parse_ipv6(frame: bytes | bytearray, l3: int, n: int) -> FrameView:
    if n < l3 + 40:
        return _malformed(None)
    dst = bytes(frame[l3 + 24 : l3 + 40])
    ip_end = l3 + 40 + ((frame[l3 + 4] << 8) | frame[l3 + 5])
    if frame[l3] >> 4 != 6 or ip_end > n:
        return _malformed(dst)
    next_header = frame[l3 + 6]
    offset = l3 + 40
    for _ in range(IPV6_MAX_EXT_HEADERS):
        if next_header not in IPV6_WALKED_EXT:
            break
        if offset + 8 > ip_end:
            return _malformed(dst)
        next_header, ext_len = frame[offset], frame[offset + 1]
        offset += (ext_len + 1) * 8
        if offset > ip_end:
            return _malformed(dst)
    view = FrameView(ST_OK)
    view.version = 6
    view.l3 = l3
    view.l4 = offset
    view.ip_end = ip_end
    view.src = bytes(frame[l3 + 8 : l3 + 24])
    view.dst = dst
    view.proto = next_header
    if next_header == IPV6_EXT_FRAGMENT:
        view.status = ST_FRAGMENT
        return view
    if next_header in IPV6_WALKED_EXT:
        view.status = ST_UNWALKED
        return view
    return _check_l4(view)


def _check_l4(view: FrameView) -> FrameView:
    need = 20 if view.proto == IPPROTO_TCP else 8 if view.proto == IPPROTO_UDP else 0
    if view.l4 + need > view.ip_end:
        view.status = ST_MALFORMED
    return view


# --- builders ------------------------------------------------------------------------------------------


def mac(text: str) -> bytes:
    """'02:00:00:00:00:01' -> 6 bytes."""
    return bytes(int(part, 16) for part in text.split(":"))


def ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes, vlan: int | None = None) -> bytes:
    """An Ethernet II frame, with one 802.1Q tag (TCI = vlan) if `vlan` is given."""
    if vlan is None:
        return dst + src + _H.pack(ethertype) + payload
    return dst + src + _HH.pack(ETH_P_8021Q, vlan) + _H.pack(ethertype) + payload


def ipv4(
    src: IPv4Address, dst: IPv4Address, protocol: int, payload: bytes, *, ttl: int = 64,
    ident: int = 0x1234, flags_fragment: int = 0x4000, options: bytes = b"", tos: int = 0,
    checksum: int | None = None,
) -> bytes:
    """An IPv4 packet; `flags_fragment` is the 16-bit flags+offset field (default: DF)."""
    if len(options) % 4:
        raise ValueError("IPv4 options must be padded to 4 bytes")
    ihl = 5 + len(options) // 4
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, tos, ihl * 4 + len(payload), ident, flags_fragment, ttl,
        protocol, 0, src.packed, dst.packed,
    ) + options
    value = internet_checksum(header) if checksum is None else checksum
    return header[:10] + _H.pack(value) + header[12:] + payload


def ipv6(
    src: IPv6Address, dst: IPv6Address, next_header: int, payload: bytes, *, hop_limit: int = 64,
    extension_headers: tuple[tuple[int, bytes], ...] = (), flow_label: int = 0,
) -> bytes:
    """An IPv6 packet. `extension_headers` are (type, body) in order; each body is padded so that the
    header is a multiple of 8 bytes, and the chain ends with `next_header`."""
    chain = b""
    types = [t for t, _ in extension_headers] + [next_header]
    for i, (_, body) in enumerate(extension_headers):
        raw = bytes(2) + body
        raw += bytes(-len(raw) % 8)
        chain += bytes((types[i + 1], len(raw) // 8 - 1)) + raw[2:]
    first = types[0]
    body = chain + payload
    return struct.pack(
        "!IHBB16s16s", (6 << 28) | flow_label, len(body), first, hop_limit, src.packed, dst.packed
    ) + body


def tcp(
    src: IPAddress, dst: IPAddress, sport: int, dport: int, payload: bytes = b"", *,
    seq: int = 1000, ack: int = 0, flags: int = 0x02, window: int = 65535, options: bytes = b"",
) -> bytes:
    """A TCP segment with its checksum computed over the pseudo-header of src/dst (flags: SYN)."""
    if len(options) % 4:
        raise ValueError("TCP options must be padded to 4 bytes")
    offset = (5 + len(options) // 4) << 12
    header = struct.pack("!HHIIHHHH", sport, dport, seq, ack, offset | flags, window, 0, 0) + options
    segment = header + payload
    value = l4_checksum(src, dst, IPPROTO_TCP, segment)
    return segment[:16] + _H.pack(value) + segment[18:]


def udp(
    src: IPAddress, dst: IPAddress, sport: int, dport: int, payload: bytes = b"", *,
    checksum: int | None = None,
) -> bytes:
    """A UDP datagram; checksum None computes it (0 sent as 0xFFFF), an int is written as given."""
    segment = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if checksum is None:
        checksum = l4_checksum(src, dst, IPPROTO_UDP, segment) or 0xFFFF
    return segment[:6] + _H.pack(checksum) + segment[8:]


def icmp4(icmp_type: int, code: int, body: bytes, rest: int = 0) -> bytes:
    """An ICMPv4 message (`rest` is the 4-byte field after the checksum: id/seq, MTU, unused)."""
    message = struct.pack("!BBHI", icmp_type, code, 0, rest) + body
    return message[:2] + _H.pack(internet_checksum(message)) + message[4:]


def icmp6(src: IPv6Address, dst: IPv6Address, icmp_type: int, code: int, body: bytes, rest: int = 0) -> bytes:
    """An ICMPv6 message with the pseudo-header checksum (RFC 4443 §2.3)."""
    message = struct.pack("!BBHI", icmp_type, code, 0, rest) + body
    return message[:2] + _H.pack(l4_checksum(src, dst, IPPROTO_ICMPV6, message)) + message[4:]


def _addr(value: str | IPAddress) -> IPAddress:
    return ip_address(value) if isinstance(value, str) else value


DEFAULT_SRC_MAC = mac("02:00:00:00:00:c1")  # the client side's router
DEFAULT_DST_MAC = mac("02:00:00:00:00:b1")  # the balancer


def build_l4(
    protocol: int, src: str | IPAddress, dst: str | IPAddress, sport: int, dport: int,
    payload: bytes = b"", *, src_mac: bytes = DEFAULT_SRC_MAC, dst_mac: bytes = DEFAULT_DST_MAC,
    ttl: int = 64, vlan: int | None = None, options: bytes = b"", flags_fragment: int = 0x4000,
    extension_headers: tuple[tuple[int, bytes], ...] = (), udp_checksum: int | None = None,
    tcp_flags: int = 0x02,
) -> bytes:
    """A whole TCP or UDP frame over IPv4 or IPv6 (chosen by the address family)."""
    s, d = _addr(src), _addr(dst)
    if protocol == IPPROTO_TCP:
        segment = tcp(s, d, sport, dport, payload, flags=tcp_flags)
    else:
        segment = udp(s, d, sport, dport, payload, checksum=udp_checksum)
    if isinstance(s, IPv4Address) and isinstance(d, IPv4Address):
        packet = ipv4(s, d, protocol, segment, ttl=ttl, options=options, flags_fragment=flags_fragment)
        return ethernet(dst_mac, src_mac, ETH_P_IP, packet, vlan)
    if isinstance(s, IPv6Address) and isinstance(d, IPv6Address):
        packet = ipv6(s, d, protocol, segment, hop_limit=ttl, extension_headers=extension_headers)
        return ethernet(dst_mac, src_mac, ETH_P_IPV6, packet, vlan)
    raise ValueError("source and destination must be of one address family")


def build_tcp4(src: str, dst: str, sport: int, dport: int, payload: bytes = b"", **kw: Any) -> bytes:
    return build_l4(IPPROTO_TCP, IPv4Address(src), IPv4Address(dst), sport, dport, payload, **kw)


def build_udp4(src: str, dst: str, sport: int, dport: int, payload: bytes = b"", **kw: Any) -> bytes:
    return build_l4(IPPROTO_UDP, IPv4Address(src), IPv4Address(dst), sport, dport, payload, **kw)


def build_tcp6(src: str, dst: str, sport: int, dport: int, payload: bytes = b"", **kw: Any) -> bytes:
    return build_l4(IPPROTO_TCP, IPv6Address(src), IPv6Address(dst), sport, dport, payload, **kw)


def build_udp6(src: str, dst: str, sport: int, dport: int, payload: bytes = b"", **kw: Any) -> bytes:
    return build_l4(IPPROTO_UDP, IPv6Address(src), IPv6Address(dst), sport, dport, payload, **kw)


def strip_ethernet(frame: bytes) -> bytes:
    """The IP packet inside a frame built by these builders (for quoting in ICMP errors)."""
    ethertype = _H.unpack_from(frame, 12)[0]
    return frame[18:] if ethertype in (ETH_P_8021Q, ETH_P_8021AD) else frame[14:]


def build_icmp_error(
    outer_src: str | IPAddress, outer_dst: str | IPAddress, quoted_packet: bytes, *, kind: str = "unreach",
    src_mac: bytes = DEFAULT_SRC_MAC, dst_mac: bytes = DEFAULT_DST_MAC, ttl: int = 64,
    quote_len: int | None = None, mtu: int = 1400,
) -> bytes:
    """An ICMP(v6) error frame quoting `quoted_packet` (truncated to `quote_len` bytes).

    kind: "unreach" (port unreachable), "frag" (v4 fragmentation needed / v6 packet too big, with
    `mtu`), "time" (time exceeded in transit).
    """
    s, d = _addr(outer_src), _addr(outer_dst)
    quoted = quoted_packet if quote_len is None else quoted_packet[:quote_len]
    if isinstance(s, IPv4Address) and isinstance(d, IPv4Address):
        icmp_type, code, rest = {"unreach": (3, 3, 0), "frag": (3, 4, mtu & 0xFFFF), "time": (11, 0, 0)}[kind]
        message = icmp4(icmp_type, code, quoted, rest)
        return ethernet(dst_mac, src_mac, ETH_P_IP, ipv4(s, d, IPPROTO_ICMP, message, ttl=ttl))
    if isinstance(s, IPv6Address) and isinstance(d, IPv6Address):
        icmp_type, code, rest = {"unreach": (1, 4, 0), "frag": (2, 0, mtu), "time": (3, 0, 0)}[kind]
        message = icmp6(s, d, icmp_type, code, quoted, rest)
        return ethernet(dst_mac, src_mac, ETH_P_IPV6, ipv6(s, d, IPPROTO_ICMPV6, message, hop_limit=ttl))
    raise ValueError("source and destination must be of one address family")


def build_echo(
    src: str | IPAddress, dst: str | IPAddress, *, src_mac: bytes = DEFAULT_SRC_MAC,
    dst_mac: bytes = DEFAULT_DST_MAC, payload: bytes = b"ping",
) -> bytes:
    """An ICMP(v6) echo request frame."""
    s, d = _addr(src), _addr(dst)
    if isinstance(s, IPv4Address) and isinstance(d, IPv4Address):
        packet = ipv4(s, d, IPPROTO_ICMP, icmp4(8, 0, payload, 0x00010001))
        return ethernet(dst_mac, src_mac, ETH_P_IP, packet)
    if isinstance(s, IPv6Address) and isinstance(d, IPv6Address):
        packet = ipv6(s, d, IPPROTO_ICMPV6, icmp6(s, d, 128, 0, payload, 0x00010001))
        return ethernet(dst_mac, src_mac, ETH_P_IPV6, packet)
    raise ValueError("source and destination must be of one address family")


def build_arp_request(
    sender_mac: bytes, sender: str, target: str, *, dst_mac: bytes = b"\xff" * 6
) -> bytes:
    """An ARP who-has request frame (RFC 826)."""
    body = struct.pack(
        "!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, sender_mac, IPv4Address(sender).packed, bytes(6),
        IPv4Address(target).packed,
    )
    return ethernet(dst_mac, sender_mac, ETH_P_ARP, body)


def with_macs(frame: bytes, dst_mac: bytes, src_mac: bytes) -> bytes:
    """`frame` with its Ethernet addresses replaced (what DSR does)."""
    return dst_mac + src_mac + frame[12:]
