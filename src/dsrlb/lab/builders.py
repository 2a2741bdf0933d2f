"""Topology builders for the seed setups, remapped into the documentation ranges.

- dsr (seed 001): client - router - LAN bridge with the balancer and two DSR targets.
- ha-dsr (seed 000): the same LAN with two balancer nodes (VRRP + sync) and targets on 80+443
  running load agents.
- lvs-dr (seed 004): Piranha's two LVS routers and two real servers behind a gateway.
- ipv6-nat (seed 003): three legs per balancer (VRRP crossover, target LAN, access LAN with the
  gateway), IPv6 NAT of [VIP]:8080 to the targets' port 80.

Seed networks are moved: 172.16.1.0/24 (000, 001) -> 192.0.2.0/24, 10.10.1.0/24 (004) ->
198.51.100.0/24, 10.0.0.0/8 (003, IPv4 part) -> 198.51.100.0/24 with mask 255.255.255.0; seed
003's IPv6 addresses are in 2001:db8::/32 already. Clients sit in 203.0.113.0/24 or 2001:db8:c::/64.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
from collections.abc import Callable
from ipaddress import IPv4Network, ip_address, ip_interface

from dsrlb.lab.core import Lab
from dsrlb.lab.httpd import READY
from dsrlb.lab.seeds import Remap, remap_text, seed_config_text
from dsrlb.lab.topology import IPAddress, LabBalancer, LabTarget, LabTopology, PlannedProcess
from dsrlb.netlink import Sysctl
from dsrlb.target import SetupRequest, execute, plan

CLIENT_SOURCES = 8  # client addresses, so source-address persistence still spreads the traffic
SCRIPT_CHECK_SEED = '"/usr/lib/mon/mon.d/http.monitor -p $port$ -u /index.html $ipaddr$"'
SCRIPT_CHECK_LAB = '"curl -fsS -o /dev/null --max-time 2 http://$ipaddr$:$port$/index.html"'
# Seed 000 balances by agent-reported load. All namespaces share one kernel load average, so each lab
# agent reports its own target's established connections instead (dsrlb.lab.connload).
CONNECTION_LOAD = shlex.join([sys.executable, "-m", "dsrlb.lab.connload", "--port", "80", "--port", "443"])


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _agent_available() -> bool:
    return importlib.util.find_spec("dsrlb.cli.agent") is not None


def _client(lab: Lab, router_ifname: str, net: str, router_host: int, first_host: int) -> list[IPAddress]:
    """Client node `cl` on a veth to the router `rt`, with CLIENT_SOURCES addresses, default via rt."""
    lab.add_node("cl")
    lab.veth("cl", "eth0", "rt", router_ifname)
    base = ip_interface(net).network
    prefix = base.prefixlen
    lab.address("rt", router_ifname, f"{base.network_address + router_host}/{prefix}")
    sources = [base.network_address + first_host + i for i in range(CLIENT_SOURCES)]
    for source in sources:
        lab.address("cl", "eth0", f"{source}/{prefix}")
    default = "0.0.0.0/0" if base.version == 4 else "::/0"
    lab.route("cl", default, str(base.network_address + router_host))
    return list(sources)


def _target(lab: Lab, role: str, name: str, switch: str, ifname: str, address: str, gateway: str,
            ports: tuple[int, ...], vip: IPAddress | None, agent_args: tuple[str, ...] | None,
            probe_host: str | None = None) -> tuple[LabTarget, list[PlannedProcess]]:
    lab.add_node(role)
    lab.plug(role, ifname, switch)
    lab.address(role, ifname, address)
    lab.route(role, "0.0.0.0/0" if ip_interface(address).version == 4 else "::/0", gateway)
    if vip is not None:
        # The very code an operator runs on a real target: VIP on lo, arp_ignore/arp_announce.
        request = SetupRequest(vips=(ip_interface(f"{vip}/{vip.max_prefixlen}"),), interfaces=(ifname,),
                               state_file=lab.workdir / f"{role}-target-setup.json")
        execute(plan(request, lab.ns(role)), lab.ns(role))
    port_args = [a for p in ports for a in ("--port", str(p))]
    argv = _python("dsrlb.lab.httpd", "--name", name, *port_args)
    lab.spawn(role, "httpd", argv, ready_line=READY)
    processes = [PlannedProcess(role, lab.ns(role), tuple(argv), f"HTTP server '{name}'", True)]
    if agent_args is not None:
        agent = _python("dsrlb.cli.main", "agent", *agent_args)
        started = _agent_available()
        if started:
            lab.spawn(role, "agent", agent)
        processes.append(PlannedProcess(role, lab.ns(role), tuple(agent), "load agent", started))
    link = lab.netlink(role).link(ifname)
    target = LabTarget(name, role, lab.ns(role), ifname, ip_interface(address).ip, link.mac or "",
                       ports, probe_host or str(ip_interface(address).ip))
    return target, processes


def _balancer(lab: Lab, role: str, name: str, uplinks: tuple[tuple[str, str], ...], config_name: str,
              remap: Remap, extra_literals: tuple[tuple[str, str], ...] = ()
              ) -> tuple[LabBalancer, tuple[tuple[str, str], ...]]:
    """A balancer node plugged into (ifname, switch) pairs; its seed config remapped and written out."""
    if role not in lab.roles:
        lab.add_node(role)
    for ifname, switch in uplinks:
        if switch:
            lab.plug(role, ifname, switch)
    text, mapping = remap_text(seed_config_text(config_name),
                               Remap(remap.networks, remap.literals + extra_literals))
    path = lab.workdir / f"{role}-{config_name}"
    path.write_text(text)
    nl = lab.netlink(role)
    ifnames = tuple(i for i, _ in uplinks)
    macs = tuple(nl.link(i).mac or "" for i in ifnames)
    return LabBalancer(name, role, lab.ns(role), ifnames, macs, config_name, path, text), mapping


def _balancer_process(lab: Lab, balancer: LabBalancer) -> PlannedProcess:
    argv = ("dsrlb", "-i", f"lab-{balancer.role}", "start", "--foreground", "-c", str(balancer.config_path))
    return PlannedProcess(balancer.role, balancer.netns, argv, f"balancer {balancer.name}", False)


def _merge_maps(*maps: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    merged: dict[str, str] = {}
    for mapping in maps:
        merged.update(mapping)
    return tuple(sorted(merged.items()))


SEED_001_REMAP = Remap(networks=((IPv4Network("172.16.1.0/24"), IPv4Network("192.0.2.0/24")),))


def _routed_lan(lab: Lab, router_address: str) -> list[IPAddress]:
    """The LAN switch, the forwarding router on it (eth0 = `router_address`) and the client network
    behind the router (eth1); returns the client source addresses."""
    for role in ("rt", "sw"):
        lab.add_node(role)
    lab.bridge("sw")
    lab.plug("rt", "eth0", "sw")
    lab.address("rt", "eth0", router_address)
    lab.sysctl("rt", Sysctl.ipv4("ip_forward"), 1)
    return _client(lab, "eth1", "203.0.113.0/24", 1, 10)


def build_dsr(lab: Lab) -> LabTopology:
    """Seed 001: single-legged DSR, VIP 192.0.2.10, targets .100/.101, router .254."""
    sources = _routed_lan(lab, "192.0.2.254/24")
    vip = ip_address("192.0.2.10")
    balancer, mapping = _balancer(lab, "lb", "balancer", (("eth0", "sw"),), "seed001-dsr.conf",
                                  SEED_001_REMAP)
    targets, processes = [], []
    for i, host in enumerate((100, 101), start=1):
        target, procs = _target(lab, f"t{i}", f"target{i}", "sw", "eth0", f"192.0.2.{host}/24",
                                "192.0.2.254", (80,), vip, None)
        targets.append(target)
        processes += procs
    return LabTopology(
        "dsr", "001", "single-legged DSR: client - router - LAN (balancer, 2 targets with the VIP on lo)",
        vip, (80,), "cl", lab.ns("cl"), tuple(sources), "rt", lab.ns("rt"), tuple(targets), (balancer,),
        mapping, (*processes, _balancer_process(lab, balancer)), True,
        neighbour_probe=(lab.ns("rt"), "eth0"), capture_point=(lab.ns("rt"), "eth0"),
    )


def build_ha_dsr(lab: Lab) -> LabTopology:
    """Seed 000: two DSR balancer nodes (VRRP vrid 9, sync), targets on 80+443 with agents on 439."""
    sources = _routed_lan(lab, "192.0.2.254/24")
    vip = ip_address("192.0.2.10")
    script = ((SCRIPT_CHECK_SEED, SCRIPT_CHECK_LAB),)
    uplink = (("eth0", "sw"),)
    lb1, map1 = _balancer(lab, "lb1", "node1", uplink, "seed000-node1.conf", SEED_001_REMAP, script)
    lb2, map2 = _balancer(lab, "lb2", "node2", uplink, "seed000-node2.conf", SEED_001_REMAP, script)
    targets, processes = [], []
    for i, host in enumerate((100, 101), start=1):
        target, procs = _target(lab, f"t{i}", f"target{i}", "sw", "eth0", f"192.0.2.{host}/24",
                                "192.0.2.254", (80, 443), vip, ("--script", CONNECTION_LOAD, "439"))
        targets.append(target)
        processes += procs
    return LabTopology(
        "ha-dsr", "000", "DSR, two balancer nodes in VRRP HA with session sync; targets on 80+443 + agents",
        vip, (80, 443), "cl", lab.ns("cl"), tuple(sources), "rt", lab.ns("rt"), tuple(targets), (lb1, lb2),
        _merge_maps(map1, map2),
        (*processes, _balancer_process(lab, lb1), _balancer_process(lab, lb2)), True,
        neighbour_probe=(lab.ns("rt"), "eth0"), capture_point=(lab.ns("rt"), "eth0"),
    )


SEED_004_REMAP = Remap(networks=((IPv4Network("10.10.1.0/24"), IPv4Network("198.51.100.0/24")),))


def build_lvs_dr(lab: Lab) -> LabTopology:
    """Seed 004: LVS routers lvs-d01/.21 and lvs-d02/.22, real servers .23/.24, VIP .20, gateway .1."""
    sources = _routed_lan(lab, "198.51.100.1/24")
    vip = ip_address("198.51.100.20")
    balancers, maps = [], []
    for role, name, host in (("d01", "lvs-d01", 21), ("d02", "lvs-d02", 22)):
        balancer, mapping = _balancer(lab, role, name, (("eth0", "sw"),), "seed004-lvs.cf", SEED_004_REMAP)
        # The routers' own addresses are host configuration in the seed (ifcfg-eth0), not LVS's.
        lab.address(role, "eth0", f"198.51.100.{host}/24")
        lab.route(role, "0.0.0.0/0", "198.51.100.1")
        balancers.append(balancer)
        maps.append(mapping)
    targets, processes = [], []
    for role, name, host in (("d03", "lvs-d03", 23), ("d04", "lvs-d04", 24)):
        # Seed 004 uses iptables REDIRECT on the real servers; the lab holds the VIP on lo instead,
        # which is the same effect (the server accepts VIP traffic) without iptables.
        target, procs = _target(lab, role, name, "sw", "eth0", f"198.51.100.{host}/24", "198.51.100.1",
                                (80, 443), vip, None)
        targets.append(target)
        processes += procs
    return LabTopology(
        "lvs-dr", "004", "LVS direct routing (Piranha): two routers, two real servers, fwmark 80+443",
        vip, (80, 443), "cl", lab.ns("cl"), tuple(sources), "rt", lab.ns("rt"), tuple(targets),
        tuple(balancers), _merge_maps(*maps),
        (*processes, *(_balancer_process(lab, b) for b in balancers)), True,
        neighbour_probe=(lab.ns("rt"), "eth0"), capture_point=(lab.ns("rt"), "eth0"),
    )


SEED_003_REMAP = Remap(
    networks=((IPv4Network("10.0.0.0/8"), IPv4Network("198.51.100.0/24")),),
    literals=(("mask 255.0.0.0", "mask 255.255.255.0"),),
)


def build_ipv6_nat(lab: Lab) -> LabTopology:
    """Seed 003: LB1/LB2 with eth1 (crossover), eth2 (targets 2001:db8:ffff::/48), eth3 (access)."""
    for role in ("rt", "swa", "sws", "lb1", "lb2"):
        lab.add_node(role)
    lab.bridge("swa")
    lab.bridge("sws")
    lab.plug("rt", "eth0", "swa")
    lab.address("rt", "eth0", "2001:db8::2:10/48")  # the seed's gateway (ipaddr6 2001:db8::2:10)
    lab.sysctl("rt", Sysctl.ipv6_conf("all", "forwarding"), 1)
    sources = _client(lab, "eth1", "2001:db8:c::/64", 1, 0x10)
    lab.veth("lb1", "eth1", "lb2", "eth1")  # "eth1-eth1 being a simple crossover cable"
    vip = ip_address("2001:db8::2:4")
    balancers, maps = [], []
    for role, name, conf in (("lb1", "LB1", "seed003-lb1.conf"), ("lb2", "LB2", "seed003-lb2.conf")):
        balancer, mapping = _balancer(lab, role, name, (("eth1", ""), ("eth2", "sws"), ("eth3", "swa")),
                                      conf, SEED_003_REMAP)
        balancers.append(balancer)
        maps.append(mapping)
    targets, processes = [], []
    for i in (1, 2):
        role = f"t{i}"
        # Until a balancer holds virt6 (the targets' gateway), only the target LAN reaches them:
        # LB1 probes their link-local addresses over its eth2.
        target, procs = _target(lab, role, f"target{i}", "sws", "eth1", f"2001:db8:ffff::1:{i}/48",
                                "2001:db8:ffff::2:3", (80,), None, ("-6", "10000"))
        link_local = next(a.address for a in lab.netlink(role).addresses("eth1") if a.address.is_link_local)
        target = LabTarget(target.name, target.role, target.netns, target.ifname, target.address, target.mac,
                           target.ports, f"{link_local}%eth2")
        targets.append(target)
        processes += procs
    return LabTopology(
        "ipv6-nat", "003", "IPv6 NAT [VIP]:8080 -> targets :80, three legs per balancer, VRRP tracking",
        vip, (8080,), "cl", lab.ns("cl"), tuple(sources), "lb1", lab.ns("lb1"), tuple(targets),
        tuple(balancers), _merge_maps(*maps),
        (*processes, *(_balancer_process(lab, b) for b in balancers)), False,
        # The gateway's access-LAN leg: replies from the balancer to the clients pass here.
        capture_point=(lab.ns("rt"), "eth0"),
    )


BUILDERS: dict[str, Callable[[Lab], LabTopology]] = {
    "dsr": build_dsr,
    "ha-dsr": build_ha_dsr,
    "lvs-dr": build_lvs_dr,
    "ipv6-nat": build_ipv6_nat,
}
