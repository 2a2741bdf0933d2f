"""What a built lab is: its nodes, addresses, configs and the processes to run where (frozen data)."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True)
class LabTarget:
    """A real server: answers HTTP with `name` on `ports`; holds the VIP on lo in DSR labs."""

    name: str
    role: str
    netns: str
    ifname: str
    address: IPAddress
    mac: str
    ports: tuple[int, ...]
    probe_host: str  # what the probe node connects to (the address, or a scoped link-local one)


@dataclass(frozen=True)
class LabBalancer:
    """A balancer node: its namespace, interfaces and its seed configuration remapped into the lab."""

    name: str
    role: str
    netns: str
    interfaces: tuple[str, ...]
    macs: tuple[str, ...]
    config_name: str
    config_path: Path
    config_text: str


@dataclass(frozen=True)
class PlannedProcess:
    """Something to run in a namespace. started: the lab runs it already; else the balancer step will."""

    role: str
    netns: str
    argv: tuple[str, ...]
    purpose: str
    started: bool


@dataclass(frozen=True)
class LabTopology:
    name: str
    seed: str
    description: str
    vip: IPAddress
    ports: tuple[int, ...]  # the service ports clients use on the VIP
    client_role: str
    client_netns: str
    client_sources: tuple[IPAddress, ...]  # client addresses the traffic driver rotates through
    probe_role: str  # where direct checks of the targets run from
    probe_netns: str
    targets: tuple[LabTarget, ...]
    balancers: tuple[LabBalancer, ...]
    address_map: tuple[tuple[str, str], ...]  # seed text -> lab text
    run_plan: tuple[PlannedProcess, ...]
    dsr: bool  # targets hold the VIP on lo and must not answer ARP/ND for it
    neighbour_probe: tuple[str, str] | None = None  # (netns, ifname) that asks ARP for the VIP
    capture_point: tuple[str, str] | None = None  # (netns, ifname) where the DSR/NAT proof captures

    def target(self, name: str) -> LabTarget:
        return next(t for t in self.targets if t.name == name)
