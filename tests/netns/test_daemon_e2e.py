"""The daemon balancing real HTTP traffic in the seed 001 DSR lab, for both engines.

Everything is real: namespaces, a bridge, HTTP servers on targets that hold the VIP on lo, HTTP
clients, the dsrlb daemon with the seed's own configuration (remapped), its control socket. The XDP
engine runs in native mode (the labs' default, dsrlb.lab.native_xdp).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kernel_snapshot import assert_as_before, kernel_state
from proc_lines import read_line

from dsrlb.control.client import ControlClient
from dsrlb.lab import BUILDERS, Lab, ReplyCapture, drive_http
from dsrlb.lab.core import LabProcess
from dsrlb.lab.httpd import slow_body
from dsrlb.lab.runner import native_config, run_balancer
from dsrlb.lab.topology import LabTopology

pytestmark = [pytest.mark.root, pytest.mark.slow]



@dataclass
class Running:
    lab: Lab
    topology: LabTopology
    daemon: LabProcess
    client: ControlClient
    engine: str
    before: dict[str, str]  # kernel_state of the balancer's namespace before the daemon started

    def call(self, *words: str) -> object:
        return self.client.call_words(list(words)).data

    def data(self, *words: str) -> dict[str, Any]:
        answer = self.call(*words)
        assert isinstance(answer, dict)
        return answer

    def target_id(self, name: str) -> int:
        """The config id of lab target `name` (the seed's targets 1, 2 are the lab's first two)."""
        return 1 + [t.name for t in self.topology.targets].index(name)


@pytest.fixture(params=["afpacket", "xdp"])
def running(request: pytest.FixtureRequest) -> Iterator[Running]:
    with Lab() as lab:
        topology = BUILDERS["dsr"](lab)
        balancer = topology.balancers[0]
        before = kernel_state(balancer.netns)
        daemon = run_balancer(lab, balancer, request.param)
        client = ControlClient.for_instance(balancer.netns, timeout=5.0)
        try:
            yield Running(lab, topology, daemon, client, request.param, before)
        finally:
            client.close()


def _in_lb(run: Running, *argv: str) -> str:
    netns = run.topology.balancers[0].netns
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True,
                          check=True).stdout


def test_http_reaches_every_target_and_replies_bypass_the_balancer(running: Running) -> None:
    topo = running.topology
    netns, ifname = topo.capture_point or ("", "")
    with ReplyCapture(netns, ifname, topo.vip, topo.ports) as capture:
        report = drive_http(topo.client_netns, topo.vip, topo.ports, topo.client_sources,
                            requests=40, duration=20)
        time.sleep(0.2)  # let the capture thread read the last frames (not a timing assertion)
    assert report.errors == {}
    assert report.answered == 40
    assert set(report.replies) == {t.name for t in topo.targets}
    proof = capture.proof({t.mac: t.name for t in topo.targets}, topo.balancers[0].macs)
    assert proof.holds, proof.describe()
    stats = running.call("show", "stats")
    assert isinstance(stats, dict) and stats["stats"]["engine"] == running.engine


def test_ping_to_the_vip_is_answered(running: Running) -> None:
    # Seed 001, "Testing": "You should be able to ping the virtual web server from the router."
    done = subprocess.run(["ip", "netns", "exec", running.topology.probe_netns, "ping", "-c", "2",
                           "-W", "2", str(running.topology.vip)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_disabled_target_gets_no_new_sessions_but_keeps_its_own(running: Running) -> None:
    topo = running.topology
    first = topo.client_sources[0]
    owner = http_get_in_client(running, str(first))
    running.call("disable", "target", "1" if owner == topo.targets[0].name else "2")
    # The established session (keyed by client address: `sessionid src`) keeps its target ...
    assert all(http_get_in_client(running, str(first)) == owner for _ in range(3))
    # ... while every new client goes to the other target.
    others = {http_get_in_client(running, str(src)) for src in topo.client_sources[1:]}
    assert others and owner not in others
    targets = running.call("show", "targets")
    assert isinstance(targets, dict)
    states = {row["name"] or row["address"]: row["state"] for row in targets["targets"]}
    assert "disabled" in states.values()


def http_get_in_client(run: Running, source: str) -> str:
    """One GET to the VIP from `source` in the client namespace; the answering target's name."""
    code = (f"from dsrlb.lab.traffic import http_get; print(http_get({str(run.topology.vip)!r}, "
            f"{run.topology.ports[0]}, source={source!r}, timeout=3))")
    done = subprocess.run(["ip", "netns", "exec", run.topology.client_netns, sys.executable, "-c", code],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# One client in the client namespace: a slow GET (/slow/SECONDS, dsrlb.lab.httpd) through the VIP;
# once the headers are in it says which target answers and waits for a line on stdin (the test
# disables that target meanwhile), then reads the whole body and sends a second GET on the same
# keep-alive connection. It prints the body (hex) and the second answer with "same connection".
SLOW_CLIENT = """
import http.client, sys
vip, port, source, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
conn = http.client.HTTPConnection(vip, port, timeout=30, source_address=(source, 0))
conn.request("GET", "/slow/" + seconds, headers={"Host": "dsrlb-lab"})
first = conn.getresponse()
local_port = conn.sock.getsockname()[1]
print("started", first.getheader("X-Dsrlb-Target"), flush=True)
sys.stdin.readline()
body = first.read()
conn.request("GET", "/", headers={"Host": "dsrlb-lab"})
second = conn.getresponse().read().decode().strip()
print("body", body.hex(), flush=True)
print("again", second, conn.sock.getsockname()[1] == local_port, flush=True)
"""
SLOW_SECONDS = 4



def test_disabled_target_finishes_its_open_connection_and_gets_no_new_ones(running: Running) -> None:
    topo = running.topology
    argv = ["ip", "netns", "exec", topo.client_netns, sys.executable, "-c", SLOW_CLIENT, str(topo.vip),
            str(topo.ports[0]), str(topo.client_sources[0]), str(SLOW_SECONDS)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        started = read_line(proc, 20)
        assert started.startswith("started "), started + (proc.stderr.read() if proc.stderr else "")
        owner = started.split()[1]
        tid = running.target_id(owner)
        # The reply is still streaming (SLOW_SECONDS): the target's packets go straight to the client,
        # the client's ACKs through the balancer, which must keep them on this target.
        assert running.data("disable", "target", str(tid)) == {"targets": [tid], "admin": "disabled"}
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert bytes.fromhex(lines["body"]) == slow_body(owner)  # the whole response, not cut short
    assert lines["again"] == f"{owner} True"  # and the same connection serves a second request
    # New connections (new clients) all go to the other target.
    other = next(t.name for t in topo.targets if t.name != owner)
    report = drive_http(topo.client_netns, topo.vip, topo.ports, list(topo.client_sources[1:]),
                        requests=len(topo.client_sources) - 1, duration=30)
    assert report.errors == {} and report.replies == {other: report.sent}
    assert running.data("show", "targets")["targets"][tid - 1]["state"] == "disabled"


def test_drain_shows_draining_and_sends_new_sessions_elsewhere(running: Running) -> None:
    topo = running.topology
    first = str(topo.client_sources[0])
    owner = http_get_in_client(running, first)
    tid = running.target_id(owner)
    assert running.data("drain", "target", str(tid)) == {"targets": [tid], "admin": "draining"}
    states = {row["id"]: row for row in running.data("show", "targets")["targets"]}
    assert states[tid]["state"] == "draining" and states[tid]["reason"] == "draining by operator"
    assert states[3 - tid]["state"] == "up"
    assert http_get_in_client(running, first) == owner  # the established session stays
    other = next(t.name for t in topo.targets if t.name != owner)
    report = drive_http(topo.client_netns, topo.vip, topo.ports, list(topo.client_sources[1:]),
                        requests=len(topo.client_sources) - 1, duration=30)
    assert report.errors == {} and report.replies == {other: report.sent}
    sessions = running.data("show", "sessions")["sessions"]
    assert {row["client"] for row in sessions if row["target"] == tid} == {first}


# A second service beside the seed's (another VIP in the same network; no traffic needs to reach it).
SECOND_SERVICE = """
server    2 {{
          ipaddr 192.0.2.11
          port 80
          protocol tcp
          method {method}
          targets {targets}
}}
register  server 2
enable    server 2
"""


def sessions_of(run: Running, server: int) -> set[tuple[object, ...]]:
    rows = run.data("show", "sessions")["sessions"]
    return {(row["client"], row["client_port"], row["target"])
            for row in rows if row["server"] == server}


def test_reload_changing_another_service_keeps_this_ones_sessions(running: Running) -> None:
    topo = running.topology
    sources = list(topo.client_sources)
    report = drive_http(topo.client_netns, topo.vip, topo.ports, sources, requests=len(sources), duration=30)
    assert report.errors == {} and len(report.replies) == 2
    before = sessions_of(running, 1)
    assert {client for client, _, _ in before} == {str(s) for s in sources}
    base = native_config(topo.balancers[0]).read_text()
    for step, (method, targets) in enumerate((("rr", "1,2"), ("hash", "2"))):  # added, then changed
        path = running.lab.workdir / f"second-service-{step}.conf"
        path.write_text(base + SECOND_SERVICE.format(method=method, targets=targets))
        assert running.data("reload", str(path)) == {"reloaded": str(path)}
        servers = {row["id"]: row for row in running.data("show", "servers")["servers"]}
        assert servers[2]["method"] == method
        assert servers[2]["targets"] == [int(t) for t in targets.split(",")]
        assert sessions_of(running, 1) == before, f"server 1's sessions changed on reload {step}"
    # and every client still reaches the target its session names
    again = drive_http(topo.client_netns, topo.vip, topo.ports, sources, requests=len(sources), duration=30)
    assert again.errors == {} and again.replies == report.replies
    assert sessions_of(running, 1) == before


def test_reload_under_traffic_loses_no_request(running: Running) -> None:
    topo = running.topology
    result: dict[str, object] = {}

    def traffic() -> None:
        result["report"] = drive_http(topo.client_netns, topo.vip, topo.ports, topo.client_sources,
                                      requests=150, duration=30)

    worker = threading.Thread(target=traffic)
    worker.start()
    for _ in range(5):
        answer = running.call("reload")
        assert isinstance(answer, dict) and "reloaded" in answer
    worker.join(timeout=60)
    report = result["report"]
    assert report.errors == {} and report.answered == report.sent == 150  # type: ignore[attr-defined]


def test_http_api_and_metrics(running: Running) -> None:
    metrics = _in_lb(running, "curl", "-sf", "http://127.0.0.1:8439/metrics")
    assert 'dsrlb_build_info{' in metrics and f'engine="{running.engine}"' in metrics
    drive_http(running.topology.client_netns, running.topology.vip, running.topology.ports,
               running.topology.client_sources, requests=10, duration=10)
    targets = json.loads(_in_lb(running, "curl", "-sf", "http://127.0.0.1:8439/api/v1/show/targets"))
    assert sum(row["packets"] for row in targets["result"]["targets"]) >= 10


def test_stop_leaves_nothing_behind(running: Running) -> None:
    netns = running.topology.balancers[0].netns
    vip = str(running.topology.vip)
    assert vip in _in_lb(running, "ip", "-br", "addr")
    assert kernel_state(netns) != running.before  # the daemon did change something, so the check bites
    os.kill(running.daemon.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(running.daemon.pid):
        time.sleep(0.05)
    assert not _alive(running.daemon.pid)
    assert vip not in kernel_state(netns)["addresses"]
    assert_as_before(netns, running.before)
    assert "dsrlb_" not in _in_lb(running, "nft", "list", "tables")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (our child, not yet reaped) has stopped too
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


