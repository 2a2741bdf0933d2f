"""Completing CHECKSUM_PARTIAL frames seen on a packet socket.

A local sender on a veth leaves the L4 checksum to "hardware": the field holds the folded
pseudo-header sum (not complemented) and the device is expected to sum the L4 segment from there,
fold, complement and store (Documentation/networking/checksum-offloads.rst). A frame we forward from
user space never meets such a device, so we do that step here.
"""

from __future__ import annotations

import struct

_ETH_VLAN = (0x8100, 0x88A8)
_IPV6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options (RFC 8200 §4)
_CSUM_OFFSET = {6: 16, 17: 6}  # TCP, UDP checksum field offsets


def ones_complement_sum(data: bytes | memoryview) -> int:
    """16-bit one's-complement sum of `data` (odd length padded with a zero byte), folded."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _l4_offset(frame: bytes) -> tuple[int, int] | None:
    """(offset of the L4 header, protocol) for an IPv4/IPv6 TCP/UDP frame, else None."""
    off = 12
    if len(frame) < off + 2:
        return None
    ethertype = struct.unpack_from("!H", frame, off)[0]
    off += 2
    if ethertype in _ETH_VLAN:
        if len(frame) < off + 4:
            return None
        ethertype = struct.unpack_from("!H", frame, off + 2)[0]
        off += 4
    if ethertype == 0x0800:
        if len(frame) < off + 20:
            return None
        ihl = (frame[off] & 0x0F) * 4
        return off + ihl, frame[off + 9]
    if ethertype == 0x86DD:
        if len(frame) < off + 40:
            return None
        proto = frame[off + 6]
        off += 40
        for _ in range(4):
            if proto not in _IPV6_EXT or len(frame) < off + 2:
                break
            proto, hdr_len = frame[off], (frame[off + 1] + 1) * 8
            off += hdr_len
        return off, proto
    return None


def complete_partial_checksum(frame: bytes) -> bytes | None:
    """The frame with its TCP/UDP checksum completed, or None when it is not TCP/UDP over IP."""
    found = _l4_offset(frame)
    if found is None:
        return None
    l4, proto = found
    field = _CSUM_OFFSET.get(proto)
    if field is None or len(frame) < l4 + field + 2:
        return None
    check = 0xFFFF - ones_complement_sum(memoryview(frame)[l4:])
    if proto == 17 and check == 0:
        check = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    out = bytearray(frame)
    struct.pack_into("!H", out, l4 + field, check)
    return bytes(out)
