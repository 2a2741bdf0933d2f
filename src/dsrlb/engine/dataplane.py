"""The contract between the control plane and the three data-path executors (reference, XDP, AF_PACKET).

The control plane compiles a `Config` plus live state (health, next-hop MACs, metrics) into a list of
`Change`s; every executor applies the same list and must then give the same `Result` for the same
frame (the reference is the oracle; docs/datapath.md states the semantics in full).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Protocol as TypingProtocol

from dsrlb.model import Method, ReturnMatch, SessionKey

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

IPPROTO_TCP = 6
IPPROTO_UDP = 17


class Verdict(enum.IntEnum):
    """XDP action numbers, so the reference and the BPF program share one encoding."""

    ABORTED = 0
    DROP = 1
    PASS = 2
    TX = 3
    REDIRECT = 4


class TargetState(enum.IntEnum):
    """What the data path may do with a target.

    UP: selectable for new sessions; sessions stick.
    NO_NEW: not selectable, existing sessions stick (disabled, draining, quiesced by health).
    DOWN: not selectable, and a session that hits it is moved to a new target on its next packet.
    """

    UP = 0
    NO_NEW = 1
    DOWN = 2


@dataclass(frozen=True)
class Result:
    verdict: Verdict
    frame: bytes  # the frame as it leaves (equal to the input for PASS/DROP)
    ifindex: int | None = None  # egress interface for REDIRECT (and TX: the ingress one)


@dataclass(frozen=True)
class NextHop:
    """Where a rewritten frame goes: egress interface and the two MAC addresses to write."""

    ifindex: int
    src_mac: bytes  # 6 bytes: the balancer's MAC on the egress interface
    dst_mac: bytes  # 6 bytes: the neighbour's MAC


@dataclass(frozen=True)
class ServiceKey:
    """One (VIP, protocol, port) a service answers on; port 0 = any port."""

    address: IPAddress
    protocol: int  # IPPROTO_TCP / IPPROTO_UDP
    port: int


@dataclass(frozen=True)
class ServiceSpec:
    """A balanced service (one registered, enabled server). `keys` expands ports and ranges."""

    id: int
    keys: tuple[ServiceKey, ...]
    method: Method
    session_key: SessionKey
    timeout: int  # idle timeout of its sessions, seconds


@dataclass(frozen=True)
class TargetSpec:
    """A target as the data path sees it. `port` None keeps the client's destination port."""

    id: int
    address: IPAddress
    port: int | None
    dsr: bool
    return_match: ReturnMatch  # NAT return matching (default dst+port)
    weight: int
    state: TargetState
    next_hop: NextHop | None  # None: not resolved yet -> such a target is treated as DOWN


# --- changes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpsertService:
    spec: ServiceSpec


@dataclass(frozen=True)
class RemoveService:
    service_id: int


@dataclass(frozen=True)
class UpsertTarget:
    spec: TargetSpec


@dataclass(frozen=True)
class RemoveTarget:
    target_id: int


@dataclass(frozen=True)
class SetTargetState:
    target_id: int
    state: TargetState


@dataclass(frozen=True)
class SetNextHop:
    target_id: int
    next_hop: NextHop | None


@dataclass(frozen=True)
class SetTable:
    """The selection table of a service: target ids the data path indexes (docs/datapath.md §4).

    The control plane already chose primaries or backups and left out targets that are not UP.
    An empty table means: no target, count `no_target` and drop new sessions.
    """

    service_id: int
    table: tuple[int, ...]


@dataclass(frozen=True)
class SetRoute:
    """A route for NAT return traffic towards clients: longest prefix wins; next_hop None removes it."""

    prefix: IPNetwork
    next_hop: NextHop | None


@dataclass(frozen=True)
class SetLocalAddress:
    """A balancer address whose ICMP/ARP/other traffic must always pass to the kernel (real, virt)."""

    address: IPAddress
    present: bool


Change = (
    UpsertService | RemoveService | UpsertTarget | RemoveTarget | SetTargetState | SetNextHop | SetTable
    | SetRoute | SetLocalAddress
)


@dataclass(frozen=True)
class SessionEntry:
    """One session as both engines expose it, so tests compare session effects packet by packet."""

    service_id: int
    client: IPAddress
    client_port: int  # 0 when the session key is `src`
    target_id: int
    last_seen_ns: int


class Dataplane(TypingProtocol):
    """What every executor implements. `now_ns` is monotonic nanoseconds (XDP: bpf_ktime_get_coarse_ns)."""

    def apply(self, changes: Sequence[Change]) -> None: ...

    def run(self, frame: bytes, ingress_ifindex: int, now_ns: int) -> Result: ...

    def stats(self) -> Mapping[str, int]: ...

    def sessions(self) -> Sequence[SessionEntry]: ...

    def drain_session_events(self) -> list[SessionEntry]:
        """New and moved sessions since the last call (what session sync replicates)."""
        ...

    def install_sessions(self, entries: Sequence[SessionEntry]) -> int:
        """Sessions learnt from the peer balancer (session sync). Each replaces the session of its key
        only when it is newer (a later `last_seen_ns`); one of an unknown service or target is skipped.
        Installed sessions are no session events (they would echo back to the peer). The count
        installed."""
        ...
