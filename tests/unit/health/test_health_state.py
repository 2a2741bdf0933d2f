"""The pure health state machine, driven by a fake clock (plain floats): no sleeps, no sockets."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsrlb.engine.dataplane import TargetState
from dsrlb.health.state import (
    CheckMachine,
    GatewayHealth,
    HealthState,
    TargetHealth,
    TargetStateChanged,
    check_label,
    probe_timeout,
)
from dsrlb.model import (
    AgentCheck,
    HealthPolicy,
    HttpCheck,
    NeighbourCheck,
    PingCheck,
    ScriptCheck,
    SendExpectCheck,
    TcpOpenCheck,
)

TCP = TcpOpenCheck(80, 3, 10)
PING = PingCheck(3, 10)


def test_first_success_brings_target_up() -> None:
    t = TargetHealth(1, [TCP], HealthPolicy(), now=0.0)
    assert t.state is HealthState.UNKNOWN
    assert t.due_checks(0.0) == [TCP]
    t.probe_started(TCP, 0.0)
    events = t.probe_result(TCP, True, 0.01, latency=0.01, detail="connected")
    assert events == [TargetStateChanged(1, HealthState.UNKNOWN, HealthState.UP, 0.01,
                                         "tcpopen 80,3,10: probe succeeded: connected", 0.01)]


def test_goes_down_when_window_passes_without_success_and_up_on_next_success() -> None:
    t = TargetHealth(7, [TCP], HealthPolicy(), now=0.0)
    t.probe_started(TCP, 0.0)
    t.probe_result(TCP, True, 0.0)
    assert t.state is HealthState.UP
    # failures at 3, 6, 9 keep it up: BalanceNG waits for the 10 s window (fall = 0)
    for now in (3.0, 6.0, 9.0):
        assert t.tick(now) == []
        t.probe_started(TCP, now)
        assert t.probe_result(TCP, False, now + 0.5, detail="refused") == []
        assert t.state is HealthState.UP
    assert t.next_deadline() == 10.0
    events = t.tick(10.0)
    assert [(e.old, e.new) for e in events] == [(HealthState.UP, HealthState.DOWN)]
    assert "no successful probe for 10 s" in events[0].reason and "refused" in events[0].reason
    assert events[0].latency is None
    t.probe_started(TCP, 12.0)
    events = t.probe_result(TCP, True, 12.0, latency=0.002)
    assert [(e.old, e.new) for e in events] == [(HealthState.DOWN, HealthState.UP)]


def test_unknown_goes_down_on_first_failure_or_first_window() -> None:
    t = TargetHealth(1, [TCP], HealthPolicy(), now=0.0)
    t.probe_started(TCP, 0.0)
    events = t.probe_result(TCP, False, 1.0, detail="refused")
    assert [(e.old, e.new) for e in events] == [(HealthState.UNKNOWN, HealthState.DOWN)]
    hung = TargetHealth(2, [TCP], HealthPolicy(), now=0.0)
    hung.probe_started(TCP, 0.0)  # never answers
    assert hung.tick(9.99) == []
    assert [e.new for e in hung.tick(10.0)] == [HealthState.DOWN]


def test_rise_and_fall_counts() -> None:
    t = TargetHealth(1, [PING], HealthPolicy(rise=3, fall=2), now=0.0)
    for i, now in enumerate((0.0, 3.0, 6.0)):
        t.probe_started(PING, now)
        events = t.probe_result(PING, True, now)
        assert (t.state is HealthState.UP) == (i == 2)
    assert [e.new for e in events] == [HealthState.UP]
    t.probe_started(PING, 9.0)
    assert t.probe_result(PING, False, 9.0) == []
    t.probe_started(PING, 12.0)
    events = t.probe_result(PING, False, 12.0, detail="timeout")
    assert [e.new for e in events] == [HealthState.DOWN]
    assert "2 consecutive failures: timeout" in events[0].reason


def test_quiesce_reports_quiesced_and_no_new_sessions() -> None:
    t = TargetHealth(1, [TCP], HealthPolicy(quiesce=True), now=0.0)
    t.probe_started(TCP, 0.0)
    events = t.probe_result(TCP, False, 0.0)
    assert [e.new for e in events] == [HealthState.QUIESCED]
    assert HealthState.QUIESCED.to_dataplane() is TargetState.NO_NEW
    assert HealthState.DOWN.to_dataplane() is TargetState.DOWN
    assert HealthState.UNKNOWN.to_dataplane() is TargetState.NO_NEW
    assert HealthState.UP.to_dataplane() is TargetState.UP


def test_several_checks_up_only_when_all_up() -> None:
    t = TargetHealth(1, [TCP, PING], HealthPolicy(), now=0.0)
    for c in (TCP, PING):
        t.probe_started(c, 0.0)
    assert t.probe_result(TCP, True, 0.1) == []
    assert t.state is HealthState.UNKNOWN
    assert [e.new for e in t.probe_result(PING, True, 0.2)] == [HealthState.UP]
    assert t.probe_result(PING, False, 3.0, detail="no reply") == []  # fall=0: the window decides
    t.probe_started(TCP, 9.0)
    assert t.probe_result(TCP, True, 9.0) == []
    events = t.tick(10.2)  # PING's window ends; TCP is still fine
    assert [e.new for e in events] == [HealthState.DOWN]
    assert events[0].reason.startswith("ping 3,10: no successful probe for 10 s (last: no reply)")


def test_target_without_checks_is_up() -> None:
    t = TargetHealth(1, [], HealthPolicy(), now=5.0)
    assert t.state is HealthState.UP and t.next_deadline() == math.inf


def test_reconfigure_keeps_unchanged_checks() -> None:
    t = TargetHealth(1, [TCP], HealthPolicy(), now=0.0)
    t.probe_started(TCP, 0.0)
    t.probe_result(TCP, True, 0.0)
    kept = t.machines[TCP]
    events = t.reconfigure([TCP, PING], HealthPolicy(), now=1.0)
    assert t.machines[TCP] is kept
    assert [(e.old, e.new) for e in events] == [(HealthState.UP, HealthState.UNKNOWN)]
    events = t.reconfigure([TCP], HealthPolicy(), now=2.0)
    assert [(e.old, e.new) for e in events] == [(HealthState.UNKNOWN, HealthState.UP)]
    # a result for a check removed while its probe ran is ignored
    assert t.probe_result(PING, False, 2.5) == []


def test_probe_schedule_is_fixed_rate_and_never_overlaps() -> None:
    m = CheckMachine("x", 2.0, 5.0, 0.0, first_probe_at=0.5)
    assert not m.probe_due(0.4) and m.probe_due(0.5)
    m.probe_started(0.7)
    assert m.next_probe_at == 2.5 and not m.probe_due(3.0)  # in flight: no second probe
    # only the window while in flight, 0.2 s later: the driver started the probe 0.2 s late
    assert m.next_deadline() == pytest.approx(5.2)
    m.probe_result(True, 3.0, 2.3, "slow")
    assert m.probe_due(3.0)
    m.probe_started(30.0)  # after a stall: the missed probes are skipped, the next is an interval on ...
    assert m.next_probe_at == 32.5  # ... in the same phase (0.5 + k * 2): stalled checks do not bunch



def test_a_driver_that_guarantees_the_result_needs_no_wakeup_for_the_window() -> None:
    m = CheckMachine("x", 1.0, 2.0, 0.0, first_probe_at=0.0)
    m.probe_started(0.0)
    m.probe_result(True, 0.25, 0.25, "ok")  # the window now ends at 2.25
    m.probe_started(1.0)  # in flight; the next probe is due at 2.0
    assert m.next_deadline() == 2.25  # only the window while in flight
    assert m.next_deadline(result_due=2.0) == math.inf  # the result (by 2.0) comes before the window ends
    assert m.next_deadline(result_due=3.0) == 2.25  # a later result: wake for the window's end
    m.probe_result(False, 2.0, None, "no answer within 1 s")
    assert m.next_deadline(result_due=2.0) == 2.0  # not in flight: the next probe (before the window)
    assert not m.tick(2.2) and m.tick(2.25)  # and the window still ends on time

def test_the_drivers_lateness_moves_the_window_while_the_late_probe_runs() -> None:
    """The loop stalled 3.5 s (longer than T = 3): the overdue probe decides, not the stall."""
    m = CheckMachine("x", 1.0, 3.0, 0.0, first_probe_at=0.0)
    m.probe_started(0.0)
    m.probe_result(True, 0.01, 0.01, "connected")  # up; the window ends at 3.01
    assert m.state is HealthState.UP and m.next_probe_at == 1.0
    m.probe_started(4.5)  # due at 1.0, started 3.5 s late
    assert not m.tick(4.5) and m.state is HealthState.UP  # the window ends at 3.01 + 3.5 now
    assert m.next_deadline() == pytest.approx(6.51)
    assert not m.probe_result(True, 4.51, 0.01, "connected")  # no down-and-up blip
    assert m.state is HealthState.UP and m.since == 0.01
    assert m.next_deadline() == 6.0  # the next probe: the first of its phase an interval after 4.5

    dead = CheckMachine("x", 1.0, 3.0, 0.0, first_probe_at=0.0)
    dead.probe_started(0.0)
    dead.probe_result(True, 0.01, 0.01, "connected")
    dead.probe_started(4.5)
    assert not dead.tick(5.0)
    assert dead.probe_result(False, 5.5, None, "no answer within 1 s")  # a failure: the window itself
    assert dead.state is HealthState.DOWN and dead.since == 5.5
    assert dead.reason == "probe failed: no answer within 1 s"

    hung = CheckMachine("x", 1.0, 3.0, 0.0, first_probe_at=0.0)
    hung.probe_started(0.0)
    hung.probe_result(True, 0.01, 0.01, "connected")
    hung.probe_started(4.5)  # no result: the moved window still ends
    assert hung.tick(6.51) and hung.state is HealthState.DOWN


def test_an_on_time_probe_does_not_move_the_window() -> None:
    m = CheckMachine("x", 1.0, 3.0, 0.0, first_probe_at=0.0)
    m.probe_started(0.0)
    m.probe_result(True, 0.01, 0.01, "connected")
    for now in (1.0, 2.0, 3.0):  # failures on time; the third is in flight when the window ends
        m.probe_started(now)
        if now < 3.0:
            m.probe_result(False, now + 0.5, None, "Connection refused")
    assert m.tick(3.01) and m.state is HealthState.DOWN  # at 3.01, as before: T after the last success


def test_gateway_events() -> None:
    g = GatewayHealth([PING], HealthPolicy(), now=0.0)
    g.probe_started(PING, 0.0)
    events = g.probe_result(PING, True, 0.001, latency=0.001)
    assert [(e.old, e.new) for e in events] == [(HealthState.UNKNOWN, HealthState.UP)]


def test_labels_and_default_probe_timeout() -> None:
    assert check_label(PingCheck(3, 10, ipv6=True)) == "ping6 3,10"
    assert check_label(NeighbourCheck(1, 2)) == "arp 1,2"
    assert check_label(AgentCheck(439, 2, 5)) == "agent 439,2,5"
    assert check_label(ScriptCheck("x $ipaddr$", 2, 7)) == 'script "x $ipaddr$",2,7'
    assert check_label(HttpCheck(443, "/", 1, 2, tls=True)) == 'https 443,"/",1,2'
    assert check_label(SendExpectCheck(80, "GET", "HTTP", 1, 6)) == "sendexpect 80,1,6"
    assert probe_timeout(TcpOpenCheck(80, 3, 10)) == 3.0
    assert probe_timeout(TcpOpenCheck(80, 10, 4)) == 4.0


# --- properties over arbitrary result sequences --------------------------------------------------

steps = st.lists(
    st.tuples(st.floats(0.0, 4.0, allow_nan=False), st.sampled_from(["tick", "ok", "fail"])),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(
    interval=st.integers(1, 5), window=st.integers(1, 12), rise=st.integers(1, 3),
    fall=st.integers(0, 3), seq=steps,
)
def test_never_up_without_a_success_in_the_last_window(
    interval: int, window: int, rise: int, fall: int, seq: list[tuple[float, str]],
) -> None:
    check = TcpOpenCheck(80, interval, window)
    t = TargetHealth(1, [check], HealthPolicy(rise=rise, fall=fall), now=0.0)
    now = 0.0
    oks: list[float] = []
    results: list[bool] = []
    state = t.state
    for gap, what in seq:
        now += gap
        events = t.tick(now)
        for e in events:  # a tick only ever takes a check down, and only when its window has passed
            assert e.new is HealthState.DOWN
            # `last + window` as the machine computes it: `now - last` can round below the window
            assert now >= (oks[-1] if oks else 0.0) + window
        if what != "tick":
            t.probe_started(check, now)
            results.append(what == "ok")
            if what == "ok":
                oks.append(now)
            result_events = t.probe_result(check, what == "ok", now)
            for e in result_events:
                if e.new is HealthState.UP:  # rise: the last `rise` results were all successes
                    assert len(results) >= rise and all(results[-rise:])
                elif now < (oks[-1] if oks else 0.0) + window:  # down inside the window: by failures
                    need = max(fall, 1) if e.old is HealthState.UNKNOWN else fall
                    assert need and len(results) >= need and not any(results[-need:])
            events += result_events
        # events chain: each starts where the previous ended and changes something
        for e in events:
            assert e.old is state and e.new is not e.old and e.since == now
            state = e.new
        assert state is t.state
        if t.state is HealthState.UP:
            assert oks and now < oks[-1] + window
        # the driver is never asked to wake up in the past, except for a probe that is due now
        assert t.next_deadline() >= now or t.due_checks(now)


@settings(max_examples=200, deadline=None)
@given(window=st.integers(1, 12), seq=steps)
def test_up_comes_with_the_first_success_after_down_when_rise_is_one(
    window: int, seq: list[tuple[float, str]],
) -> None:
    check = PingCheck(1, window)
    t = TargetHealth(1, [check], HealthPolicy(), now=0.0)
    now = 0.0
    for gap, what in seq:
        now += gap
        t.tick(now)
        if what == "tick":
            continue
        t.probe_started(check, now)
        t.probe_result(check, what == "ok", now)
        if what == "ok":
            assert t.state is HealthState.UP


@settings(max_examples=300, deadline=None)
@given(
    interval=st.integers(1, 3), extra=st.integers(0, 6),
    steps_=st.lists(st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 0.4), st.floats(0.0, 0.4)),
                    min_size=1, max_size=40),
)
def test_a_late_driver_takes_no_answering_target_down(
    interval: int, extra: int, steps_: list[tuple[float, float, float]],
) -> None:
    """A driver that starts every probe whenever it gets to it (up to 5 s late: its loop is blocked or
    behind, longer than the window) and gets every answer (within 0.4 of the probe timeout, handed
    over up to 0.4 s late too): the check comes up and never goes down. The window (T >= 3I, as
    `tcpopen P,1,3`) is the target's, not the driver's. (After a stall the next probe keeps its
    phase, so it can come up to 2I after the late success: with T = 2I a late hand-over of its
    answer can still pass the window.) Driven as the scheduler does: due probes first, then the
    window."""
    window = 3 * interval + extra
    check = TcpOpenCheck(80, interval, window)
    t = TargetHealth(1, [check], HealthPolicy(), now=0.0)
    m = t.machines[check]
    now = 0.0
    events: list[TargetStateChanged] = []
    for late, latency, delivered_late in steps_:
        now = max(now, m.next_probe_at) + late
        assert t.due_checks(now) == [check]
        t.probe_started(check, now)
        events += t.tick(now)
        now += latency * min(interval, window) + delivered_late
        assert m.next_deadline() >= now or not t.tick(now)  # no wake-up takes it down meanwhile
        events += t.probe_result(check, True, now, latency, "connected")
        # the invariant, with the lateness credited: up only with a success within T (+ lateness)
        assert m.last_ok == now and t.state is HealthState.UP
    assert [(e.old, e.new) for e in events] == [(HealthState.UNKNOWN, HealthState.UP)]


@settings(max_examples=300, deadline=None)
@given(
    interval=st.integers(1, 5), window=st.integers(1, 12), rise=st.integers(1, 3), fall=st.integers(0, 3),
    seq=st.lists(st.tuples(st.floats(0.0, 6.0, allow_nan=False),
                           st.sampled_from(["start", "ok", "fail", "tick"])), max_size=60),
)
def test_up_only_with_a_success_in_the_window_moved_by_the_late_start(
    interval: int, window: int, rise: int, fall: int, seq: list[tuple[float, str]],
) -> None:
    """Starts and results as separate inputs, probes started at any lateness: a check is up only
    with a success in the last T seconds, or in the last T + L while a probe started L late runs."""
    check = TcpOpenCheck(80, interval, window)
    t = TargetHealth(1, [check], HealthPolicy(rise=rise, fall=fall), now=0.0)
    m = t.machines[check]
    now = 0.0
    last_ok: float | None = None
    for gap, what in seq:
        now += gap
        if what == "start" and m.probe_due(now):
            due = m.next_probe_at
            t.probe_started(check, now)
            assert m.lateness == now - due
        elif what in ("ok", "fail") and m.in_flight:
            t.probe_result(check, what == "ok", now)
            if what == "ok":
                last_ok = now
        t.tick(now)
        if t.state is HealthState.UP:
            assert last_ok is not None
            credit = m.lateness if m.in_flight else 0.0
            assert now < last_ok + window + credit
        assert m.lateness == 0.0 or m.in_flight
