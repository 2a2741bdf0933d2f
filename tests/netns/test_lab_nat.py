"""The pieces behind the IPv6 NAT lab (seed 003) and native XDP in labs, against the real kernel.

- the route listing of the netlink facade, and NAT return routes published from the routing table;
- a network on two interfaces (seed 003's `interfaces 1,3`): its prefix goes where the gateway
  answers, the other interface gets host addresses, the gateway becomes the default route, and all
  of it is undone;
- native XDP_TX on a veth: lost unless the far end is prepared (XDP_PASS program), then delivered.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_interface, ip_network

import pytest

from dsrlb.config import loads
from dsrlb.daemon.plumbing import AddressPlan, NetworkPlacement, Plumbing, plan_addresses
from dsrlb.lab import Lab
from dsrlb.lab.builders import SEED_003_REMAP
from dsrlb.lab.native_xdp import prepare_peer, tx_checksum
from dsrlb.lab.seeds import remap_text, seed_config_text
from dsrlb.netlink import RouteType, run_in_netns

AF_INET, AF_INET6 = 2, 10


@pytest.fixture
def pair() -> Iterator[Lab]:
    """a (192.0.2.1, 2001:db8::1) - b (192.0.2.2, 2001:db8::2); b routes 203.0.113.0/24 and ::/0 via a,
    and 198.51.100.0/24 via 192.0.2.99, which nobody holds."""
    with Lab() as lab:
        lab.add_node("a")
        lab.add_node("b")
        lab.veth("a", "eth0", "b", "eth0")
        for role, host in (("a", 1), ("b", 2)):
            lab.address(role, "eth0", f"192.0.2.{host}/24")
            lab.address(role, "eth0", f"2001:db8::{host}/64")
        lab.route("b", "203.0.113.0/24", "192.0.2.1")
        lab.route("b", "198.51.100.0/24", "192.0.2.99")
        lab.route("b", "::/0", "2001:db8::1")
        yield lab


@pytest.mark.root
def test_route_listing_reads_the_main_table(pair: Lab) -> None:
    nl = pair.netlink("b")
    eth0 = nl.ifindex("eth0")
    routes = {r.prefix: r for r in nl.routes()}
    connected = routes[ip_network("192.0.2.0/24")]
    assert connected.connected and connected.ifindex == eth0 and connected.kind is RouteType.UNICAST
    assert routes[ip_network("203.0.113.0/24")].gateway == ip_address("192.0.2.1")
    default = routes[ip_network("::/0")]
    assert default.is_default and default.gateway == ip_address("2001:db8::1") and not default.connected
    assert routes[ip_network("2001:db8::/64")].connected
    # The main table only: the local table's own addresses are not listed.
    assert ip_network("192.0.2.2/32") not in routes
    assert all(r.prefix.version == 6 for r in nl.routes(AF_INET6))
    assert all(r.prefix.version == 4 for r in nl.routes(AF_INET))


@pytest.mark.root
def test_return_routes_come_from_the_routing_table(pair: Lab) -> None:
    a_mac = bytes.fromhex((pair.netlink("a").link("eth0").mac or "").replace(":", ""))
    b = pair.netlink("b")
    b_mac = bytes.fromhex((b.link("eth0").mac or "").replace(":", ""))
    eth0 = b.ifindex("eth0")
    routes = Plumbing(b).return_routes()
    assert routes[IPv4Network("203.0.113.0/24")] == routes[IPv6Network("::/0")]
    hop = routes[IPv4Network("203.0.113.0/24")]
    assert (hop.ifindex, hop.src_mac, hop.dst_mac) == (eth0, b_mac, a_mac)
    # Resolving the gateways put a in the neighbour table: on-link host routes to it.
    assert routes[IPv4Network("192.0.2.1/32")].dst_mac == a_mac
    assert IPv4Network("198.51.100.0/24") not in routes  # its gateway never answers
    assert not any(prefix.is_link_local for prefix in routes)
    assert IPv4Network("192.0.2.0/24") not in routes  # a connected prefix has no single next hop


SEED_003_GATEWAY = ip_address("2001:db8::2:10")


def test_seed_003_plan_puts_network_1_on_both_legs() -> None:
    text, _ = remap_text(seed_config_text("seed003-lb1.conf"), SEED_003_REMAP)
    plan = plan_addresses(loads(text, "seed003-lb1.conf"))
    access, targets = plan.placements
    assert access.interfaces == ("eth1", "eth3") and access.probes[0] == SEED_003_GATEWAY
    assert ip_interface("2001:db8::2:4/128") in access.addresses  # the VIP lives in network 1
    assert {ip_interface("2001:db8::2:1/48"), ip_interface("2001:db8::2:3/48")} <= set(access.addresses)
    assert targets.interfaces == ("eth2",)
    assert ip_interface("2001:db8:ffff::2:3/48") in targets.addresses
    assert plan.gateways == (SEED_003_GATEWAY,) and plan.forwarding_v6
    assert set(plan.interfaces) == {"eth1", "eth2", "eth3"}


@pytest.fixture
def two_legs() -> Iterator[Lab]:
    """Seed 003's LB1 legs: eth1 to a silent peer (the crossover), eth3 to the gateway."""
    with Lab() as lab:
        for role in ("lb", "peer", "gw"):
            lab.add_node(role)
        lab.veth("lb", "eth1", "peer", "eth1")
        lab.veth("lb", "eth3", "gw", "eth0")
        lab.address("gw", "eth0", f"{SEED_003_GATEWAY}/48")
        yield lab


def _placement() -> NetworkPlacement:
    return NetworkPlacement(
        ("eth1", "eth3"), (IPv6Network("2001:db8::/48"),),
        (ip_interface("2001:db8::2:1/48"), ip_interface("2001:db8::2:4/128")), (SEED_003_GATEWAY,))


def _plan(placement: NetworkPlacement) -> AddressPlan:
    # No forwarding: the sysctl keeper acts on the test's own namespace, not the lab's.
    return AddressPlan((placement,), placement.interfaces, False, False, (SEED_003_GATEWAY,))


@pytest.mark.root
def test_a_network_on_two_legs_lives_where_its_gateway_answers(two_legs: Lab) -> None:
    nl = two_legs.netlink("lb")
    plumbing = Plumbing(nl)
    plumbing.apply(_plan(_placement()))
    try:
        assert nl.has_address("eth3", ip_interface("2001:db8::2:1/48"))
        assert nl.has_address("eth1", ip_interface("2001:db8::2:1/128"))  # ND answered there too
        assert not nl.has_address("eth1", ip_interface("2001:db8::2:1/48"))
        prefix_routes = [r for r in nl.routes(AF_INET6) if r.prefix == ip_network("2001:db8::/48")]
        assert [r.ifindex for r in prefix_routes] == [nl.ifindex("eth3")]
        default = [r for r in nl.routes(AF_INET6) if r.is_default]
        assert [(r.gateway, r.ifindex) for r in default] == [(SEED_003_GATEWAY, nl.ifindex("eth3"))]
        hop = plumbing.return_routes()[IPv6Network("::/0")]
        assert hop.ifindex == nl.ifindex("eth3")
    finally:
        plumbing.release()
    assert not any(a.address.version == 6 and not a.address.is_link_local for a in nl.addresses("eth3"))
    assert not nl.addresses("eth1") or all(a.address.is_link_local for a in nl.addresses("eth1")
                                           if a.address.version == 6)
    assert not any(r.is_default for r in nl.routes(AF_INET6))


@pytest.mark.root
def test_the_operators_default_route_stays_and_silence_means_the_first_leg(two_legs: Lab) -> None:
    nl = two_legs.netlink("lb")
    nl.add_address("eth3", ip_interface("2001:db8:1::1/64"), nodad=True)
    nl.add_route("::/0", "2001:db8:1::99", dev="eth3")  # the operator's
    silent = NetworkPlacement(("eth1", "eth3"), (IPv6Network("2001:db8::/48"),),
                              (ip_interface("2001:db8::2:1/48"),), (ip_address("2001:db8::2:77"),))
    plumbing = Plumbing(nl)
    plumbing.apply(_plan(silent))
    try:
        assert nl.has_address("eth1", ip_interface("2001:db8::2:1/48"))  # nobody answered: first leg
        defaults = [r.gateway for r in nl.routes(AF_INET6) if r.is_default]
        assert defaults == [ip_address("2001:db8:1::99")]
    finally:
        plumbing.release()
    assert [r.gateway for r in nl.routes(AF_INET6) if r.is_default] == [ip_address("2001:db8:1::99")]


# --- native XDP on veth ------------------------------------------------------------------------------

ETH_P_EXPERIMENTAL = 0x88B5  # IEEE 802 local experimental ethertype: nobody else in the lab uses it


def _echo_arrives(lab: Lab, payload: bytes) -> bool:
    """Send one frame from b to a's MAC; a's XDP program swaps the MACs and sends it back (XDP_TX).
    True when b receives it back (bounded wait)."""
    a_mac = bytes.fromhex((lab.netlink("a").link("eth0").mac or "").replace(":", ""))
    b_mac = bytes.fromhex((lab.netlink("b").link("eth0").mac or "").replace(":", ""))
    frame = a_mac + b_mac + struct.pack("!H", ETH_P_EXPERIMENTAL) + payload

    def exchange() -> bool:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_EXPERIMENTAL)) as sock:
            sock.bind(("eth0", ETH_P_EXPERIMENTAL))
            sock.settimeout(1.0)
            sock.send(frame)
            try:
                while True:
                    data, address = sock.recvfrom(2048)
                    if address[2] != socket.PACKET_OUTGOING and data[14:] == payload:
                        return data[:6] == b_mac
            except TimeoutError:
                return False

    return run_in_netns(lab.ns("b"), exchange)


@pytest.mark.root
def test_native_xdp_tx_on_veth_needs_the_far_end_prepared() -> None:
    from dsrlb.xdp.build import FLOOR_PROGRAM, ensure_object
    from dsrlb.xdp.libbpf import BpfObject, xdp_attach

    with Lab() as lab, BpfObject(ensure_object(FLOOR_PROGRAM)) as floor:
        lab.add_node("a")
        lab.add_node("b")
        lab.veth("a", "eth0", "b", "eth0")
        floor.load()
        program = floor.program("xdp_floor")  # swap MACs, XDP_TX
        index = lab.netlink("a").ifindex("eth0")
        attached = run_in_netns(lab.ns("a"), lambda: xdp_attach(index, program, "native"))
        assert attached.mode == "native"
        assert not _echo_arrives(lab, b"before"), "XDP_TX delivered without a program on the peer"
        prepare_peer(lab.ns("b"), "eth0")
        assert not tx_checksum(lab.ns("b"), "eth0")
        assert _echo_arrives(lab, b"after")
