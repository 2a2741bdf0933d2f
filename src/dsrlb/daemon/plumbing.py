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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from typing import NamedTuple, TypeVar

from dsrlb.daemon.nexthops import (
    HopKey,
    KernelSnapshot,
    Lookup,
    mac_bytes,
    resolve_next_hops,
    return_routes_of,
    settled,
    unresolved_gateways,
)
from dsrlb.engine.dataplane import IPAddress, IPNetwork, NextHop
from dsrlb.model import Config, Network
from dsrlb.netlink import Netlink, RouteType
from dsrlb.netlink.errors import NetlinkFacadeError
from dsrlb.netlink.keepers import AddressKeeper
from dsrlb.netlink.sysctl import Sysctl, SysctlError, SysctlKeeper, write_sysctl
from dsrlb.netlink.types import Neighbour, Resolution
from dsrlb.vrrp.announce import AnnounceError, send_gratuitous_arp, send_unsolicited_na

log = logging.getLogger("dsrlb.daemon")
T = TypeVar("T")

IPInterface = IPv4Interface | IPv6Interface
AF_INET, AF_INET6 = 2, 10
HOME_PROBE_SECONDS = 1.5  # how long ARP/ND may take to tell which link a network's gateway is on
# One refresh pass waits at most this long, in all, for the neighbours it asked the kernel to resolve;
# a slower one is picked up by the next pass.
RESOLVE_SECONDS = 0.5
REFRESH_CHUNK = 256  # addresses between two looks at a refresh's stop flag


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


def plan_addresses(config: Config, virtual: bool = True) -> AddressPlan:
    """real/virt (v4 and v6) of every enabled network, and each enabled server's VIP as /32 or /128
    in the network that contains it (else on the first served interface).

    `virtual` False leaves out the shared addresses, virt, virt6 and the VIPs: a VRRP backup holds
    only its own `real` addresses (DESIGN §1; daemon/vrrp_role.py)."""
    placements: list[NetworkPlacement] = []
    served: list[str] = []
    gateways = tuple(a for a in (config.gateway.ipaddr, config.gateway.ipaddr6) if a is not None) \
        if config.gateway is not None else ()
    targets = [t.address for t in config.targets if t.registered and t.address is not None]
    vips = [s.address for s in config.servers
            if s.address is not None and s.registered and s.enabled] if virtual else []
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
        for addr, net, own in ((network.real, v4, True), (network.virt, v4, False),
                               (network.real6, v6, True), (network.virt6, v6, False)):
            if addr is not None and net is not None and (own or virtual):
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

    # --- VRRP: link-local source, tracked links, announcements ------------------------------------

    def link_local(self, ifname: str) -> IPv6Address | None:
        """The interface's IPv6 link-local address (the source of VRRPv3 over IPv6), if it has one."""
        try:
            return next((a.address for a in self.netlink.addresses(ifname)
                         if isinstance(a.address, IPv6Address) and a.address.is_link_local), None)
        except NetlinkFacadeError as exc:
            log.warning("addresses of %s: %s", ifname, exc)
            return None

    def links_down(self, names: Sequence[str]) -> list[str]:
        """Those of `names` that are missing or not up (VRRP tracking)."""
        down = []
        for name in names:
            try:
                if not self.netlink.link(name).up:
                    down.append(name)
            except NetlinkFacadeError:
                down.append(name)
        return down

    def announce(self, addresses: set[IPAddress]) -> int:
        """A gratuitous ARP request or unsolicited neighbour advertisement for each of `addresses`
        on every interface that carries it now (RFC 5798 §6.4.1): what a new VRRP master sends so
        that neighbours and switches learn where the shared addresses went. Frames sent."""
        by_interface: dict[str, list[IPAddress]] = {}
        for ifname, interface in self._current:
            if interface.ip in addresses:
                by_interface.setdefault(ifname, []).append(interface.ip)
        sent = 0
        for ifname, wanted in by_interface.items():
            try:
                mac = mac_bytes(self.netlink.link(ifname).mac)
                if mac is None:
                    continue
                v4 = [a for a in wanted if isinstance(a, IPv4Address)]
                v6 = [a for a in wanted if isinstance(a, IPv6Address)]
                sent += send_gratuitous_arp(ifname, mac, v4) if v4 else 0
                sent += send_unsolicited_na(ifname, mac, v6) if v6 else 0
            except (NetlinkFacadeError, AnnounceError) as exc:
                log.warning("announcing %s on %s: %s", ", ".join(map(str, wanted)), ifname, exc)
        return sent

    def release(self) -> None:
        try:
            for family, added in list(self._gateway_routes.items()):
                self._remove_gateway_route(family, added)
            removed = self._addresses.release()
        finally:
            self._sysctls.restore()
            self._current = ()
            self._homes = {}
        self._clear_stale_anycast(removed)

    def _clear_stale_anycast(self, removed: list[tuple[str, IPInterface]]) -> None:
        """Remove a subnet-router anycast route (RFC 4291 §2.6.1) that outlived every address of its
        prefix on an interface. The kernel joins it for each IPv6 address while forwarding is on and
        leaves it on delete; under load we saw one join outnumber the leaves, which left
        `anycast 2001:db8:ffff:: dev eth2 table local` behind after stop (once in a full CI run)."""
        for ifname, interface in removed:
            if interface.version != 6 or interface.network.prefixlen >= 127:
                continue
            try:
                if any(a.interface.network == interface.network for a in self.netlink.addresses(ifname)):
                    continue  # an address of the prefix is still there: the kernel's entry is live
                if self.netlink.remove_anycast_route(interface.network.network_address, ifname):
                    log.warning("removed the anycast route %s on %s the kernel kept after its addresses",
                                interface.network.network_address, ifname)
            except NetlinkFacadeError as exc:
                log.debug("checking anycast routes of %s: %s", ifname, exc)

    # --- next hops and return routes ---------------------------------------------------------------

    def next_hop(self, address: IPAddress, timeout: float = 0.5,
                 on_link: int | None = None) -> NextHop | None:
        """Egress interface and MACs towards `address` (a neighbour on `on_link` when given), or
        None while it cannot be resolved. One address, a route lookup and a neighbour dump per poll:
        the daemon's periodic refresh uses `refresh`, which serves every target from one snapshot."""
        try:
            found = self.netlink.resolve_neighbour(address, timeout=timeout, on_link=on_link)
            if found.outcome != Resolution.RESOLVED:
                return None
            dst = mac_bytes(found.mac)
            src = mac_bytes(self.netlink.link(found.ifindex).mac)
        except NetlinkFacadeError as exc:
            log.debug("next hop of %s: %s", address, exc)
            return None
        if dst is None or src is None:
            return None
        return NextHop(found.ifindex, src, dst)

    def return_routes(self, networks: tuple[IPNetwork, ...] = ()) -> dict[IPNetwork, NextHop]:
        """Routes for NAT return traffic (see `return_routes_of`), from one refresh without targets."""
        done = self.refresh((), networks)
        return dict(done.routes) if done is not None else {}

    # --- one refresh pass: a snapshot of the kernel, then every target in Python ---------------------

    def snapshot(self) -> KernelSnapshot:
        """Links, neighbours (IPv4 and IPv6), routes of every table and the policy rules: one dump
        each, whatever the number of targets."""
        macs = {link.index: mac_bytes(link.mac) for link in self.netlink.links()}
        routes = tuple(self.netlink.routes(table=None))
        chains = {4: self._chain(AF_INET), 6: self._chain(AF_INET6)}
        return KernelSnapshot(macs, self._neighbour_table(), routes, chains)

    def _neighbour_table(self) -> dict[HopKey, Neighbour]:
        entries = self.netlink.neighbours(family=AF_INET) + self.netlink.neighbours(family=AF_INET6)
        return {(n.ifindex, n.address): n for n in entries}

    def _chain(self, family: int) -> tuple[int, ...] | None:
        """The tables the policy rules look up in order, when every rule is plain (no selector):
        then the snapshot answers as the kernel does. Else None: the kernel is asked per address."""
        try:
            rules = self.netlink.rules(family)
        except NetlinkFacadeError as exc:
            log.debug("listing the policy rules of family %d: %s", family, exc)
            return None
        if not rules or not all(r.plain for r in rules):
            return None
        return tuple(r.table for r in rules)

    def refresh(self, addresses: Iterable[IPAddress], networks: tuple[IPNetwork, ...] = (),
                stop: Callable[[], bool] = lambda: False,
                wait: float = RESOLVE_SECONDS) -> Refreshed | None:
        """Next hops of `addresses` and the NAT return routes, from one snapshot of the kernel.

        Cost: one dump each of links, neighbours, routes and rules, then Python per address; the
        kernel is asked per address only where the snapshot cannot tell the route it would pick
        (`Lookup.exact`). Neighbours that are not usable (the targets' own on-link, the gateway's
        when routed, and the return routes' gateways) are resolved as `Netlink.resolve_neighbour`
        does, by the kernel (NTF_USE), each once, and the neighbour table is polled until they
        answer or fail or `wait` passes: one bound for the whole pass, not per address.

        `stop` is looked at between chunks of REFRESH_CHUNK addresses and between polls: when it
        says True the pass is abandoned and None returned (a stopping daemon does not wait for it).
        """
        unique = list(dict.fromkeys(addresses))
        if stop():
            return None
        try:
            snapshot = self.snapshot()
        except NetlinkFacadeError as exc:
            log.warning("reading links, neighbours and routes: %s", exc)
            return Refreshed({}, {})
        lookups: dict[IPAddress, Lookup] = {}
        for chunk in _chunks(unique):
            if stop():
                return None
            lookups.update(resolve_next_hops(snapshot, chunk))
        for chunk in _chunks([a for a, found in lookups.items() if not found.exact]):
            if stop():
                return None
            lookups.update((a, self._ask_kernel(snapshot, a)) for a in chunk)
        pending = list(dict.fromkeys(
            [key for found in lookups.values() if found.unresolved and (key := found.key) is not None]
            + unresolved_gateways(snapshot)))
        if pending:
            neighbours = self._resolve(pending, snapshot.neighbours, wait, stop)
            if neighbours is None:
                return None
            snapshot = replace(snapshot, neighbours=neighbours)
            lookups = {a: snapshot.via(found.hop, found.ifindex)
                       if found.unresolved and found.hop is not None else found
                       for a, found in lookups.items()}
        routes = return_routes_of(snapshot, networks)
        hops = {a: found.next_hop for a, found in lookups.items() if found.next_hop is not None}
        return Refreshed(hops, routes)

    def _ask_kernel(self, snapshot: KernelSnapshot, address: IPAddress) -> Lookup:
        """The kernel's own route for `address` (`ip route get`), with the snapshot's neighbours."""
        try:
            route = self.netlink.route_to(address)
        except NetlinkFacadeError as exc:  # NoRouteError included: no next hop
            log.debug("route to %s: %s", address, exc)
            return Lookup()
        if route.ifindex == 0:
            return Lookup()
        return snapshot.via(route.next_hop, route.ifindex)

    def _resolve(self, keys: list[HopKey], neighbours: Mapping[HopKey, Neighbour], wait: float,
                 stop: Callable[[], bool]) -> Mapping[HopKey, Neighbour] | None:
        """Ask the kernel to resolve each neighbour, then poll the table until each is settled
        (usable, failed, or one that is never resolved) or `wait` passes. The last neighbour table
        read (`neighbours` when none could be), or None when `stop` said so."""
        waiting: set[HopKey] = set()
        for chunk in _chunks(keys):
            if stop():
                return None
            for ifindex, hop in chunk:
                try:
                    self.netlink.trigger_resolution(hop, ifindex)
                    waiting.add((ifindex, hop))
                except NetlinkFacadeError as exc:
                    log.debug("resolving %s on ifindex %d: %s", hop, ifindex, exc)
        deadline = time.monotonic() + wait
        pause = 0.01
        polled = False
        while True:
            remaining = deadline - time.monotonic()
            if polled and (not waiting or remaining <= 0):
                return neighbours
            time.sleep(max(0.0, min(pause, remaining)))
            if stop():
                return None
            began = time.monotonic()
            try:
                neighbours = self._neighbour_table()
            except NetlinkFacadeError as exc:
                log.debug("listing neighbours: %s", exc)
                return neighbours
            polled = True
            waiting = {k for k in waiting if not settled(neighbours.get(k))}
            # Polling costs a dump of the whole table: never more than half the time spent waiting.
            pause = max(min(pause * 2, 0.1), time.monotonic() - began)


class Refreshed(NamedTuple):
    """What one refresh pass found: next hops by address (the unresolved ones left out), and the
    return routes."""

    next_hops: dict[IPAddress, NextHop]
    routes: dict[IPNetwork, NextHop]


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), REFRESH_CHUNK):
        yield items[start:start + REFRESH_CHUNK]
