"""Checks that a built lab is what its seed describes, before any balancer runs.

- every target's HTTP server answers, with its own name, directly from the probe node (the router,
  or LB1's target leg for the IPv6 NAT lab);
- in DSR labs, nobody answers ARP for the VIP on the LAN: the targets hold it on lo with
  arp_ignore=1 / arp_announce=2, and no balancer holds it yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsrlb.lab.topology import LabTopology
from dsrlb.lab.traffic import HttpProbeError, http_get_in
from dsrlb.netlink import Netlink, Resolution


@dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Verification:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)


def check_targets_direct(topology: LabTopology, timeout: float = 2.0) -> list[Check]:
    checks: list[Check] = []
    for target in topology.targets:
        for port in target.ports:
            what = f"{target.name} answers HTTP on {target.address} port {port} from {topology.probe_role}"
            try:
                body = http_get_in(topology.probe_netns, target.probe_host, port, timeout)
            except HttpProbeError as exc:
                checks.append(Check(what, False, str(exc)))
                continue
            checks.append(Check(what, body == target.name, f"answered {body!r}"))
    return checks


def check_vip_not_answered(topology: LabTopology, timeout: float = 1.0) -> list[Check]:
    """Ask for the VIP by ARP/ND from the probe point; a DSR target must stay silent."""
    if not topology.dsr or topology.neighbour_probe is None:
        return []
    netns, ifname = topology.neighbour_probe
    with Netlink(netns) as nl:
        outcome = nl.resolve_neighbour(topology.vip, timeout=timeout)
        # Leave no FAILED entry behind: the balancer will answer for the VIP later.
        nl.delete_neighbour(topology.vip, ifname)
    answered = outcome.outcome is Resolution.RESOLVED
    owner = next((t.name for t in topology.targets if t.mac == outcome.mac), outcome.mac)
    detail = f"answered by {owner}" if answered else f"no answer ({outcome.outcome.value})"
    return [Check(f"no target answers ARP/ND for the VIP {topology.vip}", not answered, detail)]


def verify_topology(topology: LabTopology) -> Verification:
    return Verification(tuple(check_targets_direct(topology) + check_vip_not_answered(topology)))
