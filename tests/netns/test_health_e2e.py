"""Health checks and load feedback end to end: the real daemon in the seed labs, real HTTP servers and
load agents on the targets, real clients through the VIP, state read from the control socket.

(a) seed 001 (`tcpopen 80,3,10`): a target whose HTTP server stops is down within T + I, gets no new
    sessions, and is back (and chosen again) when its server restarts; a subscriber to the control
    socket's event stream gets a `target` event for each change;
(b) seed 000 (`method agent`, agents on UDP 439): new sessions go only to the less loaded target, and
    follow the load when it changes;
(c) a hung `script` check does not stall the other checks: another target still goes down and comes
    back on time while the script hangs.

The bounds are the functional ones of docs/health.md ("reported down ... within T + I of the
failure"), with a small margin for polling and scheduling; they are not speed measurements.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from dsrlb.config import load
from dsrlb.control.client import ControlClient
from dsrlb.daemon.core import TICK_SECONDS
from dsrlb.lab import BUILDERS, Lab, LabBalancer, LabProcess, LabTarget, LabTopology, drive_http
from dsrlb.lab.httpd import READY
from dsrlb.lab.runner import native_config, run_balancer
from dsrlb.lab.topology import IPAddress
from dsrlb.lab.traffic import TrafficReport
from dsrlb.model import AgentCheck, Check, Config, TcpOpenCheck

pytestmark = [pytest.mark.root, pytest.mark.slow]

ENGINES = ("afpacket", "xdp")
# Polling `show targets` every POLL seconds, a control round trip, and the daemon's event loop: well
# under a second together. A broken bound (a stalled scheduler, a missed deadline) is seconds late.
MARGIN = 1.5
POLL = 0.1
# Fresh client addresses, one block per phase, beside the lab's own 203.0.113.10-17: a new address
# is a new client, i.e. a new session under the seeds' `sessionid src`.
FRESH_BLOCKS = {"a": 40, "b": 50, "c": 60, "d": 100}  # "d": up to 60 addresses


@dataclass
class Running:
    lab: Lab
    topology: LabTopology
    balancer: LabBalancer
    config: Config
    daemon: LabProcess
    client: ControlClient
    engine: str

    def targets(self) -> dict[int, dict[str, object]]:
        rows = self.client.call_words(["show", "targets"]).data["targets"]
        return {int(row["id"]): row for row in rows}

    def state(self, target_id: int) -> str:
        return str(self.targets()[target_id]["state"])

    def lab_target(self, target_id: int) -> LabTarget:
        """The lab node behind config target `target_id` (matched by address)."""
        target = self.config.target(target_id)
        assert target is not None and target.address is not None
        return next(t for t in self.topology.targets if t.address == target.address)

    def target_id(self, name: str) -> int:
        lab_target = self.topology.target(name)
        return next(t.id for t in self.config.targets if t.address == lab_target.address)

    def check(self, target_id: int, kind: type[Check]) -> Check:
        target = self.config.target(target_id)
        assert target is not None
        return next(c for c in target.checks if isinstance(c, kind))

    def fresh_clients(self, phase: str, count: int = 8) -> list[IPAddress]:
        """`count` client addresses never used before, added to the client node."""
        first = FRESH_BLOCKS[phase]
        sources: list[IPAddress] = [IPv4Address(f"203.0.113.{first + i}") for i in range(count)]
        for source in sources:
            self.lab.address(self.topology.client_role, "eth0", f"{source}/24")
        return sources

    def http(self, sources: list[IPAddress], ports: tuple[int, ...] | None = None) -> TrafficReport:
        """One GET per source (a new TCP connection each) to the VIP; replies counted per target name."""
        return drive_http(self.topology.client_netns, self.topology.vip, ports or self.topology.ports,
                          list(sources), requests=len(sources), duration=30, timeout=3)


def start(lab: Lab, topology: LabTopology, engine: str, config_path: Path | None = None) -> Running:
    balancer = topology.balancers[0]
    if config_path is not None:
        balancer = dataclasses.replace(balancer, config_path=config_path, config_text=config_path.read_text())
    daemon = run_balancer(lab, balancer, engine)
    client = ControlClient.for_instance(balancer.netns, timeout=5.0)
    return Running(lab, topology, balancer, load(native_config(balancer)), daemon, client, engine)


def wait_until(what: str, predicate: Callable[[], bool], timeout: float) -> float:
    """Poll `predicate` until it holds; the seconds it took. Fails after `timeout` (a bound, not a goal)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout:.1f} s")
        time.sleep(POLL)
    return time.monotonic() - started


def httpd_process(lab: Lab, target: LabTarget) -> LabProcess:
    return next(p for p in lab.processes if p.role == target.role and p.name == "httpd")


def restart_httpd(lab: Lab, topology: LabTopology, target: LabTarget) -> None:
    """Start the target's HTTP server again as the lab did (its run plan); returns once it listens."""
    plan = next(p for p in topology.run_plan if p.role == target.role and p.purpose.startswith("HTTP server"))
    lab.spawn(target.role, "httpd", list(plan.argv), ready_line=READY)


class EventLog:
    """A subscriber on the daemon's control socket, reading its event stream on a thread (which ends
    when the daemon closes the connection: the lab stops the daemon)."""

    def __init__(self, instance: str) -> None:
        self.client = ControlClient.for_instance(instance, timeout=5.0)
        stream = self.client.subscribe()
        self.events: list[Mapping[str, Any]] = []
        self._lock = threading.Lock()

        def read() -> None:
            for event in stream:
                with self._lock:
                    self.events.append(event)

        threading.Thread(target=read, name="events", daemon=True).start()

    def wait_for(self, what: str, predicate: Callable[[Mapping[str, Any]], bool],
                 timeout: float) -> Mapping[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = next((e for e in self.events if predicate(e)), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} event within {timeout:.1f} s; got {self.events}")
            time.sleep(POLL)


@pytest.fixture(params=ENGINES)
def dsr_lab(request: pytest.FixtureRequest) -> Iterator[Running]:
    with Lab() as lab:
        running = start(lab, BUILDERS["dsr"](lab), request.param)
        try:
            yield running
        finally:
            running.client.close()


def test_a_dead_server_goes_down_in_time_gets_no_sessions_and_comes_back(dsr_lab: Running) -> None:
    run = dsr_lab
    victim, other = run.lab_target(1), run.lab_target(2)
    check = run.check(1, TcpOpenCheck)
    assert (check.interval, check.timeout) == (3, 10)  # the seed's `tcpopen 80,3,10`
    before = run.http(list(run.topology.client_sources))
    assert before.errors == {} and set(before.replies) == {victim.name, other.name}
    events = EventLog(run.balancer.netns)

    # Timed from just before the stop: the server's socket closes somewhere inside lab.stop().
    stopped = time.monotonic()
    run.lab.stop(httpd_process(run.lab, victim))
    wait_until("target 1 down", lambda: run.state(1) == "down", check.timeout + check.interval + 10)
    took = time.monotonic() - stopped
    assert took <= check.timeout + check.interval + MARGIN, f"down after {took:.1f} s"
    row = run.targets()[1]
    assert "tcpopen" in str(row["reason"]) and run.state(2) == "up"
    # The subscriber heard it too: {"type": "target", "id", "old", "new", "reason", "time"}
    # (docs/control.md), sent once the data path has the change.
    down = events.wait_for("target 1 down", lambda e: e.get("type") == "target" and e.get("id") == 1
                           and e.get("new") == "down", MARGIN + 5)
    assert down["old"] == "up" and "tcpopen" in str(down["reason"]) and isinstance(down["time"], float)
    assert not [e for e in events.events if e.get("type") == "target" and e.get("id") == 2]

    # Every client, old (sessions to the dead target move on their next packet) and new, reaches the
    # other target, and not one request fails.
    after = run.http([*run.topology.client_sources, *run.fresh_clients("a")])
    assert after.errors == {} and after.replies == {other.name: after.sent}
    assert run.targets()[1]["sessions"] == 0  # the old clients' sessions moved with them

    restart_httpd(run.lab, run.topology, victim)
    took = wait_until("target 1 up again", lambda: run.state(1) == "up", check.interval + 10)
    assert took <= check.interval + MARGIN, f"up after {took:.1f} s"
    up = events.wait_for("target 1 up", lambda e: e.get("type") == "target" and e.get("id") == 1
                         and e.get("new") == "up", MARGIN + 5)
    assert up["old"] == "down" and up["time"] >= down["time"]
    # New clients are spread over both targets again (round robin).
    back = run.http(run.fresh_clients("b"))
    assert back.errors == {} and set(back.replies) == {victim.name, other.name}


# --- (b) load feedback: method agent ------------------------------------------------------------------


def agent_load_file(lab: Lab, target: LabTarget) -> Path:
    return lab.workdir / f"{target.role}-load"


def fixed_load_agents(lab: Lab, topology: LabTopology, loads: dict[str, int]) -> None:
    """Replace the lab's load agents (1-minute load average) by agents that report the number in a
    file (`--script "cat FILE"`), so the test sets each target's load and can change it."""
    for target in topology.targets:
        agent = next(p for p in lab.processes if p.role == target.role and p.name == "agent")
        plan = next(p for p in topology.run_plan if p.role == target.role and p.purpose == "load agent")
        port = plan.argv[-1]
        lab.stop(agent)
        path = agent_load_file(lab, target)
        path.write_text(f"{loads[target.name]}\n")
        argv = [*plan.argv[:-1], "--script", f"cat {path}", port]
        lab.spawn(target.role, "agent", argv)


@pytest.fixture(params=ENGINES)
def agent_lab(request: pytest.FixtureRequest) -> Iterator[Running]:
    with Lab() as lab:
        topology = BUILDERS["ha-dsr"](lab)
        fixed_load_agents(lab, topology, {"target1": 70, "target2": 20})
        running = start(lab, topology, request.param)
        try:
            yield running
        finally:
            running.client.close()


def loads_shown(run: Running) -> dict[int, object]:
    return {tid: row.get("load") for tid, row in run.targets().items()}


def first_reply_from(run: Running, name: str, phase: str) -> None:
    """New clients, one every POLL seconds, until one reaches `name`: the daemon republishes
    metric-driven tables on its control tick (docs/datapath.md §4), so a load shown by `show targets`
    reaches the table within a tick. Bounded by two ticks and the margin."""
    deadline = time.monotonic() + 2 * TICK_SECONDS + MARGIN
    for source in run.fresh_clients(phase, 60):
        report = run.http([source], ports=(80,))
        if report.replies.get(name):
            return
        if time.monotonic() > deadline:
            break
        time.sleep(POLL)
    pytest.fail(f"no new client reached {name} within two control ticks of its load becoming the lowest")


def test_new_sessions_go_only_to_the_less_loaded_target(agent_lab: Running) -> None:
    run = agent_lab
    server = next(s for s in run.config.servers if s.registered)
    assert str(server.method) == "agent" and all(
        isinstance(run.check(tid, AgentCheck), AgentCheck) for tid in server.targets)
    busy, idle = run.target_id("target1"), run.target_id("target2")
    wait_until("agent loads shown", lambda: loads_shown(run) == {busy: 70, idle: 20}, 10)

    report = run.http(list(run.topology.client_sources) * 2)  # ports 80 and 443 in turn
    assert report.errors == {} and report.replies == {"target2": report.sent}
    rows = run.targets()
    assert rows[busy]["sessions"] == 0
    assert int(str(rows[idle]["sessions"])) >= len(run.topology.client_sources)

    # The load changes: target1 is now the less loaded. New clients go there, and only there;
    # established sessions stay where they are (the target they use is still up).
    agent_load_file(run.lab, run.lab_target(busy)).write_text("10\n")
    agent_load_file(run.lab, run.lab_target(idle)).write_text("90\n")
    wait_until("new agent loads shown", lambda: loads_shown(run) == {busy: 10, idle: 90}, 10)
    first_reply_from(run, "target1", "d")
    moved = run.http(run.fresh_clients("c"))
    assert moved.errors == {} and moved.replies == {"target1": moved.sent}
    kept = run.http(list(run.topology.client_sources))
    assert kept.errors == {} and kept.replies == {"target2": kept.sent}


# --- (c) a hung script check ----------------------------------------------------------------------

HUNG_SCRIPT = "sleep 60"
HUNG_EVERY = 10  # `script "sleep 60",10,10`: the probe hangs until its timeout, min(I, T) = 10 s


def fast_checks_config(seed_config: Path, workdir: Path, hung: bool) -> Path:
    """Seed 001's config with quicker tcpopen checks (1 s, 3 s window), and with `hung` a script check
    on target 1 that never finishes on its own."""
    text = seed_config.read_text().replace("tcpopen 80,3,10", "tcpopen 80,1,3")
    if hung:
        first = text.index("tcpopen 80,1,3")
        text = (text[:first] + f'script "{HUNG_SCRIPT}",{HUNG_EVERY},{HUNG_EVERY}\n          '
                + text[first:])
    path = workdir / ("hung.conf" if hung else "fast.conf")
    path.write_text(text)
    return path


def test_a_hung_script_does_not_stall_the_other_checks() -> None:
    with Lab() as lab:
        topology = BUILDERS["dsr"](lab)
        seed_config = native_config(topology.balancers[0])
        run = start(lab, topology, "afpacket", fast_checks_config(seed_config, lab.workdir, hung=False))
        try:
            hung_config = fast_checks_config(seed_config, lab.workdir, hung=True)
            answer = run.client.call_words(["reload", str(hung_config)]).data
            assert isinstance(answer, dict) and "reloaded" in answer
            run.config = load(hung_config)
            check = run.check(2, TcpOpenCheck)
            # The new script check of target 1 starts its first probe within a second (probes are
            # spread over min(I, 1 s)) and that probe hangs for HUNG_EVERY seconds. Meanwhile target
            # 2's checks must keep their timing: down within T + I, up on the next probe.
            time.sleep(1.0)
            victim = run.lab_target(2)
            stopped = time.monotonic()
            run.lab.stop(httpd_process(run.lab, victim))
            wait_until("target 2 down", lambda: run.state(2) == "down", check.timeout + 10)
            took = time.monotonic() - stopped
            assert took <= check.timeout + check.interval + MARGIN, f"target 2 down after {took:.1f} s"
            restart_httpd(run.lab, run.topology, victim)
            took = wait_until("target 2 up again", lambda: run.state(2) == "up", check.interval + 10)
            assert took <= check.interval + MARGIN, f"target 2 up after {took:.1f} s"
            # All that happened while the script probe was still running: it has no verdict yet ...
            reason = str(run.targets()[1]["reason"])
            assert "not probed yet" in reason and HUNG_SCRIPT in reason, reason
            # ... and it ends as a failed probe (killed at its timeout) that takes its target down.
            wait_until("the hung script killed", lambda: "killed" in str(run.targets()[1]["reason"]),
                       HUNG_EVERY + 5)
            assert run.state(1) == "down" and run.state(2) == "up"
        finally:
            run.client.close()
