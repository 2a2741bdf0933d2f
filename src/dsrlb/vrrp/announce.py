"""What a new VRRP master sends so that switches and neighbours learn where the virtual addresses went.

RFC 5798 §6.4.1 / §6.4.2, on becoming master: for IPv4 "broadcast a gratuitous ARP request ... for
each IPv4 address"; for IPv6 "send an unsolicited ND Neighbor Advertisement with the Router Flag (R)
set, the Solicited Flag (S) unset, the Override flag (O) set" and the target link-layer address
option. Switches learn the MAC from the frame's source; hosts that have the address in their
neighbour table replace the old MAC (Linux updates an existing entry from either, and creates none
unless `arp_accept` / `accept_untracked_na` say so).

Both functions open a short-lived socket in the calling thread's network namespace; every failure is
one `AnnounceError` that names the interface and the kernel's reason.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

from dsrlb.engine.packet import build_arp_request

ALL_NODES = IPv6Address("ff02::1")  # RFC 4861 §7.2.6: unsolicited advertisements go to all nodes
ND_NEIGHBOR_ADVERT = 136  # RFC 4861 §4.4
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80000000, 0x40000000, 0x20000000
ND_OPT_TARGET_LLADDR = 2  # RFC 4861 §4.6.1; length 1 = 8 octets with a 6-byte MAC
ND_HOP_LIMIT = 255  # RFC 4861 §7.1.2: receivers drop anything else


class AnnounceError(Exception):
    """A gratuitous ARP or neighbour advertisement could not be sent."""


def _check_mac(mac: bytes) -> None:
    if len(mac) != 6:
        raise AnnounceError(f"a MAC address has 6 bytes, not {len(mac)}")


def send_gratuitous_arp(ifname: str, mac: bytes, addresses: Sequence[IPv4Address], count: int = 1) -> int:
    """`count` rounds of one broadcast ARP request per address, sender = target = the address
    (RFC 5227 §3's ARP announcement; the target hardware address is zero). Frames sent."""
    _check_mac(mac)
    frames = [build_arp_request(mac, str(a), str(a)) for a in addresses]
    sent = 0
    try:
        # protocol 0: a send-only socket, the kernel queues nothing to it
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
            sock.bind((ifname, 0))
            for _ in range(count):
                for frame in frames:
                    sock.send(frame)
                    sent += 1
    except OSError as exc:
        raise AnnounceError(f"gratuitous ARP on {ifname} failed after {sent} frames: "
                            f"{exc.strerror or exc}") from exc
    return sent


def neighbour_advertisement(target: IPv6Address, mac: bytes, *, router: bool = True) -> bytes:
    """An unsolicited, overriding NA for `target` with its link-layer address option (RFC 4861 §4.4),
    checksum zero: raw ICMPv6 sockets fill it in (RFC 3542 §3.1)."""
    flags = NA_OVERRIDE | (NA_ROUTER if router else 0)
    return (struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, flags) + target.packed
            + struct.pack("!BB", ND_OPT_TARGET_LLADDR, 1) + mac)


def send_unsolicited_na(ifname: str, mac: bytes, addresses: Sequence[IPv6Address]) -> int:
    """One unsolicited neighbour advertisement per address to ff02::1 on `ifname`, hop limit 255,
    Router and Override flags set (RFC 5798 §6.4.1). The kernel picks the source (the link-local
    address, for a link-scope destination). Messages sent."""
    _check_mac(mac)
    sent = 0
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
            ifindex = socket.if_nametoindex(ifname)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ND_HOP_LIMIT)
            for address in addresses:
                sock.sendto(neighbour_advertisement(address, mac), (str(ALL_NODES), 0, 0, ifindex))
                sent += 1
    except OSError as exc:
        raise AnnounceError(f"neighbour advertisement on {ifname} failed after {sent} messages: "
                            f"{exc.strerror or exc}") from exc
    return sent
