"""A fake link between VRRP routers, driven by a fake clock: no sockets, no sleeps.

Every packet a router sends reaches each other router `delay` seconds later, unless the pair is
partitioned or the sender is muted. The clock always jumps to the earliest thing that happens: a
delivery or a router's `next_deadline`. Deliveries due at an instant are handled before timers due at
the same instant, each in a fixed order, so a run is deterministic.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

from dsrlb.vrrp.machine import Output, RouterConfig, State, StateChanged, VrrpRouter

IPAddress = IPv4Address | IPv6Address

# Documentation addresses only (DESIGN §5); IPv6 routers speak from link-local addresses (RFC 5798 §5.1.2.1).
PRIMARY = {4: "192.0.2.{}", 6: "fe80::{}"}
VIRTUAL = {4: (ip_address("192.0.2.100"),), 6: (ip_address("fe80::100"), ip_address("2001:db8::100"))}


def router_config(n: int, *, priority: int, version: int = 3, family: int = 4, **kw: object) -> RouterConfig:
    """Router number `n` (primary address .n) of virtual router 7."""
    return RouterConfig(vrid=7, priority=priority, version=version, family=family,
                        primary_address=ip_address(PRIMARY[family].format(n)), addresses=VIRTUAL[family],
                        **kw)  # type: ignore[arg-type]


@dataclass
class Sent:
    at: float
    sender: int
    data: bytes


@dataclass
class Link:
    routers: list[VrrpRouter]
    delay: float = 0.001
    ttl: int = 255
    now: float = 0.0
    blocked: set[tuple[int, int]] = field(default_factory=set)  # (from, to) pairs that lose packets
    muted: set[int] = field(default_factory=set)  # senders whose packets are all lost
    dead: set[int] = field(default_factory=set)  # crashed: no timers, nothing received or sent
    tamper: Callable[[int, bytes], bytes] | None = None  # rewrites each sent packet
    changes: list[tuple[float, int, StateChanged]] = field(default_factory=list)
    timeline: list[tuple[float, tuple[State, ...]]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    on_step: Callable[[Link], None] | None = None  # called after every input (invariant checks)
    _queue: list[tuple[float, int, int, int, bytes]] = field(default_factory=list)
    _seq: int = 0

    @classmethod
    def of(cls, configs: Iterable[RouterConfig], **kw: object) -> Link:
        return cls([VrrpRouter(c) for c in configs], **kw)  # type: ignore[arg-type]

    # --- driving -------------------------------------------------------------------------------

    def apply(self, index: int, output: Output) -> None:
        for event in output.events:
            if isinstance(event, StateChanged):
                self.changes.append((self.now, index, event))
        for data in output.packets:
            if self.tamper is not None:
                data = self.tamper(index, data)
            self.sent.append(Sent(self.now, index, data))
            if index in self.muted or index in self.dead:
                continue
            for other in range(len(self.routers)):
                if other != index and (index, other) not in self.blocked:
                    self._seq += 1
                    heapq.heappush(self._queue, (self.now + self.delay, self._seq, index, other, data))
        self._record()

    def _record(self) -> None:
        states = tuple(r.state for r in self.routers)
        if not self.timeline or self.timeline[-1][1] != states:
            self.timeline.append((self.now, states))
        if self.on_step is not None:
            self.on_step(self)

    def start(self, *indexes: int) -> None:
        """Start routers (all by default); a crashed one restarts as a new process, in INITIALIZE."""
        for i in indexes or range(len(self.routers)):
            if i in self.dead:
                self.dead.discard(i)
                self.routers[i] = VrrpRouter(self.routers[i].config)
            self.apply(i, self.routers[i].start(self.now))

    def shutdown(self, i: int) -> None:
        self.apply(i, self.routers[i].shutdown(self.now))

    def set_priority(self, i: int, priority: int) -> None:
        self.apply(i, self.routers[i].set_priority(priority, self.now))

    def crash(self, i: int) -> None:
        """The router stops dead: no priority-0 advertisement, nothing more from it."""
        self.dead.add(i)

    def partition(self, *groups: Iterable[int]) -> None:
        sets = [set(g) for g in groups]
        self.blocked = {(a, b) for ga in sets for gb in sets if ga is not gb for a in ga for b in gb}

    def heal(self) -> None:
        self.blocked.clear()

    def run_until(self, end: float) -> None:
        for _ in range(1_000_000):
            due = [(d, i) for i, r in enumerate(self.routers)
                   if i not in self.dead and (d := r.next_deadline) is not None]
            next_timer = min(due, default=(math.inf, -1))
            next_packet = self._queue[0][0] if self._queue else math.inf
            when = min(next_timer[0], next_packet)
            if when > end:
                self.now = end
                return
            self.now = max(self.now, when)
            if next_packet <= next_timer[0]:
                _, _, sender, receiver, data = heapq.heappop(self._queue)
                if receiver not in self.dead:
                    src = self.routers[sender].config.primary_address
                    self.apply(receiver, self.routers[receiver].receive(data, src, self.ttl, self.now))
            else:
                self.apply(next_timer[1], self.routers[next_timer[1]].timer(self.now))
        raise AssertionError("the simulation does not advance")

    # --- reading -------------------------------------------------------------------------------

    def live(self) -> list[int]:
        return [i for i in range(len(self.routers)) if i not in self.dead]

    def masters(self) -> list[int]:
        return [i for i in self.live() if self.routers[i].state is State.MASTER]

    def became(self, index: int, state: State, after: float = -math.inf) -> float | None:
        """When router `index` first entered `state` after `after`."""
        return next((t for t, i, e in self.changes if i == index and e.new is state and t > after), None)

    def last_multi_master(self, after: float) -> float | None:
        """The last instant after `after` at which two or more live routers were master at once."""
        last = None
        for i, (_, states) in enumerate(self.timeline):
            masters = [k for k, s in enumerate(states) if s is State.MASTER and k not in self.dead]
            if len(masters) > 1:
                ends = self.timeline[i + 1][0] if i + 1 < len(self.timeline) else self.now
                if ends > after:
                    last = ends
        return last
