"""Every seed lab builds, its targets answer HTTP directly, and nothing of it survives the lab."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from rich.console import Console

from dsrlb.lab import BUILDERS, Lab, LabError, ReplyCapture, drive_http, run_lab
from dsrlb.lab.runner import BALANCED_LABS
from dsrlb.netlink import list_netns


def lab_namespaces(lab_id: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listed.splitlines() if line.startswith(f"{lab_id}-")]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose (reaped by Popen.wait in the lab already, normally).
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


# Every lab with the XDP engine (native mode, LAB_XDP_MODE), and the NAT lab also with AF_PACKET (the
# DSR lab's AF_PACKET run is in test_daemon_e2e.py).
LAB_RUNS = [(name, "xdp") for name in sorted(BUILDERS)] + [("ipv6-nat", "afpacket")]


@pytest.mark.root
@pytest.mark.parametrize(("name", "engine"), LAB_RUNS)
def test_lab_builds_verifies_and_leaves_nothing(name: str, engine: str) -> None:
    with Lab() as lab:
        result = run_lab(lab, name, engine, console=Console(file=open(os.devnull, "w")))  # noqa: SIM115
        topology = result.topology
        assert result.verification.ok, result.verification.failures()
        assert result.failures() == []  # what `dsrlb lab` exits 1 on
        if name in BALANCED_LABS:
            assert result.balancer_running, result.message
            assert result.traffic is not None and result.traffic.errors == {}
            assert result.traffic.answered == result.traffic.sent > 0
            assert set(result.traffic.replies) == {t.name for t in topology.targets}
            if topology.dsr:
                assert result.dsr_proof is not None and result.dsr_proof.holds, result.message
            else:
                # NAT: every reply frame to a client came from VIP:port, and the targets saw the
                # clients' own addresses (not the balancer's).
                proof = result.nat_proof
                assert proof is not None and proof.clients_seen, result.message
                assert set(proof.peers) <= {str(a) for a in topology.client_sources}
                assert sum(proof.peers.values()) == result.traffic.answered
                vip_sources = {f"[{topology.vip}]:{p}" for p in topology.ports}
                assert vip_sources <= set(proof.reply_sources), result.message
                assert proof.holds and set(proof.reply_sources) == vip_sources, result.message
        else:
            assert not result.balancer_running and "does not work yet" in result.message
        assert len(topology.targets) == 2 and topology.balancers
        for balancer in topology.balancers:
            assert balancer.config_path.read_text() == balancer.config_text
            seed_addresses = [seed for seed, _ in topology.address_map if seed[0].isdigit()]
            assert all(seed not in balancer.config_text for seed in seed_addresses)
        names = list(lab.roles.values())
        pids = [p.pid for p in lab.processes]
        assert set(names) <= set(list_netns()) and all(alive(pid) for pid in pids)
        assert all(len(n) <= 15 for n in names)
    assert lab_namespaces(lab.id) == []
    assert not any(alive(pid) for pid in pids)
    assert not lab.workdir.exists()


@pytest.mark.root
def test_an_exception_in_the_body_still_removes_everything() -> None:
    with pytest.raises(RuntimeError, match="boom"), Lab() as lab:
        BUILDERS["dsr"](lab)
        pids = [p.pid for p in lab.processes]
        raise RuntimeError("boom")
    assert lab_namespaces(lab.id) == []
    assert not any(alive(pid) for pid in pids)


@pytest.mark.root
def test_sigterm_removes_everything(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import sys, time
        from dsrlb.lab import Lab
        with Lab() as lab:
            lab.add_node("a"); lab.add_node("b")
            lab.veth("a", "eth0", "b", "eth0")
            proc = lab.spawn("b", "sleeper", ["sleep", "60"])
            print(lab.id, proc.pid, flush=True)
            time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        lab_id, sleeper = child.stdout.readline().split()
        assert len(lab_namespaces(lab_id)) == 2
        child.terminate()
        assert child.wait(timeout=30) == 128 + 15
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert lab_namespaces(lab_id) == []
    assert not alive(int(sleeper))


@pytest.mark.root
def test_direct_traffic_is_counted_per_target_and_captured_with_target_macs() -> None:
    with Lab() as lab:
        topology = BUILDERS["dsr"](lab)
        target = topology.targets[0]
        netns, ifname = topology.capture_point or ("", "")
        with ReplyCapture(netns, ifname, target.address, (80,)) as capture:
            report = drive_http(topology.client_netns, target.address, (80,), topology.client_sources,
                                requests=6, duration=20)
            time.sleep(0.2)  # let the capture thread read the last frames (not a timing assertion)
        assert report.sent == 6 and report.replies == {target.name: 6} and report.errors == {}
        proof = capture.proof({t.mac: t.name for t in topology.targets}, topology.balancers[0].macs)
        assert proof.holds, proof.describe()
        assert set(proof.reply_macs) == {target.mac}


@pytest.mark.root
def test_refusals() -> None:
    with Lab() as lab:
        lab.add_node("a")
        with pytest.raises(LabError, match="documentation"):
            lab.address("a", "lo", "10.1.2.3/32")
        with pytest.raises(LabError, match="documentation"):
            lab.route("a", "0.0.0.0/0", "10.0.0.1")
        with pytest.raises(LabError, match="duplicate"):
            lab.add_node("a")
        with pytest.raises(LabError, match="no node"):
            lab.ns("zz")
