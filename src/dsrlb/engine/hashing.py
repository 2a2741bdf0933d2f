"""The one hash both engines compute: Linux's jhash2 over fixed key words (docs/datapath.md §4).

The XDP program hashes with the kernel's `jhash2()` (include/linux/jhash.h, Bob Jenkins' lookup3 as
adapted by Jozsef Kadlecsik); this module is a bit-exact Python port, so the reference and XDP pick
the same Maglev slot for every flow.

Key layout (the XDP side builds exactly these words on its stack):

- an address is 16 bytes: IPv6 as is, IPv4 as the IPv4-mapped IPv6 address ``::ffff:a.b.c.d``
  (RFC 4291 §2.5.5.2), read as 4 u32 in *host* byte order from the network-order bytes; on the
  little-endian machines we run on that is ``int.from_bytes(b[i:i+4], "little")``, i.e. exactly
  what a ``__u32 *`` load of the packet bytes gives in C;
- a port is one more u32 word holding the port number as an integer (``ntohs`` already applied).

hash(client address) = jhash2(4 address words); hash(session key) = jhash2(address words + port
word), port 0 for ``sessionid src``. Both with initval DSRLB_HASH_SEED.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

DSRLB_HASH_SEED = 0x64737231  # "dsr1"
JHASH_INITVAL = 0xDEADBEEF
_M32 = 0xFFFFFFFF

# Seeds for the two hashes of a target id that place it on a Maglev ring (control plane only; the
# data path never computes them, but keeping them here documents the whole hashing story).
MAGLEV_OFFSET_SEED = 0x6F666673  # "offs"
MAGLEV_SKIP_SEED = 0x736B6970  # "skip"

_V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


def _rol32(word: int, shift: int) -> int:
    return ((word << shift) | (word >> (32 - shift))) & _M32


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    """__jhash_mix(a, b, c): mix 3 32-bit values reversibly."""
    a = (a - c) & _M32
    a ^= _rol32(c, 4)
    c = (c + b) & _M32
    b = (b - a) & _M32
    b ^= _rol32(a, 6)
    a = (a + c) & _M32
    c = (c - b) & _M32
    c ^= _rol32(b, 8)
    b = (b + a) & _M32
    a = (a - c) & _M32
    a ^= _rol32(c, 16)
    c = (c + b) & _M32
    b = (b - a) & _M32
    b ^= _rol32(a, 19)
    a = (a + c) & _M32
    c = (c - b) & _M32
    c ^= _rol32(b, 4)
    b = (b + a) & _M32
    return a, b, c


def _final(a: int, b: int, c: int) -> int:
    """__jhash_final(a, b, c): final mixing of 3 32-bit values into c (only c is returned)."""
    c ^= b
    c = (c - _rol32(b, 14)) & _M32
    a ^= c
    a = (a - _rol32(c, 11)) & _M32
    b ^= a
    b = (b - _rol32(a, 25)) & _M32
    c ^= b
    c = (c - _rol32(b, 16)) & _M32
    a ^= c
    a = (a - _rol32(c, 4)) & _M32
    b ^= a
    b = (b - _rol32(a, 14)) & _M32
    c ^= b
    c = (c - _rol32(b, 24)) & _M32
    return c


def jhash2(words: Sequence[int], initval: int) -> int:
    """Linux `jhash2(const u32 *k, u32 length, u32 initval)`; `words` are u32 values."""
    length = len(words)
    a = b = c = (JHASH_INITVAL + (length << 2) + initval) & _M32
    i = 0
    while length > 3:
        a = (a + words[i]) & _M32
        b = (b + words[i + 1]) & _M32
        c = (c + words[i + 2]) & _M32
        a, b, c = _mix(a, b, c)
        length -= 3
        i += 3
    if length == 0:
        return c
    # The C switch falls through: case 3 adds k[2], case 2 adds k[1], case 1 adds k[0].
    if length == 3:
        c = (c + words[i + 2]) & _M32
    if length >= 2:
        b = (b + words[i + 1]) & _M32
    a = (a + words[i]) & _M32
    return _final(a, b, c)


def address_key_bytes(packed: bytes) -> bytes:
    """The 16 key bytes of a packed 4- or 16-byte address (IPv4 becomes ::ffff:a.b.c.d)."""
    if len(packed) == 4:
        return _V4_MAPPED_PREFIX + packed
    if len(packed) == 16:
        return packed
    raise ValueError(f"an address is 4 or 16 bytes, not {len(packed)}")


def address_words(packed: bytes) -> tuple[int, int, int, int]:
    """The 4 u32 key words of an address, loaded in host (little-endian) order as C does."""
    key = address_key_bytes(packed)
    return (
        int.from_bytes(key[0:4], "little"),
        int.from_bytes(key[4:8], "little"),
        int.from_bytes(key[8:12], "little"),
        int.from_bytes(key[12:16], "little"),
    )


def hash_client(packed_address: bytes) -> int:
    """hash(client address): the `hash` method's index source."""
    return jhash2(address_words(packed_address), DSRLB_HASH_SEED)


def hash_session_key(packed_address: bytes, port: int) -> int:
    """hash(session key): the `maglev` method's index source (port 0 for `sessionid src`)."""
    return jhash2((*address_words(packed_address), port & 0xFFFF), DSRLB_HASH_SEED)


def hash_address(address: IPv4Address | IPv6Address, port: int | None = None) -> int:
    """Convenience for the control plane and tools: hash an address object (and a port)."""
    if port is None:
        return hash_client(address.packed)
    return hash_session_key(address.packed, port)


def maglev_offset_skip(target_id: int, ring_size: int) -> tuple[int, int]:
    """Maglev's permutation of a target: (offset, skip) from two hashes of its id (paper §3.4)."""
    word = (target_id & _M32,)
    offset = jhash2(word, MAGLEV_OFFSET_SEED) % ring_size
    skip = jhash2(word, MAGLEV_SKIP_SEED) % (ring_size - 1) + 1
    return offset, skip
