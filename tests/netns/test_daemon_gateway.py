"""`show gateway`: the seed 003 gateway check (`gateway { ipaddr6; ping6 3,10 }`) through the daemon;
and what the daemon does to a NAT balancer's kernel (the default route via the gateway, IPv6
forwarding, addresses on three legs) is undone by stop."""

from __future__ import annotations

import os
import signal
import time

import pytest
from kernel_snapshot import assert_as_before, kernel_state

from dsrlb.control.client import ControlClient
from dsrlb.lab import BUILDERS, Lab
from dsrlb.lab.runner import run_balancer

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_gateway_check_is_shown_up_with_its_ping6() -> None:
    with Lab() as lab:
        topology = BUILDERS["ipv6-nat"](lab)
        balancer = topology.balancers[0]
        assert "gateway" in balancer.config_text and "ping6 3,10" in balancer.config_text
        run_balancer(lab, balancer, "afpacket")
        with ControlClient.for_instance(balancer.netns, timeout=5.0) as client:
            deadline = time.monotonic() + 15  # the first ping6 answers within one interval (3 s)
            gateway = client.call("show", ["gateway"]).data["gateway"]
            while gateway["state"] != "up" and time.monotonic() < deadline:
                time.sleep(0.2)
                gateway = client.call("show", ["gateway"]).data["gateway"]
            assert gateway["state"] == "up", gateway
            assert gateway["address"] and ":" in gateway["address"]
            assert [c["check"] for c in gateway["checks"]] == ["ping6 3,10"]
            assert gateway["latency_ms"] is not None and gateway["latency_ms"] >= 0
            text = client.call("show", ["gateway"]).text or ""
            assert text.startswith(f"gateway {gateway['address']}: up since")


def test_no_gateway_configured() -> None:
    with Lab() as lab:
        balancer = BUILDERS["dsr"](lab).balancers[0]
        run_balancer(lab, balancer, "afpacket")
        with ControlClient.for_instance(balancer.netns, timeout=5.0) as client:
            result = client.call("show", ["gateway"])
            assert result.data == {"gateway": None} and result.text == "no gateway configured"



def _stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:  # a zombie (our child, not yet reaped) has stopped
            return stat.read().split()[2] == "Z"
    except OSError:
        return True


def test_stop_puts_back_routes_forwarding_and_addresses() -> None:
    with Lab() as lab:
        topology = BUILDERS["ipv6-nat"](lab)
        balancer = topology.balancers[0]
        before = kernel_state(balancer.netns)
        daemon = run_balancer(lab, balancer, "afpacket")
        running = kernel_state(balancer.netns)
        # NAT targets: the daemon forwards IPv6 and routes by the config's gateway (docs/operations.md)
        assert (before["net.ipv6.conf.all.forwarding"], running["net.ipv6.conf.all.forwarding"]) == ("0", "1")
        assert "default" not in before["routes6"] and "default via" in running["routes6"]
        assert str(topology.vip) in running["addresses"]
        os.kill(daemon.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not _stopped(daemon.pid):
            time.sleep(0.05)
        assert _stopped(daemon.pid)
        assert_as_before(balancer.netns, before)
