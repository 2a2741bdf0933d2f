"""What the daemon asks of the kernel: addresses, sysctls, the default route, next hops and return routes.

DESIGN §1: the kernel owns addresses (so ARP/ND, ICMP echo to the VIP and routing of everything not
balanced are the kernel's); the engine owns VIP traffic. Every address, route and sysctl added here is
remembered and removed/restored on stop, and nothing the operator had configured before is touched.

A network may live on several interfaces (seed 003: `network 1 { interfaces 1,3 }`, eth1 a crossover
cable to the other balancer, eth3 the access LAN with the gateway). BalanceNG answers ARP/ND for the
network's addresses on all of them. Linux routes a prefix by one connected route, so the network's
prefix lives on one interface, its *home*: the interface on which the network's gateway (else one of
its targets) answers ARP/ND, else the first one listed. Its other interfaces carry the same addresses
as host addresses (/32, /128), so ARP/ND is answered there too without a second connected route that
would make the kernel's choice of egress arbitrary.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Interface, IPv6Network

from dsrlb.engine.dataplane import IPAddress, IPNetwork, NextHop
from dsrlb.model import Config, Network
from dsrlb.netlink import Netlink, RouteEntry, RouteType
from dsrlb.netlink.errors import NetlinkFacadeError
from dsrlb.netlink.keepers import AddressKeeper
from dsrlb.netlink.sysctl import Sysctl, SysctlError, SysctlKeeper, write_sysctl
from dsrlb.netlink.types import Neighbour, Resolution

log = logging.getLogger("dsrlb.daemon")

IPInterface = IPv4Interface | IPv6Interface
AF_INET, AF_INET6 = 2, 10
HOME_PROBE_SECONDS = 1.5  # how long ARP/ND may take to tell which link a network's gateway is on
GATEWAY_RESOLVE_SECONDS = 0.5  # per route gateway and refresh; a slow one is picked up next refresh


@dataclass(frozen=True)
class NetworkPlacement:
    """Where one network's addresses go (see the module docstring for the home interface)."""

    interfaces: tuple[str, ...]  # in config order
    prefixes: tuple[IPNetwork, ...]  # the network's IPv4 and IPv6 prefixes
    addresses: tuple[IPInterface, ...]  # real/virt with the prefix length, VIPs as /32 or /128
    probes: tuple[IPAddress, ...] = ()  # neighbours whose link is the home: gateway first, then targets


@dataclass(frozen=True)
class AddressPlan:
    """What one config wants of the kernel on the balancer."""

    placements: tuple[NetworkPlacement, ...]
    interfaces: tuple[str, ...]  # the interfaces the engine serves
    forwarding_v4: bool
    forwarding_v6: bool
    gateways: tuple[IPAddress, ...] = ()  # `gateway { ipaddr / ipaddr6 }`: the default routes

    @property
    def addresses(self) -> tuple[tuple[str, IPInterface], ...]:
        """Every address on the first interface of its network (the home before probing)."""
        return tuple((p.interfaces[0], a) for p in self.placements for a in p.addresses)


def _interface_names(config: Config, network: Network) -> list[str]:
    names = []
    for iid in network.interfaces:
        interface = config.interface(iid)
        if interface is not None and interface.registered and interface.enabled and interface.name:
            names.append(interface.name)
    return names


def plan_addresses(config: Config) -> AddressPlan:
    """real/virt (v4 and v6) of every enabled network, and each enabled server's VIP as /32 or /128
    in the network that contains it (else on the first served interface)."""
    placements: list[NetworkPlacement] = []
    served: list[str] = []
    gateways = tuple(a for a in (config.gateway.ipaddr, config.gateway.ipaddr6) if a is not None) \
        if config.gateway is not None else ()
    targets = [t.address for t in config.targets if t.registered and t.address is not None]
    vips = [s.address for s in config.servers
            if s.address is not None and s.registered and s.enabled]
    placed: set[IPAddress] = set()
    for network in config.networks:
        if not (network.registered and network.enabled):
            continue
        names = _interface_names(config, network)
        if not names:
            continue
        served.extend(n for n in names if n not in served)
        v4, v6 = network.ipv4_network, network.ipv6_network
        prefixes = tuple(net for net in (v4, v6) if net is not None)
        addresses: list[IPInterface] = []
        for addr, net in ((network.real, v4), (network.virt, v4), (network.real6, v6), (network.virt6, v6)):
            if addr is not None and net is not None:
                addresses.append(_interface(addr, net.prefixlen))
        for vip in vips:
            if vip not in placed and any(vip in net for net in prefixes):
                addresses.append(_interface(vip, vip.max_prefixlen))
                placed.add(vip)
        inside = [a for a in (*gateways, *targets) if any(a in net for net in prefixes)]
        placements.append(NetworkPlacement(tuple(names), prefixes, tuple(dict.fromkeys(addresses)),
                                           tuple(dict.fromkeys(inside))))
    homeless = [v for v in vips if v not in placed]
    if homeless and served:
        placements.append(NetworkPlacement((served[0],), (), tuple(
            dict.fromkeys(_interface(v, v.max_prefixlen) for v in homeless))))
    nat = [t for t in config.targets if t.registered and not t.dsr and t.address is not None]
    return AddressPlan(
        placements=tuple(placements),
        interfaces=tuple(served),
        forwarding_v4=any(isinstance(t.address, IPv4Address) for t in nat),
        forwarding_v6=any(not isinstance(t.address, IPv4Address) for t in nat),
        gateways=gateways if served else (),
    )


def _interface(address: IPAddress, prefixlen: int) -> IPInterface:
    if isinstance(address, IPv4Address):
        return IPv4Interface((address, prefixlen))
    return IPv6Interface((address, prefixlen))


def _host(interface: IPInterface) -> IPInterface:
    return _interface(interface.ip, interface.max_prefixlen)


def _host_network(address: IPAddress) -> IPNetwork:
    return IPv4Network(address) if isinstance(address, IPv4Address) else IPv6Network(address)


def _mac(text: str | None) -> bytes | None:
    if not text:
        return None
    return bytes(int(part, 16) for part in text.split(":"))


def _default(address: IPAddress) -> IPNetwork:
    return IPv4Network("0.0.0.0/0") if isinstance(address, IPv4Address) else IPv6Network("::/0")


@dataclass
class _GatewayRoute:
    gateway: IPAddress
    dev: str | None


class Plumbing:
    """Applies AddressPlans, routes via the gateway and resolves next hops; undoes exactly what it did."""

    def __init__(self, netlink: Netlink | None = None) -> None:
        self.netlink = netlink if netlink is not None else Netlink()
        self._addresses = AddressKeeper(self.netlink)
        self._sysctls = SysctlKeeper()
        self._current: tuple[tuple[str, IPInterface], ...] = ()
        # home interfaces found by probing, per (interfaces, probes) of a placement
        self._homes: dict[tuple[tuple[str, ...], tuple[IPAddress, ...]], str] = {}
        self._gateway_routes: dict[int, _GatewayRoute] = {}  # family -> the default route we added

    # --- addresses and routes ----------------------------------------------------------------------

    def apply(self, plan: AddressPlan) -> None:
        """Add what the plan wants, remove what an earlier plan added and this one does not, and
        route by the config's gateway where the operator has no default route.

        All or nothing: when an address or sysctl cannot be set, what this call added is removed and
        the sysctls it changed are put back before the error propagates, so the kernel is as the
        previous plan left it (a refused reload changes nothing)."""
        wanted: list[tuple[str, IPInterface]] = []
        homes: dict[IPNetwork, str] = {}
        for placement in plan.placements:
            home = self.home(placement)
            homes.update((net, home) for net in placement.prefixes)
            # The home first: its addresses carry the prefix, the others only the host addresses.
            for ifname in (home, *(i for i in placement.interfaces if i != home)):
                wanted += [(ifname, a if ifname == home else _host(a)) for a in placement.addresses]
        wanted = list(dict.fromkeys(wanted))
        had = set(self._addresses.added)
        sysctls = self._sysctls.changed
        try:
            for ifname, interface in wanted:
                # nodad: a VIP or virt address must answer at once, not after duplicate detection.
                self._addresses.add(ifname, interface, nodad=True)
            if plan.forwarding_v4:
                self._sysctls.set(Sysctl.ipv4("ip_forward"), 1)
            if plan.forwarding_v6:
                self._sysctls.set(Sysctl.parse("net.ipv6.conf.all.forwarding"), 1)
        except Exception:
            self._undo(had, sysctls)
            raise
        for ifname, interface in self._current:
            if (ifname, interface) not in wanted:
                try:
                    self._addresses.remove(ifname, interface)
                except NetlinkFacadeError as exc:  # the new plan is in place: this one stays behind
                    log.warning("removing %s from %s: %s", interface, ifname, exc)
        self._current = tuple(wanted)
        self._route_gateways(plan.gateways, homes)

    def _undo(self, had: set[tuple[str, IPInterface]], sysctls: dict[Sysctl, str]) -> None:
        """Remove the addresses added since `had`, put back the sysctls changed since `sysctls`."""
        for ifname, interface in reversed(self._addresses.added):
            if (ifname, interface) not in had:
                try:
                    self._addresses.remove(ifname, interface)
                except NetlinkFacadeError as exc:
                    log.warning("undoing %s on %s: %s", interface, ifname, exc)
        for key, old in self._sysctls.changed.items():
            if key not in sysctls:
                try:
                    write_sysctl(key, old)
                except SysctlError as exc:
                    log.warning("putting back %s: %s", key, exc)

    def home(self, placement: NetworkPlacement) -> str:
        """The interface that carries the placement's prefix (module docstring). Probes ARP/ND once
        per placement when it has several interfaces; the answer is kept until release."""
        if len(placement.interfaces) == 1 or not placement.probes:
            return placement.interfaces[0]
        key = (placement.interfaces, placement.probes)
        known = self._homes.get(key)
        if known is not None:
            return known
        found = self._probe_home(placement)
        if found is None:
            log.info("none of %s answered ARP/ND on %s: the network's prefix goes on %s",
                     ", ".join(map(str, placement.probes)), ", ".join(placement.interfaces),
                     placement.interfaces[0])
            return placement.interfaces[0]
        log.info("%s answers on %s: the network's prefix goes there", found[1], found[0])
        self._homes[key] = found[0]
        return found[0]

    def _probe_home(self, placement: NetworkPlacement) -> tuple[str, IPAddress] | None:
        try:
            for ifname in placement.interfaces:
                for address in placement.probes:
                    self.netlink.trigger_resolution(address, ifname)
            deadline = time.monotonic() + HOME_PROBE_SECONDS
            while True:
                for address in placement.probes:  # the gateway first: it decides when it answers
                    for ifname in placement.interfaces:
                        entry = self.netlink.neighbour(address, ifname)
                        if entry is not None and entry.usable:
                            return ifname, address
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.05)
        except NetlinkFacadeError as exc:
            log.warning("probing the home interface of %s: %s", ", ".join(placement.interfaces), exc)
            return None

    def _route_gateways(self, gateways: tuple[IPAddress, ...], homes: dict[IPNetwork, str]) -> None:
        """`gateway { ipaddr6 G }` is the default gateway: a default route via G on G's home
        interface, unless a default route of that family exists already (the operator's stays)."""
        wanted = {AF_INET if isinstance(g, IPv4Address) else AF_INET6: g for g in gateways}
        for family, added in list(self._gateway_routes.items()):
            if wanted.get(family) != added.gateway:
                self._remove_gateway_route(family, added)
        for family, gateway in wanted.items():
            if family in self._gateway_routes:
                continue
            try:
                if any(r.is_default and r.kind is RouteType.UNICAST for r in self.netlink.routes(family)):
                    log.info("a default route exists: the gateway %s is not routed by dsrlb", gateway)
                    continue
                dev = next((name for net, name in homes.items() if gateway in net), None)
                if self.netlink.add_route(_default(gateway), gateway, dev=dev):
                    self._gateway_routes[family] = _GatewayRoute(gateway, dev)
                    log.info("default route via %s%s", gateway, f" dev {dev}" if dev else "")
            except NetlinkFacadeError as exc:
                log.error("default route via the gateway %s: %s", gateway, exc)

    def _remove_gateway_route(self, family: int, added: _GatewayRoute) -> None:
        try:
            self.netlink.remove_route(_default(added.gateway), added.gateway)
        except NetlinkFacadeError as exc:
            log.warning("removing the default route via %s: %s", added.gateway, exc)
        del self._gateway_routes[family]

    def release(self) -> None:
        try:
            for family, added in list(self._gateway_routes.items()):
                self._remove_gateway_route(family, added)
            self._addresses.release()
        finally:
            self._sysctls.restore()
            self._current = ()
            self._homes = {}

    # --- next hops and return routes ---------------------------------------------------------------

    def next_hop(self, address: IPAddress, timeout: float = 0.5,
                 on_link: int | None = None) -> NextHop | None:
        """Egress interface and MACs towards `address` (a neighbour on `on_link` when given), or
        None while it cannot be resolved."""
        try:
            found = self.netlink.resolve_neighbour(address, timeout=timeout, on_link=on_link)
            if found.outcome != Resolution.RESOLVED:
                return None
            dst = _mac(found.mac)
            src = _mac(self.netlink.link(found.ifindex).mac)
        except NetlinkFacadeError as exc:
            log.debug("next hop of %s: %s", address, exc)
            return None
        if dst is None or src is None:
            return None
        return NextHop(found.ifindex, src, dst)

    def return_routes(self, networks: tuple[IPNetwork, ...] = ()) -> dict[IPNetwork, NextHop]:
        """Routes for NAT return traffic, from the kernel's main routing table.

        Every unicast route via a gateway whose MAC resolves becomes that prefix (the default route
        included; of several routes to one prefix the lowest metric wins). Connected prefixes have
        no single next hop: each usable neighbour in them becomes a host route (/32, /128), and so do
        neighbours inside the config's `networks`. Link-local prefixes are left out (no client sits
        there for a VIP).
        """
        try:
            table = self.netlink.routes()
        except NetlinkFacadeError as exc:
            log.debug("listing routes: %s", exc)
            return {}
        macs: dict[int, bytes | None] = {}
        routes: dict[IPNetwork, NextHop] = {}
        connected: list[RouteEntry] = []
        for route in sorted(table, key=lambda r: r.metric):
            if route.kind is not RouteType.UNICAST or route.ifindex == 0 or route.prefix in routes:
                continue
            if route.prefix.is_link_local:
                continue
            if route.gateway is None:
                connected.append(route)
                continue
            hop = self.next_hop(route.gateway, GATEWAY_RESOLVE_SECONDS, on_link=route.ifindex)
            if hop is not None:
                routes[route.prefix] = hop
        try:
            neighbours = self.netlink.neighbours()  # after the gateways' resolution: they are in it
        except NetlinkFacadeError as exc:
            log.debug("listing neighbours: %s", exc)
            return routes
        for entry in neighbours:
            if not entry.usable or not self._on_link(entry, connected, networks):
                continue
            src, mac = self._link_mac(entry.ifindex, macs), _mac(entry.mac)
            if mac is not None and src is not None:
                routes.setdefault(_host_network(entry.address), NextHop(entry.ifindex, src, mac))
        return routes

    @staticmethod
    def _on_link(entry: Neighbour, connected: list[RouteEntry], networks: tuple[IPNetwork, ...]) -> bool:
        if any(entry.address in net for net in networks):
            return True
        return any(r.ifindex == entry.ifindex and entry.address in r.prefix for r in connected)

    def _link_mac(self, ifindex: int, cache: dict[int, bytes | None]) -> bytes | None:
        if ifindex not in cache:
            try:
                cache[ifindex] = _mac(self.netlink.link(ifindex).mac)
            except NetlinkFacadeError:
                cache[ifindex] = None
        return cache[ifindex]
