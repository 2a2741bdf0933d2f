"""The health-check driver: runs every check of every registered target (and the gateway) on time.

The daemon owns one `HealthScheduler`: `await start()`, `reconfigure(config)` on every reload,
`subscribe(callback)` for `TargetStateChanged` / `GatewayStateChanged` events, `snapshot()` for
`show targets`, `loads()` for the `agent` / `rndagent` methods, `await stop()` at exit.

How it keeps 10k targets at 1 s cheap and on time (bench/health.py, docs/health.md):
- first probes are spread over min(interval, 1 s) by a hash of target and check, on a grid of
  1/256 s: a reload does not send every probe in the same millisecond, and as probes run at a fixed
  rate, 10,000 checks share at most 256 deadlines a second instead of one each;
- so the timer structure is a wheel: subjects in one list per distinct deadline, and a small heap
  of those deadlines (about 256 a second, not 10,000); one loop timer armed for the earliest. A
  reschedule is a list append, nothing allocated per probe. Superseded entries are skipped, and
  dropped before the timer is armed, so they never wake the loop;
- tcpopen and ping probes (the default probe kit) start directly on the multiplexed probers of
  `multiplex.py`: no task, future or timer per probe, results come back in batches. Other checks
  run as one task per probe;
- at most `max_concurrency` probes are in flight; further due probes wait in a FIFO (a check
  never has two probes at once: the state machine knows it is in flight);
- the hot path works on `_CheckSlot`s made at configuration time (the check's machine, its socket
  address and prober), so a probe costs no dataclass, no hashing of a Check and no string formatting;
- every probe runs under its own timeout, so a hung probe (a script that sleeps, a black-holed
  SYN) only ever holds its own slot; a guard sweep once a second completes any probe that overstays
  its timeout by PROBE_GRACE (a task is cancelled; a multiplexed probe its prober no longer holds is
  counted in `probes_lost` and failed), so no check stays in flight for good;
- a probe this loop starts late (it was blocked, or is behind) moves its check's window by that
  much while it runs (CheckMachine.lateness): the loop's own delay takes no target down.

Alerts: when a target goes down (DOWN or QUIESCED) the `alert` command runs, when it comes back UP
from down the `upalert` command; per target (`alert` / `upalert` attributes of Target, when the
model has them) else the `set alert "..."` / `set upalert "..."` settings. Macros: $target$,
$name$, $ipaddr$, $ipaddr6$, $port$, $state$, $oldstate$, $reason$; run without a shell like check
scripts, killed with their process group after `alert_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import logging
import math
import resource
import shlex
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TypeAlias

from dsrlb.health.multiplex import EchoProber, TcpConnectProber, canonical_address, why
from dsrlb.health.probes import ProbeKit, ProbeResult, ProbeTarget, run_script, substitute_macros
from dsrlb.health.state import (
    CheckMachine,
    GatewayHealth,
    HealthEvent,
    HealthState,
    TargetHealth,
    TargetStateChanged,
    check_label,
    probe_timeout,
)
from dsrlb.model import AgentCheck, Check, Config, HealthPolicy, PingCheck, Target, TcpOpenCheck
from dsrlb.secret_file import SecretFileError, secret_from_setting

log = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address
ProbeFunction: TypeAlias = Callable[[Check, ProbeTarget, float], Awaitable[ProbeResult]]
Subscriber: TypeAlias = Callable[[HealthEvent], None]
DOWNISH = (HealthState.DOWN, HealthState.QUIESCED)
SPREAD_GRID = 256  # first probes start on 1/256 s boundaries (a power of two: exact in binary floats)
MAX_CONCURRENCY = 65536
# Subjects handled per timer wake-up. Starting a tcpopen probe costs tens of microseconds of system
# calls; after this many the loop gets to collect results before we go on (the rest of the due
# subjects follow at once), so an overloaded machine delays probes instead of timing them out.
SUBJECTS_PER_WAKE = 256
# A multiplexed probe's result is due by its timeout (the probers guarantee it). The guard sweep (once a
# second) completes one that overstays by this much, so no check can stay in flight for good.
PROBE_GRACE = 1.0

# How a check's probe runs (_CheckSlot.way)
BY_TASK = "task"  # a task running the probe function (every check type; the only way for a custom probe)
BY_TCP = "tcp"  # TcpConnectProber.start
BY_ECHO = "echo"  # EchoProber.start


@dataclass(frozen=True)
class CheckView:
    label: str
    state: HealthState
    since: float
    reason: str
    latency: float | None
    detail: str


@dataclass(frozen=True)
class TargetView:
    """One row of `show targets`: `since` is loop-monotonic, `since_wall` the same as epoch time."""

    target_id: int
    name: str | None
    address: IPAddress | None
    state: HealthState
    since: float
    since_wall: float
    reason: str
    latency: float | None
    load: float | None
    checks: tuple[CheckView, ...]


@dataclass(frozen=True)
class GatewayView:
    state: HealthState
    since: float
    since_wall: float
    reason: str
    latency: float | None
    checks: tuple[CheckView, ...]


class _Subject:
    """A target or the gateway: its health machines and where each check's probe goes."""

    def __init__(
        self, key: int | None, health: TargetHealth | GatewayHealth, probe_targets: dict[Check, ProbeTarget],
    ) -> None:
        self.key = key  # target id, None for the gateway
        self.health = health
        self.probe_targets = probe_targets
        self.scheduled = math.inf  # deadline of this subject's valid heap entry
        self.loads: dict[Check, float] = {}
        self.model: Target | None = None
        self.slots: list[_CheckSlot] = []


class _CheckSlot:
    """One check of one subject, as the probe hot path needs it: made at configuration time.

    It is the token the multiplexed probers hand back with a result. `alive` turns False when the
    check or its subject is removed, so a late result is ignored without looking anything up.
    """

    __slots__ = ("alive", "bind_to", "check", "echo_address", "echo_source", "family", "is_agent",
                 "machine", "prober", "result_due", "running_on", "sockaddr", "subject", "target", "timeout",
                 "way")

    def __init__(self, subject: _Subject, check: Check, machine: CheckMachine) -> None:
        self.subject = subject
        self.check = check
        self.machine = machine
        self.alive = True
        self.is_agent = isinstance(check, AgentCheck)
        self.timeout = probe_timeout(check)
        self.target: ProbeTarget | None = None
        self.way = BY_TASK
        self.family = socket.AF_INET
        self.sockaddr: tuple[str, int] = ("", 0)
        self.bind_to: tuple[str, int] | None = None
        self.echo_address = ""
        self.echo_source: str | None = None
        self.prober: TcpConnectProber | EchoProber | None = None  # resolved on the first probe
        # A multiplexed probe's result comes by its timeout at the latest (the prober guarantees it),
        # so no wake-up for the window is needed before then (CheckMachine.next_deadline).
        self.result_due = math.inf
        # The prober its multiplexed probe runs on, until the result: what the guard sweep checks
        # (`prober` is reset by a reconfiguration while the probe runs on)
        self.running_on: TcpConnectProber | EchoProber | None = None

    def aim(self, target: ProbeTarget | None, multiplexed: bool) -> None:
        """Where the probes go and which way they run (the socket addresses are computed once here)."""
        self.target, self.way, self.prober = target, BY_TASK, None
        if target is None or not multiplexed:
            return
        address, check = target.address, self.check
        self.family = socket.AF_INET6 if isinstance(address, IPv6Address) else socket.AF_INET
        source = target.source
        if source is not None and isinstance(source, IPv6Address) != isinstance(address, IPv6Address):
            source = None  # a real of the other family: the kernel picks (as ProbeKit.run does)
        if isinstance(check, TcpOpenCheck):
            self.way = BY_TCP
            self.sockaddr = (str(address), check.port)
            self.bind_to = (str(source), 0) if source is not None else None
        elif isinstance(check, PingCheck) and check.ipv6 == isinstance(address, IPv6Address):
            self.way = BY_ECHO
            self.echo_address = canonical_address(self.family, str(address))
            self.echo_source = str(source) if source is not None else None


def _subject_name(subject: _Subject) -> str:
    return "the gateway" if subject.key is None else f"target {subject.key}"


def service_port(config: Config, target: Target) -> int | None:
    """The port `$port$` means: the target's own, else the first port of a server that uses it."""
    if target.port is not None:
        return target.port
    for server in config.servers:
        if (target.id in server.targets or target.id in server.backup) and server.ports:
            return server.ports[0].first
    return None


def source_address(config: Config, address: IPAddress) -> IPAddress | None:
    """The balancer's `real` (or `real6`) on the network that holds `address`, if any."""
    for net in config.networks:
        if isinstance(address, IPv4Address):
            v4 = net.ipv4_network
            if v4 is not None and address in v4 and net.real is not None:
                return net.real
        else:
            v6 = net.ipv6_network
            if v6 is not None and address in v6 and net.real6 is not None:
                return net.real6
    return None


def _spread(key: int | None, check: Check, now: float) -> float:
    """When a new check's first probe is due: a hash of target and check picks a point in the next
    min(interval, 1 s), rounded down to the 1/256 s grid (the machine starts a probe at once when
    that is already past). Probes then follow at a fixed rate, so checks stay on the grid."""
    # blake2b, not crc32: the top bits of crc32 cluster for keys that differ in a digit or two
    # (200 targets fell on 42 of 256 slots), which bunches probes
    digest = hashlib.blake2b(f"{key}/{check_label(check)}".encode(), digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / 2**64
    first = now + fraction * min(float(check.interval), 1.0)
    return math.floor(first * SPREAD_GRID) / SPREAD_GRID


def default_concurrency() -> int:
    """Half the file-descriptor limit (each running probe holds a socket), at most 65536."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(MAX_CONCURRENCY, soft // 2 if soft > 0 else 4096))


class HealthScheduler:
    def __init__(
        self, config: Config, *, probe: ProbeFunction | None = None, kit: ProbeKit | None = None,
        max_concurrency: int | None = None, alert_timeout: float = 30.0,
    ) -> None:
        self._kit = kit if kit is not None else ProbeKit()
        self._kit.agent_secret = agent_secret(config)
        self._probe: ProbeFunction = probe if probe is not None else self._kit.run
        # tcpopen and ping go straight to the multiplexed probers unless a custom probe function
        # (tests, instrumentation) must see every probe
        self._multiplexed = probe is None
        self._max = max_concurrency if max_concurrency is not None else default_concurrency()
        self._alert_timeout = alert_timeout
        self._config = config
        self._targets: dict[int, _Subject] = {}
        self._gateway: _Subject | None = None
        # the timer wheel: subjects by deadline, and the heap of those deadlines (each once)
        self._wheel: dict[float, list[_Subject]] = {}
        self._deadlines: list[float] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._walking = False  # inside _run_due: the timer is armed once at the end, not per subject
        self._queue: deque[_CheckSlot] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscribers: list[Subscriber] = []
        self._guard: dict[asyncio.Task[None], float] = {}
        self._guard_fired: set[asyncio.Task[None]] = set()
        self._guard_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        self.stats: dict[str, int] = {"probes_started": 0, "probes_ok": 0, "probes_failed": 0,
                                      "events": 0, "alerts": 0, "late_results_ignored": 0,
                                      "probes_lost": 0}

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start checking (again: no-op). A scheduler runs once: stop() closes its probe kit and
        abandons its probes in flight, so a stopped one refuses to start; the daemon makes a new one
        per run and changes a running one with reconfigure()."""
        if self._stopped:
            raise RuntimeError("a stopped HealthScheduler does not restart: make a new one")
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._apply(self._config, self._loop.time())
        self._run_due()

    async def stop(self) -> None:
        self._stopped = True
        for timer in (self._timer, self._guard_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._guard_timer = None
        self._timer_at = math.inf
        self._loop = None  # from here on results are late: the kit fails its probes in flight on close
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._queue.clear()
        self._kit.close()
        self._in_flight = 0
        for subject in self._subjects():
            for slot in subject.slots:
                slot.prober = None

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(event)` for every state change; returns the unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def reconfigure(self, config: Config) -> None:
        """Apply a new config; unchanged checks keep their state, timers and running probes."""
        secret = agent_secret(config)  # raises before anything changes when the file is unreadable
        self._config = config
        self._kit.agent_secret = secret
        if self._loop is not None:
            self._apply(config, self._loop.time())
            self._run_due()

    # --- views -----------------------------------------------------------------------------------

    def snapshot(self) -> tuple[TargetView, ...]:
        return tuple(v for tid in sorted(self._targets) if (v := self.target(tid)) is not None)

    def target(self, target_id: int) -> TargetView | None:
        subject = self._targets.get(target_id)
        if subject is None or subject.model is None:
            return None
        h = subject.health
        return TargetView(
            target_id, subject.model.name, subject.model.address, h.state, h.since, self._wall(h.since),
            h.reason, self._latency(subject), self._load(subject), self._check_views(subject),
        )

    def gateway(self) -> GatewayView | None:
        g = self._gateway
        if g is None:
            return None
        h = g.health
        return GatewayView(h.state, h.since, self._wall(h.since), h.reason, self._latency(g),
                           self._check_views(g))

    def loads(self) -> dict[int, float]:
        """Agent-reported load per target whose agent check is up (the `agent`/`rndagent` input)."""
        out: dict[int, float] = {}
        for tid, subject in self._targets.items():
            load = self._load(subject)
            if load is not None:
                out[tid] = load
        return out

    def counters(self) -> dict[str, int]:
        return {**self.stats, "in_flight": self._in_flight, "queued": len(self._queue),
                **{f"agent_drop_{k}": v for k, v in self._kit.agent_drops.counts.items()}}

    def _load(self, subject: _Subject) -> float | None:
        up = [v for c, v in subject.loads.items()
              if c in subject.health.machines and subject.health.machines[c].state is HealthState.UP]
        return max(up) if up else None

    @staticmethod
    def _latency(subject: _Subject) -> float | None:
        latencies = [m.last_latency for m in subject.health.machines.values() if m.last_latency is not None]
        return max(latencies) if latencies else None

    @staticmethod
    def _check_views(subject: _Subject) -> tuple[CheckView, ...]:
        return tuple(CheckView(m.label, m.state, m.since, m.reason, m.last_latency, m.last_detail)
                     for m in subject.health.machines.values())

    def _wall(self, since: float) -> float:
        now = self._loop.time() if self._loop is not None else since
        return time.time() - (now - since)

    # --- configuration ---------------------------------------------------------------------------

    def _subjects(self) -> list[_Subject]:
        return [*self._targets.values(), *([self._gateway] if self._gateway is not None else [])]

    def _apply(self, config: Config, now: float) -> None:
        wanted = {t.id: t for t in config.targets if t.registered and t.address is not None}
        for tid in list(self._targets):
            if tid not in wanted:
                self._forget(self._targets.pop(tid))
        for tid, target in wanted.items():
            assert target.address is not None
            probe_target = ProbeTarget(target.address, service_port(config, target),
                                       source_address(config, target.address))
            targets = dict.fromkeys(target.checks, probe_target)
            subject = self._targets.get(tid)
            spread = {c: _spread(tid, c, now) for c in target.checks}
            if subject is None:
                subject = self._targets[tid] = _Subject(
                    tid, TargetHealth(tid, target.checks, target.health, now, spread), targets)
            elif set(subject.health.machines) != set(target.checks) or subject.health.policy != target.health:
                self._publish(subject.health.reconfigure(target.checks, target.health, now, spread))
            subject.probe_targets = targets  # an address or source change applies to the next probe
            subject.model = target
            self._bind_slots(subject)
            self._schedule(subject)
        self._apply_gateway(config, now)

    def _apply_gateway(self, config: Config, now: float) -> None:
        gw = config.gateway
        targets: dict[Check, ProbeTarget] = {}
        if gw is not None:
            for check in gw.checks:
                address = gw.ipaddr6 if getattr(check, "ipv6", False) else gw.ipaddr
                if address is not None:
                    targets[check] = ProbeTarget(address, None, source_address(config, address))
        if not targets:
            if self._gateway is not None:
                self._forget(self._gateway)
            self._gateway = None
            return
        spread = {c: _spread(None, c, now) for c in targets}
        if self._gateway is None:
            self._gateway = _Subject(None, GatewayHealth(list(targets), HealthPolicy(), now, spread), targets)
        else:
            if set(self._gateway.health.machines) != set(targets):
                self._publish(self._gateway.health.reconfigure(list(targets), HealthPolicy(), now, spread))
            self._gateway.probe_targets = targets
        self._bind_slots(self._gateway)
        self._schedule(self._gateway)

    def _bind_slots(self, subject: _Subject) -> None:
        """One slot per machine: kept while the machine is (its probe in flight stays valid)."""
        old = {slot.machine: slot for slot in subject.slots}
        slots = []
        for check, machine in subject.health.machines.items():
            slot = old.pop(machine, None) or _CheckSlot(subject, check, machine)
            slot.aim(subject.probe_targets.get(check), self._multiplexed)
            slots.append(slot)
        for gone in old.values():
            gone.alive = False
        subject.slots = slots

    @staticmethod
    def _forget(subject: _Subject) -> None:
        """A removed target (or gateway): its wheel entries and probe results are ignored from now on."""
        for slot in subject.slots:
            slot.alive = False
        subject.scheduled = math.nan  # equal to no deadline: every wheel entry of it is superseded

    # --- the timer loop --------------------------------------------------------------------------

    def _schedule(self, subject: _Subject) -> None:
        deadline = math.inf
        for slot in subject.slots:
            wake = slot.machine.next_deadline(slot.result_due)
            if wake < deadline:
                deadline = wake
        if deadline == subject.scheduled:
            return
        subject.scheduled = deadline
        if deadline == math.inf:
            return
        bucket = self._wheel.get(deadline)
        if bucket is not None:
            bucket.append(subject)  # the timer is armed at or before this deadline already
            return
        self._wheel[deadline] = [subject]
        heapq.heappush(self._deadlines, deadline)
        if deadline < self._timer_at and not self._walking:
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        if self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._run_due)

    def _run_due(self) -> None:
        """Tick every subject whose deadline passed and start the probes that are due."""
        loop = self._loop
        if loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()  # when called from start/reconfigure rather than by the timer
        self._timer, self._timer_at = None, math.inf
        now = loop.time()
        deadlines, wheel = self._deadlines, self._wheel
        budget = SUBJECTS_PER_WAKE
        self._walking = True
        try:
            while deadlines and deadlines[0] <= now and budget:
                deadline = heapq.heappop(deadlines)
                bucket = wheel.pop(deadline)
                for index, subject in enumerate(bucket):
                    if subject.scheduled != deadline:
                        continue  # superseded by a newer entry, or removed
                    if not budget:  # the rest after the loop has collected results
                        wheel[deadline] = bucket[index:]
                        heapq.heappush(deadlines, deadline)
                        break
                    budget -= 1
                    self._wake(subject, now)
        finally:
            self._walking = False
        if self._queue:
            self._drain_queue()
        # buckets of superseded entries only must not wake the loop: drop them before arming
        while deadlines and not any(s.scheduled == deadlines[0] for s in wheel[deadlines[0]]):
            del wheel[heapq.heappop(deadlines)]
        if deadlines:
            self._arm(deadlines[0])  # in the past when the budget ran out: runs after the loop's I/O

    def _wake(self, subject: _Subject, now: float) -> None:
        """A subject's deadline passed: start its due probes, apply its windows, schedule it anew.

        Probes first: one that starts late (this loop was blocked or is behind) moves its check's
        window by its lateness (state.py). Applying the window first took every answering target
        down whenever this loop ran more than T - I late, and up again at the probe's result: two
        events a probe, whose republishes kept the daemon behind for good, and at any instant one
        wake-up batch (SUBJECTS_PER_WAKE) down, in flight, its sockets connected and not yet read.
        """
        subject.scheduled = math.inf
        for slot in subject.slots:
            machine = slot.machine
            if not machine.in_flight and now >= machine.next_probe_at:
                machine.probe_started(now)
                if self._in_flight < self._max and not self._queue:
                    self._start(slot, now)
                else:
                    self._queue.append(slot)
        for slot in subject.slots:
            if now >= slot.machine.window_end:  # a window ran out (a late probe's ends later)
                events = subject.health.tick(now)
                if events:
                    self._publish(events)
                break
        self._schedule(subject)

    def _drain_queue(self) -> None:
        loop = self._loop
        now = loop.time() if loop is not None else 0.0
        while self._queue and self._in_flight < self._max and self._loop is not None:
            slot = self._queue.popleft()
            if slot.alive:
                self._start(slot, now)

    def _start(self, slot: _CheckSlot, now: float) -> None:
        """Start one probe: on a multiplexed prober (no allocation but a tuple) or as a task."""
        loop = self._loop
        assert loop is not None
        self._in_flight += 1
        self.stats["probes_started"] += 1
        way = slot.way
        if way is not BY_TASK:
            slot.result_due = now + slot.timeout
        if way is BY_TCP:
            tcp = slot.prober
            if tcp is None or tcp.closed:
                try:
                    tcp = slot.prober = self._kit.tcp_prober(loop)
                except OSError as exc:  # no epoll: out of descriptors
                    loop.call_soon(self._deliver, slot, False, None, why(exc))
                    return
            assert isinstance(tcp, TcpConnectProber)
            slot.running_on = tcp
            if self._guard_timer is None:
                self._arm_guard()
            tcp.start(self._deliver, slot, slot.family, slot.sockaddr, slot.timeout, slot.bind_to)
        elif way is BY_ECHO:
            echo = slot.prober
            if echo is None or echo.closed:
                try:
                    ipv6 = slot.family == socket.AF_INET6
                    echo = slot.prober = self._kit.echo_prober(ipv6, slot.echo_source, loop)
                except OSError as exc:  # e.g. the network's `real` is not (yet) an address of ours
                    loop.call_soon(self._deliver, slot, False, None, why(exc))
                    return
            assert isinstance(echo, EchoProber)
            slot.running_on = echo
            if self._guard_timer is None:
                self._arm_guard()
            echo.start(self._deliver, slot, slot.echo_address, slot.timeout)
        else:
            task = loop.create_task(self._run_probe(slot))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_probe(self, slot: _CheckSlot) -> None:
        target = slot.target
        timeout = slot.timeout
        task = asyncio.current_task()
        assert task is not None and self._loop is not None
        # The probe enforces its own timeout; the guard (one sweep a second for all probes, cheaper
        # than a timer per probe) only cancels a broken probe that overstays by a second.
        self._guard[task] = self._loop.time() + timeout + 1.0
        self._arm_guard()
        try:
            if target is None:
                raise ValueError("no address to probe")
            result = await self._probe(slot.check, target, timeout)
        except asyncio.CancelledError:
            if task not in self._guard_fired:
                raise
            task.uncancel()
            result = ProbeResult(False, None, f"probe did not finish within {timeout:g} s")
        except Exception as exc:  # a probe bug must count as a failed probe, not stop the scheduler
            log.exception("health probe %s crashed", check_label(slot.check))
            result = ProbeResult(False, None, f"probe error: {exc}")
        finally:
            self._guard.pop(task, None)
            self._guard_fired.discard(task)
        self._deliver(slot, result.ok, result.latency, result.detail, result.load)

    def _arm_guard(self) -> None:
        if self._guard_timer is None and self._loop is not None:
            self._guard_timer = self._loop.call_later(1.0, self._sweep_guard)

    def _sweep_guard(self) -> None:
        self._guard_timer = None
        if self._loop is None:
            return
        now = self._loop.time()
        for task, deadline in list(self._guard.items()):
            if now >= deadline and task not in self._guard_fired:
                self._guard_fired.add(task)
                task.cancel()
        if self._in_flight > len(self._guard):  # multiplexed probes in flight
            self._sweep_multiplexed(now)
        if self._guard or self._in_flight > 0:
            self._arm_guard()

    def _sweep_multiplexed(self, now: float) -> None:
        """The invariant behind `result_due`: every multiplexed probe ends by its timeout. One that
        overstays by PROBE_GRACE is timed out by its prober now (the loop ran its timer late), or,
        when the prober no longer has it, completed here as lost and counted (`probes_lost`): a check
        never stays in flight for good, whatever became of its probe."""
        overdue: dict[TcpConnectProber | EchoProber, list[_CheckSlot]] = {}
        for subject in self._subjects():
            for slot in subject.slots:
                prober = slot.running_on
                if prober is not None and now > slot.result_due + PROBE_GRACE:
                    overdue.setdefault(prober, []).append(slot)
        for prober, slots in overdue.items():
            held = prober.expire(slots)  # delivers what it still had, as its own timeout would
            for slot in slots:
                if slot in held or slot.running_on is not prober:
                    continue
                self.stats["probes_lost"] += 1
                log.error("health probe lost: %s of %s had no result %.1f s after it was due; "
                          "completed as failed", check_label(slot.check), _subject_name(slot.subject),
                          now - slot.result_due)
                self._deliver(slot, False, None, f"probe lost: no result within {slot.timeout:g} s")

    def _deliver(
        self, slot: _CheckSlot, ok: bool, latency: float | None, detail: str, load: float | None = None,
    ) -> None:
        """A probe's result (the multiplexed probers call this directly, in batches)."""
        self._in_flight -= 1
        slot.running_on = None
        loop = self._loop
        if loop is None or not slot.alive:
            self.stats["late_results_ignored"] += 1
        else:
            self.stats["probes_ok" if ok else "probes_failed"] += 1
            subject = slot.subject
            if slot.is_agent:
                if ok and load is not None:
                    subject.loads[slot.check] = load
                else:
                    subject.loads.pop(slot.check, None)
            events = subject.health.machine_result(slot.machine, ok, loop.time(), latency, detail)
            if events:
                self._publish(events)
            self._schedule(subject)
        if self._queue:
            self._drain_queue()

    # --- events and alerts -----------------------------------------------------------------------

    def _publish(self, events: Iterable[HealthEvent]) -> None:
        for event in events:
            self.stats["events"] += 1
            for callback in list(self._subscribers):
                try:
                    callback(event)
                except Exception:
                    log.exception("health event subscriber failed")
            if isinstance(event, TargetStateChanged):
                self._alert(event)

    def _alert(self, event: TargetStateChanged) -> None:
        down = event.new in DOWNISH and event.old not in DOWNISH
        up = event.new is HealthState.UP and event.old in DOWNISH
        if not (down or up) or self._loop is None:
            return
        subject = self._targets.get(event.target_id)
        target = subject.model if subject is not None else None
        key = "alert" if down else "upalert"
        command = getattr(target, key, None) or self._config.setting(key)
        if not command or target is None or target.address is None:
            return
        macros = {
            "$target$": str(target.id), "$name$": target.name or "", "$state$": str(event.new),
            "$oldstate$": str(event.old), "$reason$": event.reason,
        }
        probe_target = ProbeTarget(target.address, service_port(self._config, target))
        try:
            argv = shlex.split(str(command))
        except ValueError as exc:
            log.error("cannot split %s command %r: %s", key, command, exc)
            return
        args = []
        for arg in argv:  # substitute after splitting: a reason with spaces stays one argument
            for macro, value in macros.items():
                arg = arg.replace(macro, value)
            args.append(substitute_macros(arg, probe_target))
        self.stats["alerts"] += 1
        task = self._loop.create_task(self._run_alert(key, shlex.join(args)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_alert(self, key: str, command: str) -> None:
        try:
            await run_script(command, self._alert_timeout)
        except Exception as exc:
            log.warning("%s command %r failed: %s", key, command, exc)


class HealthConfigError(ValueError):
    """A health setting that cannot be used (the daemon reports it and keeps the running config)."""


def agent_secret(config: Config) -> bytes | None:
    """`set agentsecretfile "/path"`: the load agents' shared secret (first line, stripped).

    Fails closed: a configured but unreadable or empty secret is an error, never a silent fall back
    to unauthenticated agent checks.
    """
    try:
        return secret_from_setting(config, "agentsecretfile")
    except SecretFileError as exc:
        raise HealthConfigError(str(exc)) from None
