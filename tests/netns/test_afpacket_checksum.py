"""Partial-checksum completion of the AF_PACKET engine (pure: no root needed).

A CHECKSUM_PARTIAL frame carries the folded pseudo-header sum, not complemented, in its L4 checksum
field; completing it must give the checksum a full computation gives (engine.checksum, the
reference's own RFC 1071 code).
"""

from __future__ import annotations

import struct
from ipaddress import ip_address

from hypothesis import given
from hypothesis import strategies as st

from dsrlb.afpacket.checksum_fix import complete_partial_checksum, ones_complement_sum
from dsrlb.engine import checksum
from dsrlb.engine.packet import build_l4, parse_frame

ADDRESSES = {4: ("203.0.113.7", "192.0.2.10"), 6: ("2001:db8:c::7", "2001:db8::10")}
CHECKSUM_FIELD = {6: 16, 17: 6}


@given(st.binary(max_size=1600), st.integers(0, 0xFFFF))
def test_big_integer_sum_equals_rfc1071_sum(data: bytes, initial: int) -> None:
    assert ones_complement_sum(data, initial) == checksum.ones_complement_sum(data, initial)


def as_partial(frame: bytes) -> tuple[bytes, int]:
    """The frame as a local sender hands it to a device with checksum offload, and the true value."""
    view = parse_frame(frame)
    field = view.l4 + CHECKSUM_FIELD[view.proto]
    (true_value,) = struct.unpack_from("!H", frame, field)
    src, dst = ip_address(view.src or b""), ip_address(view.dst or b"")
    length = view.ip_end - view.l4
    partial = checksum.pseudo_header_sum(src, dst, view.proto, length)  # folded, not complemented
    out = bytearray(frame)
    struct.pack_into("!H", out, field, partial)
    return bytes(out), true_value


@given(
    version=st.sampled_from([4, 6]),
    protocol=st.sampled_from([6, 17]),
    payload=st.binary(max_size=1400),
    sport=st.integers(1, 0xFFFF),
    vlan=st.none() | st.integers(1, 4094),
)
def test_completion_gives_the_full_checksum(version: int, protocol: int, payload: bytes, sport: int,
                                            vlan: int | None) -> None:
    src, dst = ADDRESSES[version]
    frame = build_l4(protocol, src, dst, sport, 80, payload, vlan=vlan, tcp_flags=0x18)
    partial, true_value = as_partial(frame)
    completed = complete_partial_checksum(partial)
    assert completed is not None
    assert completed == frame, f"checksum {true_value:#06x} expected"


def test_frames_that_are_not_tcp_or_udp_over_ip_are_left_alone() -> None:
    tcp = build_l4(6, *ADDRESSES[4], 1, 80)
    icmp = tcp[:23] + b"\x01" + tcp[24:]  # the IPv4 protocol byte (14 + 9) says ICMP
    assert complete_partial_checksum(b"\x00" * 10) is None
    assert complete_partial_checksum(b"\xff" * 14 + b"\x08\x06" + b"\x00" * 28) is None  # ARP-ish
    assert complete_partial_checksum(icmp) is None
    fragment = build_l4(17, *ADDRESSES[4], 1, 80, b"x" * 8, flags_fragment=0x2000)
    assert complete_partial_checksum(fragment) is None
    truncated = build_l4(17, *ADDRESSES[4], 1, 80, b"x" * 8)[:-6]  # IP total length beyond the frame
    assert complete_partial_checksum(truncated) is None


def test_udp_zero_is_sent_as_all_ones() -> None:
    # Find a payload whose UDP checksum computes to zero, then check completion writes 0xFFFF.
    for n in range(1 << 16):
        frame = build_l4(17, *ADDRESSES[4], 1000, 80, struct.pack("!H", n))
        partial, true_value = as_partial(frame)
        if true_value == 0xFFFF:
            completed = complete_partial_checksum(partial)
            assert completed is not None
            assert struct.unpack_from("!H", completed, 34 + 6)[0] == 0xFFFF
            return
    raise AssertionError("no payload gives a zero UDP checksum")
