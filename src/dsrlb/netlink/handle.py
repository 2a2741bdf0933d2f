"""`Netlink`: one rtnetlink handle (pyroute2 IPRoute) in the current or a named network namespace.

Links, addresses, routes and neighbours. Every write is idempotent and says whether it changed
anything, so callers (target setup, the daemon, labs) can remember exactly what they added and take
back only that. Kernel refusals become `NetlinkFacadeError` with the object named.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from types import TracebackType
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from dsrlb.netlink.errors import LinkNotFoundError, NamespaceNotFoundError, NetlinkFacadeError, NoRouteError
from dsrlb.netlink.namespace import netns_exists
from dsrlb.netlink.types import (
    RT_TABLE_LOCAL,
    RT_TABLE_MAIN,
    AddressInfo,
    IPAddress,
    IPInterface,
    LinkInfo,
    Neighbour,
    NeighbourResolution,
    NeighbourState,
    Resolution,
    RouteEntry,
    RouteInfo,
    RouteType,
    RuleEntry,
    address_from_msg,
    link_from_msg,
    neighbour_from_msg,
    route_entry_from_msg,
    route_from_msg,
    rule_from_msg,
)

IFA_F_NODAD = 0x02
NTF_USE = 0x01
AF_INET = 2
AF_INET6 = 10

IPNetwork = IPv4Network | IPv6Network
LinkRef = str | int  # an interface name or ifindex


def _family(address: IPAddress | IPNetwork | IPInterface) -> int:
    return AF_INET if address.version == 4 else AF_INET6


class Netlink:
    """An rtnetlink handle. Use as a context manager, or call close()."""

    def __init__(self, netns: str | None = None) -> None:
        if netns is not None and not netns_exists(netns):
            raise NamespaceNotFoundError(f"network namespace {netns!r} does not exist")
        self.netns = netns
        try:
            self._ipr: Any = IPRoute(netns=netns) if netns is not None else IPRoute()
        except OSError as exc:
            raise NetlinkFacadeError(f"cannot open rtnetlink{self._where()}: {exc}") from exc

    def _where(self) -> str:
        return f" in namespace {self.netns!r}" if self.netns else ""

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NetlinkError as exc:
            raise NetlinkFacadeError(f"{what}{self._where()}: {exc.args[-1]} (errno {exc.code})") from exc

    # --- links -----------------------------------------------------------------------------------

    def links(self) -> list[LinkInfo]:
        return [link_from_msg(m) for m in self._call("list links", self._ipr.get_links)]

    def link(self, ref: LinkRef) -> LinkInfo:
        index = self.ifindex(ref)
        try:
            msgs = self._ipr.get_links(index)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                raise LinkNotFoundError(f"no interface with index {index}{self._where()}") from None
            raise NetlinkFacadeError(f"read link {ref}{self._where()}: {exc}") from exc
        return link_from_msg(msgs[0])

    def ifindex(self, ref: LinkRef) -> int:
        if isinstance(ref, int):
            return ref
        found = self._call(f"look up {ref}", self._ipr.link_lookup, ifname=ref)
        if not found:
            raise LinkNotFoundError(f"no interface named {ref!r}{self._where()}")
        return int(found[0])

    def ifname(self, index: int) -> str:
        return self.link(index).name

    def set_link_up(self, ref: LinkRef, up: bool = True) -> None:
        index = self.ifindex(ref)
        self._call(f"set {ref} {'up' if up else 'down'}", self._ipr.link, "set", index=index,
                   state="up" if up else "down")

    def add_veth(self, ifname: str, peer_ifname: str, peer_netns: str | None = None) -> None:
        """A veth pair: `ifname` here, `peer_ifname` in namespace `peer_netns` (None: here too)."""
        peer: dict[str, Any] = {"ifname": peer_ifname}
        if peer_netns is not None:
            peer["net_ns_fd"] = peer_netns
        self._call(f"add veth {ifname}/{peer_ifname}", self._ipr.link, "add", ifname=ifname, kind="veth",
                   peer=peer)

    def add_bridge(self, name: str) -> None:
        """A bridge with STP off (ports forward at once) and multicast snooping off (ND always floods)."""
        self._call(f"add bridge {name}", self._ipr.link, "add", ifname=name, kind="bridge",
                   br_stp_state=0, br_forward_delay=0, br_mcast_snooping=0)

    def set_master(self, ref: LinkRef, master: LinkRef) -> None:
        self._call(f"enslave {ref} to {master}", self._ipr.link, "set", index=self.ifindex(ref),
                   master=self.ifindex(master))

    def delete_link(self, ref: LinkRef) -> bool:
        try:
            index = self.ifindex(ref)
        except LinkNotFoundError:
            return False
        self._call(f"delete link {ref}", self._ipr.link, "del", index=index)
        return True

    # --- addresses -------------------------------------------------------------------------------

    def addresses(self, ref: LinkRef | None = None) -> list[AddressInfo]:
        if ref is None:
            msgs = self._call("list addresses", self._ipr.get_addr)
        else:
            msgs = self._call(f"list addresses of {ref}", self._ipr.get_addr, index=self.ifindex(ref))
        return [address_from_msg(m) for m in msgs]

    def has_address(self, ref: LinkRef, interface: IPInterface) -> bool:
        """True when exactly this address with this prefix length is on the link."""
        return any(a.interface == interface for a in self.addresses(ref))

    def add_address(self, ref: LinkRef, interface: IPInterface, nodad: bool = False) -> bool:
        """Put `interface` (address/prefix) on the link; False when it was already there.

        nodad skips IPv6 duplicate address detection (labs, VIPs on lo where DAD means nothing).
        """
        index = self.ifindex(ref)
        if self.has_address(index, interface):
            return False
        extra: dict[str, Any] = {"flags": IFA_F_NODAD} if nodad and interface.version == 6 else {}
        try:
            self._ipr.addr("add", index=index, address=str(interface.ip),
                           prefixlen=interface.network.prefixlen, family=_family(interface), **extra)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False  # the same address with another prefix length: not ours to change
            raise NetlinkFacadeError(f"add {interface} to {ref}{self._where()}: {exc.args[-1]}") from exc
        return True

    def remove_address(self, ref: LinkRef, interface: IPInterface) -> bool:
        """Take `interface` off the link; False when it was not there."""
        index = self.ifindex(ref)
        if not self.has_address(index, interface):
            return False
        try:
            self._ipr.addr("del", index=index, address=str(interface.ip),
                           prefixlen=interface.network.prefixlen, family=_family(interface))
        except NetlinkError as exc:
            if exc.code == errno.EADDRNOTAVAIL:
                return False
            raise NetlinkFacadeError(f"remove {interface} from {ref}{self._where()}: {exc.args[-1]}") from exc
        return True

    # --- routes ----------------------------------------------------------------------------------

    def route_to(self, address: IPAddress | str) -> RouteInfo:
        """The route the kernel would use for `address` (egress ifindex, gateway, source)."""
        dst = ip_address(address)
        try:
            msgs = self._ipr.route("get", dst=str(dst), family=_family(dst))
        except NetlinkError as exc:
            if exc.code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                raise NoRouteError(f"no route to {dst}{self._where()}") from None
            raise NetlinkFacadeError(f"route lookup for {dst}{self._where()}: {exc.args[-1]}") from exc
        return route_from_msg(dst, msgs[0])

    def add_route(self, prefix: IPNetwork | str, gateway: IPAddress | str | None = None,
                  dev: LinkRef | None = None) -> bool:
        """Add a route (replacing nothing); False when the same destination is already routed."""
        net = ip_network(prefix)
        spec: dict[str, Any] = {"dst": str(net), "family": _family(net)}
        if gateway is not None:
            spec["gateway"] = str(ip_address(gateway))
        if dev is not None:
            spec["oif"] = self.ifindex(dev)
        try:
            self._ipr.route("add", **spec)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False
            raise NetlinkFacadeError(f"add route {net}{self._where()}: {exc.args[-1]}") from exc
        return True

    def routes(self, family: int | None = None, table: int | None = RT_TABLE_MAIN) -> list[RouteEntry]:
        """Every route of `table` (default: main; None: every table, one dump per family), IPv4
        then IPv6 unless `family` (AF_INET/AF_INET6) narrows it; cached clones and routes of other
        tables are left out."""
        families = (AF_INET, AF_INET6) if family is None else (family,)
        entries: list[RouteEntry] = []
        for fam in families:
            if table is None:
                msgs = self._call("list routes", self._ipr.get_routes, family=fam)
                entries += map(route_entry_from_msg, msgs)
            else:
                msgs = self._call("list routes", self._ipr.get_routes, family=fam, table=table)
                entries += [e for e in map(route_entry_from_msg, msgs) if e.table == table]
        return entries

    def rules(self, family: int) -> list[RuleEntry]:
        """The policy routing rules of `family` (AF_INET/AF_INET6) in priority order (`ip rule`)."""
        msgs = self._call("list rules", self._ipr.get_rules, family=family)
        return sorted(map(rule_from_msg, msgs), key=lambda r: r.priority)

    def remove_anycast_route(self, address: IPAddress | str, dev: LinkRef) -> bool:
        """Delete the kernel's anycast route for `address` on `dev` (table local); False when absent."""
        addr = ip_address(address)
        return self._delete_route(
            {"dst": f"{addr}/{addr.max_prefixlen}", "family": _family(ip_network(addr)),
             "table": RT_TABLE_LOCAL, "type": int(RouteType.ANYCAST), "oif": self.ifindex(dev)},
            f"anycast route {addr}")

    def remove_route(self, prefix: IPNetwork | str, gateway: IPAddress | str | None = None) -> bool:
        """Delete the route to `prefix` (only the one via `gateway` when given); False when absent."""
        net = ip_network(prefix)
        spec: dict[str, Any] = {"dst": str(net), "family": _family(net)}
        if gateway is not None:
            spec["gateway"] = str(ip_address(gateway))
        return self._delete_route(spec, f"route {net}")

    def _delete_route(self, spec: dict[str, Any], what: str) -> bool:
        try:
            self._ipr.route("del", **spec)
        except NetlinkError as exc:
            if exc.code in (errno.ESRCH, errno.ENOENT):
                return False
            raise NetlinkFacadeError(f"remove {what}{self._where()}: {exc.args[-1]}") from exc
        return True

    # --- neighbours ------------------------------------------------------------------------------

    def neighbours(self, ref: LinkRef | None = None, family: int | None = None) -> list[Neighbour]:
        """The IPv4 and IPv6 neighbour entries (of the link `ref`, of `family` when given)."""
        kwargs: dict[str, Any] = {} if ref is None else {"ifindex": self.ifindex(ref)}
        if family is not None:
            kwargs["family"] = family
        msgs = self._call("list neighbours", self._ipr.get_neighbours, **kwargs)
        return [neighbour_from_msg(m) for m in msgs if m.get_attr("NDA_DST") is not None]

    def neighbour(self, address: IPAddress | str, ref: LinkRef | None = None) -> Neighbour | None:
        dst = ip_address(address)
        return next((n for n in self.neighbours(ref) if n.address == dst), None)

    def trigger_resolution(self, address: IPAddress | str, ref: LinkRef) -> None:
        """Ask the kernel to resolve `address` on the link, as if a packet were waiting for it.

        RTM_NEWNEIGH with NTF_USE runs the kernel's own neighbour state machine (neigh_event_send):
        an ARP request or neighbour solicitation goes out and the entry becomes INCOMPLETE, then
        REACHABLE or FAILED. No probe packet of ours and no ping needed.
        """
        dst = ip_address(address)
        self._call(f"trigger resolution of {dst}", self._ipr.neigh, "replace", dst=str(dst),
                   ifindex=self.ifindex(ref), family=_family(dst), flags=NTF_USE,
                   state=int(NeighbourState.NONE))

    def delete_neighbour(self, address: IPAddress | str, ref: LinkRef) -> bool:
        dst = ip_address(address)
        try:
            self._ipr.neigh("del", dst=str(dst), ifindex=self.ifindex(ref), family=_family(dst))
        except NetlinkError as exc:
            if exc.code in (errno.ENOENT, errno.ESRCH):
                return False
            raise NetlinkFacadeError(f"delete neighbour {dst}{self._where()}: {exc.args[-1]}") from exc
        return True

    def resolve_neighbour(
        self,
        address: IPAddress | str,
        *,
        timeout: float = 1.0,
        on_link: LinkRef | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> NeighbourResolution:
        """The MAC of the next hop towards `address`, waiting at most `timeout` seconds.

        The next hop is the route's gateway when the address is routed, else the address itself;
        with `on_link`, the address is taken as a neighbour on that link whatever the routes say
        (a route's own gateway, or a neighbour on one of several links of the same prefix).
        A usable entry already in the table answers at once. Otherwise resolution is triggered and
        the table polled (10 ms, doubling up to 100 ms) until the entry is usable, the kernel marks
        it FAILED, or the bound passes (INCOMPLETE).
        """
        dst = ip_address(address)
        if on_link is not None:
            hop, ifindex = dst, self.ifindex(on_link)
        else:
            route = self.route_to(dst)
            hop, ifindex = route.next_hop, route.ifindex
        deadline = clock() + timeout
        triggered = False
        pause = 0.01
        while True:
            entry = self.neighbour(hop, ifindex)
            if entry is not None and entry.usable:
                return NeighbourResolution(dst, hop, ifindex, Resolution.RESOLVED, entry.mac)
            if entry is not None and entry.state & NeighbourState.FAILED and triggered:
                return NeighbourResolution(dst, hop, ifindex, Resolution.FAILED)
            if not triggered or entry is None or entry.state & NeighbourState.FAILED:
                self.trigger_resolution(hop, ifindex)
                triggered = True
            remaining = deadline - clock()
            if remaining <= 0:
                return NeighbourResolution(dst, hop, ifindex, Resolution.INCOMPLETE)
            sleep(min(pause, remaining))
            pause = min(pause * 2, 0.1)
