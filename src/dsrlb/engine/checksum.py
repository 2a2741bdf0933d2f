"""Internet checksums: the full computation (RFC 1071) and the incremental update exactly as BPF does it.

The data path only ever *updates* checksums, and it does so with the arithmetic the XDP program has
available: ``bpf_csum_diff(from, from_size, to, to_size, seed)`` followed by ``csum_fold``. RFC 1624
eqn. 3 says ``HC' = ~(~HC + ~m + m')``; bpf_csum_diff computes the ``~HC + ~m + m'`` part in 32-bit
one's-complement arithmetic and csum_fold does the final fold and complement. This module models
that arithmetic *bit for bit* (not just modulo 0xFFFF), so the reference writes the same bytes as XDP
in every case, including which of the two representations of zero (0x0000 / 0xFFFF) comes out.

Byte order: like C on x86 we load the 4-byte words and the 16-bit checksum field in host
(little-endian) order and store the result the same way. One's-complement sums are byte-order
independent (RFC 1071 §2(B)), so this is the same checksum a big-endian computation gives; doing it
in the host domain keeps the model literal.

Kernel model (net/core/filter.c since Linux 6.13, "bpf_csum_diff: optimize and homogenize for all
archs"; arch/x86/lib/csum-partial_64.c; include/net/checksum.h)::

    csum_partial(buf, seed)  32-bit end-around-carry sum of the u32 words of buf plus seed; it is 0
                             only when seed and every word are 0 (an end-around-carry sum of
                             anything non-zero never yields +0), otherwise the representative of
                             the sum modulo 2^32-1 in [1, 2^32-1].
    csum_add(a, b)           a + b with the carry added back in (0 only if a == b == 0).
    csum_sub(a, b)           csum_add(a, ~b).
    csum_from32to16(s)       (s + ror32(s, 16)) >> 16, a 16-bit value.
    bpf_csum_diff(from, to, seed) with both sizes > 0:
                             csum_from32to16(csum_sub(csum_partial(to, seed), csum_partial(from, 0)))
    csum_fold(s)             fold twice to 16 bits, complement.

Older kernels returned the unfolded 32-bit sum of ``~from`` words and ``to`` words; after csum_fold it
is the same 16-bit value except in the ±0 corner (seed 0 and all-zero new words), which cannot
arise from the updates the data path does on a valid packet.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

_M32 = 0xFFFFFFFF
_ONES32 = 0xFFFFFFFF  # 2^32 - 1, the one's-complement modulus


def _end_around(total: int) -> int:
    """The 32-bit end-around-carry representative of a non-negative integer sum."""
    if total == 0:
        return 0
    return (total - 1) % _ONES32 + 1


def csum_partial(data: bytes | bytearray | memoryview, seed: int = 0) -> int:
    """Linux csum_partial over a buffer whose length is a multiple of 4 (as bpf_csum_diff demands)."""
    if len(data) % 4:
        raise ValueError("csum_partial here takes whole 32-bit words")
    words: tuple[int, ...] = struct.unpack(f"<{len(data) // 4}I", data)
    return _end_around(seed + sum(words))


def csum_add(a: int, b: int) -> int:
    res = (a + b) & _M32
    return (res + (1 if res < b else 0)) & _M32


def csum_sub(a: int, b: int) -> int:
    return csum_add(a, ~b & _M32)


def csum_from32to16(value: int) -> int:
    ror = ((value >> 16) | (value << 16)) & _M32
    return ((value + ror) & _M32) >> 16


def bpf_csum_diff(
    old: bytes | bytearray | memoryview, new: bytes | bytearray | memoryview, seed: int
) -> int:
    """The helper as the running kernel (>= 6.13) computes it; sizes must be multiples of 4."""
    if old and new:
        return csum_from32to16(csum_sub(csum_partial(new, seed), csum_partial(old, 0)))
    if new:
        return csum_from32to16(csum_partial(new, seed))
    if old:
        return csum_from32to16(~csum_partial(old, ~seed & _M32) & _M32)
    return seed & _M32


def csum_fold(value: int) -> int:
    """Linux csum_fold: fold a 32-bit sum to 16 bits and complement it."""
    value = (value & 0xFFFF) + (value >> 16)
    value = (value & 0xFFFF) + (value >> 16)
    return ~value & 0xFFFF


def csum_replace(check: int, old: bytes | bytearray, new: bytes | bytearray) -> int:
    """RFC 1624 eqn. 3 the BPF way: the new checksum after the words `old` became `new`.

    `check` is the field as a host-order (little-endian) u16 load; the result is stored the same
    way. The seed is the complemented checksum zero-extended to 32 bits, ``(__u32)(__u16)~check``.
    Equal to ``csum_fold(bpf_csum_diff(old, new, ~check & 0xFFFF))`` (a test holds it to that),
    fused here because it runs twice per NAT packet.
    """
    if not old or not new:
        return csum_fold(bpf_csum_diff(old, new, ~check & 0xFFFF))
    words_new: tuple[int, ...] = _words(len(new)).unpack(new)
    words_old: tuple[int, ...] = _words(len(old)).unpack(old)
    total = (~check & 0xFFFF) + sum(words_new)
    a = (total - 1) % _ONES32 + 1 if total else 0
    total = sum(words_old)
    b = ~((total - 1) % _ONES32 + 1 if total else 0) & _M32
    res = (a + b) & _M32
    if res < b:
        res += 1
    # csum_from32to16, then csum_fold of a 16-bit value is just the complement
    return ~(((res + (((res >> 16) | (res << 16)) & _M32)) & _M32) >> 16) & 0xFFFF


_WORD_STRUCTS: dict[int, struct.Struct] = {}


def _words(size: int) -> struct.Struct:
    """A cached little-endian u32 unpacker for `size` bytes (a multiple of 4)."""
    unpacker = _WORD_STRUCTS.get(size)
    if unpacker is None:
        if size % 4:
            raise ValueError("checksum updates take whole 32-bit words")
        unpacker = _WORD_STRUCTS[size] = struct.Struct(f"<{size // 4}I")
    return unpacker


def update_checksum_field(
    buf: bytearray, offset: int, old: bytes | bytearray, new: bytes | bytearray
) -> None:
    """Update the checksum at buf[offset:offset+2] for a change of the words `old` to `new`."""
    check = buf[offset] | (buf[offset + 1] << 8)
    value = csum_replace(check, old, new)
    buf[offset] = value & 0xFF
    buf[offset + 1] = value >> 8


def update_udp_checksum_field(
    buf: bytearray, offset: int, old: bytes | bytearray, new: bytes | bytearray
) -> None:
    """As update_checksum_field for UDP: 0 means "no checksum" and stays 0; a result 0 is sent as 0xFFFF.

    RFC 768: "If the computed checksum is zero, it is transmitted as all ones".
    """
    check = buf[offset] | (buf[offset + 1] << 8)
    if check == 0:
        return
    value = csum_replace(check, old, new)
    if value == 0:
        value = 0xFFFF
    buf[offset] = value & 0xFF
    buf[offset + 1] = value >> 8


# --- full computation (builders, tests, verification) ------------------------------------------------


def ones_complement_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """RFC 1071 16-bit one's-complement sum of big-endian words (odd length padded with a zero byte)."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    words: tuple[int, ...] = struct.unpack(f"!{len(data) // 2}H", data)
    total = initial + sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The checksum to write (big-endian value) over `data` with the field itself zeroed."""
    return ~ones_complement_sum(data, initial) & 0xFFFF


def pseudo_header_sum(
    src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address, protocol: int, length: int
) -> int:
    """The pseudo-header's contribution: RFC 793 §3.1 / RFC 768 (IPv4), RFC 8200 §8.1 (IPv6)."""
    if isinstance(src, IPv4Address):
        header = src.packed + dst.packed + struct.pack("!BBH", 0, protocol, length)
    else:
        header = src.packed + dst.packed + struct.pack("!IxxxB", length, protocol)
    return ones_complement_sum(header)


def l4_checksum(
    src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address, protocol: int, segment: bytes
) -> int:
    """The TCP/UDP/ICMPv6 checksum over `segment` (its checksum field zeroed) and the pseudo-header."""
    return internet_checksum(segment, pseudo_header_sum(src, dst, protocol, len(segment)))


def verifies(data: bytes | bytearray | memoryview, initial: int = 0) -> bool:
    """True when the one's-complement sum over data (checksum included) is all ones (RFC 1071)."""
    return ones_complement_sum(data, initial) == 0xFFFF
