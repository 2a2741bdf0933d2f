"""Next hops and return routes from a snapshot of the kernel, as plain data (no I/O here).

`Plumbing.refresh` (plumbing.py) dumps links, neighbours, routes and policy rules once per pass and
hands them over as a `KernelSnapshot`; this module answers, for every target, where the kernel would
send its packets (longest prefix across the rule chain's tables, lowest IPv4 metric) and through
which neighbour, in Python. Cases a snapshot cannot decide (rules with selectors, VRF, multipath,
several IPv6 routes to one prefix, local addresses) are marked for a per-address kernel lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from dsrlb.engine.dataplane import IPAddress, IPNetwork, NextHop
from dsrlb.netlink import RouteEntry, RouteType
from dsrlb.netlink.types import RT_TABLE_MAIN, Neighbour, NeighbourState


def host_network(address: IPAddress) -> IPNetwork:
    # (int, prefix length): several times faster than parsing, and one is made per neighbour
    if isinstance(address, IPv4Address):
        return IPv4Network((int(address), 32))
    return IPv6Network((int(address), 128))


def mac_bytes(text: str | None) -> bytes | None:
    """"02:00:00:00:00:01" -> 6 bytes; None for a link or neighbour without one."""
    if not text:
        return None
    return bytes(int(part, 16) for part in text.split(":"))


HopKey = tuple[int, IPAddress]  # (ifindex, neighbour address): one neighbour entry
# The rules of a kernel nobody configured: local, main, default (IPv6 has no default-table rule).
DEFAULT_CHAINS: dict[int, tuple[int, ...] | None] = {4: (255, RT_TABLE_MAIN, 253), 6: (255, RT_TABLE_MAIN)}
_NO_ROUTE_KINDS = (RouteType.BLACKHOLE, RouteType.UNREACHABLE, RouteType.PROHIBIT)
_SETTLED = int(NeighbourState.FAILED | NeighbourState.NOARP | NeighbourState.PERMANENT)


@dataclass(frozen=True)
class Lookup:
    """Where the snapshot says packets to one address go.

    `hop` is the neighbour they are sent to (the route's gateway, else the address itself) on
    `ifindex`; None: no route (none at all, or blackhole, unreachable, prohibit). `next_hop` is set
    when that neighbour's entry is usable and both MACs are known; `unresolved` when the entry is
    missing or not usable (resolution is triggered for it). `exact` is False when the snapshot cannot
    tell which route the kernel picks (rules with selectors, a multipath route, several IPv6 routes
    to one prefix, a local or other special route): the kernel is asked for that address.
    """

    hop: IPAddress | None = None
    ifindex: int = 0
    next_hop: NextHop | None = None
    unresolved: bool = False
    exact: bool = True

    @property
    def key(self) -> HopKey | None:
        return (self.ifindex, self.hop) if self.hop is not None else None


_NO_ROUTE = Lookup()
_ASK_KERNEL = Lookup(exact=False)


class _RouteIndex:
    """Longest-prefix match per (table, IP version): a dict per prefix length, longest first."""

    def __init__(self, routes: Iterable[RouteEntry]) -> None:
        by: dict[tuple[int, int], dict[int, dict[int, list[RouteEntry]]]] = {}
        for route in routes:
            net = route.prefix
            key = int(net.network_address) >> (net.max_prefixlen - net.prefixlen)
            lengths = by.setdefault((route.table, net.version), {})
            lengths.setdefault(net.prefixlen, {}).setdefault(key, []).append(route)
        self._tables = {key: (sorted(lengths, reverse=True), lengths) for key, lengths in by.items()}

    def match(self, table: int, address: IPAddress) -> list[RouteEntry]:
        """The routes of `table` to the longest prefix holding `address` (empty: none)."""
        found = self._tables.get((table, address.version))
        if found is None:
            return []
        order, lengths = found
        value, bits = int(address), address.max_prefixlen
        for prefixlen in order:
            routes = lengths[prefixlen].get(value >> (bits - prefixlen))
            if routes:
                return routes
        return []


@dataclass(frozen=True)
class KernelSnapshot:
    """What one refresh pass reads of the kernel.

    `macs`: each link's own MAC by ifindex. `neighbours`: the IPv4 and IPv6 neighbour entries by
    (ifindex, address). `routes`: the routes of every table. `chains`: per IP version (4, 6), the
    tables the policy rules look up, in rule order, when every rule is plain; None when a rule has a
    selector (then the kernel is asked per address).
    """

    macs: Mapping[int, bytes | None]
    neighbours: Mapping[HopKey, Neighbour]
    routes: tuple[RouteEntry, ...]
    chains: Mapping[int, tuple[int, ...] | None] = field(default_factory=lambda: dict(DEFAULT_CHAINS))

    @cached_property
    def _index(self) -> _RouteIndex:
        return _RouteIndex(self.routes)

    def lookup(self, address: IPAddress) -> Lookup:
        """As the kernel's route lookup for a packet the balancer sends to `address`: the rules'
        tables in order, longest prefix first; of several routes to that prefix the lowest metric
        (IPv4); a throw route goes on to the next table."""
        chain = self.chains.get(address.version)
        if chain is None:
            return _ASK_KERNEL
        for table in chain:
            routes = self._index.match(table, address)
            if not routes:
                continue
            route = _chosen(routes)
            if route is None:
                return _ASK_KERNEL
            if route.kind is RouteType.THROW:
                continue
            if route.kind in _NO_ROUTE_KINDS:
                return _NO_ROUTE
            if route.kind is not RouteType.UNICAST or route.paths > 1 or route.ifindex == 0:
                return _ASK_KERNEL  # local, broadcast, multicast... or a multipath route's hash
            return self.via(route.gateway if route.gateway is not None else address, route.ifindex)
        return _NO_ROUTE

    def via(self, hop: IPAddress, ifindex: int) -> Lookup:
        """Packets go to neighbour `hop` on `ifindex`: its entry decides."""
        entry = self.neighbours.get((ifindex, hop))
        if entry is None or not entry.usable:
            return Lookup(hop, ifindex, unresolved=True)
        src, dst = self.macs.get(ifindex), mac_bytes(entry.mac)
        return Lookup(hop, ifindex, NextHop(ifindex, src, dst) if src and dst else None)


def _chosen(routes: list[RouteEntry]) -> RouteEntry | None:
    """The route the kernel takes of several to one prefix in one table; None: the snapshot cannot
    tell (IPv6 picks among them by the neighbours' reachability; IPv4 routes of equal metric)."""
    if len(routes) == 1:
        return routes[0]
    if routes[0].prefix.version == 6:
        return None
    first, second = sorted(routes, key=lambda r: r.metric)[:2]
    return first if first.metric < second.metric else None


def resolve_next_hops(snapshot: KernelSnapshot, addresses: Iterable[IPAddress]) -> dict[IPAddress, Lookup]:
    """Each address's next hop from the snapshot alone (no I/O)."""
    return {address: snapshot.lookup(address) for address in addresses}


def return_routes_of(snapshot: KernelSnapshot,
                     networks: tuple[IPNetwork, ...] = ()) -> dict[IPNetwork, NextHop]:
    """Routes for NAT return traffic, from the snapshot's main table.

    Every unicast route via a gateway whose MAC resolves becomes that prefix (the default route
    included; of several routes to one prefix the lowest metric whose gateway resolves wins).
    Connected prefixes have no single next hop: each usable neighbour in them becomes a host route
    (/32, /128), and so do neighbours inside the config's `networks`. Link-local prefixes are left
    out (no client sits there for a VIP).
    """
    routes, connected, _ = _gateway_routes(snapshot)
    for entry in snapshot.neighbours.values():
        if not entry.usable or not _on_link(entry, connected, networks):
            continue
        src, mac = snapshot.macs.get(entry.ifindex), mac_bytes(entry.mac)
        if mac is not None and src is not None:
            routes.setdefault(host_network(entry.address), NextHop(entry.ifindex, src, mac))
    return routes


def unresolved_gateways(snapshot: KernelSnapshot) -> list[HopKey]:
    """The gateways `return_routes_of` would use whose neighbour entry is missing or not usable."""
    return _gateway_routes(snapshot)[2]


def _gateway_routes(
        snapshot: KernelSnapshot) -> tuple[dict[IPNetwork, NextHop], list[RouteEntry], list[HopKey]]:
    """The main table's routes via a resolved gateway, its connected routes, its unresolved gateways."""
    routes: dict[IPNetwork, NextHop] = {}
    connected: list[RouteEntry] = []
    unresolved: list[HopKey] = []
    main = [r for r in snapshot.routes if r.table == RT_TABLE_MAIN]
    for route in sorted(main, key=lambda r: r.metric):
        if route.kind is not RouteType.UNICAST or route.ifindex == 0 or route.prefix in routes:
            continue
        if route.prefix.is_link_local:
            continue
        if route.gateway is None:
            connected.append(route)
            continue
        found = snapshot.via(route.gateway, route.ifindex)
        if found.next_hop is not None:
            routes[route.prefix] = found.next_hop
        elif found.unresolved:
            unresolved.append((route.ifindex, route.gateway))
    return routes, connected, unresolved


def _on_link(entry: Neighbour, connected: list[RouteEntry], networks: tuple[IPNetwork, ...]) -> bool:
    if any(entry.address in net for net in networks):
        return True
    return any(r.ifindex == entry.ifindex and entry.address in r.prefix for r in connected)


def settled(entry: Neighbour | None) -> bool:
    """Resolution has an answer: usable, failed, or an entry the kernel never resolves."""
    return entry is not None and (entry.usable or bool(int(entry.state) & _SETTLED))
