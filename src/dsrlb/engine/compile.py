"""From a Config and the live environment to the data path's desired state, and the changes between two.

`compile_state(config, environment)` is pure: the same inputs give the same `DesiredState`.
`diff(old, new)` emits only what changed, in an order that never leaves the data path pointing at
something it has not been told about (targets before the services and tables that use them,
removals last), so a reload that keeps a service keeps its sessions.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from dsrlb.engine.dataplane import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    Change,
    IPAddress,
    IPNetwork,
    NextHop,
    RemoveService,
    RemoveTarget,
    ServiceKey,
    ServiceSpec,
    SetLocalAddress,
    SetNextHop,
    SetRoute,
    SetTable,
    SetTargetState,
    TargetSpec,
    TargetState,
    UpsertService,
    UpsertTarget,
)
from dsrlb.engine.tables import Candidate, build_table
from dsrlb.model import Config, Protocol, ReturnMatch, Server, Target

# Session idle timeouts when neither the server's `timeout` nor a `set` key gives one. The BalanceNG
# documentation at hand states no defaults for its *sessiontimeout keys, so these stay LVS's.
DEFAULT_TIMEOUT_TCP = 900  # s, LVS's established-TCP default
DEFAULT_TIMEOUT_UDP = 300  # s, LVS's UDP default


class AdminState(enum.StrEnum):
    """What the operator said about a target (config `enable`/`disable`, or the control socket)."""

    ENABLED = "enabled"
    DISABLED = "disabled"
    DRAINING = "draining"


@dataclass(frozen=True)
class Environment:
    """Live inputs besides the config. Missing entries: health UP, admin from the config, no next
    hop (so DOWN), no metric. `local_addresses` None means: the config's `real`/`virt` addresses."""

    next_hops: Mapping[int, NextHop] = field(default_factory=dict)
    # What health checks allow, as the data path sees it (health.state.HealthState.to_dataplane()):
    # UP, NO_NEW (quiesced, or no verdict yet) or DOWN. Missing: UP.
    health: Mapping[int, TargetState] = field(default_factory=dict)
    admin: Mapping[int, AdminState] = field(default_factory=dict)
    metrics: Mapping[int, float] = field(default_factory=dict)
    routes: Mapping[IPNetwork, NextHop] = field(default_factory=dict)
    local_addresses: frozenset[IPAddress] | None = None


@dataclass(frozen=True)
class DesiredState:
    """Everything the data path should hold, keyed by id (services, targets, tables) or value."""

    services: Mapping[int, ServiceSpec]
    targets: Mapping[int, TargetSpec]
    tables: Mapping[int, tuple[int, ...]]
    routes: Mapping[IPNetwork, NextHop]
    local_addresses: frozenset[IPAddress]
    backup_in_use: Mapping[int, bool] = field(default_factory=dict)
    # Every target of a service, primary and backup, in or out of its table right now: a target the
    # table leaves out (down, draining, busier under `method session`) may still hold sessions whose
    # NAT replies must be translated (the AF_PACKET engine keeps the kernel's copy of them away).
    members: Mapping[int, tuple[int, ...]] = field(default_factory=dict)


def service_timeout(server: Server, config: Config) -> int:
    """A server's session idle timeout: its own `timeout`; else `set tcpsessiontimeout` /
    `udpsessiontimeout` by its protocol; else `set sessiontimeout`; else the per-protocol default.

    A server without `protocol` serves TCP and UDP with one session (and the data path keeps one timeout
    per service), so it takes the TCP timeout: a UDP-length idle limit would cut quiet TCP connections,
    while a TCP-length one only keeps idle UDP sessions longer.
    """
    if server.timeout is not None:
        return server.timeout
    if server.protocol is Protocol.UDP:
        key, default = "udpsessiontimeout", DEFAULT_TIMEOUT_UDP
    else:
        key, default = "tcpsessiontimeout", DEFAULT_TIMEOUT_TCP
    # Validation (config/validate.py) has checked that these are whole numbers in range.
    value = config.setting(key)
    if value is None:
        value = config.setting("sessiontimeout")
    return default if value is None else int(value)


def service_keys(server: Server) -> tuple[ServiceKey, ...]:
    """One key per (protocol, port): ranges expanded, no port = any port (0), no protocol = both."""
    if server.address is None:
        return ()
    if server.protocol is None:
        protocols: tuple[int, ...] = (IPPROTO_TCP, IPPROTO_UDP)
    else:
        protocols = (IPPROTO_TCP if server.protocol is Protocol.TCP else IPPROTO_UDP,)
    ports = sorted({p for r in server.ports for p in range(r.first, r.last + 1)}) or [0]
    return tuple(ServiceKey(server.address, proto, port) for proto in protocols for port in ports)


def target_state(target: Target, environment: Environment) -> TargetState:
    health = environment.health.get(target.id, TargetState.UP)
    if health is TargetState.DOWN or environment.next_hops.get(target.id) is None:
        return TargetState.DOWN
    admin = environment.admin.get(
        target.id, AdminState.ENABLED if target.enabled else AdminState.DISABLED
    )
    if admin is not AdminState.ENABLED or health is TargetState.NO_NEW:
        return TargetState.NO_NEW
    return TargetState.UP


def target_spec(target: Target, environment: Environment) -> TargetSpec | None:
    if target.address is None:
        return None
    return TargetSpec(
        id=target.id,
        address=target.address,
        port=target.port,
        dsr=target.dsr,
        return_match=target.sessionid or ReturnMatch.DST_PORT,
        weight=target.weight,
        state=target_state(target, environment),
        next_hop=environment.next_hops.get(target.id),
    )


def config_local_addresses(config: Config) -> frozenset[IPAddress]:
    found: set[IPAddress] = set()
    for network in config.networks:
        for address in (network.real, network.virt, network.real6, network.virt6):
            if address is not None:
                found.add(address)
    return frozenset(found)


def compile_state(config: Config, environment: Environment) -> DesiredState:
    targets: dict[int, TargetSpec] = {}
    for target in config.targets:
        if target.registered:
            spec = target_spec(target, environment)
            if spec is not None:
                targets[target.id] = spec
    services: dict[int, ServiceSpec] = {}
    tables: dict[int, tuple[int, ...]] = {}
    backup_in_use: dict[int, bool] = {}
    members: dict[int, tuple[int, ...]] = {}
    for server in config.servers:
        if not (server.registered and server.enabled) or server.address is None:
            continue
        services[server.id] = ServiceSpec(
            id=server.id,
            keys=service_keys(server),
            method=server.method,
            session_key=server.sessionid,
            timeout=service_timeout(server, config),
        )
        built = build_table(
            server.method,
            [_candidate(targets[t], environment) for t in server.targets if t in targets],
            [_candidate(targets[t], environment) for t in server.backup if t in targets],
        )
        tables[server.id] = built.table
        backup_in_use[server.id] = built.backup_in_use
        listed = dict.fromkeys((*server.targets, *server.backup))  # in order, once each
        members[server.id] = tuple(t for t in listed if t in targets)
    local = environment.local_addresses
    return DesiredState(
        services=services,
        targets=targets,
        tables=tables,
        routes=dict(environment.routes),
        local_addresses=config_local_addresses(config) if local is None else local,
        backup_in_use=backup_in_use,
        members=members,
    )


def _candidate(spec: TargetSpec, environment: Environment) -> Candidate:
    up = spec.state is TargetState.UP and spec.next_hop is not None
    return Candidate(spec.id, spec.weight, up, environment.metrics.get(spec.id))


def _prefix_order(prefix: IPNetwork) -> tuple[int, int, int]:
    return (prefix.version, int(prefix.network_address), prefix.prefixlen)


def _address_order(address: IPAddress) -> tuple[int, int]:
    return (4 if isinstance(address, IPv4Address) else 6, int(address))


def diff(old: DesiredState | None, new: DesiredState) -> list[Change]:
    """The changes that turn a data path holding `old` (None: empty) into one holding `new`."""
    old_services: Mapping[int, ServiceSpec] = old.services if old else {}
    old_targets: Mapping[int, TargetSpec] = old.targets if old else {}
    old_tables: Mapping[int, tuple[int, ...]] = old.tables if old else {}
    old_routes: Mapping[IPNetwork, NextHop] = old.routes if old else {}
    old_local: frozenset[IPAddress] = old.local_addresses if old else frozenset()
    changes: list[Change] = []
    for address in sorted(new.local_addresses - old_local, key=_address_order):
        changes.append(SetLocalAddress(address, True))
    for tid in sorted(new.targets):
        spec = new.targets[tid]
        before = old_targets.get(tid)
        if before == spec:
            continue
        if before is None or _without_live(before) != _without_live(spec):
            changes.append(UpsertTarget(spec))
            continue
        if before.next_hop != spec.next_hop:
            changes.append(SetNextHop(tid, spec.next_hop))
        if before.state != spec.state:
            changes.append(SetTargetState(tid, spec.state))
    for sid in sorted(new.services):
        if old_services.get(sid) != new.services[sid]:
            changes.append(UpsertService(new.services[sid]))
    for sid in sorted(new.tables):
        if sid not in old_tables or old_tables[sid] != new.tables[sid]:
            changes.append(SetTable(sid, new.tables[sid]))
    for prefix in sorted(new.routes, key=_prefix_order):
        if old_routes.get(prefix) != new.routes[prefix]:
            changes.append(SetRoute(prefix, new.routes[prefix]))
    for sid in sorted(set(old_services) - set(new.services)):
        changes.append(RemoveService(sid))
    for tid in sorted(set(old_targets) - set(new.targets)):
        changes.append(RemoveTarget(tid))
    for prefix in sorted(set(old_routes) - set(new.routes), key=_prefix_order):
        changes.append(SetRoute(prefix, None))
    for address in sorted(old_local - new.local_addresses, key=_address_order):
        changes.append(SetLocalAddress(address, False))
    return changes


def _without_live(spec: TargetSpec) -> TargetSpec:
    """A target spec with the fields that have their own Change (state, next hop) neutralised."""
    return TargetSpec(
        spec.id, spec.address, spec.port, spec.dsr, spec.return_match, spec.weight, TargetState.UP, None
    )
