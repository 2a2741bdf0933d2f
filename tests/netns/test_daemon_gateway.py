"""`show gateway`: the seed 003 gateway check (`gateway { ipaddr6; ping6 3,10 }`) through the daemon."""

from __future__ import annotations

import time

import pytest

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
