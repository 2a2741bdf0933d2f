"""The balancer's VRRP role: which virtual router it runs, and what mastership changes (DESIGN §1).

The master holds the shared addresses, `virt`, `virt6` and every VIP; a backup removes them and
announces nothing, so neighbours send VIP traffic to the master alone. The daemon applies the
address plan of the role (plumbing.plan_addresses(config, virtual=...)) and, on becoming master,
announces the addresses (gratuitous ARP, unsolicited NA: RFC 5798 §6.4.1).

Mapping of the BalanceNG `vrrp { vrid; priority; network; tracking }` block:

- the router runs on the first interface of its `network`; over IPv4 (VRRPv2, RFC 3768, what
  keepalived speaks by default) from the network's `real` address when the network shares IPv4
  addresses (`virt` or an IPv4 VIP), else over IPv6 (VRRPv3, RFC 5798) from the interface's
  link-local address (RFC 5798 §5.1.2.1) when it shares IPv6 ones (seed 003);
- the advertisements carry the shared addresses of that family (informational: RFC 5798 §7.1);
- `set vrrppreempt 0` turns preemption off (default on, as RFC 5798 §6.1 and keepalived);
- `tracking enable`: every registered interface with a `trackval` whose link is down, and the
  `gateway` with a `trackval` while its check says down, lower the priority by their trackval
  (never below 1), so that a balancer that lost its uplink hands over to its peer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Protocol

from dsrlb.model import Config, Network
from dsrlb.vrrp.machine import DropCounted, Event, RouterConfig, State, StateChanged, VrrpRouter

log = logging.getLogger("dsrlb.vrrp")

IPAddress = IPv4Address | IPv6Address


class HaConfigError(Exception):
    """The config's vrrp block or session sync cannot run on this balancer (the message says why)."""


@dataclass(frozen=True)
class VrrpPlan:
    ifname: str
    router: RouterConfig
    tracked_links: tuple[tuple[str, int], ...] = ()  # (interface name, trackval)
    gateway_trackval: int = 0  # 0: the gateway is not tracked

    def identity(self) -> tuple[object, ...]:
        """Everything but the shared addresses the advertisements list: what a reload may not change."""
        r = self.router
        return (self.ifname, r.vrid, r.priority, r.version, r.family, r.advert_interval, r.preempt,
                r.preempt_delay, r.primary_address, r.auth_pass, r.unicast_peers, self.tracked_links,
                self.gateway_trackval)

    def priority(self, links_down: Iterable[str], gateway_down: bool) -> int:
        """The effective priority: the configured one less the trackval of everything tracked that
        is down, at least 1 (0 is reserved for a master's resignation, RFC 5798 §5.2.4)."""
        down = set(links_down)
        lost = sum(value for name, value in self.tracked_links if name in down)
        lost += self.gateway_trackval if gateway_down else 0
        return max(1, self.router.priority - lost)


def plan_vrrp(config: Config, link_local: Callable[[str], IPv6Address | None]) -> VrrpPlan | None:
    """The virtual router of `config` (None without a vrrp block); `link_local(ifname)` gives an
    interface's IPv6 link-local address, the source of VRRPv3 over IPv6."""
    vrrp = config.vrrp
    if vrrp is None:
        return None
    network = _vrrp_network(config, vrrp.network)
    names = [i.name for iid in network.interfaces
             if (i := config.interface(iid)) is not None and i.registered and i.enabled and i.name]
    if not names:
        raise HaConfigError(f"vrrp: network {network.id} has no enabled interface to run on")
    ifname = names[0]
    vips = [s.address for s in config.servers if s.address is not None and s.registered and s.enabled]
    shared4 = _unique([network.virt, *vips], IPv4Address)
    shared6 = _unique([network.virt6, *vips], IPv6Address)
    primary: IPAddress
    if network.real is not None and shared4:
        family, version, primary, addresses = 4, 2, network.real, shared4
    elif shared6:
        found = link_local(ifname)
        if found is None:
            raise HaConfigError(f"vrrp: {ifname} has no IPv6 link-local address to send VRRPv3 from")
        family, version, primary, addresses = 6, 3, found, shared6
    else:
        raise HaConfigError(f"vrrp: network {network.id} shares no address to fail over (give it a "
                              "virt or virt6 address, or a server a VIP)")
    peers = tuple(p for p in vrrp.unicast_peers if p.version == family)
    if len(peers) != len(vrrp.unicast_peers):
        raise HaConfigError(f"vrrp: peers must be IPv{family} addresses: VRRP runs over IPv{family} "
                              f"on {ifname}")
    if vrrp.auth_pass is not None and version != 2:
        raise HaConfigError("vrrp: authpass exists in VRRPv2 (IPv4) only; RFC 5798 removed it")
    try:
        router = RouterConfig(vrid=vrrp.vrid, priority=vrrp.priority, version=version, family=family,
                              advert_interval=vrrp.advert_interval,
                              preempt=config.setting("vrrppreempt", "1") != "0",
                              preempt_delay=vrrp.preempt_delay,
                              primary_address=primary, addresses=addresses, auth_pass=vrrp.auth_pass,
                              unicast_peers=peers)
    except ValueError as exc:
        raise HaConfigError(f"vrrp: {exc}") from exc
    tracked: tuple[tuple[str, int], ...] = ()
    gateway = 0
    if vrrp.tracking:
        tracked = tuple((i.name, i.trackval) for i in config.interfaces
                        if i.registered and i.enabled and i.name and i.trackval)
        if config.gateway is not None and config.gateway.trackval:
            gateway = config.gateway.trackval
    return VrrpPlan(ifname, router, tracked, gateway)


def _vrrp_network(config: Config, nid: int | None) -> Network:
    networks = [n for n in config.networks if n.registered and n.enabled]
    if nid is None:
        if not networks:
            raise HaConfigError("vrrp: no enabled network to run on")
        return networks[0]
    network = config.network(nid)
    if network is None or network not in networks:
        raise HaConfigError(f"vrrp: network {nid} is not a registered and enabled network")
    return network


def _unique(addresses: Iterable[IPAddress | None], kind: type) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(a for a in addresses if isinstance(a, kind)))


class Driver(Protocol):
    """What VrrpRole needs of vrrp/driver.py VrrpDriver."""

    @property
    def router(self) -> VrrpRouter: ...

    @property
    def counters(self) -> dict[str, int]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def set_priority(self, priority: int) -> None: ...


DriverFactory = Callable[[VrrpRouter, str, Callable[[Event], None]], Driver]


class VrrpRole:
    """One virtual router driven on the network, reporting mastership to the daemon.

    `on_role(master)` is awaited for every change between master and not master, one at a time and
    in order (the daemon moves the shared addresses there); `publish` gets one event dict per state
    change for the control socket's event stream."""

    def __init__(self, plan: VrrpPlan, on_role: Callable[[bool], Awaitable[None]],
                 publish: Callable[[dict[str, Any]], object], driver_factory: DriverFactory) -> None:
        self.plan = plan
        self._on_role = on_role
        self._publish = publish
        self.driver = driver_factory(VrrpRouter(plan.router), plan.ifname, self._on_event)
        self.since = time.time()
        self.last_reason = "not started"
        self._roles: list[bool] = []  # changes waiting for on_role, in order
        self._applying = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def state(self) -> State:
        return self.driver.router.state

    async def start(self) -> None:
        try:
            await self.driver.start()
        except OSError as exc:
            raise HaConfigError(f"vrrp: {exc.strerror or exc}") from exc

    async def stop(self) -> None:
        """Resign (a master sends priority 0, so the backup takes over after Skew_Time) and close."""
        await self.driver.stop()

    def track(self, links_down: Iterable[str], gateway_down: bool) -> None:
        priority = self.plan.priority(links_down, gateway_down)
        if priority != self.driver.router.priority:
            log.warning("VRRP priority %d -> %d (tracking)", self.driver.router.priority, priority)
            self.driver.set_priority(priority)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, DropCounted):
            if event.reason not in ("vrid", "own"):  # another router's VRID is normal on a link
                log.debug("VRRP datagram dropped: %s", event.reason)
            return
        assert isinstance(event, StateChanged)
        log.warning("VRRP %s -> %s: %s", event.old, event.new, event.reason)
        self.since, self.last_reason = time.time(), event.reason
        self._publish({"type": "vrrp", "old": str(event.old), "new": str(event.new),
                       "reason": event.reason, "time": self.since})
        was, now = event.old is State.MASTER, event.new is State.MASTER
        if was != now:
            self._roles.append(now)
            self._drain()

    def _drain(self) -> None:
        if self._applying or not self._roles:
            return
        self._applying = True
        task = asyncio.get_running_loop().create_task(self._apply_roles())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply_roles(self) -> None:
        try:
            while self._roles:
                master = self._roles.pop(0)
                try:
                    await self._on_role(master)
                except Exception:
                    log.exception("VRRP: moving the shared addresses (%s)", "master" if master else "backup")
        finally:
            self._applying = False

    async def settled(self) -> None:
        """Wait until every role change so far has been applied (stop, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def view(self) -> dict[str, Any]:
        router, config = self.driver.router, self.plan.router
        return {
            "state": str(router.state), "since": self.since, "reason": self.last_reason,
            "vrid": config.vrid, "interface": self.plan.ifname, "version": config.version,
            "address": str(config.primary_address),
            "priority": router.priority, "configured_priority": config.priority,
            "preempt": config.preempt, "advert_interval": config.advert_interval,
            "master": None if router.master_address is None else str(router.master_address),
            "addresses": [str(a) for a in config.addresses],
            "tracked": [{"interface": name, "trackval": value} for name, value in self.plan.tracked_links]
            + ([{"gateway": True, "trackval": self.plan.gateway_trackval}]
               if self.plan.gateway_trackval else []),
            "counters": self.driver.counters,
        }
