"""The VRRP codec against hand-built RFC layouts, third-party vectors, and fuzzed bytes."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsrlb.vrrp.codec import (
    DECODE_REASONS,
    IPPROTO_VRRP,
    VRRP_GROUP_V4,
    VRRP_GROUP_V6,
    VRRP_TTL,
    Advertisement,
    IPAddress,
    VrrpDecodeError,
    decode,
    encode,
    readdress,
    simple_auth_data,
)

SRC4 = IPv4Address("192.0.2.1")
SRC6 = IPv6Address("fe80::1")


def rfc1071(data: bytes) -> int:
    """An independent RFC 1071 sum, written the long way (so the codec is not only tested against itself)."""
    total = 0
    for i in range(0, len(data), 2):
        word = data[i] << 8 | (data[i + 1] if i + 1 < len(data) else 0)
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def test_constants() -> None:
    assert IPPROTO_VRRP == 112 and VRRP_TTL == 255
    assert str(VRRP_GROUP_V4) == "224.0.0.18" and str(VRRP_GROUP_V6) == "ff02::12"


# --- known-good vectors built by hand from the RFC layouts ----------------------------------------


def test_v3_ipv4_vector_by_hand() -> None:
    # RFC 5798 §5.1: 0x31 (version 3, type 1), VRID 51, priority 150, count 2, rsvd 0 + 100 cs, checksum
    body = bytes([0x31, 51, 150, 2, 0x00, 0x64]) + b"\0\0" + bytes([192, 0, 2, 100, 192, 0, 2, 101])
    # RFC 5798 §5.2.8 with the RFC 768 pseudo-header: src, 224.0.0.18, zero, 112, VRRP length (16)
    pseudo = bytes([192, 0, 2, 1, 224, 0, 0, 18, 0, 112, 0, 16])
    checksum = rfc1071(pseudo + body)
    packet = body[:6] + checksum.to_bytes(2, "big") + body[8:]
    advert = Advertisement(3, 51, 150, 100, (ip_address("192.0.2.100"), ip_address("192.0.2.101")))
    assert encode(advert, src=SRC4) == packet
    assert decode(packet, src=SRC4, dst=VRRP_GROUP_V4, family=4) == advert
    assert advert.interval_seconds == 1.0


def test_v3_ipv6_vector_by_hand() -> None:
    vips = (IPv6Address("fe80::100"), IPv6Address("2001:db8::100"))
    body = bytes([0x31, 9, 100, 2, 0x00, 50]) + b"\0\0" + b"".join(a.packed for a in vips)
    # RFC 8200 §8.1: src, dst, 32-bit upper-layer length, 3 zero bytes, next header 112
    pseudo = SRC6.packed + VRRP_GROUP_V6.packed + (40).to_bytes(4, "big") + b"\0\0\0" + bytes([112])
    packet = body[:6] + rfc1071(pseudo + body).to_bytes(2, "big") + body[8:]
    advert = Advertisement(3, 9, 100, 50, vips)
    assert encode(advert, src=SRC6) == packet
    assert decode(packet, src=SRC6, dst=VRRP_GROUP_V6, family=6) == advert
    assert advert.interval_seconds == 0.5


def test_v2_vector_by_hand_with_password() -> None:
    # RFC 3768 §5.1: 0x21, VRID 51, priority 100, count 1, auth type 1, adver int 1 s, checksum,
    # address, 8 bytes of auth data (RFC 2338 §5.3.10: the password, NUL-padded)
    body = bytes([0x21, 51, 100, 1, 1, 1]) + b"\0\0" + bytes([192, 0, 2, 100]) + b"secret\0\0"
    packet = body[:6] + rfc1071(body).to_bytes(2, "big") + body[8:]  # no pseudo-header in v2
    advert = Advertisement(2, 51, 100, 1, (ip_address("192.0.2.100"),), 1, simple_auth_data("secret"))
    assert encode(advert, src=SRC4) == packet
    # v2 has no pseudo-header: the same bytes are valid whatever the addresses
    assert decode(packet, src=IPv4Address("198.51.100.9"), dst=SRC4, family=4) == advert


# Third-party vectors: the VRRP payloads of captures published with gopacket (layers/vrrp_test.go, a
# tcpdump capture) and PcapPlusPlus (Tests/Packet++Test/PacketExamples/VRRP-V3-*.dat).
THIRD_PARTY = [
    ("2101640100 01ba52 c0a80001 0000000000000000", "192.168.0.30", "224.0.0.18",
     Advertisement(2, 1, 100, 1, (ip_address("192.168.0.1"),))),
    ("31016402 0001484d c0a80001 c0a80002", "192.168.0.30", "224.0.0.18",
     Advertisement(3, 1, 100, 1, (ip_address("192.168.0.1"), ip_address("192.168.0.2")))),
    ("31016403 00011071 fe800000000000000000000000000254 20010db8000000000000000000000001"
     " 20010db8000000000000000000000002", "fe80::1", "ff02::12",
     Advertisement(3, 1, 100, 1, tuple(ip_address(a) for a in ("fe80::254", "2001:db8::1", "2001:db8::2")))),
]


@pytest.mark.parametrize(("hexdata", "src", "dst", "advert"), THIRD_PARTY)
def test_third_party_vectors(hexdata: str, src: str, dst: str, advert: Advertisement) -> None:
    data = bytes.fromhex(hexdata.replace(" ", ""))
    s, d = ip_address(src), ip_address(dst)
    assert decode(data, src=s, dst=d, family=s.version) == advert
    assert encode(advert, src=s, dst=d) == data


# --- errors --------------------------------------------------------------------------------------


def _v3(**kw: object) -> bytes:
    return encode(Advertisement(3, 7, 100, 100, (ip_address("192.0.2.100"),)), src=SRC4, **kw)  # type: ignore[arg-type]


def _fix(packet: bytearray, src: IPAddress = SRC4, dst: IPAddress = VRRP_GROUP_V4) -> bytes:
    """Recompute the checksum of a hand-mutated v3 packet, independently of the codec."""
    packet[6:8] = b"\0\0"
    length = len(packet)
    pseudo = src.packed + dst.packed + (bytes([0, 112]) + length.to_bytes(2, "big") if src.version == 4
                                        else length.to_bytes(4, "big") + bytes([0, 0, 0, 112]))
    packet[6:8] = rfc1071(pseudo + bytes(packet)).to_bytes(2, "big")
    return bytes(packet)


def _reason(data: bytes, family: int = 4, src: IPAddress = SRC4) -> str:
    with pytest.raises(VrrpDecodeError) as error:
        decode(data, src=src, dst=VRRP_GROUP_V4 if family == 4 else VRRP_GROUP_V6, family=family)
    assert error.value.reason in DECODE_REASONS
    return error.value.reason


def test_each_decode_error_has_its_reason() -> None:
    good = bytearray(_v3())
    assert _reason(b"") == "short" and _reason(bytes(good[:7])) == "short"
    assert _reason(_fix(bytearray([0x41]) + good[1:])) == "version"
    assert _reason(_fix(bytearray([0x11]) + good[1:])) == "version"
    assert _reason(_fix(bytearray([0x32]) + good[1:])) == "type"
    assert _reason(bytes(good[:-1])) == "count"  # truncated address
    assert _reason(bytes(good) + b"\0\0\0\0") == "count"  # trailing bytes
    assert _reason(_fix(good[:3] + bytearray([2]) + good[4:])) == "count"
    flipped = bytearray(good)
    flipped[2] ^= 0x01
    assert _reason(bytes(flipped)) == "checksum"
    assert _reason(_fix(good[:1] + bytearray([0]) + good[2:])) == "vrid"
    assert _reason(_fix(good[:4] + bytearray([0xF0, 0x00]) + good[6:])) == "interval"  # rsvd set, 0 cs
    # the v3 checksum covers the addresses: wrong source or destination fails it
    assert _reason(bytes(good), src=IPv4Address("192.0.2.2")) == "checksum"
    v2 = bytearray(encode(Advertisement(2, 7, 100, 1, (ip_address("192.0.2.100"),)), src=SRC4))
    assert _reason(bytes(v2), family=6, src=SRC6) == "version"  # VRRPv2 is IPv4 only
    v2[4] = 2  # IP AH authentication (RFC 2338 §5.3.6.2): not supported
    v2[6:8] = b"\0\0"
    v2[6:8] = rfc1071(bytes(v2)).to_bytes(2, "big")
    assert _reason(bytes(v2)) == "auth"
    v2[4], v2[5] = 0, 0
    v2[6:8] = b"\0\0"
    v2[6:8] = rfc1071(bytes(v2)).to_bytes(2, "big")
    assert _reason(bytes(v2)) == "interval"


def test_reserved_bits_are_ignored_on_receipt() -> None:
    good = bytearray(_v3())
    good[4] |= 0xF0  # RFC 5798 §5.2.6: rsvd MUST be ignored on reception
    assert decode(_fix(good), src=SRC4, dst=VRRP_GROUP_V4, family=4).interval == 100


def test_invalid_advertisements_and_arguments_are_refused() -> None:
    a4 = (ip_address("192.0.2.100"),)
    for bad in (
        dict(version=4), dict(vrid=0), dict(priority=256), dict(interval=0), dict(interval=4096),
        dict(version=2, interval=256), dict(auth_type=1), dict(version=2, auth_type=2),
        dict(version=2, auth_data=b"short"),
    ):
        fields = dict(version=3, vrid=1, priority=100, interval=1, addresses=a4) | bad
        with pytest.raises(ValueError):
            Advertisement(**fields)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Advertisement(3, 1, 100, 1, (ip_address("192.0.2.1"), ip_address("2001:db8::1")))
    with pytest.raises(ValueError):
        Advertisement(2, 1, 100, 1, (ip_address("2001:db8::1"),))
    with pytest.raises(ValueError):
        encode(Advertisement(3, 1, 100, 1, a4), src=SRC6)
    with pytest.raises(ValueError):  # the caller's addresses, not the bytes: not a decode error
        decode(b"", src=SRC4, dst=VRRP_GROUP_V6, family=4)
    for password in ("", "123456789"):
        with pytest.raises(ValueError):
            simple_auth_data(password)


def test_readdress_fixes_the_v3_checksum_for_a_unicast_peer() -> None:
    peer = IPv4Address("192.0.2.2")
    grouped = _v3()
    unicast = readdress(grouped, src=SRC4, dst=peer)
    assert unicast == _v3(dst=peer) != grouped
    original = decode(grouped, src=SRC4, dst=VRRP_GROUP_V4, family=4)
    assert decode(unicast, src=SRC4, dst=peer, family=4) == original
    v2 = encode(Advertisement(2, 7, 100, 1, (ip_address("192.0.2.100"),)), src=SRC4)
    assert readdress(v2, src=SRC4, dst=peer) == v2  # no pseudo-header in v2


# --- properties ----------------------------------------------------------------------------------

v4_addresses = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
v6_addresses = st.builds(IPv6Address, st.integers(0, 2**128 - 1))


@st.composite
def advertisements(draw: st.DrawFn) -> tuple[Advertisement, IPAddress, IPAddress]:
    family = draw(st.sampled_from([4, 6]))
    version = 3 if family == 6 else draw(st.sampled_from([2, 3]))
    addrs: st.SearchStrategy[IPAddress] = v4_addresses if family == 4 else v6_addresses
    addresses = tuple(draw(st.lists(addrs, max_size=20)))
    vrid, priority = draw(st.integers(1, 255)), draw(st.integers(0, 255))
    interval = draw(st.integers(1, 255 if version == 2 else 4095))
    auth: tuple[int, bytes] = (0, b"")
    if version == 2:
        auth = (draw(st.sampled_from([0, 1])), draw(st.binary(min_size=8, max_size=8)))
    return Advertisement(version, vrid, priority, interval, addresses, *auth), draw(addrs), draw(addrs)


@given(advertisements())
@settings(max_examples=300)
def test_decode_of_encode_is_identity(case: tuple[Advertisement, IPAddress, IPAddress]) -> None:
    advert, src, dst = case
    data = encode(advert, src=src, dst=dst)
    assert decode(data, src=src, dst=dst, family=src.version) == advert
    width = 4 if src.version == 4 else 16
    assert len(data) == 8 + len(advert.addresses) * width + (8 if advert.version == 2 else 0)
    cover = b"" if advert.version == 2 else (
        src.packed + dst.packed + (struct.pack("!BBH", 0, 112, len(data)) if src.version == 4
                                   else struct.pack("!I3xB", len(data), 112)))
    assert rfc1071(cover + data) == 0  # the checksum verifies with the independent sum too


def _decode_or_error(data: bytes, src: IPAddress, dst: IPAddress) -> None:
    try:
        advert = decode(data, src=src, dst=dst, family=src.version)
    except VrrpDecodeError as error:
        assert error.reason in DECODE_REASONS
    else:
        assert isinstance(advert, Advertisement)
        assert decode(encode(advert, src=src, dst=dst), src=src, dst=dst, family=src.version) == advert


@given(st.binary(max_size=300), st.sampled_from([4, 6]))
@settings(max_examples=500)
def test_random_bytes_decode_or_raise_only_vrrp_decode_error(data: bytes, family: int) -> None:
    src, dst = (SRC4, VRRP_GROUP_V4) if family == 4 else (SRC6, VRRP_GROUP_V6)
    _decode_or_error(data, src, dst)


@given(advertisements(), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1,
                                  max_size=6), st.integers(-12, 12), st.booleans())
@settings(max_examples=500)
def test_mutated_packets_decode_or_raise_only_vrrp_decode_error(
    case: tuple[Advertisement, IPAddress, IPAddress], edits: list[tuple[int, int]], resize: int, fix: bool,
) -> None:
    advert, src, dst = case
    data = bytearray(encode(advert, src=src, dst=dst))
    for position, value in edits:
        if data:
            data[position % len(data)] = value
    if resize > 0:
        data += bytes(resize)
    elif resize < 0:
        del data[resize:]
    if fix and len(data) >= 8:  # a correct checksum over the mutation reaches the checks behind it
        data = bytearray(_fix(data, src, dst) if data[0] >> 4 == 3 else data)
        if data[0] >> 4 != 3:
            data[6:8] = b"\0\0"
            data[6:8] = rfc1071(bytes(data)).to_bytes(2, "big")
    _decode_or_error(bytes(data), src, dst)
