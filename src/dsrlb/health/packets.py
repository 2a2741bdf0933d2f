"""Codecs for the probe packets (pure): ICMP echo, ARP, and IPv6 neighbour solicitation/advertisement.

Builders return the bytes a socket sends; parsers take what a socket delivers and return None for
anything that is not the answer they look for (probe sockets see other traffic too), never raise.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
ND_OPT_SOURCE_LINKADDR = 1
ARP_REQUEST = 1
ARP_REPLY = 2

_ECHO = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
_ARP = struct.Struct("!HHBBH6s4s6s4s")  # htype, ptype, hlen, plen, op, sha, spa, tha, tpa


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's-complement sum."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_echo_request(ident: int, seq: int, payload: bytes, *, ipv6: bool) -> bytes:
    """An ICMP (or ICMPv6) echo request. For ICMPv6 the checksum is left 0: the kernel fills it in
    for raw and datagram ICMPv6 sockets (it needs the pseudo-header, RFC 4443 §2.3)."""
    if ipv6:
        return _ECHO.pack(ICMP6_ECHO_REQUEST, 0, 0, ident & 0xFFFF, seq & 0xFFFF) + payload
    head = _ECHO.pack(ICMP_ECHO_REQUEST, 0, 0, ident & 0xFFFF, seq & 0xFFFF)
    checksum = inet_checksum(head + payload)
    return _ECHO.pack(ICMP_ECHO_REQUEST, 0, checksum, ident & 0xFFFF, seq & 0xFFFF) + payload


def parse_echo_reply(data: bytes, *, ipv6: bool, ip_header: bool) -> tuple[int, int] | None:
    """(identifier, sequence) of an echo reply, or None. A raw IPv4 socket delivers the IP header
    (`ip_header=True`); IPv6 raw and all datagram ICMP sockets deliver the ICMP message only."""
    if ip_header:
        if len(data) < 20 or data[0] >> 4 != 4:
            return None
        data = data[(data[0] & 0x0F) * 4:]
    if len(data) < _ECHO.size:
        return None
    mtype, code, _sum, ident, seq = _ECHO.unpack_from(data)
    if code != 0 or mtype != (ICMP6_ECHO_REPLY if ipv6 else ICMP_ECHO_REPLY):
        return None
    return ident, seq


def build_arp_request(sender_mac: bytes, sender_ip: IPv4Address, target_ip: IPv4Address) -> bytes:
    """An Ethernet/IPv4 ARP request (RFC 826), the 28-byte payload after the Ethernet header."""
    return _ARP.pack(1, 0x0800, 6, 4, ARP_REQUEST, sender_mac, sender_ip.packed, bytes(6), target_ip.packed)


def parse_arp_reply(data: bytes) -> tuple[IPv4Address, bytes] | None:
    """(sender address, sender MAC) of an Ethernet/IPv4 ARP reply, or None."""
    if len(data) < _ARP.size:
        return None
    htype, ptype, hlen, plen, op, sha, spa, _tha, _tpa = _ARP.unpack_from(data)
    if (htype, ptype, hlen, plen, op) != (1, 0x0800, 6, 4, ARP_REPLY):
        return None
    return IPv4Address(spa), sha


def solicited_node_multicast(address: IPv6Address) -> IPv6Address:
    """ff02::1:ffXX:XXXX for `address` (RFC 4291 §2.7.1): where neighbour solicitations go."""
    return IPv6Address(b"\xff\x02" + bytes(9) + b"\x01\xff" + address.packed[13:])


def build_neighbour_solicitation(target: IPv6Address, source_mac: bytes) -> bytes:
    """An ICMPv6 neighbour solicitation for `target` with our link-layer address (RFC 4861 §4.3:
    the option MUST be included in multicast solicitations from a specified source address).
    Checksum 0: the kernel computes it for raw ICMPv6 sockets."""
    option = struct.pack("!BB6s", ND_OPT_SOURCE_LINKADDR, 1, source_mac)
    return struct.pack("!BBHI16s", ND_NEIGHBOR_SOLICIT, 0, 0, 0, target.packed) + option


def parse_neighbour_advertisement(data: bytes) -> IPv6Address | None:
    """The target address of an ICMPv6 neighbour advertisement (RFC 4861 §4.4), or None."""
    if len(data) < 24 or data[0] != ND_NEIGHBOR_ADVERT or data[1] != 0:
        return None
    return IPv6Address(data[8:24])
