"""The daemon's control commands: BalanceNG's interactive-mode words over the control registry."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsrlb import __version__
from dsrlb.config import write
from dsrlb.config.jsonview import config_to_json
from dsrlb.control.commands import (
    CommandFailed,
    CommandResult,
    Handler,
    Param,
    ParamKind,
    ParsedArgs,
    Registry,
)
from dsrlb.control.metrics import MetricsSnapshot, ServiceCounters, TargetCounters
from dsrlb.control.views import NetworkView, ServerView, SessionView, StatsView, TargetView
from dsrlb.engine.compile import AdminState
from dsrlb.engine.dataplane import TargetState
from dsrlb.health.state import HealthState
from dsrlb.model import Target
from dsrlb.vrrp.machine import State

if TYPE_CHECKING:
    from dsrlb.daemon.core import Daemon

_DROP_REASONS = ("malformed", "fragment", "no_target", "no_route", "drop")
SESSION_ROWS_MAX = 1000


def _ports(ports: Sequence[Any]) -> str:
    return ",".join(str(p) for p in ports) if ports else "any"


@dataclass(frozen=True)
class SessionCounts:
    """Active sessions by target and by service, from one walk of the session table (which for XDP
    is a map iterated from Python: a /metrics scrape must not walk it once per view)."""

    by_target: Mapping[int, int]
    by_service: Mapping[int, int]
    total: int

    @classmethod
    def of(cls, daemon: Daemon) -> SessionCounts:
        by_target: Counter[int] = Counter()
        by_service: Counter[int] = Counter()
        for entry in daemon.engine.sessions():
            by_target[entry.target_id] += 1
            by_service[entry.service_id] += 1
        return cls(by_target, by_service, sum(by_service.values()))


def target_views(daemon: Daemon, counts: SessionCounts | None = None) -> list[TargetView]:
    sessions = (counts or SessionCounts.of(daemon)).by_target
    rows: list[TargetView] = []
    for target in daemon.config.targets:
        if not target.registered:
            continue
        state, since, reason = _target_state(daemon, target)
        counters = daemon.engine.target_stats(target.id)
        health = daemon.health.target(target.id)
        rows.append(TargetView(
            id=target.id, name=target.name, address=str(target.address) if target.address else None,
            port=target.port, state=state, since=since, reason=reason,
            sessions=sessions.get(target.id, 0),
            packets=counters["packets"], bytes=counters["bytes"],
            latency_ms=None if health is None or health.latency is None else health.latency * 1000,
            dsr=target.dsr, weight=target.weight,
            load=None if health is None or health.load is None else round(health.load),
            servers=[s.id for s in daemon.config.servers if target.id in s.targets + s.backup],
        ))
    return rows


def _target_state(daemon: Daemon, target: Target) -> tuple[Any, float | None, str]:
    admin = daemon.live.admin.get(target.id)
    if admin is AdminState.DRAINING:
        return "draining", daemon.live.admin_since.get(target.id), "draining by operator"
    if admin is AdminState.DISABLED or (admin is None and not target.enabled):
        return "disabled", daemon.live.admin_since.get(target.id), "disabled"
    health = daemon.health.target(target.id)
    if daemon.desired is not None:
        spec = daemon.desired.targets.get(target.id)
        if spec is not None and spec.next_hop is None:
            return "down", None, "next hop not resolved (no ARP/ND answer)"
    if health is None:
        return "up", daemon.started, "no checks"
    if health.state is HealthState.UP:
        return "up", health.since_wall, health.reason
    return "down", health.since_wall, health.reason or str(health.state)


def server_views(daemon: Daemon, counts: SessionCounts | None = None) -> list[ServerView]:
    sessions = (counts or SessionCounts.of(daemon)).by_service
    rows: list[ServerView] = []
    for server in daemon.config.servers:
        if not server.registered:
            continue
        counters = daemon.engine.service_stats(server.id)
        up = 0
        if daemon.desired is not None:
            up = sum(1 for tid in server.targets + server.backup
                     if (spec := daemon.desired.targets.get(tid)) is not None
                     and spec.state is TargetState.UP)
        state = "disabled" if not server.enabled else ("up" if up else "down")
        rows.append(ServerView(
            id=server.id, name=server.name, address=str(server.address) if server.address else None,
            ports=_ports(server.ports), protocol=str(server.protocol) if server.protocol else None,
            method=str(server.method), state=state,  # type: ignore[typeddict-item]
            targets=list(server.targets),
            backup=list(server.backup), targets_up=up, sessions=sessions.get(server.id, 0),
            packets=counters["packets"], bytes=counters["bytes"],
        ))
    return rows


def session_views(daemon: Daemon) -> tuple[list[SessionView], int]:
    now_ns = time.monotonic_ns()
    entries = list(daemon.engine.sessions())
    timeouts = {} if daemon.desired is None else {s.id: s.timeout for s in daemon.desired.services.values()}
    rows: list[SessionView] = []
    for entry in entries[:SESSION_ROWS_MAX]:
        idle = max(0.0, (now_ns - entry.last_seen_ns) / 1e9)
        rows.append(SessionView(server=entry.service_id, client=str(entry.client),
                                client_port=entry.client_port, target=entry.target_id, idle_s=idle,
                                expires_s=max(0.0, timeouts.get(entry.service_id, 0) - idle)))
    return rows, len(entries)


def network_views(daemon: Daemon) -> list[NetworkView]:
    rows: list[NetworkView] = []
    for network in daemon.config.networks:
        if not network.registered:
            continue
        names = [i.name or f"interface {i.id}" for iid in network.interfaces
                 if (i := daemon.config.interface(iid)) is not None]
        v4, v6 = network.ipv4_network, network.ipv6_network
        rows.append(NetworkView(
            id=network.id, name=network.name, interfaces=names, addr=str(v4) if v4 else None,
            real=str(network.real) if network.real else None,
            virt=str(network.virt) if network.virt else None,
            addr6=str(v6) if v6 else None, real6=str(network.real6) if network.real6 else None,
            virt6=str(network.virt6) if network.virt6 else None,
            state="up" if network.enabled else "disabled",
        ))
    return rows


def gateway_view(daemon: Daemon) -> dict[str, Any]:
    """The `gateway { ipaddr; ping I,T }` check: its state, since when, why, latency per check."""
    gateway = daemon.config.gateway
    view = daemon.health.gateway()
    if gateway is None or view is None:
        return {"gateway": None}
    address = gateway.ipaddr or gateway.ipaddr6
    return {"gateway": {
        "address": str(address) if address else None, "state": str(view.state), "since": view.since_wall,
        "reason": view.reason, "latency_ms": None if view.latency is None else view.latency * 1000,
        "trackval": gateway.trackval,
        "checks": [{"check": c.label, "state": str(c.state), "reason": c.reason,
                    "latency_ms": None if c.latency is None else c.latency * 1000} for c in view.checks],
    }}


def _gateway_text(data: dict[str, Any]) -> str:
    gateway = data["gateway"]
    if gateway is None:
        return "no gateway configured"
    latency = "" if gateway["latency_ms"] is None else f", {gateway['latency_ms']:.1f} ms"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(gateway["since"]))
    lines = [f"gateway {gateway['address']}: {gateway['state']} since {since}{latency}"
             + (f" ({gateway['reason']})" if gateway["reason"] else "")]
    lines += [f"  {c['check']}: {c['state']} {c['reason']}".rstrip() for c in gateway["checks"]]
    return "\n".join(lines)


def _vrrp_text(data: dict[str, Any]) -> str:
    vrrp = data["vrrp"]
    if vrrp is None:
        return "no vrrp configured: this balancer holds its shared addresses alone"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(vrrp["since"]))
    priority = str(vrrp["priority"]) + (f" (configured {vrrp['configured_priority']})"
                                        if vrrp["priority"] != vrrp["configured_priority"] else "")
    counters = vrrp["counters"]
    drops = {k.removeprefix("drop_"): v for k, v in counters.items() if k.startswith("drop_") and v}
    return "\n".join([
        f"vrrp {vrrp['vrid']} on {vrrp['interface']} (VRRPv{vrrp['version']} from {vrrp['address']}): "
        f"{vrrp['state']} since {since} ({vrrp['reason']})",
        f"  priority {priority}, preempt {'on' if vrrp['preempt'] else 'off'}, "
        f"advertisements every {vrrp['advert_interval']:g} s, master {vrrp['master'] or 'unknown'}",
        f"  shared addresses: {', '.join(vrrp['addresses'])}",
        f"  sent {counters['tx']}, received {counters['rx']}, dropped "
        + (", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "none"),
    ])


def stats_view(daemon: Daemon, counts: SessionCounts | None = None) -> StatsView:
    counters = dict(daemon.engine.stats())
    counters.update({f"health_{k}": v for k, v in daemon.health.counters().items()})
    counters["session_events"] = daemon.session_events
    counters["republishes"] = daemon.republishes  # recompiles of the desired state (health bursts coalesced)
    return StatsView(engine=daemon.engine.name, uptime_s=time.time() - daemon.started,
                     sessions=(counts or SessionCounts.of(daemon)).total, counters=counters,
                     drops={k: counters.get(k, 0) for k in _DROP_REASONS})


def build_registry(daemon: Daemon) -> Registry:
    from dsrlb.daemon.core import ReloadRefused, hostname

    registry = Registry(info=lambda: {"hostname": hostname(daemon.config), "instance": daemon.instance,
                                      "version": __version__, "engine": daemon.engine.name,
                                      "config": str(daemon.config_path)})

    def command(words: str, help: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        """registry.command, with a pending (coalesced) republish flushed before the handler runs:
        what a command shows, and the moment it answers, follow the data path (core.py)."""
        def register(handler: Handler) -> Handler:
            def flushed(args: ParsedArgs) -> CommandResult | Awaitable[CommandResult]:
                daemon.flush_republish()
                return handler(args)

            registry.command(words, help, **kwargs)(flushed)
            return handler
        return register

    ids = (Param("ids", ParamKind.IDS, help="target ids: 1,2 or 1-3"),)

    def known(args: ParsedArgs) -> tuple[int, ...]:
        wanted = args.ids("ids")
        missing = [i for i in wanted if daemon.config.target(i) is None]
        if missing:
            raise CommandFailed(f"no such target: {', '.join(map(str, missing))}")
        return wanted

    def admin(state: AdminState) -> Any:
        def handler(args: ParsedArgs) -> CommandResult:
            chosen = known(args)
            daemon.set_admin(chosen, state)
            return CommandResult({"targets": list(chosen), "admin": str(state)},
                                 f"target(s) {','.join(map(str, chosen))} {state}")
        return handler

    command("show servers", "virtual servers and their state")(
        lambda a: CommandResult({"servers": server_views(daemon)}))
    command("show targets", "targets: state, since, why, sessions, counters")(
        lambda a: CommandResult({"targets": target_views(daemon)}))

    def show_sessions(args: ParsedArgs) -> CommandResult:
        rows, total = session_views(daemon)
        return CommandResult({"sessions": rows, "total": total})

    command("show sessions", "the session table (first 1000 rows)")(show_sessions)
    command("show networks", "networks and their addresses")(
        lambda a: CommandResult({"networks": network_views(daemon)}))

    def show_gateway(args: ParsedArgs) -> CommandResult:
        data = gateway_view(daemon)
        return CommandResult(data, _gateway_text(data))

    command("show gateway", "the gateway check: state, since, why, latency")(show_gateway)

    def show_vrrp(args: ParsedArgs) -> CommandResult:
        data = {"vrrp": daemon.vrrp.view() if daemon.vrrp is not None else None}
        return CommandResult(data, _vrrp_text(data))

    command("show vrrp", "the VRRP role: state, priority, master, counters")(show_vrrp)
    command("show sync", "session sync with the HA peer: peer, liveness, counters")(
        lambda a: CommandResult({"sync": daemon.sync.view() if daemon.sync is not None else None}))
    command("show stats", "engine counters and drops by reason")(
        lambda a: CommandResult({"stats": stats_view(daemon)}))
    command("show config", "the running configuration")(
        lambda a: CommandResult(config_to_json(daemon.config), write(daemon.config)))
    command("enable target", "put targets back in service", params=ids,
            aliases=("enable targets",), action=True)(admin(AdminState.ENABLED))
    command("disable target", "no new sessions; established ones finish", params=ids,
            aliases=("disable targets",), action=True)(admin(AdminState.DISABLED))
    command("drain target", "like disable, shown as draining", params=ids,
            aliases=("drain targets",), action=True)(admin(AdminState.DRAINING))

    async def reload(args: ParsedArgs) -> CommandResult:
        path = args.word("file")
        try:
            await daemon.reload(None if path is None else Path(path))
        except ReloadRefused as exc:
            raise CommandFailed(f"reload refused, the running config stays:\n{exc}") from None
        return CommandResult({"reloaded": str(daemon.config_path)}, f"reloaded {daemon.config_path}")

    command("reload", "re-read the config file (atomic; a bad file changes nothing)",
            params=(Param("file", ParamKind.WORD, required=False),), action=True)(reload)

    def shutdown(args: ParsedArgs) -> CommandResult:
        daemon.request_stop()
        return CommandResult({"stopping": True}, "stopping")

    command("shutdown", "stop the daemon (removes what it added)", action=True)(shutdown)
    return registry


def metrics_snapshot(daemon: Daemon) -> MetricsSnapshot:
    """What one /metrics scrape shows, read from the engine and health at scrape time."""
    from dsrlb.daemon.core import hostname

    daemon.flush_republish()
    counts = SessionCounts.of(daemon)
    targets = tuple(
        TargetCounters(id=row["id"], name=row["name"], address=row["address"] or "", state=row["state"],
                       packets=row["packets"], bytes=row["bytes"],
                       sessions_created=daemon.engine.target_stats(row["id"])["sessions_new"],
                       sessions_active=row["sessions"], latency_ms=row["latency_ms"])
        for row in target_views(daemon, counts))
    services = tuple(
        ServiceCounters(id=row["id"], name=row["name"], address=row["address"] or "", ports=row["ports"],
                        packets=row["packets"], bytes=row["bytes"],
                        sessions_created=daemon.engine.service_stats(row["id"])["sessions_new"],
                        sessions_active=row["sessions"])
        for row in server_views(daemon, counts))
    stats = stats_view(daemon, counts)
    return MetricsSnapshot(hostname=hostname(daemon.config), engine=daemon.engine.name, services=services,
                           targets=targets, engine_counters=stats["counters"], drops=stats["drops"],
                           uptime_s=stats["uptime_s"],
                           vrrp_master=None if daemon.vrrp is None else daemon.vrrp.state is State.MASTER)
