"""Session sync datagrams (dsrlb's own format; BalanceNG's is not published): pure encode/decode.

One UDP datagram is a 16-byte header and up to MAX_ENTRIES sessions of 32 bytes (1296 bytes in all,
below any Ethernet MTU, so no datagram is fragmented):

    header   magic "DSRS" | version 1 | type | count (u16) | boot (u32) | sequence (u32)
    session  service id (u32) | target id (u32) | client port (u16) | family (4|6) | 0 |
             client address (16 bytes; IPv4 in the first 4) | age in ms (u32)

With `set syncsecretfile`, each datagram ends in 16 bytes of HMAC-SHA256 over the rest, keyed with
the shared secret, and the receiver drops any datagram without a valid one.

`boot` is a random number the sender draws at start: a new one tells the peer to send its whole table
(BalanceNG `sessionautoresync`). A session carries its age (how long it has been idle), not a
timestamp: the two balancers' monotonic clocks share no origin. All integers are big-endian.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

IPAddress = IPv4Address | IPv6Address

MAGIC = b"DSRS"
VERSION = 1
HELLO = 1  # I am alive (boot); no sessions
SESSIONS = 2  # new, moved or recently active sessions
HEADER = struct.Struct("!4sBBHII")
ENTRY = struct.Struct("!IIHBx16sI")
MAX_ENTRIES = 40
MAX_AGE_MS = 0xFFFFFFFF

DECODE_REASONS = ("short", "magic", "version", "type", "count", "family", "auth")
MAC_SIZE = 16  # HMAC-SHA256, truncated (RFC 2104 §5), after the datagram when a secret is set


class SyncDecodeError(ValueError):
    """Not a session sync datagram; `reason` is one of DECODE_REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class SyncedSession:
    service_id: int
    client: IPAddress
    client_port: int
    target_id: int
    age_ms: int


@dataclass(frozen=True)
class Datagram:
    kind: int
    boot: int
    sequence: int
    sessions: tuple[SyncedSession, ...] = ()


def encode(datagram: Datagram) -> bytes:
    if len(datagram.sessions) > MAX_ENTRIES:
        raise ValueError(f"at most {MAX_ENTRIES} sessions per datagram")
    parts = [HEADER.pack(MAGIC, VERSION, datagram.kind, len(datagram.sessions), datagram.boot & 0xFFFFFFFF,
                         datagram.sequence & 0xFFFFFFFF)]
    for s in datagram.sessions:
        parts.append(ENTRY.pack(s.service_id, s.target_id, s.client_port, s.client.version,
                                s.client.packed.ljust(16, b"\0"), min(max(s.age_ms, 0), MAX_AGE_MS)))
    return b"".join(parts)


def sign(data: bytes, secret: bytes) -> bytes:
    return data + hmac.new(secret, data, hashlib.sha256).digest()[:MAC_SIZE]


def verify(data: bytes, secret: bytes) -> bytes:
    """The datagram without its MAC, or SyncDecodeError("auth") when the MAC does not match."""
    body, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
    if len(data) < MAC_SIZE or not hmac.compare_digest(mac, sign(body, secret)[-MAC_SIZE:]):
        raise SyncDecodeError("auth", "no valid HMAC with the sync secret")
    return body


def decode(data: bytes) -> Datagram:
    """The datagram, or SyncDecodeError for any bytes that are not one (never another exception)."""
    if len(data) < HEADER.size:
        raise SyncDecodeError("short", f"{len(data)} bytes")
    magic, version, kind, count, boot, sequence = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SyncDecodeError("magic")
    if version != VERSION:
        raise SyncDecodeError("version", f"version {version}")
    if kind not in (HELLO, SESSIONS):
        raise SyncDecodeError("type", f"type {kind}")
    if count > MAX_ENTRIES or len(data) != HEADER.size + count * ENTRY.size or (kind == HELLO and count):
        raise SyncDecodeError("count", f"{count} sessions in {len(data)} bytes")
    sessions = []
    for offset in range(HEADER.size, len(data), ENTRY.size):
        service_id, target_id, port, family, raw, age = ENTRY.unpack_from(data, offset)
        client: IPAddress
        if family == 4:
            client = IPv4Address(raw[:4])
        elif family == 6:
            client = IPv6Address(raw)
        else:
            raise SyncDecodeError("family", f"family {family}")
        sessions.append(SyncedSession(service_id, client, port, target_id, age))
    return Datagram(kind, boot, sequence, tuple(sessions))
