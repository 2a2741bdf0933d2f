"""VRRP advertisements: frozen dataclasses and a pure codec, no sockets.

Two wire formats share one `Advertisement`:

- VRRPv3 (RFC 5798 §5.1), IPv4 and IPv6::

      |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
      |(rsvd) |     Max Adver Int     |          Checksum             |
      |                 IPvX Address(es): 4 or 16 bytes each          |

  The checksum covers the VRRP message and an IP pseudo-header (RFC 5798 §5.2.8): for IPv4 source,
  destination, zero, protocol 112 and the VRRP length (the RFC 768 layout); for IPv6 the RFC 8200 §8.1
  layout with next header 112.

- VRRPv2 (RFC 3768 §5.1), IPv4 only::

      |Version| Type  | Virtual Rtr ID|   Priority    | Count IP Addrs|
      |   Auth Type   |   Adver Int   |          Checksum             |
      |                 IP Address(es): 4 bytes each                  |
      |             Authentication Data: 8 bytes                      |

  The checksum covers the VRRP message only (RFC 3768 §5.3.8). Auth type 1 is RFC 2338's simple text
  password, which RFC 3768 retired but keepalived still speaks (`auth_type PASS`): up to 8 bytes,
  NUL-padded.

`decode` turns any bytes into an `Advertisement` or one `VrrpDecodeError` whose `reason` is a short
word a driver can count by (`DECODE_REASONS`); it raises nothing else for any input bytes. `encode`
of a valid `Advertisement` always decodes back to it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

IPAddress = IPv4Address | IPv6Address

IPPROTO_VRRP = 112  # RFC 5798 §5.1.1.3 / §5.1.2.3
VRRP_GROUP_V4 = IPv4Address("224.0.0.18")  # RFC 5798 §5.1.1.2
VRRP_GROUP_V6 = IPv6Address("ff02::12")  # RFC 5798 §5.1.2.2
VRRP_TTL = 255  # RFC 5798 §5.1.1.3 / §5.1.2.3: sent with 255, anything else is dropped (§7.1)

ADVERTISEMENT = 1  # the only packet type (RFC 5798 §5.2.2)
AUTH_NONE = 0
AUTH_SIMPLE = 1  # RFC 2338 §5.3.6.1; keepalived `auth_type PASS`
AUTH_DATA_LEN = 8
HEADER_LEN = 8
MAX_INTERVAL = {2: 255, 3: 0x0FFF}  # v2: 8 bits of seconds; v3: 12 bits of centiseconds

# Every reason `decode` can give, for drivers that pre-register their counters.
DECODE_REASONS = ("short", "version", "type", "count", "checksum", "vrid", "interval", "auth")


class VrrpDecodeError(ValueError):
    """A datagram that is not a valid advertisement; `reason` is one of `DECODE_REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def group_address(family: int) -> IPAddress:
    """The VRRP multicast group of an address family (4 or 6)."""
    if family == 4:
        return VRRP_GROUP_V4
    if family == 6:
        return VRRP_GROUP_V6
    raise ValueError(f"address family must be 4 or 6, not {family!r}")


def simple_auth_data(password: str) -> bytes:
    """keepalived's `auth_pass` on the wire: the password's bytes, NUL-padded to 8 (RFC 2338 §5.3.10)."""
    raw = password.encode("ascii")
    if not 1 <= len(raw) <= AUTH_DATA_LEN:
        raise ValueError(f"a VRRP password has 1 to {AUTH_DATA_LEN} characters, not {len(raw)}")
    return raw.ljust(AUTH_DATA_LEN, b"\0")


@dataclass(frozen=True)
class Advertisement:
    """One VRRP advertisement.

    `interval` is in the version's wire unit: centiseconds for v3 (Max Advert Interval, 1-4095),
    whole seconds for v2 (Adver Int, 1-255); `interval_seconds` gives seconds either way. A zero
    interval is refused: it would make Master_Down_Interval zero (RFC 5798 §6.1).
    `auth_type` and `auth_data` exist on the v2 wire only; for v2 an empty `auth_data` means eight
    zero bytes, and the data of auth type 0 is carried as received (RFC 3768 §5.3.10: ignored).
    """

    version: int
    vrid: int
    priority: int
    interval: int
    addresses: tuple[IPAddress, ...]
    auth_type: int = AUTH_NONE
    auth_data: bytes = b""

    def __post_init__(self) -> None:
        if self.version not in (2, 3):
            raise ValueError(f"VRRP version must be 2 or 3, not {self.version!r}")
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"VRID must be 1-255, not {self.vrid}")
        if not 0 <= self.priority <= 255:
            raise ValueError(f"priority must be 0-255, not {self.priority}")
        if not 1 <= self.interval <= MAX_INTERVAL[self.version]:
            limit = MAX_INTERVAL[self.version]
            raise ValueError(f"v{self.version} interval must be 1-{limit}, not {self.interval}")
        if len(self.addresses) > 255:
            raise ValueError("at most 255 addresses fit in one advertisement")
        if len({a.version for a in self.addresses}) > 1:
            raise ValueError("addresses of one advertisement must be of one family")
        if self.version == 3:
            if self.auth_type != AUTH_NONE or self.auth_data:
                raise ValueError("VRRPv3 has no authentication (RFC 5798 §9)")
            return
        if any(a.version != 4 for a in self.addresses):
            raise ValueError("VRRPv2 carries IPv4 addresses only (RFC 3768)")
        if self.auth_type not in (AUTH_NONE, AUTH_SIMPLE):
            raise ValueError(f"VRRPv2 auth type must be 0 or 1, not {self.auth_type}")
        if not self.auth_data:
            object.__setattr__(self, "auth_data", bytes(AUTH_DATA_LEN))
        elif len(self.auth_data) != AUTH_DATA_LEN:
            raise ValueError(f"VRRPv2 auth data is {AUTH_DATA_LEN} bytes, not {len(self.auth_data)}")

    @property
    def interval_seconds(self) -> float:
        return self.interval / 100 if self.version == 3 else float(self.interval)


def internet_checksum(data: bytes) -> int:
    """The RFC 1071 checksum: one's complement of the one's complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    """The IP pseudo-header of a VRRPv3 checksum (RFC 5798 §5.2.8)."""
    if src.version == 4:  # RFC 768 layout: src, dst, zero, protocol, length (16 bits)
        return src.packed + dst.packed + struct.pack("!BBH", 0, IPPROTO_VRRP, length)
    # RFC 8200 §8.1: src, dst, upper-layer length (32 bits), three zero bytes, next header
    return src.packed + dst.packed + struct.pack("!I3xB", length, IPPROTO_VRRP)


def _check_endpoints(src: IPAddress, dst: IPAddress, family: int) -> None:
    # The caller's own arguments, not the datagram: a mismatch is a driver bug, so not a decode error.
    if family not in (4, 6) or src.version != family or dst.version != family:
        raise ValueError(f"src {src} and dst {dst} must both be IPv{family} addresses")


def encode(advert: Advertisement, *, src: IPAddress, dst: IPAddress | None = None) -> bytes:
    """The advertisement's bytes (the IP payload) as sent from `src` to `dst` (default: the group)."""
    family = src.version
    if dst is None:
        dst = group_address(family)
    _check_endpoints(src, dst, family)
    if any(a.version != family for a in advert.addresses):
        raise ValueError(f"an IPv{family} advertisement carries IPv{family} addresses only")
    if advert.version == 2 and family != 4:
        raise ValueError("VRRPv2 runs over IPv4 only (RFC 3768)")
    addresses = b"".join(a.packed for a in advert.addresses)
    count = len(advert.addresses)
    if advert.version == 3:
        head = struct.pack("!BBBBH", 0x31, advert.vrid, advert.priority, count, advert.interval)
        body = addresses
        cover = pseudo_header(src, dst, HEADER_LEN + len(body))
    else:
        head = struct.pack("!BBBBBB", 0x21, advert.vrid, advert.priority, count, advert.auth_type,
                           advert.interval)
        body = addresses + advert.auth_data
        cover = b""
    checksum = internet_checksum(cover + head + b"\0\0" + body)
    return head + struct.pack("!H", checksum) + body


def readdress(packet: bytes, *, src: IPAddress, dst: IPAddress) -> bytes:
    """An encoded advertisement with its checksum fixed for another destination.

    Only VRRPv3 checksums cover addresses; a unicast driver (keepalived `unicast_peer`) sends the
    machine's group-addressed packet to each peer with this.
    """
    if len(packet) < HEADER_LEN or packet[0] >> 4 != 3:
        return packet
    _check_endpoints(src, dst, src.version)
    blank = packet[:6] + b"\0\0" + packet[8:]
    checksum = internet_checksum(pseudo_header(src, dst, len(packet)) + blank)
    return packet[:6] + struct.pack("!H", checksum) + packet[8:]


def decode(data: bytes, *, src: IPAddress, dst: IPAddress, family: int) -> Advertisement:
    """Parse and verify one VRRP datagram (the IP payload) received from `src` on `dst`.

    Checks in the order of RFC 5798 §7.1 / RFC 3768 §7.1 as far as they concern the bytes alone:
    version, type, completeness (the length must be exactly what Count announces: the checksum is
    defined over that message, so trailing bytes make it ambiguous), checksum, then the field ranges.
    TTL, VRID and the checks against local configuration are the state machine's.
    """
    _check_endpoints(src, dst, family)
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise VrrpDecodeError("short", f"{len(data)} bytes, the header alone has {HEADER_LEN}")
    version, ptype = data[0] >> 4, data[0] & 0x0F
    if version not in (2, 3):
        raise VrrpDecodeError("version", f"version {version}")
    if version == 2 and family != 4:
        raise VrrpDecodeError("version", "VRRPv2 over IPv6")
    if ptype != ADVERTISEMENT:
        raise VrrpDecodeError("type", f"type {ptype}")
    vrid, priority, count = data[1], data[2], data[3]
    width = 4 if family == 4 else 16
    expected = HEADER_LEN + count * width + (AUTH_DATA_LEN if version == 2 else 0)
    if len(data) != expected:
        raise VrrpDecodeError("count", f"{count} addresses need {expected} bytes, got {len(data)}")
    cover = pseudo_header(src, dst, len(data)) if version == 3 else b""
    if internet_checksum(cover + data) != 0:
        raise VrrpDecodeError("checksum", f"checksum {int.from_bytes(data[6:8], 'big'):#06x}")
    if vrid == 0:  # RFC 5798 §5.2.3: 1-255
        raise VrrpDecodeError("vrid", "VRID 0")
    raw = data[HEADER_LEN:HEADER_LEN + count * width]
    addresses: tuple[IPAddress, ...]
    if family == 4:
        addresses = tuple(IPv4Address(raw[i:i + 4]) for i in range(0, len(raw), 4))
    else:
        addresses = tuple(IPv6Address(raw[i:i + 16]) for i in range(0, len(raw), 16))
    if version == 3:
        interval = int.from_bytes(data[4:6], "big") & 0x0FFF  # RFC 5798 §5.2.6: rsvd ignored on receipt
        if interval == 0:
            raise VrrpDecodeError("interval", "Max Advert Interval 0")
        return Advertisement(3, vrid, priority, interval, addresses)
    auth_type, interval = data[4], data[5]
    if interval == 0:
        raise VrrpDecodeError("interval", "Adver Int 0")
    if auth_type not in (AUTH_NONE, AUTH_SIMPLE):
        raise VrrpDecodeError("auth", f"auth type {auth_type}")
    return Advertisement(2, vrid, priority, interval, addresses, auth_type, data[HEADER_LEN + count * width:])
