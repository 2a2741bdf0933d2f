"""The load-agent protocol (pure): one UDP query, one UDP reply, optionally authenticated.

The balancer asks a target's agent for its load; the agent answers with a number the `agent` and
`rndagent` methods use (docs/datapath.md §4) and whose absence takes the target down (`agent P,I,T`).
This is dsrlb's own format (BalanceNG's bngagent protocol is not published). All integers are
big-endian (network order).

    query (32 bytes, + 32 with HMAC)        reply (32 bytes, + 32 with HMAC)
    0  magic   "DLBA"                        0  magic   "DLBA"
    4  version 1                             4  version 1
    5  type    1 = query                     5  type    2 = reply
    6  flags   bit0 HMAC follows             6  flags   bit0 HMAC follows, bit1 load unavailable
    7  zero                                  7  zero
    8  nonce   16 random bytes               8  nonce   copied from the query
    24 zero    8 bytes (padding)             24 load    IEEE 754 double, percent (0 when unavailable)
    32 HMAC-SHA256(secret, bytes 0..31)      32 HMAC-SHA256(secret, bytes 0..31)

The padding makes a query exactly as long as its reply, so an agent cannot be used to amplify
traffic. The HMAC covers the header too, so a query cannot be passed off as a reply (the type byte
differs). Replay safety: the balancer accepts a reply only for a nonce it has outstanding, and
forgets the nonce on the first accepted reply (`ReplyMatcher`); the agent drops a query whose nonce
it has seen recently (`QueryResponder`), so a captured query replayed later gets no answer.

Every bad datagram is a counted drop (`DropCounters`), never an exception to the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

MAGIC = b"DLBA"
VERSION = 1
TYPE_QUERY = 1
TYPE_REPLY = 2
FLAG_HMAC = 0x01
FLAG_UNAVAILABLE = 0x02
NONCE_LEN = 16
BODY_LEN = 32
MAC_LEN = 32
MAX_LOAD = 1e9  # anything larger is nonsense from a broken script

_HEADER = struct.Struct("!4sBBBx16s")  # magic, version, type, flags, nonce
_LOAD = struct.Struct("!d")


class AgentProtocolError(ValueError):
    """A datagram that is not a valid message; `reason` is the drop counter it belongs to."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Query:
    nonce: bytes


@dataclass(frozen=True)
class Reply:
    nonce: bytes
    load: float | None  # percent; None when the agent could not measure it


@dataclass
class DropCounters:
    """Why datagrams were dropped; the keys are stable names for metrics."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1

    def total(self) -> int:
        return sum(self.counts.values())


def _mac(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).digest()


def _seal(body: bytes, secret: bytes | None) -> bytes:
    return body if secret is None else body + _mac(secret, body)


def encode_query(nonce: bytes, secret: bytes | None = None) -> bytes:
    if len(nonce) != NONCE_LEN:
        raise ValueError(f"nonce must be {NONCE_LEN} bytes")
    flags = FLAG_HMAC if secret is not None else 0
    return _seal(_HEADER.pack(MAGIC, VERSION, TYPE_QUERY, flags, nonce) + bytes(8), secret)


def encode_reply(nonce: bytes, load: float | None, secret: bytes | None = None) -> bytes:
    if len(nonce) != NONCE_LEN:
        raise ValueError(f"nonce must be {NONCE_LEN} bytes")
    if load is not None and not (math.isfinite(load) and 0 <= load <= MAX_LOAD):
        raise ValueError(f"load must be a finite number in 0..{MAX_LOAD:g}, not {load!r}")
    flags = (FLAG_HMAC if secret is not None else 0) | (FLAG_UNAVAILABLE if load is None else 0)
    body = _HEADER.pack(MAGIC, VERSION, TYPE_REPLY, flags, nonce) + _LOAD.pack(load or 0.0)
    return _seal(body, secret)


def _open(data: bytes, want_type: int, secret: bytes | None) -> tuple[int, bytes, bytes]:
    """Check framing and authentication; return (flags, nonce, payload bytes 24..31)."""
    if len(data) < BODY_LEN:
        raise AgentProtocolError("short", f"datagram of {len(data)} bytes is too short")
    magic, version, mtype, flags, nonce = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise AgentProtocolError("bad_magic", "not a dsrlb agent message")
    if version != VERSION:
        raise AgentProtocolError("bad_version", f"unsupported version {version}")
    if mtype != want_type:
        raise AgentProtocolError("bad_type", f"unexpected message type {mtype}")
    has_mac = bool(flags & FLAG_HMAC)
    if len(data) != BODY_LEN + (MAC_LEN if has_mac else 0):
        raise AgentProtocolError("bad_length", f"datagram of {len(data)} bytes has the wrong length")
    # With a secret configured, only authenticated messages count (constant-time compare).
    if secret is not None and not (
        has_mac and hmac.compare_digest(data[BODY_LEN:], _mac(secret, data[:BODY_LEN]))
    ):
        raise AgentProtocolError("unauthenticated", "missing or wrong HMAC")
    return flags, nonce, data[24:BODY_LEN]


def decode_query(data: bytes, secret: bytes | None = None) -> Query:
    _flags, nonce, _pad = _open(data, TYPE_QUERY, secret)
    return Query(nonce)


def decode_reply(data: bytes, secret: bytes | None = None) -> Reply:
    flags, nonce, payload = _open(data, TYPE_REPLY, secret)
    if flags & FLAG_UNAVAILABLE:
        return Reply(nonce, None)
    (load,) = _LOAD.unpack(payload)
    if not (math.isfinite(load) and 0 <= load <= MAX_LOAD):
        raise AgentProtocolError("bad_load", f"load {load!r} is out of range")
    return Reply(nonce, load)


class QueryResponder:
    """The agent's core: a query datagram and `now` in, a reply datagram (or None: dropped) out."""

    def __init__(
        self, load: Callable[[], float | None], secret: bytes | None = None, *,
        replay_window: float = 120.0, replay_capacity: int = 65536,
    ) -> None:
        self._load = load
        self._secret = secret
        self._window = replay_window
        self._capacity = replay_capacity
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self.drops = DropCounters()
        self.answered = 0

    def handle(self, data: bytes, now: float) -> bytes | None:
        try:
            query = decode_query(data, self._secret)
        except AgentProtocolError as exc:
            self.drops.add(exc.reason)
            return None
        self._expire(now)
        if query.nonce in self._seen:
            self.drops.add("replay")
            return None
        self._seen[query.nonce] = now
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        try:
            load = self._load()
        except Exception:  # a broken load source must not kill the agent: say "unavailable"
            load = None
        if load is not None and not (math.isfinite(load) and 0 <= load <= MAX_LOAD):
            load = None
        self.answered += 1
        return encode_reply(query.nonce, load, self._secret)

    def _expire(self, now: float) -> None:
        while self._seen:
            nonce, seen_at = next(iter(self._seen.items()))
            if now - seen_at < self._window:
                break
            del self._seen[nonce]


class ReplyMatcher:
    """The balancer's core: remembers outstanding nonces and accepts each reply at most once."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret
        self._outstanding: set[bytes] = set()
        self.drops = DropCounters()

    def query(self, nonce: bytes) -> bytes:
        self._outstanding.add(nonce)
        return encode_query(nonce, self._secret)

    def forget(self, nonce: bytes) -> None:
        """The probe gave up (timeout): a late reply for it is then a counted drop."""
        self._outstanding.discard(nonce)

    def accept(self, data: bytes) -> Reply | None:
        try:
            reply = decode_reply(data, self._secret)
        except AgentProtocolError as exc:
            self.drops.add(exc.reason)
            return None
        if reply.nonce not in self._outstanding:
            self.drops.add("unexpected_nonce")
            return None
        self._outstanding.discard(reply.nonce)
        return reply
