"""The health-check driver: runs every check of every registered target (and the gateway) on time.

The daemon owns one `HealthScheduler`: `await start()`, `reconfigure(config)` on every reload,
`subscribe(callback)` for `TargetStateChanged` / `GatewayStateChanged` events, `snapshot()` for
`show targets`, `loads()` for the `agent` / `rndagent` methods, `await stop()` at exit.

How it keeps 10k targets at 1 s cheap and on time:
- one heap of per-target deadlines and one loop timer armed for the earliest; no task per target;
- a task only per running probe, at most `max_concurrency` of them; further due probes wait in a
  FIFO (a target's check never has two probes at once: the state machine knows it is in flight);
- first probes are spread over min(interval, 1 s) by a hash of target and check, so a reload does
  not send every probe in the same millisecond;
- every probe runs under its own timeout, so a hung probe (a script that sleeps, a black-holed
  SYN) only ever holds its own slot.

Alerts: when a target goes down (DOWN or QUIESCED) the `alert` command runs, when it comes back UP
from down the `upalert` command; per target (`alert` / `upalert` attributes of Target, when the
model has them) else the `set alert "..."` / `set upalert "..."` settings. Macros: $target$,
$name$, $ipaddr$, $ipaddr6$, $port$, $state$, $oldstate$, $reason$; run without a shell like check
scripts, killed with their process group after `alert_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import resource
import shlex
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TypeAlias

from dsrlb.health.probes import ProbeKit, ProbeResult, ProbeTarget, run_script, substitute_macros
from dsrlb.health.state import (
    GatewayHealth,
    HealthEvent,
    HealthState,
    TargetHealth,
    TargetStateChanged,
    check_label,
    probe_timeout,
)
from dsrlb.model import AgentCheck, Check, Config, HealthPolicy, Target

log = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address
ProbeFunction: TypeAlias = Callable[[Check, ProbeTarget, float], Awaitable[ProbeResult]]
Subscriber: TypeAlias = Callable[[HealthEvent], None]
DOWNISH = (HealthState.DOWN, HealthState.QUIESCED)


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
    fraction = zlib.crc32(f"{key}/{check_label(check)}".encode()) / 2**32
    return now + fraction * min(float(check.interval), 1.0)


def default_concurrency() -> int:
    """Half the file-descriptor limit, at most 4096: each running probe holds a socket."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(4096, soft // 2 if soft > 0 else 4096))


class HealthScheduler:
    def __init__(
        self, config: Config, *, probe: ProbeFunction | None = None, kit: ProbeKit | None = None,
        max_concurrency: int | None = None, alert_timeout: float = 30.0,
    ) -> None:
        self._kit = kit if kit is not None else ProbeKit()
        self._kit.agent_secret = agent_secret(config)
        self._probe: ProbeFunction = probe if probe is not None else self._kit.run
        self._max = max_concurrency if max_concurrency is not None else default_concurrency()
        self._alert_timeout = alert_timeout
        self._config = config
        self._targets: dict[int, _Subject] = {}
        self._gateway: _Subject | None = None
        self._heap: list[tuple[float, int, _Subject]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._queue: deque[tuple[_Subject, Check]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscribers: list[Subscriber] = []
        self._guard: dict[asyncio.Task[None], float] = {}
        self._guard_fired: set[asyncio.Task[None]] = set()
        self._guard_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats: dict[str, int] = {"probes_started": 0, "probes_ok": 0, "probes_failed": 0,
                                      "events": 0, "alerts": 0, "late_results_ignored": 0}

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._apply(self._config, self._loop.time())
        self._run_due()

    async def stop(self) -> None:
        for timer in (self._timer, self._guard_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._guard_timer = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._queue.clear()
        self._kit.close()
        self._loop = None

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
        return {**self.stats, "in_flight": len(self._tasks), "queued": len(self._queue),
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

    def _apply(self, config: Config, now: float) -> None:
        wanted = {t.id: t for t in config.targets if t.registered and t.address is not None}
        for tid in list(self._targets):
            if tid not in wanted:
                del self._targets[tid]  # its heap entries and probe results are ignored from now on
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
                subject.probe_targets = targets
            subject.model = target
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
            self._gateway = None
            return
        spread = {c: _spread(None, c, now) for c in targets}
        if self._gateway is None:
            self._gateway = _Subject(None, GatewayHealth(list(targets), HealthPolicy(), now, spread), targets)
        else:
            if set(self._gateway.health.machines) != set(targets):
                self._publish(self._gateway.health.reconfigure(list(targets), HealthPolicy(), now, spread))
            self._gateway.probe_targets = targets
        self._schedule(self._gateway)

    # --- the timer loop --------------------------------------------------------------------------

    def _alive(self, subject: _Subject) -> bool:
        if subject.key is None:
            return subject is self._gateway
        return self._targets.get(subject.key) is subject

    def _schedule(self, subject: _Subject) -> None:
        deadline = subject.health.next_deadline()
        if deadline == subject.scheduled or math.isinf(deadline):
            subject.scheduled = deadline
            return
        subject.scheduled = deadline
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, subject))
        if deadline < self._timer_at:
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        if self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._run_due)

    def _run_due(self) -> None:
        loop = self._loop
        if loop is None:
            return
        self._timer, self._timer_at = None, math.inf
        now = loop.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _seq, subject = heapq.heappop(heap)
            if deadline != subject.scheduled or not self._alive(subject):
                continue  # superseded by a newer entry, or removed
            subject.scheduled = math.inf
            self._publish(subject.health.tick(now))
            for check in subject.health.due_checks(now):
                subject.health.probe_started(check, now)
                self._queue.append((subject, check))
            self._schedule(subject)
        self._drain_queue()
        if heap and heap[0][0] < self._timer_at:
            self._arm(heap[0][0])

    def _drain_queue(self) -> None:
        loop = self._loop
        while self._queue and len(self._tasks) < self._max and loop is not None:
            subject, check = self._queue.popleft()
            if not self._alive(subject) or check not in subject.health.machines:
                continue
            task = loop.create_task(self._run_probe(subject, check))
            self._tasks.add(task)
            task.add_done_callback(self._probe_done)

    def _probe_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._drain_queue()

    async def _run_probe(self, subject: _Subject, check: Check) -> None:
        target = subject.probe_targets.get(check)
        if target is None:
            return
        timeout = probe_timeout(check)
        self.stats["probes_started"] += 1
        task = asyncio.current_task()
        assert task is not None and self._loop is not None
        # The probe enforces its own timeout; the guard (one sweep a second for all probes, cheaper
        # than a timer per probe) only cancels a broken probe that overstays by a second.
        self._guard[task] = self._loop.time() + timeout + 1.0
        self._arm_guard()
        try:
            result = await self._probe(check, target, timeout)
        except asyncio.CancelledError:
            if task not in self._guard_fired:
                raise
            task.uncancel()
            result = ProbeResult(False, None, f"probe did not finish within {timeout:g} s")
        except Exception as exc:  # a probe bug must count as a failed probe, not stop the scheduler
            log.exception("health probe %s crashed", check_label(check))
            result = ProbeResult(False, None, f"probe error: {exc}")
        finally:
            self._guard.pop(task, None)
            self._guard_fired.discard(task)
        self._on_result(subject, check, result)

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
        if self._guard:
            self._arm_guard()

    def _on_result(self, subject: _Subject, check: Check, result: ProbeResult) -> None:
        loop = self._loop
        if loop is None or not self._alive(subject) or check not in subject.health.machines:
            self.stats["late_results_ignored"] += 1
            return
        self.stats["probes_ok" if result.ok else "probes_failed"] += 1
        if isinstance(check, AgentCheck):
            if result.ok and result.load is not None:
                subject.loads[check] = result.load
            else:
                subject.loads.pop(check, None)
        now = loop.time()
        self._publish(subject.health.probe_result(check, result.ok, now, result.latency, result.detail))
        self._schedule(subject)

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
    path = config.setting("agentsecretfile")
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            secret = f.readline().strip()
    except OSError as exc:
        raise HealthConfigError(f"agentsecretfile {path}: {exc.strerror or exc}") from None
    if not secret:
        raise HealthConfigError(f"agentsecretfile {path}: the file is empty")
    return secret
