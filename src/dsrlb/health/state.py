"""The health-check state machine: pure, no I/O and no clock reads.

One `CheckMachine` per configured check turns probe results and the passage of time into a check
state; a `TargetHealth` (or `GatewayHealth`) combines the checks of one target and emits frozen
events when the combined state changes. The driver (`scheduler.py`) owns the clock and the sockets:
it asks `next_deadline()`, calls `tick(now)` when it passes, starts a probe for every check in
`due_checks(now)` (reporting `probe_started(now)`) and feeds `probe_result(...)` back.

Semantics (DESIGN §3, BalanceNG): a check probes every `interval` seconds; it goes DOWN when it has
had no successful probe for `window` seconds (the `T` of `ping I,T`) and comes UP on the next
success. The target's HealthPolicy refines this for imported keepalived / Piranha settings:

- `rise` N: N consecutive successes are needed to come up (default 1: the next success).
- `fall` N > 0: N consecutive failures take the check down before the window ends (keepalived
  `retry`); 0 (the default) leaves the decision to the window alone.
- `quiesce`: a target whose checks fail is QUIESCED instead of DOWN: it keeps its sessions and gets
  no new ones (Piranha `quiesce_server`, keepalived `inhibit_on_failure`).

Initial state: a check starts UNKNOWN. It becomes UP after `rise` consecutive successes, DOWN after
max(fall, 1) consecutive failures, and DOWN when the first window passes without a success. The
data path treats UNKNOWN as "no new sessions" (`to_dataplane`), so a restarted balancer sends no new
client to a target before one probe has seen it alive. A target without checks is UP at once.

Invariant (tested with hypothesis): after any input at time `now`, a check in state UP has had a
successful probe within the last `window` seconds (`now - last_ok < window`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dsrlb.engine.dataplane import TargetState
from dsrlb.model import (
    AgentCheck,
    Check,
    HealthPolicy,
    HttpCheck,
    NeighbourCheck,
    PingCheck,
    ScriptCheck,
    SendExpectCheck,
    TcpOpenCheck,
)


class HealthState(enum.StrEnum):
    UNKNOWN = "unknown"  # no verdict yet (just configured)
    UP = "up"
    DOWN = "down"
    QUIESCED = "quiesced"  # down, but keeps its sessions (HealthPolicy.quiesce)

    def to_dataplane(self) -> TargetState:
        """What the data path does with a target in this health state (docs/datapath.md §2)."""
        if self is HealthState.UP:
            return TargetState.UP
        if self is HealthState.DOWN:
            return TargetState.DOWN
        return TargetState.NO_NEW  # UNKNOWN and QUIESCED: existing sessions stick, no new ones


@dataclass(frozen=True)
class TargetStateChanged:
    """A target's combined health changed. `since` is the driver's monotonic time of the change."""

    target_id: int
    old: HealthState
    new: HealthState
    since: float
    reason: str
    latency: float | None  # of the probe that caused the change; None when the window expired


@dataclass(frozen=True)
class GatewayStateChanged:
    """The `gateway { ping ... }` health changed (shown, and tracked by VRRP)."""

    old: HealthState
    new: HealthState
    since: float
    reason: str
    latency: float | None


HealthEvent = TargetStateChanged | GatewayStateChanged


def check_label(check: Check) -> str:
    """The check as an operator wrote it, for reasons and tables (`tcpopen 80,3,10`)."""
    match check:
        case PingCheck(interval=i, timeout=t, ipv6=v6):
            return f"{'ping6' if v6 else 'ping'} {i},{t}"
        case NeighbourCheck(interval=i, timeout=t, ipv6=v6):
            return f"{'ndp' if v6 else 'arp'} {i},{t}"
        case TcpOpenCheck(port=p, interval=i, timeout=t):
            return f"tcpopen {p},{i},{t}"
        case AgentCheck(port=p, interval=i, timeout=t, ipv6=v6):
            return f"{'agent6' if v6 else 'agent'} {p},{i},{t}"
        case ScriptCheck(command=c, interval=i, timeout=t):
            return f'script "{c}",{i},{t}'
        case HttpCheck(port=p, path=path, interval=i, timeout=t, tls=tls):
            return f'{"https" if tls else "http"} {p},"{path}",{i},{t}'
        case SendExpectCheck(port=p, interval=i, timeout=t):
            return f"sendexpect {p},{i},{t}"
    raise TypeError(f"not a health check: {check!r}")


def probe_timeout(check: Check) -> float:
    """Default per-probe timeout: min(interval, window), so probes of one check never overlap."""
    return float(max(min(check.interval, check.timeout), 1))


class CheckMachine:
    """The state of one check on one target. All times are the driver's monotonic seconds."""

    def __init__(
        self, label: str, interval: float, window: float, now: float, *,
        rise: int = 1, fall: int = 0, first_probe_at: float | None = None,
    ) -> None:
        if interval <= 0 or window <= 0:
            raise ValueError(f"{label}: interval and timeout must be positive")
        self.label = label
        self.interval = float(interval)
        self.window = float(window)
        self.rise = max(1, rise)
        self.fall = max(0, fall)
        self.created = now
        self.state = HealthState.UNKNOWN
        self.since = now
        self.reason = "not probed yet"
        self.last_ok: float | None = None
        self.last_latency: float | None = None
        self.last_detail = ""
        self.ok_streak = 0
        self.fail_streak = 0
        self.in_flight = False
        self.next_probe_at = now if first_probe_at is None else first_probe_at

    # --- inputs --------------------------------------------------------------------------------

    def probe_due(self, now: float) -> bool:
        return not self.in_flight and now >= self.next_probe_at

    def probe_started(self, now: float) -> None:
        self.in_flight = True
        # Fixed rate: the next probe is one interval after this one was due, so a slow probe does
        # not make the schedule drift; after a stall we start again from now instead of bursting.
        following = self.next_probe_at + self.interval
        self.next_probe_at = following if following > now else now + self.interval

    def probe_result(self, ok: bool, now: float, latency: float | None, detail: str) -> bool:
        """Record a finished probe; True when the check's state changed."""
        self.in_flight = False
        changed = self.tick(now)
        self.last_latency = latency
        self.last_detail = detail
        if ok:
            self.last_ok = now
            self.ok_streak += 1
            self.fail_streak = 0
            if self.state is not HealthState.UP and self.ok_streak >= self.rise:
                why = "probe succeeded" if self.rise == 1 else f"{self.ok_streak} consecutive successes"
                return self._set(HealthState.UP, now, why + (f": {detail}" if detail else "")) or changed
            return changed
        self.fail_streak += 1
        self.ok_streak = 0
        if self.state is HealthState.DOWN:
            self.reason = f"probe failed: {detail}"  # keep `since`, refresh why it is still down
            return changed
        needed = self.fall if self.state is HealthState.UP else max(self.fall, 1)
        if needed and self.fail_streak >= needed:
            what = "probe failed" if needed == 1 else f"{self.fail_streak} consecutive failures"
            return self._set(HealthState.DOWN, now, f"{what}: {detail}") or changed
        return changed

    def tick(self, now: float) -> bool:
        """Apply the timeout window at `now`; True when the check went down."""
        deadline = self._window_deadline()
        if now >= deadline:
            last = f" (last: {self.last_detail})" if self.last_detail else ""
            since = "since start" if self.last_ok is None else f"for {self.window:g} s"
            return self._set(HealthState.DOWN, now, f"no successful probe {since}{last}")
        return False

    # --- outputs -------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When the driver must call again: the next probe or the end of the window."""
        probe_at = math.inf if self.in_flight else self.next_probe_at
        return min(probe_at, self._window_deadline())

    def _window_deadline(self) -> float:
        if self.state is HealthState.DOWN:
            return math.inf
        base = self.created if self.last_ok is None else self.last_ok
        return base + self.window

    def _set(self, state: HealthState, now: float, reason: str) -> bool:
        if state is self.state:
            return False
        self.state = state
        self.since = now
        self.reason = reason
        return True


@dataclass(frozen=True)
class Transition:
    old: HealthState
    new: HealthState
    since: float
    reason: str
    latency: float | None


class HealthGroup:
    """The combination of several checks: UP only when all are UP (DESIGN §3)."""

    def __init__(
        self, checks: Sequence[Check], policy: HealthPolicy, now: float,
        first_probe_at: dict[Check, float] | None = None,
    ) -> None:
        self.policy = policy
        self.machines: dict[Check, CheckMachine] = {}
        self._add(checks, now, first_probe_at or {})
        self.state, self.reason = self._combine()
        self.since = now
        self.latency: float | None = None

    def _add(self, checks: Iterable[Check], now: float, first_probe_at: dict[Check, float]) -> None:
        for check in checks:
            if check not in self.machines:
                self.machines[check] = CheckMachine(
                    check_label(check), check.interval, check.timeout, now,
                    rise=self.policy.rise, fall=self.policy.fall, first_probe_at=first_probe_at.get(check),
                )

    def _combine(self) -> tuple[HealthState, str]:
        if not self.machines:
            return HealthState.UP, "no health checks"
        machines = list(self.machines.values())
        down = [m for m in machines if m.state is HealthState.DOWN]
        if down:
            state = HealthState.QUIESCED if self.policy.quiesce else HealthState.DOWN
            return state, "; ".join(f"{m.label}: {m.reason}" for m in down)
        unknown = [m for m in machines if m.state is HealthState.UNKNOWN]
        if unknown:
            return HealthState.UNKNOWN, "; ".join(f"{m.label}: {m.reason}" for m in unknown)
        if len(machines) == 1:
            return HealthState.UP, f"{machines[0].label}: {machines[0].reason}"
        return HealthState.UP, "all checks up"

    def _update(self, now: float, latency: float | None) -> list[Transition]:
        new, reason = self._combine()
        if new is self.state:
            self.reason = reason
            return []
        old = self.state
        self.state, self.reason, self.since, self.latency = new, reason, now, latency
        return [Transition(old, new, now, reason, latency)]

    def due_checks(self, now: float) -> list[Check]:
        return [c for c, m in self.machines.items() if m.probe_due(now)]

    def next_deadline(self) -> float:
        return min((m.next_deadline() for m in self.machines.values()), default=math.inf)

    def probe_started_(self, check: Check, now: float) -> None:
        self.machines[check].probe_started(now)

    def probe_result_(
        self, check: Check, ok: bool, now: float, latency: float | None, detail: str,
    ) -> list[Transition]:
        machine = self.machines.get(check)
        if machine is None:  # the check was removed by a reconfiguration while its probe ran
            return []
        for other in self.machines.values():
            if other is not machine:
                other.tick(now)
        machine.probe_result(ok, now, latency, detail)
        return self._update(now, latency)

    def tick_(self, now: float) -> list[Transition]:
        for machine in self.machines.values():
            machine.tick(now)
        return self._update(now, None)

    def reconfigure_(
        self, checks: Sequence[Check], policy: HealthPolicy, now: float,
        first_probe_at: dict[Check, float] | None = None,
    ) -> list[Transition]:
        """Keep the machines of unchanged checks, add new ones (UNKNOWN), drop removed ones."""
        wanted = set(checks)
        if policy != self.policy:
            self.policy = policy
            for m in self.machines.values():
                m.rise, m.fall = max(1, policy.rise), max(0, policy.fall)
        for check in list(self.machines):
            if check not in wanted:
                del self.machines[check]
        self._add(checks, now, first_probe_at or {})
        for m in self.machines.values():
            m.tick(now)
        return self._update(now, None)


class TargetHealth(HealthGroup):
    """The health of one target; every method returns the events it caused."""

    def __init__(
        self, target_id: int, checks: Sequence[Check], policy: HealthPolicy, now: float,
        first_probe_at: dict[Check, float] | None = None,
    ) -> None:
        super().__init__(checks, policy, now, first_probe_at)
        self.target_id = target_id

    def _events(self, transitions: list[Transition]) -> list[TargetStateChanged]:
        return [TargetStateChanged(self.target_id, t.old, t.new, t.since, t.reason, t.latency)
                for t in transitions]

    def probe_started(self, check: Check, now: float) -> None:
        self.probe_started_(check, now)

    def probe_result(
        self, check: Check, ok: bool, now: float, latency: float | None = None, detail: str = "",
    ) -> list[TargetStateChanged]:
        return self._events(self.probe_result_(check, ok, now, latency, detail))

    def tick(self, now: float) -> list[TargetStateChanged]:
        return self._events(self.tick_(now))

    def reconfigure(
        self, checks: Sequence[Check], policy: HealthPolicy, now: float,
        first_probe_at: dict[Check, float] | None = None,
    ) -> list[TargetStateChanged]:
        return self._events(self.reconfigure_(checks, policy, now, first_probe_at))


class GatewayHealth(HealthGroup):
    """The gateway's ping/ping6 checks; same rules as a target, with the default policy."""

    def _events(self, transitions: list[Transition]) -> list[GatewayStateChanged]:
        return [GatewayStateChanged(t.old, t.new, t.since, t.reason, t.latency) for t in transitions]

    def probe_started(self, check: Check, now: float) -> None:
        self.probe_started_(check, now)

    def probe_result(
        self, check: Check, ok: bool, now: float, latency: float | None = None, detail: str = "",
    ) -> list[GatewayStateChanged]:
        return self._events(self.probe_result_(check, ok, now, latency, detail))

    def tick(self, now: float) -> list[GatewayStateChanged]:
        return self._events(self.tick_(now))

    def reconfigure(
        self, checks: Sequence[Check], policy: HealthPolicy, now: float,
        first_probe_at: dict[Check, float] | None = None,
    ) -> list[GatewayStateChanged]:
        return self._events(self.reconfigure_(checks, policy, now, first_probe_at))
