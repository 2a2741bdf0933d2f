"""Next hops from one snapshot of the kernel (Plumbing.refresh), without root or namespaces.

- the pure part: a KernelSnapshot of plain data in, each address's next hop out: longest-prefix match
  (a more specific route beats the default), on-link targets use their own neighbour entry and routed
  ones the gateway's, IPv4 and IPv6, a missing or failed neighbour, metrics, blackhole/throw, and the
  cases the snapshot leaves to the kernel (rules with selectors, multipath, several IPv6 routes);
- the NAT return routes from the same snapshot;
- Plumbing.refresh against a fake netlink: one dump each, the kernel asked only for the ambiguous
  addresses, resolution triggered once per unresolved neighbour and picked up in the same pass,
  and a stop flag that abandons the pass between chunks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from ipaddress import ip_address, ip_network
from typing import Any

import pytest

from dsrlb.daemon.nexthops import KernelSnapshot, Lookup, resolve_next_hops, return_routes_of
from dsrlb.daemon.plumbing import REFRESH_CHUNK, Plumbing
from dsrlb.engine.dataplane import IPAddress, NextHop
from dsrlb.netlink import NoRouteError
from dsrlb.netlink.types import (
    LinkInfo,
    Neighbour,
    NeighbourState,
    OperState,
    RouteEntry,
    RouteInfo,
    RouteType,
    RuleEntry,
)

ETH0, ETH1 = 2, 3
MAC0, MAC1 = b"\x02\x00\x00\x00\x00\x10", b"\x02\x00\x00\x00\x00\x11"  # the balancer's own
GW4, GW4B, GW6, GW6B = (ip_address(a) for a in ("192.0.2.1", "192.0.2.254", "2001:db8::1", "2001:db8::fe"))
MACS = {
    ip_address("192.0.2.1"): "02:00:00:00:01:01",
    ip_address("192.0.2.254"): "02:00:00:00:01:fe",
    ip_address("192.0.2.20"): "02:00:00:00:01:14",
    ip_address("2001:db8::1"): "02:00:00:00:06:01",
    ip_address("2001:db8::fe"): "02:00:00:00:06:fe",
    ip_address("2001:db8::20"): "02:00:00:00:06:20",
}


def mac(text: str) -> bytes:
    return bytes(int(p, 16) for p in text.split(":"))


def route(prefix: str, gateway: str | None = None, ifindex: int = ETH0, *, metric: int = 0,
          table: int = 254, kind: RouteType = RouteType.UNICAST, paths: int = 1) -> RouteEntry:
    return RouteEntry(ip_network(prefix), ifindex, ip_address(gateway) if gateway else None, metric, table,
                      4, kind, paths)


def neighbour(address: IPAddress, ifindex: int = ETH0,
              state: NeighbourState = NeighbourState.REACHABLE) -> Neighbour:
    usable = state not in (NeighbourState.INCOMPLETE, NeighbourState.FAILED, NeighbourState.NONE)
    return Neighbour(address, ifindex, MACS.get(address) if usable else None, state)


def snapshot(routes: Sequence[RouteEntry], neighbours: Sequence[Neighbour] = (),
             **kwargs: Any) -> KernelSnapshot:
    return KernelSnapshot({ETH0: MAC0, ETH1: MAC1}, {(n.ifindex, n.address): n for n in neighbours},
                          tuple(routes), **kwargs)


# Both families: a default route, a more specific route via another gateway, a connected prefix.
TABLE = [
    route("0.0.0.0/0", "192.0.2.1"),
    route("198.51.100.0/24", "192.0.2.254"),
    route("192.0.2.0/24"),
    route("::/0", "2001:db8::1", metric=1024),
    route("2001:db8:1::/112", "2001:db8::fe", metric=1024),
    route("2001:db8::/64", metric=256),
    route("192.0.2.252", table=255, kind=RouteType.LOCAL, ifindex=1),  # the balancer's own address
]
KNOWN = [neighbour(a) for a in (GW4, GW4B, ip_address("192.0.2.20"), GW6, GW6B, ip_address("2001:db8::20"))]


def hop_of(found: Lookup) -> tuple[int, bytes, bytes] | None:
    hop = found.next_hop
    return None if hop is None else (hop.ifindex, hop.src_mac, hop.dst_mac)


@pytest.mark.parametrize(("target", "via"), [
    ("203.0.113.9", "192.0.2.1"),  # only the default route matches
    ("198.51.100.7", "192.0.2.254"),  # the /24 beats the default
    ("192.0.2.20", "192.0.2.20"),  # on-link: its own neighbour entry
    ("2001:db8:2::9", "2001:db8::1"),
    ("2001:db8:1::5", "2001:db8::fe"),  # the /112 beats ::/0
    ("2001:db8::20", "2001:db8::20"),
])
def test_longest_prefix_and_on_link_vs_gateway(target: str, via: str) -> None:
    found = resolve_next_hops(snapshot(TABLE, KNOWN), [ip_address(target)])[ip_address(target)]
    assert found.exact and not found.unresolved
    assert found.hop == ip_address(via) and found.ifindex == ETH0
    assert hop_of(found) == (ETH0, MAC0, mac(MACS[ip_address(via)]))


@pytest.mark.parametrize(("target", "hop"), [
    ("192.0.2.21", "192.0.2.21"),  # on-link, no entry: its own address is resolved
    ("2001:db8::21", "2001:db8::21"),
    ("198.51.100.7", "192.0.2.254"),  # routed: the gateway's entry is what is missing
    ("2001:db8:1::5", "2001:db8::fe"),
])
def test_a_missing_neighbour_is_unresolved_with_the_hop_to_resolve(target: str, hop: str) -> None:
    present = [n for n in KNOWN if n.address not in (GW4B, GW6B)]
    found = snapshot(TABLE, present).lookup(ip_address(target))
    assert found.unresolved and found.next_hop is None and found.exact
    assert found.key == (ETH0, ip_address(hop))


def test_failed_and_incomplete_entries_are_unresolved_and_stale_ones_usable() -> None:
    entries = [neighbour(GW4, state=NeighbourState.FAILED), neighbour(GW6, state=NeighbourState.INCOMPLETE),
               neighbour(GW4B, state=NeighbourState.STALE)]
    found = resolve_next_hops(snapshot(TABLE, entries), [ip_address(a) for a in
                                                         ("203.0.113.9", "2001:db8:2::1", "198.51.100.1")])
    assert [f.unresolved for f in found.values()] == [True, True, False]
    assert hop_of(found[ip_address("198.51.100.1")]) == (ETH0, MAC0, mac(MACS[GW4B]))


def test_the_neighbour_must_be_on_the_routes_link() -> None:
    elsewhere = Neighbour(GW4B, ETH1, MACS[GW4B], NeighbourState.REACHABLE)  # right address, wrong link
    assert snapshot(TABLE, [elsewhere]).lookup(ip_address("198.51.100.7")).unresolved
    on_eth1 = [route("198.51.100.0/24", "192.0.2.254", ETH1), route("0.0.0.0/0", "192.0.2.1")]
    found = snapshot(on_eth1, [elsewhere]).lookup(ip_address("198.51.100.7"))
    assert hop_of(found) == (ETH1, MAC1, mac(MACS[GW4B]))


def test_a_link_without_a_mac_gives_no_next_hop_and_no_resolution() -> None:
    found = KernelSnapshot({ETH0: None}, {(ETH0, GW4): neighbour(GW4)}, tuple(TABLE)).lookup(
        ip_address("203.0.113.9"))
    assert found.next_hop is None and not found.unresolved


def test_no_route_blackhole_and_unreachable_give_no_next_hop() -> None:
    table = [route("198.51.100.0/24", "192.0.2.254"),
             route("198.51.100.128/25", kind=RouteType.BLACKHOLE, ifindex=0),
             route("2001:db8:1::/48", kind=RouteType.UNREACHABLE, ifindex=0), route("192.0.2.0/24")]
    found = resolve_next_hops(snapshot(table, KNOWN), [ip_address(a) for a in
                                                       ("203.0.113.9", "198.51.100.200", "2001:db8:1::5")])
    assert all(f.hop is None and f.next_hop is None and f.exact and not f.unresolved for f in found.values())
    assert snapshot(table, KNOWN).lookup(ip_address("198.51.100.7")).next_hop is not None


def test_ipv4_lowest_metric_wins_and_a_throw_goes_on_to_the_default_table() -> None:
    table = [route("198.51.100.0/24", "192.0.2.1", metric=200),
             route("198.51.100.0/24", "192.0.2.254", metric=100), route("192.0.2.0/24"),
             route("203.0.113.0/24", kind=RouteType.THROW, ifindex=0),
             route("0.0.0.0/0", "192.0.2.1", table=253)]
    snap = snapshot(table, KNOWN)
    assert snap.lookup(ip_address("198.51.100.7")).hop == GW4B
    assert snap.lookup(ip_address("203.0.113.9")).hop == GW4  # thrown out of main, found in default
    only_main = snapshot(table, KNOWN, chains={4: (254,), 6: (254,)})
    assert only_main.lookup(ip_address("203.0.113.9")).hop is None


@pytest.mark.parametrize(("routes", "target"), [
    ([route("198.51.100.0/24", "192.0.2.1", paths=2)], "198.51.100.7"),  # multipath: the kernel's hash
    ([route("2001:db8:1::/112", "2001:db8::1"), route("2001:db8:1::/112", "2001:db8::fe", metric=1)],
     "2001:db8:1::5"),  # IPv6 picks among routes to one prefix by reachability
    ([route("198.51.100.0/24", "192.0.2.1"), route("198.51.100.0/24", "192.0.2.254")], "198.51.100.7"),
    (TABLE, "192.0.2.252"),  # a local address: the local table's answer is the kernel's business
])
def test_what_the_snapshot_cannot_tell_is_left_to_the_kernel(routes: list[RouteEntry], target: str) -> None:
    found = snapshot(routes, KNOWN).lookup(ip_address(target))
    assert not found.exact and found.next_hop is None


def test_rules_with_selectors_leave_that_family_to_the_kernel() -> None:
    snap = snapshot(TABLE, KNOWN, chains={4: None, 6: (255, 254)})
    assert not snap.lookup(ip_address("203.0.113.9")).exact
    assert snap.lookup(ip_address("2001:db8:2::9")).hop == GW6


def test_return_routes_from_the_snapshot() -> None:
    table = [*TABLE, route("fe80::/64", metric=256), route("203.0.113.0/24", "192.0.2.254", metric=10),
             route("203.0.113.0/24", "192.0.2.1", metric=5)]
    entries = [*KNOWN, Neighbour(ip_address("fe80::1"), ETH0, "02:00:00:00:00:99", NeighbourState.REACHABLE),
               neighbour(ip_address("192.0.2.30"), state=NeighbourState.FAILED)]
    routes = return_routes_of(snapshot(table, entries))
    gw4, gw4b, gw6 = (NextHop(ETH0, MAC0, mac(MACS[g])) for g in (GW4, GW4B, GW6))
    assert routes[ip_network("0.0.0.0/0")] == gw4 and routes[ip_network("198.51.100.0/24")] == gw4b
    assert routes[ip_network("203.0.113.0/24")] == gw4  # the lower metric
    assert routes[ip_network("::/0")] == gw6
    assert routes[ip_network("192.0.2.20/32")] == NextHop(ETH0, MAC0, mac(MACS[ip_address("192.0.2.20")]))
    assert ip_network("192.0.2.30/32") not in routes  # not usable
    assert ip_network("fe80::1/128") not in routes  # link-local
    # the lower metric's gateway does not resolve: the next one serves the prefix
    missing = [n for n in entries if n.address != GW4]
    assert return_routes_of(snapshot(table, missing))[ip_network("203.0.113.0/24")] == gw4b


# --- Plumbing.refresh against a fake netlink ----------------------------------------------------------


class FakeKernel:
    """Enough of Netlink for Plumbing.refresh: dumps from lists, and neighbours that answer
    resolution on the next dump when listed in `answers`."""

    def __init__(self, routes: Sequence[RouteEntry], neighbours: Sequence[Neighbour],
                 answers: Sequence[IPAddress] = (), plain_rules: bool = True) -> None:
        self.route_list = list(routes)
        self.table = {(n.ifindex, n.address): n for n in neighbours}
        self.answers = set(answers)
        self.plain_rules = plain_rules
        self.calls: dict[str, int] = {}
        self.triggered: list[tuple[IPAddress, int]] = []
        self.asked: list[IPAddress] = []

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def links(self) -> list[LinkInfo]:
        self._count("links")
        return [LinkInfo(i, f"eth{i - 2}", ":".join(f"{b:02x}" for b in m), 1500, OperState.UP, True, True,
                         "veth", None) for i, m in ((ETH0, MAC0), (ETH1, MAC1))]

    def neighbours(self, ref: object = None, family: int | None = None) -> list[Neighbour]:
        self._count("neighbours")
        return [n for n in self.table.values() if family is None or (n.address.version == 4) == (family == 2)]

    def routes(self, family: int | None = None, table: int | None = 254) -> list[RouteEntry]:
        self._count("routes")
        return list(self.route_list)

    def rules(self, family: int) -> list[RuleEntry]:
        self._count("rules")
        tables = (255, 254, 253) if family == 2 else (255, 254)
        rules = [RuleEntry(family, p, t, 1, True) for p, t in zip((0, 32766, 32767), tables, strict=False)]
        return rules if self.plain_rules else [RuleEntry(family, 100, 100, 1, False), *rules]

    def route_to(self, address: IPAddress) -> RouteInfo:
        self.asked.append(address)
        single = tuple(replace(r, paths=1) for r in self.route_list)  # the kernel picks one path
        found = KernelSnapshot({}, {}, single).lookup(address)
        if found.hop is None:
            raise NoRouteError(f"no route to {address}")
        gateway = found.hop if found.hop != address else None
        return RouteInfo(address, found.ifindex, gateway, None, 254)

    def trigger_resolution(self, address: IPAddress, ifindex: int) -> None:
        self.triggered.append((address, ifindex))
        if address in self.answers:
            self.table[(ifindex, address)] = neighbour(address, ifindex)


def targets_via(prefix: str, count: int) -> list[IPAddress]:
    base = ip_network(prefix).network_address
    return [base + i for i in range(1, count + 1)]


def test_refresh_reads_each_table_once_and_resolves_a_shared_gateway_once() -> None:
    many = targets_via("2001:db8:1::/112", 1000) + targets_via("198.51.100.0/24", 200)
    kernel = FakeKernel(TABLE, [n for n in KNOWN if n.address not in (GW4B, GW6B)], answers=[GW4B, GW6B])
    done = Plumbing(kernel).refresh([*many, ip_address("192.0.2.20")])  # type: ignore[arg-type]
    assert done is not None
    assert kernel.calls == {"links": 1, "routes": 1, "rules": 2, "neighbours": 4}  # 2 + one poll of both
    assert sorted(map(str, (a for a, _ in kernel.triggered))) == ["192.0.2.254", "2001:db8::fe"]
    assert kernel.asked == []
    assert set(done.next_hops) == {*many, ip_address("192.0.2.20")}
    assert done.next_hops[many[0]] == NextHop(ETH0, MAC0, mac(MACS[GW6B]))
    assert done.routes[ip_network("198.51.100.0/24")] == NextHop(ETH0, MAC0, mac(MACS[GW4B]))


def test_refresh_waits_once_for_neighbours_that_do_not_answer() -> None:
    kernel = FakeKernel(TABLE, KNOWN)  # nobody answers for .21/.22/::21
    missing = [ip_address(a) for a in ("192.0.2.21", "192.0.2.22", "2001:db8::21")]
    done = Plumbing(kernel).refresh([*missing, ip_address("203.0.113.9")], wait=0.05)  # type: ignore[arg-type]
    assert done is not None and set(done.next_hops) == {ip_address("203.0.113.9")}
    assert [a for a, _ in kernel.triggered] == missing  # only the unresolved ones, each once


def test_refresh_asks_the_kernel_only_where_the_snapshot_cannot_tell() -> None:
    table = [*TABLE, route("203.0.113.0/24", "192.0.2.1", paths=2)]
    kernel = FakeKernel(table, KNOWN)
    done = Plumbing(kernel).refresh([ip_address("203.0.113.9"), ip_address("198.51.100.1")])  # type: ignore[arg-type]
    assert done is not None and kernel.asked == [ip_address("203.0.113.9")]
    assert done.next_hops[ip_address("203.0.113.9")] == NextHop(ETH0, MAC0, mac(MACS[GW4]))
    # rules with selectors: every address of that family is asked (here, both families)
    everyone = FakeKernel(TABLE, KNOWN, plain_rules=False)
    addresses = [ip_address("198.51.100.1"), ip_address("2001:db8:1::1"), ip_address("192.0.2.20")]
    done = Plumbing(everyone).refresh(addresses)  # type: ignore[arg-type]
    assert done is not None and everyone.asked == addresses and set(done.next_hops) == set(addresses)


def stop_after(calls: int) -> Iterator[bool]:
    for _ in range(calls):
        yield False
    while True:
        yield True


def test_a_stop_abandons_the_pass_between_chunks() -> None:
    kernel = FakeKernel(TABLE, KNOWN, plain_rules=False)  # every address asked: the slow path
    # before the snapshot, the two chunks of lookups, the first chunk asked of the kernel: then stop
    flags = stop_after(4)
    addresses = targets_via("198.51.100.0/24", 250) + targets_via("203.0.113.0/24", 250)
    done = Plumbing(kernel).refresh(addresses, stop=lambda: next(flags))  # type: ignore[arg-type]
    assert done is None
    assert len(kernel.asked) == REFRESH_CHUNK < len(addresses)
    # and before anything is read, nothing is
    idle = FakeKernel(TABLE, KNOWN)
    assert Plumbing(idle).refresh(addresses, stop=lambda: True) is None  # type: ignore[arg-type]
    assert idle.calls == {}


def test_a_stop_while_waiting_for_neighbours_abandons_the_pass() -> None:
    kernel = FakeKernel(TABLE, KNOWN)
    looks = stop_after(3)  # snapshot, lookups, triggers; the first poll sees the stop
    done = Plumbing(kernel).refresh([ip_address("192.0.2.21")], wait=30.0,  # type: ignore[arg-type]
                                    stop=lambda: next(looks))
    assert done is None and kernel.triggered == [(ip_address("192.0.2.21"), ETH0)]

