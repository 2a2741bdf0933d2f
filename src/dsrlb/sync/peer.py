"""Session sync with one peer balancer: the pure core (no sockets, no clock).

What travels (sync/codec.py): each balancer sends its new and moved sessions as they happen, and
every REFRESH_SECONDS the sessions that saw traffic since the last refresh, so that the peer's copy
of an active session does not idle out while the session lives on here; a peer that (re)starts (a
new boot number in its hello) gets the whole table (BalanceNG `sessionautoresync`). Loss of a
datagram is repaired by the next refresh, so there are no acknowledgements.

What is done with it: the receiver installs each session unless it holds a newer one of the same key
(Dataplane.install_sessions), so whichever node becomes VRRP master sends an established flow to the
target it had: DSR connections survive a failover (their TCP state is on the target), NAT ones too
once the client's next packet has recreated the return entry.

Times: `now` in seconds for hellos and liveness, `now_ns` (the engine's clock, CLOCK_MONOTONIC) for
session ages. The driver owns both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dsrlb.engine.dataplane import SessionEntry
from dsrlb.sync.codec import (
    DECODE_REASONS,
    HELLO,
    MAX_ENTRIES,
    SESSIONS,
    Datagram,
    SyncDecodeError,
    SyncedSession,
    decode,
    encode,
    sign,
    verify,
)

HELLO_SECONDS = 1.0
PEER_DEAD_SECONDS = 3.5  # three hellos missed
REFRESH_SECONDS = 10.0


@dataclass(frozen=True)
class Received:
    sessions: tuple[SessionEntry, ...] = ()  # to install, last_seen_ns on our clock
    resync: bool = False  # the peer (re)started: send it the whole table


@dataclass
class SyncPeer:
    boot: int  # ours: a random number drawn at start
    secret: bytes | None = None  # `set syncsecretfile`: sign what we send, require it on what we read
    counters: dict[str, int] = field(default_factory=dict)
    _sequence: int = 0
    _peer_boot: int | None = None
    _peer_seen: float | None = None
    _next_hello: float = 0.0

    def __post_init__(self) -> None:
        names = ("rx", "tx", "sessions_sent", "sessions_received", "resyncs", "drop_own",
                 *(f"drop_{r}" for r in DECODE_REASONS))
        self.counters = dict.fromkeys(names, 0)

    # --- what goes out ----------------------------------------------------------------------------

    @property
    def next_deadline(self) -> float:
        return self._next_hello

    def timer(self, now: float) -> list[bytes]:
        """A hello when one is due."""
        if now < self._next_hello:
            return []
        self._next_hello = now + HELLO_SECONDS
        return [self._datagram(Datagram(HELLO, self.boot, self._next_sequence()))]

    def sessions(self, entries: Sequence[SessionEntry], now_ns: int) -> list[bytes]:
        """Datagrams carrying `entries` (their ages from `now_ns`), MAX_ENTRIES to a datagram."""
        out = []
        for start in range(0, len(entries), MAX_ENTRIES):
            chunk = tuple(SyncedSession(e.service_id, e.client, e.client_port, e.target_id,
                                        max(0, now_ns - e.last_seen_ns) // 1_000_000)
                          for e in entries[start:start + MAX_ENTRIES])
            out.append(self._datagram(Datagram(SESSIONS, self.boot, self._next_sequence(), chunk)))
            self.counters["sessions_sent"] += len(chunk)
        return out

    # --- what comes in ----------------------------------------------------------------------------

    def receive(self, data: bytes, now: float, now_ns: int) -> Received:
        self.counters["rx"] += 1
        try:
            datagram = decode(verify(data, self.secret) if self.secret else data)
        except SyncDecodeError as error:
            self.counters[f"drop_{error.reason}"] += 1
            return Received()
        if datagram.boot == self.boot:  # our own, looped back (or an unlucky draw: 1 in 2**32)
            self.counters["drop_own"] += 1
            return Received()
        resync = datagram.boot != self._peer_boot
        if resync:
            self.counters["resyncs"] += 1
        self._peer_boot, self._peer_seen = datagram.boot, now
        installs = tuple(SessionEntry(s.service_id, s.client, s.client_port, s.target_id,
                                      now_ns - s.age_ms * 1_000_000) for s in datagram.sessions)
        self.counters["sessions_received"] += len(installs)
        return Received(installs, resync)

    def peer_up(self, now: float) -> bool:
        return self._peer_seen is not None and now - self._peer_seen <= PEER_DEAD_SECONDS

    def view(self, now: float) -> dict[str, object]:
        return {"peer_up": self.peer_up(now), "peer_boot": self._peer_boot,
                "last_heard_s": None if self._peer_seen is None else round(now - self._peer_seen, 3),
                "counters": dict(self.counters)}

    def _next_sequence(self) -> int:
        self._sequence = (self._sequence + 1) & 0xFFFFFFFF
        return self._sequence

    def _datagram(self, datagram: Datagram) -> bytes:
        self.counters["tx"] += 1
        data = encode(datagram)
        return sign(data, self.secret) if self.secret else data
