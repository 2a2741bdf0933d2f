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
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from proc_lines import read_line

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
        # The session sync signed with a shared secret, as an operator should run it.
        secret = lab.workdir / "sync.secret"
        secret.write_text("lab-sync-secret\n")
        for balancer in topology.balancers:
            with balancer.config_path.open("a") as config:
                config.write(f'set       syncsecretfile "{secret}"\n')
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


# Keep-alive connections from every client source through the VIP: one GET each, then (after a line on
# stdin) a second GET on the same connections. Prints "first|again SOURCE TARGET LOCAL_PORT" lines.
KEEPALIVE_CLIENT = """
import http.client, sys
vip, port, sources = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
conns = {s: http.client.HTTPConnection(vip, port, timeout=10, source_address=(s, 0)) for s in sources}
def ask(kind):
    for source, conn in conns.items():
        conn.request("GET", "/", headers={"Host": "dsrlb-lab"})
        name = conn.getresponse().read().decode().strip()
        print(kind, source, name, conn.sock.getsockname()[1], flush=True)
ask("first")
sys.stdin.readline()
ask("again")
"""


def test_established_connections_survive_a_failover_through_session_sync(pair: Pair) -> None:
    """Seed 000's `syncpeer`: node1 sends its sessions to node2 as they are made; when node1 stops,
    node2 sends every established connection's next packets to the target it had, so the same
    keep-alive connections keep working (DSR: the TCP state lives on the targets)."""
    node1, node2 = pair.topology.balancers
    wait_for("node1 master", lambda: pair.vrrp(node1)["state"] == "master", timeout=10)
    topo = pair.topology
    sources = [str(s) for s in topo.client_sources]
    argv = ["ip", "netns", "exec", topo.client_netns, sys.executable, "-c", KEEPALIVE_CLIENT, str(topo.vip),
            str(topo.ports[0]), *sources]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        first = {}
        for _ in sources:
            kind, source, name, port = read_line(proc, 20).split()
            assert kind == "first"
            first[source] = (name, port)
        names = {t.name: i for i, t in enumerate(topo.targets, start=1)}
        wanted = {(source, names[name]) for source, (name, _) in first.items()}
        # node2 learns them within a tick (events) of their creation
        wait_for("the sessions on node2", lambda: wanted <= synced_sessions(pair, node2), timeout=10)
        # On node2 the first client's target takes no new sessions: without its synced session that
        # client's next packet would go to the other target, which answers it with a reset.
        drained = names[first[sources[0]][0]]
        with ControlClient.for_instance(node2.netns, timeout=5.0) as client:
            client.call("drain", ["target", str(drained)])
        os.kill(pair.daemons[node1.name].pid, signal.SIGTERM)
        wait_for("node2 master", lambda: pair.vrrp(node2)["state"] == "master", timeout=5)
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    again = {words[1]: (words[2], words[3]) for words in (line.split() for line in out.splitlines())}
    assert again == first  # same target, same connection (local port), for every client
    view = pair.vrrp(node2)
    assert view["state"] == "master"
    with ControlClient.for_instance(node2.netns, timeout=5.0) as client:
        sync = client.call("show", ["sync"]).data["sync"]
    assert sync["counters"]["sessions_received"] >= len(sources) and sync["drop_stranger"] == 0
    assert sync["authenticated"] and sync["counters"]["drop_auth"] == 0


def synced_sessions(pair: Pair, balancer: LabBalancer) -> set[tuple[str, int]]:
    with ControlClient.for_instance(balancer.netns, timeout=5.0) as client:
        rows = client.call("show", ["sessions"]).data["sessions"]
    return {(row["client"], row["target"]) for row in rows}



@pytest.fixture
def nat_pair() -> Iterator[Pair]:
    with Lab() as lab:
        topology = BUILDERS["ipv6-nat"](lab)
        daemons = {b.name: run_balancer(lab, b, "xdp") for b in topology.balancers}
        yield Pair(lab, topology, daemons)


def test_seed_003_tracking_hands_the_master_role_over_when_the_access_link_fails(nat_pair: Pair) -> None:
    """Seed 003: LB1 and LB2 both have priority 200, VRRPv3 over IPv6 on their crossover cable, and
    track eth2, eth3 and the gateway (trackval 10, `vrrppreempt 1`). When the master's access link
    (eth3) goes down its priority falls to 190, the other node preempts it, and the clients' new
    connections through the VIP (IPv6 NAT) are served by the new master."""
    lb1, lb2 = nat_pair.topology.balancers
    wait_for("a master", lambda: "master" in {nat_pair.vrrp(b)["state"] for b in (lb1, lb2)}, timeout=10)
    master, backup = (lb1, lb2) if nat_pair.vrrp(lb1)["state"] == "master" else (lb2, lb1)
    view = nat_pair.vrrp(backup)
    assert view["state"] == "backup" and view["version"] == 3 and view["priority"] == 200
    topo = nat_pair.topology
    report = drive_http(topo.client_netns, topo.vip, topo.ports, topo.client_sources, requests=8, duration=15)
    assert report.errors == {} and report.answered == 8
    subprocess.run(["ip", "-n", master.netns, "link", "set", "eth3", "down"], check=True)
    wait_for(f"{backup.name} master", lambda: nat_pair.vrrp(backup)["state"] == "master", timeout=10)
    old = nat_pair.vrrp(master)
    assert old["state"] == "backup" and old["priority"] == 190 and old["configured_priority"] == 200
    report = drive_http(topo.client_netns, topo.vip, topo.ports, topo.client_sources, requests=8, duration=15)
    assert report.errors == {} and report.answered == 8


# One keep-alive connection that asks every second for `seconds` seconds.
STEADY_CLIENT = """
import http.client, sys, time
vip, port, source, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
conn = http.client.HTTPConnection(vip, port, timeout=10, source_address=(source, 0))
end = time.monotonic() + seconds
while time.monotonic() < end:
    conn.request("GET", "/", headers={"Host": "dsrlb-lab"})
    conn.getresponse().read()
    time.sleep(1)
"""


def test_the_peer_copy_of_a_live_session_is_refreshed(pair: Pair) -> None:
    """Only node1 sees a session's traffic; its 10 s refresh (sync/peer.py REFRESH_SECONDS) re-sends
    the sessions active since the last one, so node2's copy stays as fresh as the traffic and does not
    idle out while the connection lives."""
    node1, node2 = pair.topology.balancers
    wait_for("node1 master", lambda: pair.vrrp(node1)["state"] == "master", timeout=10)
    topo = pair.topology
    source = str(topo.client_sources[0])
    subprocess.run(["ip", "netns", "exec", topo.client_netns, sys.executable, "-c", STEADY_CLIENT,
                    str(topo.vip), str(topo.ports[0]), source, "14"], check=True, timeout=40)

    def idle_on(balancer: LabBalancer) -> float:
        with ControlClient.for_instance(balancer.netns, timeout=5.0) as client:
            rows = client.call("show", ["sessions"]).data["sessions"]
        return float(next(row["idle_s"] for row in rows if row["client"] == source))

    # created ~14 s ago; refreshed on node2 at least once since, within the last refresh period
    assert idle_on(node1) < 3
    assert idle_on(node2) < 12, "node2's copy was not refreshed"
