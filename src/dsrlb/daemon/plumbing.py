"""What the daemon asks of the kernel: addresses, sysctls, next hops and return routes.

DESIGN §1: the kernel owns addresses (so ARP/ND, ICMP echo to the VIP and routing of everything not
balanced are the kernel's); the engine owns VIP traffic. Every address and sysctl added here is
remembered and removed/restored on stop, and nothing the operator had configured before is touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Interface, IPv6Network, ip_address

from dsrlb.engine.dataplane import IPAddress, IPNetwork, NextHop
from dsrlb.model import Config, Network
from dsrlb.netlink import Netlink
from dsrlb.netlink.errors import NetlinkFacadeError
from dsrlb.netlink.keepers import AddressKeeper
from dsrlb.netlink.sysctl import Sysctl, SysctlKeeper
from dsrlb.netlink.types import Resolution

log = logging.getLogger("dsrlb.daemon")

IPInterface = IPv4Interface | IPv6Interface


@dataclass(frozen=True)
class AddressPlan:
    """Addresses one config wants on the balancer's interfaces: (interface name, address/prefix)."""

    addresses: tuple[tuple[str, IPInterface], ...]
    interfaces: tuple[str, ...]  # the interfaces the engine serves
    forwarding_v4: bool
    forwarding_v6: bool


def _interface_names(config: Config, network: Network) -> list[str]:
    names = []
    for iid in network.interfaces:
        interface = config.interface(iid)
        if interface is not None and interface.registered and interface.enabled and interface.name:
            names.append(interface.name)
    return names


def plan_addresses(config: Config) -> AddressPlan:
    """real/virt (v4 and v6) of every enabled network on its first interface, and each enabled
    server's VIP as /32 or /128 on the interface of the network that contains it (else the first)."""
    wanted: list[tuple[str, IPInterface]] = []
    served: list[str] = []
    prefixes: list[tuple[IPNetwork, str]] = []
    for network in config.networks:
        if not (network.registered and network.enabled):
            continue
        names = _interface_names(config, network)
        if not names:
            continue
        served.extend(n for n in names if n not in served)
        v4, v6 = network.ipv4_network, network.ipv6_network
        for addr, net in ((network.real, v4), (network.virt, v4), (network.real6, v6), (network.virt6, v6)):
            if addr is not None and net is not None:
                wanted.append((names[0], _interface(addr, net.prefixlen)))
        for net in (v4, v6):
            if net is not None:
                prefixes.append((net, names[0]))
    for server in config.servers:
        if server.address is None or not (server.registered and server.enabled) or not served:
            continue
        home = next((name for net, name in prefixes if server.address in net), served[0])
        wanted.append((home, _interface(server.address, server.address.max_prefixlen)))
    nat = [t for t in config.targets if t.registered and not t.dsr and t.address is not None]
    return AddressPlan(
        addresses=tuple(dict.fromkeys(wanted)),
        interfaces=tuple(served),
        forwarding_v4=any(isinstance(t.address, IPv4Address) for t in nat),
        forwarding_v6=any(not isinstance(t.address, IPv4Address) for t in nat),
    )


def _interface(address: IPAddress, prefixlen: int) -> IPInterface:
    if isinstance(address, IPv4Address):
        return IPv4Interface((address, prefixlen))
    return IPv6Interface((address, prefixlen))


def _mac(text: str | None) -> bytes | None:
    if not text:
        return None
    return bytes(int(part, 16) for part in text.split(":"))


class Plumbing:
    """Applies AddressPlans and resolves next hops; undoes exactly what it did."""

    def __init__(self, netlink: Netlink | None = None) -> None:
        self.netlink = netlink if netlink is not None else Netlink()
        self._addresses = AddressKeeper(self.netlink)
        self._sysctls = SysctlKeeper()
        self._current: tuple[tuple[str, IPInterface], ...] = ()

    def apply(self, plan: AddressPlan) -> None:
        """Add what the plan wants and remove what an earlier plan added and this one does not."""
        for ifname, interface in plan.addresses:
            # nodad: a VIP or virt address must answer at once, not after duplicate detection.
            self._addresses.add(ifname, interface, nodad=True)
        for ifname, interface in self._current:
            if (ifname, interface) not in plan.addresses:
                self._addresses.remove(ifname, interface)
        self._current = plan.addresses
        if plan.forwarding_v4:
            self._sysctls.set(Sysctl.ipv4("ip_forward"), 1)
        if plan.forwarding_v6:
            self._sysctls.set(Sysctl.parse("net.ipv6.conf.all.forwarding"), 1)

    def release(self) -> None:
        try:
            self._addresses.release()
        finally:
            self._sysctls.restore()
            self._current = ()

    def next_hop(self, address: IPAddress, timeout: float = 0.5) -> NextHop | None:
        """Egress interface and MACs towards `address`, or None while it cannot be resolved."""
        try:
            found = self.netlink.resolve_neighbour(address, timeout=timeout)
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
        """Routes for NAT return traffic: the default route of each family, when it resolves.

        On-link clients (inside a balancer network) get host routes from the neighbour table.
        """
        routes: dict[IPNetwork, NextHop] = {}
        for probe, default in ((ip_address("192.0.2.255"), IPv4Network("0.0.0.0/0")),
                               (ip_address("2001:db8::ffff"), IPv6Network("::/0"))):
            try:
                route = self.netlink.route_to(probe)
            except NetlinkFacadeError:
                continue
            if route.gateway is None:
                continue
            hop = self.next_hop(route.gateway)
            if hop is not None:
                routes[default] = hop
        try:
            neighbours = self.netlink.neighbours()
        except NetlinkFacadeError:
            return routes
        for entry in neighbours:
            if not entry.usable or not any(entry.address in net for net in networks):
                continue
            mac, src = _mac(entry.mac), _mac(self.netlink.link(entry.ifindex).mac)
            if mac is not None and src is not None:
                host = IPv4Network(entry.address) if isinstance(entry.address, IPv4Address) \
                    else IPv6Network(entry.address)
                routes[host] = NextHop(entry.ifindex, src, mac)
        return routes
