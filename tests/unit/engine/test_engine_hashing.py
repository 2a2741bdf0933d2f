"""jhash2 and the key layout against vectors from the kernel's own C (vectors/jhash_vectors.c)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from dsrlb.engine.hashing import (
    DSRLB_HASH_SEED,
    address_key_bytes,
    address_words,
    hash_address,
    hash_client,
    hash_session_key,
    jhash2,
    maglev_offset_skip,
)

# Produced by `gcc -O2 -o jh vectors/jhash_vectors.c && ./jh` (include/linux/jhash.h macros, x86-64):
# jhash2({1, 2, 3, 4, 5, 6}[:n], n, 0x64737231) for n = 0..6.
SEQUENCE_VECTORS = [0x43213120, 0x2FD29B9B, 0x002759B6, 0x030BAD8D, 0x0C0209D2, 0x3B95EE7D, 0x1C7ED674]
# (address, port, client hash, session hash) from the same program.
ADDRESS_VECTORS = [
    ("198.51.100.7", 0, 0x8546F6BD, 0x23ECD3D4),
    ("198.51.100.7", 40000, 0x8546F6BD, 0x0AE64577),
    ("203.0.113.1", 0, 0x49FACC90, 0xD5F5DBC8),
    ("0.0.0.0", 0, 0x5B4CB496, 0x6EBECEAB),
    ("2001:db8::7", 0, 0xE59E7EFC, 0xA5DC67F6),
    ("2001:db8::7", 40000, 0xE59E7EFC, 0xE317E624),
    ("2001:db8:1:2:3:4:5:6", 443, 0xFC5F1092, 0x985157EA),
]


@pytest.mark.parametrize("length", range(7))
def test_jhash2_matches_the_kernel_for_every_tail_length(length: int) -> None:
    assert jhash2([1, 2, 3, 4, 5, 6][:length], DSRLB_HASH_SEED) == SEQUENCE_VECTORS[length]


@pytest.mark.parametrize(("address", "port", "client", "session"), ADDRESS_VECTORS)
def test_address_hashes_match_the_c_layout(address: str, port: int, client: int, session: int) -> None:
    ip = IPv6Address(address) if ":" in address else IPv4Address(address)
    assert hash_client(ip.packed) == client
    assert hash_session_key(ip.packed, port) == session
    assert hash_address(ip) == client
    assert hash_address(ip, port) == session


def test_ipv4_is_keyed_as_the_mapped_ipv6_address() -> None:
    v4 = IPv4Address("192.0.2.1")
    mapped = IPv6Address("::ffff:192.0.2.1")
    assert address_key_bytes(v4.packed) == mapped.packed
    assert hash_client(v4.packed) == hash_client(mapped.packed)
    # host-order loads: the last word of ::ffff:192.0.2.1 is 0x010200c0 on little-endian
    assert address_words(v4.packed) == (0, 0, 0xFFFF0000, 0x010200C0)


def test_bad_address_length_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="4 or 16"):
        address_key_bytes(b"\x01\x02\x03")


def test_maglev_permutation_is_in_range_and_skip_nonzero() -> None:
    for tid in range(1, 200):
        offset, skip = maglev_offset_skip(tid, 65537)
        assert 0 <= offset < 65537
        assert 1 <= skip < 65537
