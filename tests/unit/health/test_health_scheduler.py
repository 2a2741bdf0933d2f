"""The scheduler with fake probes on a virtual-clock event loop (real heap, timers, tasks, queue)."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

import pytest

from dsrlb.health.probes import ProbeKit, ProbeResult, ProbeTarget
from dsrlb.health.scheduler import HealthConfigError, HealthScheduler, service_port, source_address
from dsrlb.health.state import GatewayStateChanged, HealthEvent, HealthState, TargetStateChanged
from dsrlb.model import (
    AgentCheck,
    Check,
    Config,
    Gateway,
    HealthPolicy,
    Network,
    PingCheck,
    PortRange,
    Server,
    Target,
    TcpOpenCheck,
)

TCP = TcpOpenCheck(80, 1, 2)
RunVirtual = Callable[[Coroutine[Any, Any, Any]], Any]


def target(tid: int, *checks: Check, **kw: object) -> Target:
    return Target(tid, IPv4Address(f"192.0.2.{tid}"), checks=checks, registered=True, enabled=True,
                  **kw)  # type: ignore[arg-type]


def _always(now: float) -> bool:
    return True


class FakeNet:
    """Probe function whose answers are decided per target address by a function of time."""

    def __init__(self) -> None:
        self.alive: dict[str, Callable[[float], bool]] = {}
        self.latency = 0.01
        self.hang: set[str] = set()
        self.starts: list[tuple[float, str, Check]] = []
        self.running = 0
        self.max_running = 0
        self.loads: dict[str, float] = {}

    async def probe(self, check: Check, t: ProbeTarget, timeout: float) -> ProbeResult:
        loop = asyncio.get_running_loop()
        addr = str(t.address)
        self.starts.append((loop.time(), addr, check))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if addr in self.hang:
                await asyncio.sleep(1000)  # a hung probe: only the scheduler's guard ends it
            await asyncio.sleep(self.latency)
            ok = self.alive.get(addr, _always)(loop.time())
            return ProbeResult(ok, self.latency, "fake ok" if ok else "fake refused",
                               self.loads.get(addr) if ok else None)
        finally:
            self.running -= 1


async def run_for(sched: HealthScheduler, seconds: float) -> None:
    await sched.start()
    await asyncio.sleep(seconds)


def test_targets_come_up_go_down_within_t_plus_i_and_come_back(run_virtual: RunVirtual) -> None:
    net = FakeNet()
    net.alive["192.0.2.2"] = lambda now: False
    net.alive["192.0.2.3"] = lambda now: not (1010.0 <= now < 1020.0)  # dies at t0+10 for 10 s
    cfg = Config(targets=(target(1, TCP), target(2, TCP), target(3, TCP)))
    events: list[HealthEvent] = []

    async def main() -> None:
        sched = HealthScheduler(cfg, probe=net.probe)
        sched.subscribe(events.append)
        await run_for(sched, 30)
        views = {v.target_id: v for v in sched.snapshot()}
        assert views[1].state is HealthState.UP and views[1].latency == pytest.approx(0.01)
        assert views[2].state is HealthState.DOWN and "fake refused" in views[2].reason
        assert views[3].state is HealthState.UP
        await sched.stop()

    run_virtual(main())
    by_target: dict[int, list[TargetStateChanged]] = {}
    for e in events:
        assert isinstance(e, TargetStateChanged)
        by_target.setdefault(e.target_id, []).append(e)
    assert [e.new for e in by_target[1]] == [HealthState.UP]
    assert [e.new for e in by_target[2]] == [HealthState.DOWN]
    t3 = by_target[3]
    assert [e.new for e in t3] == [HealthState.UP, HealthState.DOWN, HealthState.UP]
    assert 1010.0 - 1 + 2 <= t3[1].since <= 1010.0 + 2 + 1  # T after the last success, within T + I
    assert 1020.0 <= t3[2].since <= 1021.05  # up on the first success after it recovers


def test_hung_probe_does_not_delay_other_targets(run_virtual: RunVirtual) -> None:
    net = FakeNet()
    net.hang.add("192.0.2.1")
    cfg = Config(targets=tuple(target(i, TCP) for i in range(1, 6)))

    async def main() -> HealthScheduler:
        sched = HealthScheduler(cfg, probe=net.probe)
        await run_for(sched, 20)
        await sched.stop()
        return sched

    sched = run_virtual(main())
    for i in range(2, 6):
        times = [t for t, addr, _c in net.starts if addr == f"192.0.2.{i}"]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) >= 19 and max(gaps) == pytest.approx(1.0)  # every interval, on time
    hung = [t for t, addr, _c in net.starts if addr == "192.0.2.1"]
    assert 7 <= len(hung) <= 11  # one at a time: each is cut off by the guard (timeout + 1 s)
    assert sched.stats["probes_failed"] >= 7


def test_bounded_concurrency_and_spread_start(run_virtual: RunVirtual) -> None:
    net = FakeNet()
    net.latency = 0.5
    cfg = Config(targets=tuple(target(i, TCP) for i in range(1, 101)))

    async def main() -> None:
        sched = HealthScheduler(cfg, probe=net.probe, max_concurrency=10)
        await run_for(sched, 3)
        assert sched.counters()["in_flight"] <= 10
        await sched.stop()

    run_virtual(main())
    assert net.max_running == 10
    first = sorted(t for t, _a, _c in net.starts[:10])
    assert first[-1] > first[0]  # first probes are spread, not all at the same instant


def test_spread_over_the_interval(run_virtual: RunVirtual) -> None:
    net = FakeNet()
    cfg = Config(targets=tuple(target(i, TCP) for i in range(1, 201)))

    async def main() -> None:
        sched = HealthScheduler(cfg, probe=net.probe)
        await run_for(sched, 0.999)
        await sched.stop()

    run_virtual(main())
    offsets = [t - 1000.0 for t, _a, _c in net.starts]
    assert len(offsets) == 200 and min(offsets) < 0.1 and max(offsets) > 0.9
    assert sum(o < 0.5 for o in offsets) not in (0, 200)


def test_reconfigure_keeps_state_of_unchanged_checks(run_virtual: RunVirtual) -> None:
    net = FakeNet()
    cfg = Config(targets=(target(1, TCP), target(2, TCP)))
    events: list[HealthEvent] = []

    async def main() -> None:
        sched = HealthScheduler(cfg, probe=net.probe)
        await run_for(sched, 3)
        sched.subscribe(events.append)
        ping = PingCheck(1, 2)
        new = Config(targets=(target(1, TCP), target(2, TCP, ping), target(3, TCP)))
        sched.reconfigure(new)
        assert sched.target(1) is not None and sched.target(1).state is HealthState.UP  # type: ignore[union-attr]
        await asyncio.sleep(3)
        assert [v.state for v in sched.snapshot()] == [HealthState.UP] * 3
        sched.reconfigure(Config(targets=(target(1, TCP),)))
        assert [v.target_id for v in sched.snapshot()] == [1]
        await asyncio.sleep(2)
        await sched.stop()

    run_virtual(main())
    changes = [(e.target_id, e.old, e.new) for e in events if isinstance(e, TargetStateChanged)]
    assert (1, HealthState.UP, HealthState.UNKNOWN) not in changes
    assert (2, HealthState.UP, HealthState.UNKNOWN) in changes  # it got a new check
    assert (2, HealthState.UNKNOWN, HealthState.UP) in changes
    assert (3, HealthState.UNKNOWN, HealthState.UP) in changes


def test_agent_load_is_exposed_while_the_agent_answers(run_virtual: RunVirtual) -> None:
    net = FakeNet()
    net.loads = {"192.0.2.1": 85.0, "192.0.2.2": 5.0}
    net.alive["192.0.2.2"] = lambda now: now < 1005.0
    agent = AgentCheck(439, 1, 2)
    cfg = Config(targets=(target(1, agent), target(2, agent)))

    async def main() -> None:
        sched = HealthScheduler(cfg, probe=net.probe)
        await run_for(sched, 3)
        assert sched.loads() == {1: 85.0, 2: 5.0}
        await asyncio.sleep(5)
        assert sched.loads() == {1: 85.0}
        assert sched.target(2).state is HealthState.DOWN  # type: ignore[union-attr]
        await sched.stop()

    run_virtual(main())


def test_gateway_state(run_virtual: RunVirtual) -> None:
    net = FakeNet()
    net.alive["198.51.100.1"] = lambda now: now < 1005.0
    cfg = Config(gateway=Gateway(ipaddr=IPv4Address("198.51.100.1"), checks=(PingCheck(1, 2),)))
    events: list[HealthEvent] = []

    async def main() -> None:
        sched = HealthScheduler(cfg, probe=net.probe)
        sched.subscribe(events.append)
        await run_for(sched, 2)
        gw = sched.gateway()
        assert gw is not None and gw.state is HealthState.UP
        await asyncio.sleep(8)
        assert sched.gateway().state is HealthState.DOWN  # type: ignore[union-attr]
        await sched.stop()

    run_virtual(main())
    assert [e.new for e in events if isinstance(e, GatewayStateChanged)] == [HealthState.UP, HealthState.DOWN]


def test_quiesce_and_rise_fall_policy_reach_the_scheduler(run_virtual: RunVirtual) -> None:
    net = FakeNet()
    net.alive["192.0.2.1"] = lambda now: now < 1003.5
    cfg = Config(targets=(target(1, TCP, health=HealthPolicy(rise=2, fall=1, quiesce=True)),))
    events: list[HealthEvent] = []

    async def main() -> None:
        sched = HealthScheduler(cfg, probe=net.probe)
        sched.subscribe(events.append)
        await run_for(sched, 6)
        await sched.stop()

    run_virtual(main())
    assert [e.new for e in events if isinstance(e, TargetStateChanged)] == [
        HealthState.UP, HealthState.QUIESCED]


def test_port_and_source_address_for_probes() -> None:
    net = Network(1, addr=IPv4Address("192.0.2.0"), mask=IPv4Address("255.255.255.0"),
                  real=IPv4Address("192.0.2.252"), mask6=64, real6=IPv6Address("2001:db8::fc"))
    t = target(1)
    cfg = Config(networks=(net,), servers=(Server(1, ports=(PortRange(80, 80), PortRange(443, 443)),
                                                 targets=(1,)),), targets=(t,))
    assert service_port(cfg, t) == 80
    assert service_port(cfg, replace(t, port=8080)) == 8080
    assert source_address(cfg, ip_address("192.0.2.7")) == IPv4Address("192.0.2.252")
    assert source_address(cfg, ip_address("2001:db8::7")) == IPv6Address("2001:db8::fc")
    assert source_address(cfg, ip_address("203.0.113.7")) is None


def test_unreadable_agent_secret_is_a_clear_error() -> None:
    cfg = Config(settings=(("agentsecretfile", "/nonexistent/secret"),))
    with pytest.raises(HealthConfigError, match="agentsecretfile /nonexistent/secret"):
        HealthScheduler(cfg)


def test_alert_and_upalert_commands_run_on_changes() -> None:
    """Real subprocesses on a real loop: the alert script appends a line per change."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "alerts"
        flag = {"alive": False}
        net = FakeNet()
        net.latency = 0.0
        net.alive["192.0.2.1"] = lambda now: flag["alive"]
        cmd = f"sh -c 'echo \"$1 $2 $3\" >> {log}' alert $target$ $state$ $ipaddr$"
        cfg = Config(settings=(("alert", cmd), ("upalert", cmd)), targets=(target(1, TCP),))

        async def wait_for_lines(n: int) -> list[str]:
            for _ in range(400):
                if log.exists() and len(lines := log.read_text().splitlines()) >= n:
                    return lines
                await asyncio.sleep(0.01)
            return log.read_text().splitlines() if log.exists() else []

        async def main() -> list[str]:
            sched = HealthScheduler(cfg, probe=net.probe)
            await sched.start()
            await wait_for_lines(1)
            flag["alive"] = True
            lines = await wait_for_lines(2)
            await sched.stop()
            return lines

        lines = asyncio.run(main())
        assert lines == ["1 down 192.0.2.1", "1 up 192.0.2.1"]
        assert os.path.exists(log)


# --- at scale: the grid, stalls, and the multiplexed tcpopen path --------------------------------


def test_probes_start_on_a_grid_so_thousands_of_checks_share_few_wakeups(run_virtual: RunVirtual) -> None:
    net = FakeNet()
    net.latency = 0.0
    cfg = Config(targets=tuple(Target(i, IPv4Address("192.0.2.1"), checks=(TCP,), registered=True,
                                      enabled=True) for i in range(1, 2001)))

    async def main() -> None:
        sched = HealthScheduler(cfg, probe=net.probe)
        await run_for(sched, 5.0)
        await sched.stop()

    run_virtual(main())
    times = [t for t, _a, _c in net.starts]
    assert 9000 <= len(times) <= 11000  # 2000 checks, once a second for 5 s
    assert all(t * 256 == int(t * 256) for t in times)  # on the 1/256 s grid (the loop starts at 1000.0)
    assert len(set(times)) <= 5 * 256 + 1  # at most 256 distinct instants a second, not 2000
    assert len(set(times)) > 200  # and still spread over the second


def test_a_stall_skips_missed_probes_and_keeps_the_spread(
    run_virtual: RunVirtual, stall: Callable[[float], None],
) -> None:
    net = FakeNet()
    net.latency = 0.0
    cfg = Config(targets=tuple(target(i, TCP) for i in range(1, 201)))

    async def main() -> None:
        sched = HealthScheduler(cfg, probe=net.probe)
        await run_for(sched, 2.0 - 1 / 512)  # between two grid points: no probe in flight
        stall(3.5)  # the loop is blocked for 3.5 s
        del net.starts[:]
        await asyncio.sleep(2.0)
        await sched.stop()

    run_virtual(main())
    by_target: dict[str, list[float]] = {}
    for t, addr, _c in net.starts:
        by_target.setdefault(addr, []).append(t)
    assert {len(times) for times in by_target.values()} <= {2, 3}  # no burst of the missed probes
    catch_up = min(net.starts)[0]
    assert all(times[0] == catch_up for times in by_target.values())  # all overdue: started at once ...
    second = [times[1] for times in by_target.values()]
    assert min(second) >= catch_up + 1.0  # ... the next an interval later at least ...
    assert len(set(second)) > 100  # ... in each check's own phase: they do not stay bunched


def test_tcpopen_runs_on_the_multiplexed_prober_without_a_task_per_probe(run_virtual: RunVirtual) -> None:
    """The real probe kit against loopback: half the targets listen, half refuse."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))
    up_port, closed_port = listener.getsockname()[1], refusing.getsockname()[1]
    cfg = Config(targets=tuple(
        Target(i, IPv4Address("127.0.0.1"), checks=(TcpOpenCheck(up_port if i % 2 else closed_port, 1, 2),),
               registered=True, enabled=True)
        for i in range(1, 201)))
    task_counts: list[int] = []

    async def main() -> tuple[dict[int, HealthState], dict[str, int], str]:
        sched = HealthScheduler(cfg)
        await sched.start()
        for _ in range(40):
            await asyncio.sleep(0.1)
            task_counts.append(len(asyncio.all_tasks()))
        states = {v.target_id: v.state for v in sched.snapshot()}
        view = sched.target(2)
        counters = sched.counters()
        await sched.stop()
        return states, counters, view.reason if view is not None else ""

    try:
        states, counters, reason = run_virtual(main())
    finally:
        listener.close()
        refusing.close()
    assert all(state is (HealthState.UP if tid % 2 else HealthState.DOWN) for tid, state in states.items())
    assert "Connection refused" in reason
    assert max(task_counts) == 1  # only main(): probes are not tasks
    assert counters["probes_started"] >= 200 * 3
    finished = counters["probes_ok"] + counters["probes_failed"]
    assert finished + counters["in_flight"] == counters["probes_started"]


def test_a_source_address_we_do_not_have_fails_the_probe_and_probing_goes_on(run_virtual: RunVirtual) -> None:
    """The network's `real` is not (yet) on the box: bind() fails, a counted failure, never a stuck check."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    net = Network(1, addr=IPv4Address("127.0.0.0"), mask=IPv4Address("255.0.0.0"),
                  real=IPv4Address("192.0.2.77"))
    cfg = Config(networks=(net,), targets=(
        Target(1, IPv4Address("127.0.0.1"), checks=(TcpOpenCheck(listener.getsockname()[1], 1, 2),),
               registered=True, enabled=True),))

    async def main() -> tuple[str, dict[str, int]]:
        sched = HealthScheduler(cfg)
        await run_for(sched, 4.5)
        view = sched.target(1)
        counters = sched.counters()
        await sched.stop()
        return (view.checks[0].detail if view is not None else ""), counters

    try:
        detail, counters = run_virtual(main())
    finally:
        listener.close()
    assert detail == "Cannot assign requested address"
    assert counters["probes_failed"] >= 4 and counters["in_flight"] == 0


def test_a_stall_longer_than_the_window_takes_no_answering_target_down(
    run_virtual: RunVirtual, stall: Callable[[float], None],
) -> None:
    """The real probe kit against an accept-and-close listener (as bench/health.py): the loop blocks
    for 3.5 s, longer than T = 3 (a republish stalled it that long in the AF_PACKET bench). Every
    overdue probe then starts late, and its result decides: no target that answers goes down (before,
    each went down at its wake-up, 'no successful probe for 3 s (last: connected)', and up again at the
    result: the flapping that kept an overloaded daemon behind, one wake-up batch of 256 always down
    and in flight). A target that died during the stall goes down at its late probe's failure."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    listener.setblocking(False)
    doomed = socket.socket()
    doomed.bind(("127.0.0.1", 0))
    doomed.listen(512)
    doomed.setblocking(False)
    up_port, doomed_port = listener.getsockname()[1], doomed.getsockname()[1]

    def accept_and_close(sock: socket.socket) -> None:
        for _ in range(512):
            try:
                conn, _addr = sock.accept()
            except OSError:
                return
            conn.close()

    cfg = Config(targets=tuple(
        Target(i, IPv4Address("127.0.0.1"), registered=True, enabled=True,
               checks=(TcpOpenCheck(doomed_port if i == 201 else up_port, 1, 3),))
        for i in range(1, 202)))
    events: list[HealthEvent] = []

    async def main() -> tuple[dict[int, HealthState], str, float, dict[str, int]]:
        loop = asyncio.get_running_loop()
        for sock in (listener, doomed):
            loop.add_reader(sock.fileno(), accept_and_close, sock)
        sched = HealthScheduler(cfg)
        sched.subscribe(events.append)
        await sched.start()
        await asyncio.sleep(4.0)
        assert all(v.state is HealthState.UP for v in sched.snapshot())
        del events[:]
        loop.remove_reader(doomed.fileno())
        doomed.close()  # target 201 dies while the loop is blocked: refused from now on
        stall(3.5)
        stalled = loop.time()
        await asyncio.sleep(6.0)
        loop.remove_reader(listener.fileno())
        view = sched.target(201)
        counters = sched.counters()
        await sched.stop()
        return ({v.target_id: v.state for v in sched.snapshot()}, view.reason if view else "", stalled,
                counters)

    try:
        states, reason, stalled, counters = run_virtual(main())
    finally:
        listener.close()
        doomed.close()
    assert [(e.target_id, e.old, e.new) for e in events if isinstance(e, TargetStateChanged)] == [
        (201, HealthState.UP, HealthState.DOWN)]
    assert events[0].since <= stalled + 1.0  # at its overdue probe's failure, right after the stall
    assert "Connection refused" in reason
    assert all(state is HealthState.UP for tid, state in states.items() if tid != 201)
    assert counters["probes_lost"] == 0


def test_a_probe_its_prober_lost_is_completed_and_counted(
    run_virtual: RunVirtual, caplog: pytest.LogCaptureFixture,
) -> None:
    """The defensive invariant: every multiplexed probe ends within its timeout plus PROBE_GRACE (and
    the guard's one-second period). A probe the prober drops (it cannot, but if it did) is failed by
    the scheduler's guard, counted in `probes_lost`, and the check probes on; before, its check stayed
    in flight for good and was never probed again."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    port = listener.getsockname()[1]
    cfg = Config(targets=(Target(1, IPv4Address("127.0.0.1"), checks=(TcpOpenCheck(port, 1, 3),),
                                 registered=True, enabled=True),))
    kit = ProbeKit()
    starts: list[float] = []

    async def main() -> dict[str, int]:
        loop = asyncio.get_running_loop()
        prober = kit.tcp_prober(loop)
        start = prober.start

        def lossy_start(deliver: Any, token: Any, *args: Any) -> None:
            starts.append(loop.time())
            if len(starts) != 3:  # the third is lost: no socket, no entry, no result
                start(deliver, token, *args)

        prober.start = lossy_start  # type: ignore[method-assign]
        sched = HealthScheduler(cfg, kit=kit)
        await sched.start()
        await asyncio.sleep(12.0)
        counters = sched.counters()
        view = sched.target(1)
        assert view is not None and view.state is HealthState.UP
        await sched.stop()
        return counters

    try:
        counters = run_virtual(main())
    finally:
        listener.close()
    lost_at = starts[2]
    assert len([t for t in starts if t > lost_at]) >= 7  # probing went on, about once a second
    assert min(t for t in starts if t > lost_at) <= lost_at + 1.0 + 1.0 + 1.0  # timeout, grace, sweep period
    assert counters["probes_lost"] == 1 and counters["probes_failed"] == 1 and counters["in_flight"] == 0
    assert "health probe lost: tcpopen" in caplog.text


def test_a_stopped_scheduler_refuses_to_start_again(run_virtual: RunVirtual) -> None:
    """stop() closes the probe kit and abandons probes in flight, whose targets would never be probed
    again after a restart: a stopped scheduler says so instead of silently checking nothing."""
    net = FakeNet()
    cfg = Config(targets=(target(1, TCP),))

    async def main() -> None:
        sched = HealthScheduler(cfg, probe=net.probe)
        await run_for(sched, 3)
        await sched.start()  # already running: nothing happens
        await sched.stop()
        with pytest.raises(RuntimeError, match="does not restart"):
            await sched.start()

    run_virtual(main())
