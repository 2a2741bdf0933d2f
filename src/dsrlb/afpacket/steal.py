"""Keeping the kernel stack away from balanced VIP traffic while the AF_PACKET engine serves it.

The balancer owns the VIP address (so the kernel answers ARP/ND and ICMP echo for it), which also
means the stack would answer a balanced TCP SYN itself with a RST. Packet sockets get their copy
before netfilter, so a drop rule in the raw prerouting hook takes the kernel's copy only. One nftables
table per instance (`inet dsrlb_<instance>`), replaced atomically on every change and deleted on stop.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address

from dsrlb.engine.dataplane import IPPROTO_TCP, IPPROTO_UDP, ServiceKey, ServiceSpec, TargetSpec

_PROTO_NAME = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp"}


class StealError(RuntimeError):
    pass


def table_name(instance: str) -> str:
    return "dsrlb_" + re.sub(r"[^A-Za-z0-9_]", "_", instance)


@dataclass(frozen=True, order=True)
class ReturnSource:
    """Where NAT return traffic comes from: a NAT target's address, protocol and source port (0: any)."""

    address: str
    protocol: int
    port: int


def return_sources(services: Iterable[ServiceSpec], members: Mapping[int, Iterable[int]],
                   targets: Mapping[int, TargetSpec]) -> set[ReturnSource]:
    """The NAT targets' reply sources: the target's port, else each port its services listen on.

    `members` are every target of each service (DesiredState.members), not its selection table: a
    target out of the table still answers its established sessions, and the kernel must not forward
    those replies untranslated."""
    sources: set[ReturnSource] = set()
    by_id = {spec.id: spec for spec in services}
    for service_id, member_ids in members.items():
        service = by_id.get(service_id)
        if service is None:
            continue
        for target in {targets[tid] for tid in member_ids if tid in targets}:
            if target.dsr:
                continue
            for key in service.keys:
                port = target.port if target.port is not None else key.port
                sources.add(ReturnSource(str(target.address), key.protocol, port))
    return sources


def _return_sets(returns: Iterable[ReturnSource]) -> tuple[list[str], list[str]]:
    """Sets and rules for the NAT reply sources: one set per family and protocol for (address . port)
    and one for any-port targets, so a packet costs one set lookup, not one rule per target."""
    exact: dict[tuple[str, str], list[str]] = {}
    any_port: dict[tuple[str, str], list[str]] = {}
    for source in sorted(set(returns)):
        family = "ip6" if ":" in source.address else "ip"
        proto = _PROTO_NAME[source.protocol]
        if source.port == 0:
            any_port.setdefault((family, proto), []).append(source.address)
        else:
            exact.setdefault((family, proto), []).append(f"{source.address} . {source.port}")
    def declare(name: str, family: str, port_too: bool, elements: list[str]) -> str:
        kind = ("ipv6_addr" if family == "ip6" else "ipv4_addr") + (" . inet_service" if port_too else "")
        return f"  set {name} {{\n    type {kind}\n    elements = {{ {', '.join(elements)} }}\n  }}"

    sets, rules = [], []
    for (family, proto), elements in sorted(exact.items()):
        name = f"replies_{family}_{proto}"
        sets.append(declare(name, family, True, elements))
        rules.append(f"    {family} saddr . {proto} sport @{name} fib daddr type != local drop")
    for (family, proto), elements in sorted(any_port.items()):
        name = f"replies_{family}_{proto}_any"
        sets.append(declare(name, family, False, elements))
        rules.append(f"    {family} saddr @{name} meta l4proto {proto} fib daddr type != local drop")
    return sets, rules


def render_ruleset(instance: str, keys: Iterable[ServiceKey], returns: Iterable[ReturnSource] = ()) -> str:
    """nft script that (re)creates the instance's table: one drop rule per VIP/protocol for the
    kernel's copy of balanced traffic, and set lookups of the NAT reply sources for the kernel's
    forwarded copy of NAT return traffic (the engine sends the translated one). `fib daddr type !=
    local` keeps replies addressed to the balancer itself, such as health-check answers."""
    ports: dict[tuple[str, str, str], set[int]] = {}
    any_port: set[tuple[str, str, str]] = set()
    for key in keys:
        family = "ip" if isinstance(key.address, IPv4Address) else "ip6"
        group = (family, str(key.address), _PROTO_NAME[key.protocol])
        if key.port == 0:
            any_port.add(group)
        else:
            ports.setdefault(group, set()).add(key.port)
    rules = []
    for family, address, proto in sorted(any_port):
        rules.append(f"    {family} daddr {address} meta l4proto {proto} drop")
    for (family, address, proto), port_set in sorted(ports.items()):
        if (family, address, proto) in any_port:
            continue
        listed = ", ".join(str(p) for p in sorted(port_set))
        rules.append(f"    {family} daddr {address} {proto} dport {{ {listed} }} drop")
    sets, return_rules = _return_sets(returns)
    rules += return_rules
    table = table_name(instance)
    body = "\n".join(rules)
    declared = "".join(f"{declaration}\n" for declaration in sets)
    # "add" then "delete" makes the delete safe when the table does not exist yet; the new table
    # follows in the same transaction, so there is no moment without the rules.
    return (
        f"add table inet {table}\ndelete table inet {table}\n"
        f"table inet {table} {{\n{declared}  chain prerouting {{\n"
        f"    type filter hook prerouting priority raw; policy accept;\n{body}\n  }}\n}}\n"
    )


@dataclass(frozen=True)
class KernelSteal:
    """Installs and removes the drop rules for one instance (in the current network namespace)."""

    instance: str

    def _nft(self, script: str) -> None:
        nft = shutil.which("nft")
        if nft is None:
            raise StealError("the AF_PACKET engine needs nftables (apt-get install nftables)")
        done = subprocess.run([nft, "-f", "-"], input=script, text=True, capture_output=True)
        if done.returncode != 0:
            raise StealError(f"nft failed: {done.stderr.strip()}")

    def install(self, keys: Iterable[ServiceKey], returns: Iterable[ReturnSource] = ()) -> None:
        self._nft(render_ruleset(self.instance, keys, returns))

    def remove(self) -> None:
        table = table_name(self.instance)
        self._nft(f"add table inet {table}\ndelete table inet {table}\n")
