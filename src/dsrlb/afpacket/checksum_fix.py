"""Completing CHECKSUM_PARTIAL frames seen on a packet socket.

A local sender on a veth leaves the L4 checksum to "hardware": the field holds the folded
pseudo-header sum (not complemented) and the device is expected to sum the L4 segment from there,
fold, complement and store (Documentation/networking/checksum-offloads.rst). A frame we forward from
user space never meets such a device, so we do that step here.

Every TCP segment a lab client sends arrives this way, so the sum must be cheap: it is taken over the
segment as one big integer. Since 2**16 = 1 (mod 0xFFFF), the value of a string of 16-bit words is
congruent to their sum modulo 0xFFFF, which is what the end-around carry of RFC 1071 §1 computes
(with 0xFFFF, not 0, for a non-zero multiple). One C-level conversion instead of a Python loop.
"""

from __future__ import annotations

import struct

from dsrlb.engine.packet import ST_OK, parse_frame

_CSUM_OFFSET = {6: 16, 17: 6}  # TCP, UDP checksum field offsets


def ones_complement_sum(data: bytes | memoryview, initial: int = 0) -> int:
    """RFC 1071 16-bit one's-complement sum of big-endian words (odd length padded with a zero)."""
    value = int.from_bytes(data, "big")
    if len(data) % 2:
        value <<= 8
    value += initial
    if value == 0:
        return 0
    folded = value % 0xFFFF
    return folded if folded else 0xFFFF


def _l4_span(frame: bytes) -> tuple[int, int, int] | None:
    """(protocol, L4 start, IP end) of a well-formed TCP/UDP frame; None for anything else.

    Untagged IPv4 without fragmentation, the usual case, is read in place; everything else (VLAN,
    IPv6 and its extension headers) goes through the data path's parser.
    """
    n = len(frame)
    if n >= 34 and frame[12] == 0x08 and frame[13] == 0x00 and frame[14] >> 4 == 4:
        ihl = (frame[14] & 0x0F) * 4
        ip_end = 14 + ((frame[16] << 8) | frame[17])
        fragment = ((frame[20] << 8) | frame[21]) & 0x3FFF
        if ihl < 20 or ip_end > n or ip_end < 14 + ihl or fragment:
            return None
        return frame[23], 14 + ihl, ip_end
    view = parse_frame(frame)
    if view.status != ST_OK:
        return None
    return view.proto, view.l4, view.ip_end


def complete_partial_checksum(frame: bytes) -> bytes | None:
    """The frame with its TCP/UDP checksum completed, or None when it is not TCP/UDP over IP."""
    span = _l4_span(frame)
    if span is None:
        return None
    proto, l4, ip_end = span
    field = _CSUM_OFFSET.get(proto)
    if field is None or ip_end < l4 + field + 2:
        return None
    # The field's current value (the pseudo-header sum) is part of the sum, as the device does it.
    check = ~ones_complement_sum(memoryview(frame)[l4:ip_end]) & 0xFFFF
    if proto == 17 and check == 0:
        check = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    out = bytearray(frame)
    struct.pack_into("!H", out, l4 + field, check)
    return bytes(out)
