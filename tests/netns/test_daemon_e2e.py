"""The daemon balancing real HTTP traffic in the seed 001 DSR lab, for both engines.

Everything is real: namespaces, a bridge, HTTP servers on targets that hold the VIP on lo, HTTP
clients, the dsrlb daemon with the seed's own configuration (remapped), its control socket.
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

import pytest

from dsrlb.control.client import ControlClient
from dsrlb.lab import BUILDERS, Lab, ReplyCapture, drive_http
from dsrlb.lab.core import LabProcess
from dsrlb.lab.runner import run_balancer
from dsrlb.lab.topology import LabTopology

pytestmark = [pytest.mark.root, pytest.mark.slow]


@dataclass
class Running:
    lab: Lab
    topology: LabTopology
    daemon: LabProcess
    client: ControlClient
    engine: str

    def call(self, *words: str) -> object:
        return self.client.call_words(list(words)).data


@pytest.fixture(params=["afpacket", "xdp"])
def running(request: pytest.FixtureRequest) -> Iterator[Running]:
    with Lab() as lab:
        topology = BUILDERS["dsr"](lab)
        balancer = topology.balancers[0]
        daemon = run_balancer(lab, balancer, request.param)
        client = ControlClient.for_instance(balancer.netns, timeout=5.0)
        try:
            yield Running(lab, topology, daemon, client, request.param)
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
    vip = str(running.topology.vip)
    assert vip in _in_lb(running, "ip", "-br", "addr")
    os.kill(running.daemon.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(running.daemon.pid):
        time.sleep(0.05)
    assert not _alive(running.daemon.pid)
    assert vip not in _in_lb(running, "ip", "-br", "addr")
    links = _in_lb(running, "ip", "-d", "link", "show")
    assert "prog/xdp" not in links
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


