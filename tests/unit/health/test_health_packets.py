"""Probe packet codecs: known layouts, checksums, and parsers that never raise on junk."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import given
from hypothesis import strategies as st

from dsrlb.health.packets import (
    build_arp_request,
    build_echo_request,
    build_neighbour_solicitation,
    inet_checksum,
    parse_arp_reply,
    parse_echo_reply,
    parse_neighbour_advertisement,
    solicited_node_multicast,
)
from dsrlb.health.probes import ProbeTarget, substitute_macros, unescape

MAC = bytes.fromhex("020000000001")


def test_echo_request_checksum_and_reply_parsing() -> None:
    req = build_echo_request(0x1234, 7, b"abc", ipv6=False)
    assert req[0] == 8 and inet_checksum(req) == 0  # a correct checksum sums to zero
    reply = bytes([0]) + req[1:]
    ip_header = bytes([0x45]) + bytes(19)
    assert parse_echo_reply(ip_header + reply, ipv6=False, ip_header=True) == (0x1234, 7)
    assert parse_echo_reply(req, ipv6=False, ip_header=False) is None  # a request is not a reply
    v6 = build_echo_request(1, 2, b"", ipv6=True)
    assert v6[0] == 128 and parse_echo_reply(bytes([129]) + v6[1:], ipv6=True, ip_header=False) == (1, 2)


def test_arp_and_neighbour_discovery() -> None:
    req = build_arp_request(MAC, IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2"))
    assert len(req) == 28 and req[6:8] == b"\x00\x01"
    reply = req[:7] + b"\x02" + MAC + IPv4Address("192.0.2.2").packed + req[18:]
    assert parse_arp_reply(reply) == (IPv4Address("192.0.2.2"), MAC)
    assert parse_arp_reply(req) is None
    target = IPv6Address("2001:db8::2")
    assert solicited_node_multicast(target) == IPv6Address("ff02::1:ff00:2")
    ns = build_neighbour_solicitation(target, MAC)
    assert ns[0] == 135 and ns[8:24] == target.packed and ns[24:26] == b"\x01\x01" and ns[26:] == MAC
    na = bytes([136]) + ns[1:]
    assert parse_neighbour_advertisement(na) == target
    assert parse_neighbour_advertisement(ns) is None


@given(st.binary(max_size=100))
def test_parsers_never_raise(data: bytes) -> None:
    parse_echo_reply(data, ipv6=False, ip_header=True)
    parse_echo_reply(data, ipv6=True, ip_header=False)
    parse_arp_reply(data)
    parse_neighbour_advertisement(data)


def test_macros_and_escapes() -> None:
    t4 = ProbeTarget(IPv4Address("192.0.2.2"), 80)
    t6 = ProbeTarget(IPv6Address("2001:db8::2"), None)
    cmd = "check -p $port$ $ipaddr$ [$ipaddr6$]"
    assert substitute_macros(cmd, t4) == "check -p 80 192.0.2.2 []"
    assert substitute_macros(cmd, t6) == "check -p  2001:db8::2 [2001:db8::2]"
    assert unescape(r"GET / HTTP/1.0\r\n\r\n") == "GET / HTTP/1.0\r\n\r\n"
    assert unescape(r"a\x41\\q\z") == "aA\\q\\z"
