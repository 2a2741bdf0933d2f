"""The daemon's VRRP role (daemon/vrrp_role.py): config mapping, tracking, and what a role change asks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import pytest

from dsrlb.config import loads
from dsrlb.daemon.plumbing import plan_addresses
from dsrlb.daemon.vrrp_role import HaConfigError, VrrpRole, plan_vrrp
from dsrlb.examples import example
from dsrlb.vrrp.machine import Event, State, VrrpRouter

LINK_LOCAL = IPv6Address("fe80::1")

BASE = """\
interface 1 {
          name eth0
          trackval 30
}
interface 2 {
          name eth1
}
register  interfaces 1,2
enable    interfaces 1,2
network 1 {
          addr 192.0.2.0
          mask 255.255.255.0
          real 192.0.2.2
          virt 192.0.2.3
          interface 1
}
register  network 1
enable    network 1
server 1  {
          ipaddr 192.0.2.10
          port 80
          protocol tcp
          targets 1
}
register  server 1
enable    server 1
target 1  {
          ipaddr 192.0.2.100
          dsr enable
}
register  target 1
enable    target 1
"""


def no_link_local(ifname: str) -> IPv6Address | None:
    return None


def test_no_vrrp_block_means_no_router() -> None:
    assert plan_vrrp(loads(BASE), no_link_local) is None


def test_an_ipv4_network_runs_vrrpv2_from_real_and_shares_virt_and_the_vips() -> None:
    config = loads(BASE + "vrrp {\n vrid 9\n priority 200\n network 1\n}\n")
    plan = plan_vrrp(config, no_link_local)
    assert plan is not None and plan.ifname == "eth0"
    router = plan.router
    assert (router.vrid, router.priority, router.version, router.family) == (9, 200, 2, 4)
    assert router.primary_address == IPv4Address("192.0.2.2")
    assert router.addresses == (IPv4Address("192.0.2.3"), IPv4Address("192.0.2.10"))
    assert router.preempt and plan.tracked_links == ()  # tracking is off unless enabled


def test_vrrppreempt_0_turns_preemption_off_and_tracking_reads_trackvals() -> None:
    config = loads(BASE + "set vrrppreempt 0\nvrrp {\n vrid 9\n network 1\n tracking enable\n"
                          " preemptdelay 15\n}\n")
    plan = plan_vrrp(config, no_link_local)
    assert plan is not None and not plan.router.preempt and plan.router.preempt_delay == 15
    assert plan.tracked_links == (("eth0", 30),)
    assert plan.priority([], gateway_down=False) == 100
    assert plan.priority(["eth0"], gateway_down=False) == 70
    assert plan.priority(["eth0", "eth1"], gateway_down=True) == 70  # eth1 and the gateway: untracked


def test_seed_003_runs_vrrpv3_over_ipv6_from_the_link_local_address_and_tracks_the_gateway() -> None:
    """Seed 003 (LB1) shares only IPv6 addresses (virt6, the VIP): VRRPv3 over IPv6 (RFC 5798)."""
    config = loads(example("seed003-lb1").text())
    plan = plan_vrrp(config, lambda ifname: LINK_LOCAL)
    assert plan is not None and plan.ifname == "eth1"
    assert (plan.router.version, plan.router.family, plan.router.primary_address) == (3, 6, LINK_LOCAL)
    assert ip_address("2001:db8::2:3") in plan.router.addresses
    assert ip_address("2001:db8::2:4") in plan.router.addresses
    assert plan.tracked_links == (("eth2", 10), ("eth3", 10)) and plan.gateway_trackval == 10
    assert plan.priority(["eth2"], gateway_down=True) == 180
    with pytest.raises(HaConfigError, match="link-local"):
        plan_vrrp(config, no_link_local)


def test_seed_000_nodes_run_one_router_with_their_own_priorities() -> None:
    plans = [plan_vrrp(loads(example(f"seed000-node{n}").text()), no_link_local)
             for n in (1, 2)]
    assert all(p is not None for p in plans)
    one, two = (p.router for p in plans if p is not None)
    assert one.vrid == two.vrid == 9 and one.priority != two.priority
    assert one.addresses == two.addresses  # what fails over is the same on both nodes


@pytest.mark.parametrize(("extra", "message"), [
    ("network 2 {\n addr 198.51.100.0\n mask 255.255.255.0\n real 198.51.100.2\n interface 2\n}\n"
     "vrrp {\n vrid 9\n network 2\n}\n", "network 2 is not a registered and enabled network"),
    ("vrrp {\n vrid 9\n peers 2001:db8::5\n}\n", "peers must be IPv4"),
    ("vrrp {\n vrid 9\n advert 1.5\n}\n", "whole seconds"),
])
def test_a_vrrp_block_that_cannot_run_is_a_clear_error(extra: str, message: str) -> None:
    with pytest.raises(HaConfigError, match=message):
        plan_vrrp(loads(BASE + extra), no_link_local)


def test_a_backup_plans_only_its_own_addresses() -> None:
    config = loads(BASE + "vrrp {\n vrid 9\n}\n")
    master = {str(a) for _, a in plan_addresses(config, True).addresses}
    backup = {str(a) for _, a in plan_addresses(config, False).addresses}
    assert master == {"192.0.2.2/24", "192.0.2.3/24", "192.0.2.10/32"}
    assert backup == {"192.0.2.2/24"}
    assert plan_addresses(config, False).interfaces == plan_addresses(config, True).interfaces


class FakeDriver:
    """Stands in for the network driver: the router itself is real, the link is the test."""

    def __init__(self, router: VrrpRouter, ifname: str, on_event: Callable[[Event], None]) -> None:
        self.router, self.ifname, self.on_event = router, ifname, on_event
        self.now = 0.0

    @property
    def counters(self) -> dict[str, int]:
        return self.router.counters

    async def start(self) -> None:
        self.emit(self.router.start(self.now))

    async def stop(self) -> None:
        self.emit(self.router.shutdown(self.now))

    def set_priority(self, priority: int) -> None:
        self.emit(self.router.set_priority(priority, self.now))

    def expire(self) -> None:
        deadline = self.router.next_deadline
        assert deadline is not None
        self.now = deadline
        self.emit(self.router.timer(self.now))

    def emit(self, output: Any) -> None:
        for event in output.events:
            self.on_event(event)


def test_role_changes_reach_the_daemon_in_order_and_are_published() -> None:
    config = loads(BASE + "vrrp {\n vrid 9\n tracking enable\n}\n")
    plan = plan_vrrp(config, no_link_local)
    assert plan is not None
    roles: list[bool] = []
    published: list[dict[str, Any]] = []

    async def on_role(master: bool) -> None:
        await asyncio.sleep(0)
        roles.append(master)

    async def main() -> None:
        role = VrrpRole(plan, on_role, published.append, FakeDriver)
        await role.start()
        driver = role.driver
        assert isinstance(driver, FakeDriver)
        driver.expire()  # nobody advertised within Master_Down_Interval
        await role.settled()
        assert role.state is State.MASTER and roles == [True]
        role.track(["eth0"], gateway_down=False)
        assert role.view()["priority"] == 70 and role.view()["configured_priority"] == 100
        await role.stop()
        await role.settled()

    asyncio.run(main())
    assert roles == [True, False]
    assert [(e["old"], e["new"]) for e in published] == [
        ("initialize", "backup"), ("backup", "master"), ("master", "initialize")]
