"""Seed 000's HA pair for real: both balancer nodes of the `ha-dsr` lab run dsrlb with their own seed
configs (vrrp vrid 9, priority 200 and 100), elect a master over VRRP on the LAN, and the master alone
holds the shared addresses (virt and the VIP). When the master stops, it resigns (priority 0) and the
other node takes the addresses over, announces them, and carries the traffic.

Not covered here: the session sync of seed 000 (not built); established connections through the old
master are not kept.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dsrlb.control.client import ControlClient
from dsrlb.lab import BUILDERS, Lab, drive_http
from dsrlb.lab.core import LabProcess
from dsrlb.lab.runner import LAB_HTTP, run_balancer
from dsrlb.lab.topology import LabBalancer, LabTopology

pytestmark = [pytest.mark.root, pytest.mark.slow]

VIRT = "192.0.2.253"  # seed 000's virt 172.16.1.253, remapped


@dataclass
class Pair:
    lab: Lab
    topology: LabTopology
    daemons: dict[str, LabProcess]

    def vrrp(self, balancer: LabBalancer) -> dict[str, Any]:
        with ControlClient.for_instance(balancer.netns, timeout=5.0) as client:
            data = client.call("show", ["vrrp"]).data
        assert isinstance(data, dict) and data["vrrp"] is not None
        return dict(data["vrrp"])

    def addresses(self, balancer: LabBalancer) -> set[str]:
        out = subprocess.run(["ip", "-n", balancer.netns, "-o", "-4", "addr", "show", "dev", "eth0"],
                             capture_output=True, text=True, check=True).stdout
        found = set()
        for line in out.splitlines():
            words = line.split()
            if "inet" in words:
                found.add(words[words.index("inet") + 1].split("/")[0])
        return found


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Poll `check` until it holds; the seconds it took. Fails with `what` after `timeout`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture
def pair() -> Iterator[Pair]:
    with Lab() as lab:
        topology = BUILDERS["ha-dsr"](lab)
        daemons = {b.name: run_balancer(lab, b, "xdp") for b in topology.balancers}
        yield Pair(lab, topology, daemons)


def test_the_higher_priority_node_is_master_and_alone_holds_the_shared_addresses(pair: Pair) -> None:
    node1, node2 = pair.topology.balancers
    # Both start as backup; node1 (200) times out first (Master_Down_Interval 3.2 s) and advertises.
    wait_for("node1 master", lambda: pair.vrrp(node1)["state"] == "master", timeout=10)
    view2 = pair.vrrp(node2)
    assert view2["state"] == "backup" and view2["master"] == pair.vrrp(node1)["address"]
    vip = str(pair.topology.vip)
    wait_for("the shared addresses on node1", lambda: {vip, VIRT} <= pair.addresses(node1), timeout=5)
    assert not {vip, VIRT} & pair.addresses(node2)
    report = drive_http(pair.topology.client_netns, pair.topology.vip, pair.topology.ports,
                        pair.topology.client_sources, requests=20, duration=15)
    assert report.errors == {} and report.answered == 20
    assert [metric(node, "dsrlb_vrrp_master") for node in (node1, node2)] == [1.0, 0.0]


def metric(balancer: LabBalancer, name: str) -> float:
    """One gauge from the daemon's /metrics (its HTTP API, inside the balancer's namespace)."""
    text = subprocess.run(["ip", "netns", "exec", balancer.netns, "curl", "-fsS", "--max-time", "5",
                           f"http://{LAB_HTTP}/metrics"], capture_output=True, text=True, check=True).stdout
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


def test_the_backup_takes_over_when_the_master_stops(pair: Pair) -> None:
    node1, node2 = pair.topology.balancers
    wait_for("node1 master", lambda: pair.vrrp(node1)["state"] == "master", timeout=10)
    vip = str(pair.topology.vip)
    daemon = pair.daemons[node1.name]
    os.kill(daemon.pid, signal.SIGTERM)  # resigns with priority 0, then removes what it added
    took = wait_for("node2 master", lambda: pair.vrrp(node2)["state"] == "master", timeout=5)
    # A priority-0 advertisement hands over after Skew_Time (0.61 s at priority 100), not the
    # 3.6 s Master_Down_Interval of a silent master.
    assert took < 3.0, f"node2 took {took:.2f} s"
    wait_for("the shared addresses on node2", lambda: {vip, VIRT} <= pair.addresses(node2), timeout=5)
    pair.lab.stop(daemon)
    assert not {vip, VIRT} & pair.addresses(node1)
    # The router learnt the VIP's new MAC from node2's gratuitous ARP: traffic flows at once.
    report = drive_http(pair.topology.client_netns, pair.topology.vip, pair.topology.ports,
                        pair.topology.client_sources, requests=20, duration=15)
    assert report.errors == {} and report.answered == 20
    counters = pair.vrrp(node2)["counters"]
    assert counters["became_master"] == 1 and counters["drop_auth"] == 0
