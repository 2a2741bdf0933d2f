"""`dsrlb start|status|reload|show|stop` as an operator runs them, on the seed 001 lab's balancer node.

`stop` must leave the balancer's namespace as it found it: addresses, IPv4 and IPv6 routes, the
sysctls the daemon touches, no XDP program on a link, no nftables table, and (XDP) no pins under
/sys/fs/bpf/dsrlb/<instance>, in generic and native mode.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_snapshot import assert_as_before as assert_unchanged
from kernel_snapshot import in_netns as in_namespace
from kernel_snapshot import kernel_state as kernel_state_of

from dsrlb.lab import BUILDERS, Lab
from dsrlb.lab.runner import prepare_native_xdp
from dsrlb.lab.topology import LabBalancer

pytestmark = [pytest.mark.root, pytest.mark.slow]



@pytest.fixture
def lab_balancer() -> Iterator[tuple[Lab, LabBalancer]]:
    with Lab() as lab:
        node = BUILDERS["dsr"](lab).balancers[0]
        try:
            yield lab, node
        finally:  # stop a daemon a failed test left running (by its own pidfile, never by name)
            dsrlb(node, "stop")


@pytest.fixture
def balancer(lab_balancer: tuple[Lab, LabBalancer]) -> LabBalancer:
    return lab_balancer[1]


def in_netns(node: LabBalancer, *argv: str) -> str:
    return in_namespace(node.netns, *argv)


def kernel_state(node: LabBalancer) -> dict[str, str]:
    return kernel_state_of(node.netns)


def assert_as_before(node: LabBalancer, before: dict[str, str]) -> None:
    assert_unchanged(node.netns, before)


def dsrlb(node: LabBalancer, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["ip", "netns", "exec", node.netns, sys.executable, "-m", "dsrlb.cli.main", "-i", node.netns,
            *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_start_status_reload_show_stop(balancer: LabBalancer, tmp_path: Path) -> None:
    config = str(balancer.config_path)
    before = kernel_state(balancer)
    started = dsrlb(balancer, "start", "-c", config, "--engine", "afpacket")
    assert started.returncode == 0, started.stderr
    assert "started" in started.stdout and "afpacket" in started.stdout
    again = dsrlb(balancer, "start", "-c", config)
    assert again.returncode == 1 and "already running" in again.stderr
    status = dsrlb(balancer, "status")
    assert status.returncode == 0 and "is running" in status.stdout

    bad = tmp_path / "bad.conf"
    bad.write_text(balancer.config_text.replace("targets 1,2", "targets 1,7"))
    refused = dsrlb(balancer, "reload", "-c", str(bad))
    assert refused.returncode == 1
    assert "reload refused" in refused.stderr and "bad.conf:" in refused.stderr
    shown = dsrlb(balancer, "show", "config", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["servers"][0]["targets"] == [1, 2]

    reloaded = dsrlb(balancer, "reload")
    assert reloaded.returncode == 0, reloaded.stderr
    targets = dsrlb(balancer, "show", "targets", "--json")
    assert targets.returncode == 0, targets.stderr
    rows = json.loads(targets.stdout)["targets"]
    assert {row["id"] for row in rows} == {1, 2}
    assert all({"id", "address", "state", "sessions", "packets", "bytes"} <= row.keys() for row in rows)
    table = dsrlb(balancer, "show", "servers")
    assert table.returncode == 0 and "rr" in table.stdout

    stopped = dsrlb(balancer, "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    after = dsrlb(balancer, "status")
    assert after.returncode == 3 and "not running" in after.stdout
    assert_as_before(balancer, before)


def test_start_refuses_a_bad_config(balancer: LabBalancer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("server 1 {\n  ipadr 192.0.2.10\n}\n")
    refused = dsrlb(balancer, "start", "-c", str(bad))
    assert refused.returncode == 1
    assert "bad.conf:2:3" in refused.stderr
    assert dsrlb(balancer, "status").returncode == 3


@pytest.mark.parametrize("mode", ["generic", "native"])
def test_xdp_pins_exist_while_running_and_are_gone_after_stop(
        lab_balancer: tuple[Lab, LabBalancer], mode: str) -> None:
    lab, balancer = lab_balancer
    if mode == "native":
        prepare_native_xdp(lab, balancer)  # the far end of the veth, as the labs do
    before = kernel_state(balancer)
    # `ip netns exec` gives the daemon a private mount namespace (its pins would vanish with it), so
    # enter only the network namespace: the pins land in the host's bpffs, where we can look.
    pins = Path("/sys/fs/bpf/dsrlb") / balancer.netns
    argv = ["nsenter", f"--net=/run/netns/{balancer.netns}", sys.executable, "-m", "dsrlb.cli.main",
            "-i", balancer.netns]
    started = subprocess.run([*argv, "start", "-c", str(balancer.config_path), "--engine", "xdp",
                              "--xdp-mode", mode], capture_output=True, text=True, timeout=60)
    try:
        assert started.returncode == 0, started.stderr
        assert pins.is_dir() and any(pins.iterdir())
        links = in_netns(balancer, "ip", "-d", "link", "show", "eth0")
        assert "prog/xdp" in links
        assert ("xdpgeneric" in links) == (mode == "generic")  # native: attached in driver mode
        assert kernel_state(balancer) != before  # the VIP and real address are on eth0
    finally:
        stopped = subprocess.run([*argv, "stop"], capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert not pins.exists()
    assert_as_before(balancer, before)
