"""Completing CHECKSUM_PARTIAL frames seen on a packet socket.

A local sender on a veth leaves the L4 checksum to "hardware": the field holds the folded
pseudo-header sum (not complemented) and the device is expected to sum the L4 segment from there,
fold, complement and store (Documentation/networking/checksum-offloads.rst). A frame we forward from
user space never meets such a device, so we do that step here.
"""

from __future__ import annotations

import struct

from dsrlb.engine.checksum import internet_checksum
from dsrlb.engine.packet import ST_OK, parse_frame

_CSUM_OFFSET = {6: 16, 17: 6}  # TCP, UDP checksum field offsets


def complete_partial_checksum(frame: bytes) -> bytes | None:
    """The frame with its TCP/UDP checksum completed, or None when it is not TCP/UDP over IP."""
    view = parse_frame(frame)
    field = _CSUM_OFFSET.get(view.proto)
    if view.status != ST_OK or field is None or view.ip_end < view.l4 + field + 2:
        return None
    # The field's current value (the pseudo-header sum) is part of the sum, as the device does it.
    check = internet_checksum(memoryview(frame)[view.l4 : view.ip_end])
    if view.proto == 17 and check == 0:
        check = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    out = bytearray(frame)
    struct.pack_into("!H", out, view.l4 + field, check)
    return bytes(out)
