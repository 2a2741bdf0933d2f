"""The health-check state machine: pure, no I/O and no clock reads.

One `CheckMachine` per configured check turns probe results and the passage of time into a check
state; a `TargetHealth` (or `GatewayHealth`) combines the checks of one target and emits frozen
events when the combined state changes. The driver (`scheduler.py`) owns the clock and the sockets:
it asks `next_deadline()`, calls `tick(now)` when it passes, starts a probe for every check in
`due_checks(now)` (reporting `probe_started(now)`) and feeds `probe_result(...)` back. A driver that
keeps the `CheckMachine`s it probes may use `machine_result(machine, ...)` instead, which skips
hashing the check (the hot path at 10,000 probes per second).

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

The driver's delay is not the target's. A probe the driver starts `L` seconds after it was due (its
event loop was blocked, or is behind) moves the window's end `L` later while it is in flight, and its
success is judged against that end: everything happens as if the driver had been on time, `L` later.
Otherwise a driver running more than `window - interval` late takes every healthy target down at its
next probe and up again at the result, and the events of that flapping (each a republish of the data
path) are what keeps an overloaded balancer behind (docs/health.md).

Invariant (tested with hypothesis): after any input at time `now`, a check in state UP has had a
successful probe within the last `window` seconds (`now - last_ok < window`), or has a probe in
flight that started `L` late and a success within the last `window + L` seconds.
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
        self.lateness = 0.0  # how late the driver started the probe in flight: the window's end moves
        self.next_probe_at = now if first_probe_at is None else first_probe_at
        # When the window runs out: (last success, else creation) + window; never while DOWN. Kept
        # up to date by probe_result and _set because every probe result and timer reads it.
        self.window_end = now + self.window

    # --- inputs --------------------------------------------------------------------------------

    def probe_due(self, now: float) -> bool:
        return not self.in_flight and now >= self.next_probe_at

    def probe_started(self, now: float) -> None:
        self.in_flight = True
        late = now - self.next_probe_at
        self.lateness = late if late > 0.0 else 0.0
        # Fixed rate: the next probe is one interval after this one was due, so a slow probe does
        # not make the schedule drift. After a stall (the driver late by more than an interval) the
        # missed probes are skipped, not made up in a burst: the next is the first slot of the same
        # phase at least an interval from now. Keeping the phase matters: restarting every stalled
        # check at `now + interval` would bunch them all into one instant for good.
        following = self.next_probe_at + self.interval
        if following <= now:
            following += math.ceil((now + self.interval - following) / self.interval) * self.interval
            if following < now + self.interval:  # float rounding
                following += self.interval
        self.next_probe_at = following

    def probe_result(self, ok: bool, now: float, latency: float | None, detail: str) -> bool:
        """Record a finished probe; True when the check's state changed."""
        # a success is judged against the window as it stood while it ran (moved by the driver's
        # lateness); a failure against the window itself
        credit = self.lateness if ok and self.in_flight else 0.0
        self.in_flight, self.lateness = False, 0.0
        changed = self._expire(now, credit)
        self.last_latency = latency
        self.last_detail = detail
        if ok:
            self.last_ok = now
            if self.state is not HealthState.DOWN:
                self.window_end = now + self.window
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
        return self._expire(now, self.lateness if self.in_flight else 0.0)

    def _expire(self, now: float, credit: float) -> bool:
        if now >= self.window_end + credit:
            last = f" (last: {self.last_detail})" if self.last_detail else ""
            since = "since start" if self.last_ok is None else f"for {self.window:g} s"
            return self._set(HealthState.DOWN, now, f"no successful probe {since}{last}")
        return False

    # --- outputs -------------------------------------------------------------------------------

    def next_deadline(self, result_due: float = math.inf) -> float:
        """When the driver must call again: the next probe or the end of the window.

        While a probe is in flight only the window counts; and not even the window when the driver
        guarantees the probe's result by `result_due` (its own timeout) and the window ends later:
        `probe_result` applies the window first, so the result's call comes in time. That saves a
        driver with 10k checks a timer entry per probe. (While a probe that started late is in
        flight, its window ends that much later.)
        """
        window = self.window_end
        if self.in_flight:
            window += self.lateness
            return window if window < result_due else math.inf
        return self.next_probe_at if self.next_probe_at < window else window

    def _set(self, state: HealthState, now: float, reason: str) -> bool:
        if state is self.state:
            return False
        self.state = state
        self.since = now
        self.reason = reason
        if state is HealthState.DOWN:
            self.window_end = math.inf
        else:
            self.window_end = (self.created if self.last_ok is None else self.last_ok) + self.window
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
        self.state = self._combined_state()
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

    @property
    def reason(self) -> str:
        """Why the group is in its state. Computed when asked: machine reasons only change inside this
        class's methods, each of which ends in `_update`, so this is the reason as of the last update
        without formatting strings on every probe."""
        return self._combine()[1]

    def _combined_state(self) -> HealthState:
        """The state part of `_combine`, without building reasons (run on every probe result)."""
        unknown = False
        for machine in self.machines.values():
            state = machine.state
            if state is HealthState.DOWN:
                return HealthState.QUIESCED if self.policy.quiesce else HealthState.DOWN
            if state is HealthState.UNKNOWN:
                unknown = True
        return HealthState.UNKNOWN if unknown else HealthState.UP

    def _update(self, now: float, latency: float | None) -> list[Transition]:
        new = self._combined_state()
        if new is self.state:
            return []
        old = self.state
        self.state, self.since, self.latency = new, now, latency
        return [Transition(old, new, now, self._combine()[1], latency)]

    def due_checks(self, now: float) -> list[Check]:
        return [c for c, m in self.machines.items() if m.probe_due(now)]

    def next_deadline(self) -> float:
        earliest = math.inf
        for machine in self.machines.values():
            deadline = machine.next_deadline()
            if deadline < earliest:
                earliest = deadline
        return earliest

    def probe_started_(self, check: Check, now: float) -> None:
        self.machines[check].probe_started(now)

    def probe_result_(
        self, check: Check, ok: bool, now: float, latency: float | None, detail: str,
    ) -> list[Transition]:
        machine = self.machines.get(check)
        if machine is None:  # the check was removed by a reconfiguration while its probe ran
            return []
        return self.machine_result_(machine, ok, now, latency, detail)

    def machine_result_(
        self, machine: CheckMachine, ok: bool, now: float, latency: float | None, detail: str,
    ) -> list[Transition]:
        """`probe_result_` for a driver that holds the machine (it must still be one of ours)."""
        changed = False
        for other in self.machines.values():
            if other is not machine and other.tick(now):
                changed = True
        if machine.probe_result(ok, now, latency, detail):
            changed = True
        # the combined state is a function of the machines' states (and the policy, which only
        # reconfigure_ changes): when none changed, neither did it
        return self._update(now, latency) if changed else []

    def tick_(self, now: float) -> list[Transition]:
        changed = False
        for machine in self.machines.values():
            if machine.tick(now):
                changed = True
        return self._update(now, None) if changed else []

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

    def machine_result(
        self, machine: CheckMachine, ok: bool, now: float, latency: float | None, detail: str,
    ) -> list[TargetStateChanged]:
        transitions = self.machine_result_(machine, ok, now, latency, detail)
        return self._events(transitions) if transitions else []

    def tick(self, now: float) -> list[TargetStateChanged]:
        transitions = self.tick_(now)
        return self._events(transitions) if transitions else []

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

    def machine_result(
        self, machine: CheckMachine, ok: bool, now: float, latency: float | None, detail: str,
    ) -> list[GatewayStateChanged]:
        return self._events(self.machine_result_(machine, ok, now, latency, detail))

    def tick(self, now: float) -> list[GatewayStateChanged]:
        return self._events(self.tick_(now))

    def reconfigure(
        self, checks: Sequence[Check], policy: HealthPolicy, now: float,
        first_probe_at: dict[Check, float] | None = None,
    ) -> list[GatewayStateChanged]:
        return self._events(self.reconfigure_(checks, policy, now, first_probe_at))
