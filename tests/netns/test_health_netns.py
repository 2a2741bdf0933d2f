"""A two-namespace lab for the health tests: `lb` (the balancer side) and `tg` (a target).

    lb: 192.0.2.1/24, 2001:db8::1/64  ==veth==  tg: 192.0.2.2/24, 192.0.2.3/24, 2001:db8::2/64

Only documentation ranges, no route out, unique names per run; everything is deleted on exit.
The balancer side runs in a thread that has entered `lb` (network namespaces are per thread), so
the scheduler under test runs in this very process.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dsrlb.health.probes import ProbeKit, ProbeResult, ProbeTarget
from dsrlb.health.scheduler import HealthScheduler
from dsrlb.health.state import HealthEvent, HealthState, TargetStateChanged
from dsrlb.model import (
    AgentCheck,
    Check,
    Config,
    HttpCheck,
    NeighbourCheck,
    Network,
    PingCheck,
    PortRange,
    ScriptCheck,
    SendExpectCheck,
    Target,
    TcpOpenCheck,
)

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
PYTHON = sys.executable


HTTPS_SERVER = """
import http.server, ssl, sys
address, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
server = http.server.HTTPServer((address, port), http.server.SimpleHTTPRequestHandler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


@dataclass
class Lab:
    lb: str
    tg: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_in_target(self, *argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["ip", "netns", "exec", self.tg, *argv],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)

    def http_server(self, address: str = "192.0.2.2", port: int = 8080) -> subprocess.Popen[bytes]:
        return self.start_in_target(PYTHON, "-m", "http.server", "--bind", address, str(port),
                                    "--directory", "/usr/share")

    def https_server(self, workdir: Path, address: str = "192.0.2.2", port: int = 8443
                     ) -> subprocess.Popen[bytes]:
        """A real TLS server with a self-signed certificate (as many targets have: probes don't verify)."""
        cert, key = workdir / "cert.pem", workdir / "key.pem"
        sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=target",
           "-keyout", str(key), "-out", str(cert))
        return self.start_in_target(PYTHON, "-c", HTTPS_SERVER, address, str(port), str(cert), str(key))

    def agent(self, port: int, *args: str) -> subprocess.Popen[bytes]:
        return self.start_in_target(PYTHON, "-m", "dsrlb.cli.agent", *args, str(port))

    def run(self, factory: Callable[[], Coroutine[Any, Any, T]], timeout: float = 60.0) -> T:
        """Run `factory()` on a fresh event loop in a thread inside the `lb` namespace."""
        box: dict[str, Any] = {}

        def body() -> None:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{self.lb}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            try:
                box["result"] = asyncio.run(asyncio.wait_for(factory(), timeout))
            except BaseException as exc:
                box["error"] = exc

        thread = threading.Thread(target=body, name=f"netns-{self.lb}")
        thread.start()
        thread.join(timeout + 10)
        if "error" in box:
            raise box["error"]
        if "result" not in box:
            raise TimeoutError("the balancer-side coroutine did not finish")
        result: T = box["result"]
        return result


@contextmanager
def health_lab() -> Iterator[Lab]:
    tag = uuid.uuid4().hex[:6]
    lab = Lab(f"dsrlbh-{tag}-lb", f"dsrlbh-{tag}-tg")
    veth_lb, veth_tg = f"dh{tag}a", f"dh{tag}b"
    made: list[str] = []
    try:
        for ns in (lab.lb, lab.tg):
            sh("ip", "netns", "add", ns)
            made.append(ns)
        sh("ip", "link", "add", veth_lb, "netns", lab.lb, "type", "veth", "peer", "name", veth_tg,
           "netns", lab.tg)
        for ns, dev, v4s, v6 in ((lab.lb, veth_lb, ["192.0.2.1/24"], "2001:db8::1/64"),
                                 (lab.tg, veth_tg, ["192.0.2.2/24", "192.0.2.3/24"], "2001:db8::2/64")):
            ip = ("ip", "-n", ns)
            sh(*ip, "link", "set", "lo", "up")
            for v4 in v4s:
                sh(*ip, "addr", "add", v4, "dev", dev)
            sh(*ip, "-6", "addr", "add", v6, "dev", dev, "nodad")
            sh(*ip, "link", "set", dev, "up")
        yield lab
    finally:
        for proc in lab.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


async def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll `predicate` for at most `timeout` seconds (a bounded wait, not a speed assertion)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


# --- the tests -------------------------------------------------------------------------------------

pytestmark = pytest.mark.root

NET = Network(1, addr=IPv4Address("192.0.2.0"), mask=IPv4Address("255.255.255.0"),
              real=IPv4Address("192.0.2.1"), mask6=64, real6=IPv6Address("2001:db8::1"),
              registered=True, enabled=True)
T4 = ProbeTarget(IPv4Address("192.0.2.2"), 8080, IPv4Address("192.0.2.1"))
T6 = ProbeTarget(IPv6Address("2001:db8::2"), 8080, IPv6Address("2001:db8::1"))
ABSENT = ProbeTarget(IPv4Address("192.0.2.9"), 8080, IPv4Address("192.0.2.1"))


def target(tid: int, address: str, *checks: Check) -> Target:
    return Target(tid, ip_address(address), checks=checks, registered=True, enabled=True)


@pytest.fixture
def lab() -> Iterator[Lab]:
    with health_lab() as made:
        yield made


def test_every_probe_type_against_a_real_target(lab: Lab, tmp_path: Path) -> None:
    lab.http_server()
    lab.http_server("2001:db8::2", 8080)
    lab.https_server(tmp_path)
    lab.agent(439, "--bind", "192.0.2.2", "--script", "echo 90")
    lab.agent(10000, "-6", "--script", "echo 12.5")
    marker, marker6 = tmp_path / "script-ran", tmp_path / "script6-ran"

    async def main() -> dict[str, ProbeResult]:
        kit = ProbeKit()
        ready, ready_tls = TcpOpenCheck(8080, 1, 1), TcpOpenCheck(8443, 1, 1)
        await wait_until(lambda: False, 0.0)
        for _ in range(100):  # the servers take a moment to start listening
            if ((await kit.run(ready, T4, 1.0)).ok and (await kit.run(ready, T6, 1.0)).ok
                    and (await kit.run(ready_tls, T4, 1.0)).ok):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # the agents' first load sample
        checks: dict[str, tuple[Check, ProbeTarget]] = {
            "ping": (PingCheck(1, 2), T4),
            "ping6": (PingCheck(1, 2, ipv6=True), T6),
            "arp": (NeighbourCheck(1, 2), T4),
            "ndp": (NeighbourCheck(1, 2, ipv6=True), T6),
            "tcpopen": (TcpOpenCheck(8080, 1, 2), T4),
            "tcpopen6": (TcpOpenCheck(8080, 1, 2), T6),
            "http": (HttpCheck(8080, "/", 1, 2, status=(PortRange(200, 200),),
                               body_regex="Directory listing", host="www.example.test"), T4),
            "http6": (HttpCheck(8080, "/", 1, 2), T6),
            "https": (HttpCheck(8443, "/", 1, 2, tls=True, body_regex="Directory listing"), T4),
            "sendexpect": (SendExpectCheck(8080, "GET / HTTP/1.0\\r\\n\\r\\n", "HTTP", 1, 2), T4),
            "sendexpect_re": (SendExpectCheck(8080, "GET / HTTP/1.0\\r\\n\\r\\n", r"HTTP/1\.\d 200", 1, 2,
                                              regex=True), T4),
            "agent": (AgentCheck(439, 1, 2), T4),
            "agent6": (AgentCheck(10000, 1, 2, ipv6=True), T6),
            "script": (ScriptCheck(f"sh -c 'echo $0:$1 > {marker}' $ipaddr$ $port$", 1, 2), T4),
            "script6": (ScriptCheck(f"sh -c 'echo $0 $1 > {marker6}' $ipaddr6$ $port$", 1, 2), T6),
            # and what must fail
            "closed_port": (TcpOpenCheck(8081, 1, 2), T4),
            "absent_ping": (PingCheck(1, 1), ABSENT),
            "absent_arp": (NeighbourCheck(1, 1), ABSENT),
            "http_status": (HttpCheck(8080, "/missing", 1, 2), T4),
            "http_body": (HttpCheck(8080, "/", 1, 2, body_regex="no such text"), T4),
            "https_on_plain": (HttpCheck(8080, "/", 1, 2, tls=True), T4),
            "plain_on_https": (HttpCheck(8443, "/", 1, 2), T4),
            "sendexpect_bad": (SendExpectCheck(8080, "GET / HTTP/1.0\\r\\n\\r\\n", "SSH-2.0", 1, 2), T4),
            "agent_wrong_port": (AgentCheck(440, 1, 1), T4),
            "agent6_on_v4": (AgentCheck(439, 1, 1, ipv6=True), T4),
            "script_fails": (ScriptCheck("false", 1, 2), T4),
            "script_missing": (ScriptCheck("/nonexistent/check", 1, 2), T4),
        }
        results = await asyncio.gather(*(kit.run(c, t, 1.0) for c, t in checks.values()))
        kit.close()
        return dict(zip(checks, results, strict=True))

    results = lab.run(main)
    should_fail = {"closed_port", "absent_ping", "absent_arp", "http_status", "http_body", "sendexpect_bad",
                   "agent_wrong_port", "agent6_on_v4", "script_fails", "script_missing", "https_on_plain",
                   "plain_on_https"}
    for name, result in results.items():
        assert result.ok == (name not in should_fail), (name, result)
    assert results["agent"].load == 90.0 and results["agent6"].load == 12.5
    assert results["http"].detail == "HTTP 200" and results["http_status"].detail == "HTTP status 404"
    assert "refused" in results["closed_port"].detail.lower()
    assert "no answer within" in results["absent_ping"].detail
    assert results["arp"].detail.startswith("is-at ")
    assert marker.read_text().strip() == "192.0.2.2:8080"
    assert marker6.read_text().strip() == "2001:db8::2 8080"
    assert results["https"].detail == "HTTP 200"


def down_and_back(lab: Lab, checks: tuple[Check, ...], stop: Callable[[], None],
                  restart: Callable[[], object],
                  when_up: Callable[[HealthScheduler], None] = lambda sched: None,
                  when_down: Callable[[HealthScheduler], None] = lambda sched: None,
                  when_back: Callable[[HealthScheduler], Coroutine[Any, Any, None]] | None = None) -> None:
    """Target 1 (192.0.2.2) with `checks` comes up; `stop()` takes it down within T + I (T = 2, I = 1);
    `restart()` brings it back up: exactly those three transitions."""
    cfg = Config(networks=(NET,), targets=(target(1, "192.0.2.2", *checks),))
    events: list[HealthEvent] = []
    stopped_at: dict[str, float] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sched = HealthScheduler(cfg)
        sched.subscribe(events.append)
        await sched.start()
        try:
            assert await wait_until(lambda: sched.target(1).state is HealthState.UP, 10)  # type: ignore[union-attr]
            when_up(sched)
            stop()
            stopped_at["t"] = loop.time()
            assert await wait_until(lambda: sched.target(1).state is HealthState.DOWN, 10)  # type: ignore[union-attr]
            when_down(sched)
            restart()
            assert await wait_until(lambda: sched.target(1).state is HealthState.UP, 10)  # type: ignore[union-attr]
            if when_back is not None:
                await when_back(sched)
        finally:
            await sched.stop()

    lab.run(main)
    changes = [e for e in events if isinstance(e, TargetStateChanged)]
    assert [e.new for e in changes] == [HealthState.UP, HealthState.DOWN, HealthState.UP]
    assert changes[1].since - stopped_at["t"] <= 2 + 1  # down within T + I of the stop


def test_target_goes_down_when_the_server_stops_and_comes_back(lab: Lab) -> None:
    server = lab.http_server()

    def reason(sched: HealthScheduler) -> None:
        view = sched.target(1)
        assert view is not None and "8080" in view.reason and "Connection refused" in view.reason
        assert {c.label: c.state for c in view.checks}["ping 1,2"] is HealthState.UP

    down_and_back(lab, (TcpOpenCheck(8080, 1, 2), HttpCheck(8080, "/", 1, 2), PingCheck(1, 2)),
                  stop=lambda: lab.stop(server), restart=lab.http_server, when_down=reason)


def test_target_goes_down_when_its_agent_stops_answering_and_comes_back(lab: Lab) -> None:
    """`agent P,I,T`: a real agent on the target; killed, its target goes down within T + I;
    started again, the target comes back up with its new load."""
    agent = lab.agent(439, "--bind", "192.0.2.2", "--script", "echo 35")

    def first_load(sched: HealthScheduler) -> None:
        assert sched.loads().get(1) == 35.0

    async def new_load(sched: HealthScheduler) -> None:
        assert await wait_until(lambda: sched.loads().get(1) == 20.0, 5)

    down_and_back(lab, (AgentCheck(439, 1, 2),), stop=lambda: lab.stop(agent),
                  restart=lambda: lab.agent(439, "--bind", "192.0.2.2", "--script", "echo 20"),
                  when_up=first_load, when_back=new_load)


def test_agent_load_high_and_low_and_authentication(lab: Lab, tmp_path: Path) -> None:
    secret = tmp_path / "agent.secret"
    secret.write_text("s3cret-for-tests\n")
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-the-secret\n")
    lab.agent(439, "--bind", "192.0.2.2", "--secret-file", str(secret), "--script", "echo 90")
    lab.agent(439, "--bind", "192.0.2.3", "--secret-file", str(secret), "--script", "echo 10")
    lab.agent(440, "--bind", "192.0.2.3", "--secret-file", str(wrong), "--script", "echo 1")
    agent, impostor = AgentCheck(439, 1, 2), AgentCheck(440, 1, 2)
    cfg = Config(networks=(NET,), settings=(("agentsecretfile", str(secret)),),
                 targets=(target(1, "192.0.2.2", agent), target(2, "192.0.2.3", agent),
                          target(3, "192.0.2.3", impostor)))

    async def main() -> tuple[dict[int, float], dict[int, HealthState], dict[str, int]]:
        sched = HealthScheduler(cfg)
        await sched.start()
        try:
            await wait_until(lambda: len(sched.loads()) == 2 and sched.target(3).state  # type: ignore[union-attr]
                             is not HealthState.UNKNOWN, 10)
            return (sched.loads(), {v.target_id: v.state for v in sched.snapshot()}, sched.counters())
        finally:
            await sched.stop()

    loads, states, _counters = lab.run(main)
    assert loads == {1: 90.0, 2: 10.0}  # the balancer sees which target is busy
    assert states == {1: HealthState.UP, 2: HealthState.UP, 3: HealthState.DOWN}  # wrong secret: no answer


def test_hung_script_is_killed_with_its_group_while_other_checks_stay_on_time(
    lab: Lab, tmp_path: Path,
) -> None:
    lab.http_server()
    pids = tmp_path / "pids"
    hung = ScriptCheck(f"sh -c 'sleep 1000 & echo $! >> {pids}; wait'", 1, 2)
    tcp = TcpOpenCheck(8080, 1, 2)
    cfg = Config(networks=(NET,), targets=(target(1, "192.0.2.2", hung), target(2, "192.0.2.2", tcp)))
    starts: list[float] = []

    async def main() -> dict[str, int]:
        kit = ProbeKit()
        loop = asyncio.get_running_loop()

        async def recording_probe(check: Check, t: ProbeTarget, timeout: float) -> ProbeResult:
            if check == tcp:
                starts.append(loop.time())
            return await kit.run(check, t, timeout)

        sched = HealthScheduler(cfg, probe=recording_probe, kit=kit)
        await sched.start()
        await asyncio.sleep(4.5)
        view = sched.target(1)
        assert view is not None and view.state is HealthState.DOWN
        assert "script killed after 1 s" in view.checks[0].detail
        counters = sched.counters()
        await sched.stop()
        return counters

    counters = lab.run(main)
    assert counters["probes_failed"] >= 3
    sleepers = [int(p) for p in pids.read_text().split()]
    assert len(sleepers) >= 3
    time.sleep(0.2)  # let the kernel finish reaping; then none of the sleeps may be alive
    alive = [p for p in sleepers if Path(f"/proc/{p}").exists()
             and "zombie" not in Path(f"/proc/{p}/status").read_text().lower()]
    assert alive == []
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) >= 4 and max(gaps) < 1.5  # the tcpopen check kept its 1 s interval


def test_hundreds_of_tcpopen_and_ping_checks_on_the_multiplexed_probers(lab: Lab) -> None:
    """The scheduler's fast path with real sources: 100 live targets, 100 absent ones, no task per probe."""
    lab.http_server()
    both = (TcpOpenCheck(8080, 1, 2), PingCheck(1, 2))
    cfg = Config(networks=(NET,), targets=tuple(
        target(i, "192.0.2.2" if i <= 100 else "192.0.2.9", *both) for i in range(1, 201)))

    async def main() -> tuple[dict[int, HealthState], dict[str, int], str, int]:
        kit = ProbeKit()
        for _ in range(100):  # the server takes a moment to start listening
            if (await kit.run(TcpOpenCheck(8080, 1, 1), T4, 1.0)).ok:
                break
            await asyncio.sleep(0.1)
        kit.close()
        sched = HealthScheduler(cfg)
        before = len(asyncio.all_tasks())
        await sched.start()
        most_tasks = 0
        try:
            for _ in range(40):  # 4 s: two windows
                await asyncio.sleep(0.1)
                most_tasks = max(most_tasks, len(asyncio.all_tasks()) - before)
            view = sched.target(150)
            return ({v.target_id: v.state for v in sched.snapshot()}, sched.counters(),
                    view.reason if view is not None else "", most_tasks)
        finally:
            await sched.stop()

    states, counters, reason, most_tasks = lab.run(main)
    assert all(states[i] is HealthState.UP for i in range(1, 101))
    assert all(states[i] is HealthState.DOWN for i in range(101, 201))
    assert "ping 1,2" in reason and "tcpopen 8080,1,2" in reason
    assert most_tasks == 0  # probes are not tasks
    assert counters["probes_ok"] >= 100 * 2 * 3  # two checks of 100 live targets, every second
    finished = counters["probes_ok"] + counters["probes_failed"]
    assert finished + counters["in_flight"] == counters["probes_started"]


def test_ping_from_a_source_we_do_not_have_fails_and_keeps_probing(lab: Lab) -> None:
    absent_real = Network(1, addr=IPv4Address("192.0.2.0"), mask=IPv4Address("255.255.255.0"),
                          real=IPv4Address("192.0.2.77"), registered=True, enabled=True)
    cfg = Config(networks=(absent_real,), targets=(target(1, "192.0.2.2", PingCheck(1, 2)),))

    async def main() -> tuple[str, dict[str, int]]:
        sched = HealthScheduler(cfg)
        await sched.start()
        try:
            await asyncio.sleep(3.5)
            view = sched.target(1)
            return (view.checks[0].detail if view is not None else ""), sched.counters()
        finally:
            await sched.stop()

    detail, counters = lab.run(main)
    assert detail == "Cannot assign requested address"
    assert counters["probes_failed"] >= 3 and counters["in_flight"] == 0
