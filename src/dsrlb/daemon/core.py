"""The daemon: the composition root (DESIGN §1).

config -> desired state -> Change list -> engine, re-computed whenever an input changes: a reload, a
health event, an operator's enable/disable/drain, a next hop that resolves or changes, and the
control tick that republishes metric-driven tables (docs/datapath.md §4).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dsrlb import config as configuration
from dsrlb.control.http import HttpApi
from dsrlb.control.server import ControlServer
from dsrlb.daemon.commands import build_registry, metrics_snapshot
from dsrlb.daemon.engines import Engine, make_engine
from dsrlb.daemon.plumbing import Plumbing, plan_addresses
from dsrlb.engine.compile import AdminState, DesiredState, Environment, compile_state, diff
from dsrlb.engine.dataplane import IPNetwork, NextHop
from dsrlb.health.scheduler import HealthScheduler
from dsrlb.health.state import HealthEvent, HealthState, TargetStateChanged
from dsrlb.model import Config, Method
from dsrlb.paths import InstancePaths, instance_paths

log = logging.getLogger("dsrlb.daemon")
T = TypeVar("T")

TICK_SECONDS = 1.0
NEXT_HOP_REFRESH_SECONDS = 5.0
_METRIC_METHODS = (Method.SESSION, Method.BANDWIDTH, Method.AGENT, Method.RNDAGENT)


class ReloadRefused(Exception):
    """A reload whose config does not validate: the running config stays."""


@dataclass
class LiveState:
    """What the daemon knows besides the config; every field feeds `Environment`."""

    next_hops: dict[int, NextHop] = field(default_factory=dict)
    health: dict[int, HealthState] = field(default_factory=dict)
    admin: dict[int, AdminState] = field(default_factory=dict)
    admin_since: dict[int, float] = field(default_factory=dict)
    routes: dict[IPNetwork, NextHop] = field(default_factory=dict)
    bytes_seen: dict[int, tuple[float, int]] = field(default_factory=dict)


class Daemon:
    def __init__(self, config_path: Path, instance: str = "0", engine: str = "auto",
                 xdp_mode: str = "auto", http: tuple[str, int] | None = None) -> None:
        self.config_path = Path(config_path)
        self.instance = instance
        self.paths: InstancePaths = instance_paths(instance)
        self.engine_kind = engine
        self.config: Config = configuration.load(str(self.config_path))
        self.started = time.time()
        self.live = LiveState()
        # pyroute2's synchronous API runs its own event loop, so it cannot be called from ours: all
        # netlink work happens on this one thread (which also keeps the socket single-threaded).
        self._netlink_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsrlb-netlink")
        self.plumbing = self._netlink_thread.submit(Plumbing).result()
        self.engine: Engine = make_engine(engine, instance, xdp_mode)
        self.health = HealthScheduler(self.config)
        registry = build_registry(self)
        self.control = ControlServer(registry, self.paths.control_socket)
        self.http = None if http is None else HttpApi(registry, host=http[0], port=http[1],
                                                      metrics=lambda: metrics_snapshot(self))
        self.desired: DesiredState | None = None
        self._stop = asyncio.Event()
        self._last_next_hops = 0.0
        self.session_events = 0

    # --- lifecycle --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start everything, serve until SIGTERM/SIGINT (SIGHUP reloads), then undo everything."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self._reload_logged()))
        self.paths.run_dir.mkdir(parents=True, exist_ok=True)
        self.paths.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            await self._start()
            self.paths.pidfile.write_text(f"{os.getpid()}\n")
            log.info("dsrlb instance %s running with the %s engine", self.instance, self.engine.name)
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=TICK_SECONDS)
                except TimeoutError:
                    await self.tick()
        finally:
            await self._shutdown()

    def request_stop(self) -> None:
        self._stop.set()

    async def _start(self) -> None:
        plan = plan_addresses(self.config)
        await self._on_netlink(self.plumbing.apply, plan)
        await self._refresh_next_hops()
        self.engine.start(plan.interfaces)
        self.health.subscribe(self._on_health)
        await self.health.start()
        self._republish()
        await self.control.start()
        if self.http is not None:
            try:
                await self.http.start()
                log.info("HTTP API and /metrics on %s:%d", *self.http.address)
            except OSError as exc:  # the balancer runs on without its HTTP API
                log.error("HTTP API not started on %s:%d: %s", self.http.host, self.http.port, exc)
                self.http = None

    async def _shutdown(self) -> None:
        steps = [self.control.stop, self.health.stop] + ([self.http.stop] if self.http else [])
        for step in steps:
            try:
                await step()
            except Exception:
                log.exception("stopping")
        try:
            self.engine.stop()
        except Exception:
            log.exception("stopping the engine")
        try:
            await self._on_netlink(self.plumbing.release)
        except Exception:
            log.exception("removing addresses")
        self._netlink_thread.shutdown(wait=True)
        self.paths.pidfile.unlink(missing_ok=True)

    async def _on_netlink(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._netlink_thread, func, *args)

    # --- inputs -------------------------------------------------------------------------------------

    def _on_health(self, event: HealthEvent) -> None:
        if isinstance(event, TargetStateChanged):
            self.live.health[event.target_id] = event.new
            log.info("target %d %s -> %s: %s", event.target_id, event.old, event.new, event.reason)
            self._republish()
            self.control.publish({"type": "target", "id": event.target_id, "old": str(event.old),
                                  "new": str(event.new), "reason": event.reason, "time": time.time()})
        else:  # the gateway check: shown, announced, and what VRRP tracking will read
            log.info("gateway %s -> %s: %s", event.old, event.new, event.reason)
            self.control.publish({"type": "gateway", "old": str(event.old), "new": str(event.new),
                                  "reason": event.reason, "time": time.time()})

    async def tick(self) -> None:
        # Session events wait for the session sync (not in this version); draining them every tick
        # keeps the reference's list and XDP's ring buffer bounded, and counts them for `show stats`.
        self.session_events += len(self.engine.drain_session_events())
        now = time.monotonic()
        if now - self._last_next_hops >= NEXT_HOP_REFRESH_SECONDS:
            await self._refresh_next_hops()
        self._republish()

    async def _refresh_next_hops(self) -> None:
        self._last_next_hops = time.monotonic()
        targets = [(t.id, t.address) for t in self.config.targets if t.registered and t.address is not None]
        hops = [await self._on_netlink(self.plumbing.next_hop, address) for _, address in targets]
        self.live.next_hops = {tid: hop for (tid, _), hop in zip(targets, hops, strict=True)
                               if hop is not None}
        networks = tuple(net for n in self.config.networks
                         for net in (n.ipv4_network, n.ipv6_network) if net is not None)
        self.live.routes = dict(await self._on_netlink(self.plumbing.return_routes, networks))

    def set_admin(self, target_ids: tuple[int, ...], state: AdminState) -> None:
        for tid in target_ids:
            self.live.admin[tid] = state
            self.live.admin_since[tid] = time.time()
        self._republish()

    async def reload(self, path: Path | None = None) -> Config:
        """Load and apply a new config atomically; a bad one raises ReloadRefused and changes nothing."""
        source = Path(path) if path is not None else self.config_path
        try:
            new = configuration.load(str(source))
        except configuration.ConfigErrors as exc:
            raise ReloadRefused(str(exc)) from exc
        except OSError as exc:
            raise ReloadRefused(f"{source}: {exc.strerror}") from exc
        self.health.reconfigure(new)
        await self._on_netlink(self.plumbing.apply, plan_addresses(new))
        self.config, self.config_path = new, source
        kept = {tid: s for tid, s in self.live.admin.items() if new.target(tid) is not None}
        self.live.admin = kept
        await self._refresh_next_hops()
        self._republish()
        self.control.publish({"type": "reload", "config": str(source), "time": time.time()})
        return new

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
            log.info("reloaded %s", self.config_path)
        except ReloadRefused as exc:
            log.error("reload refused, the running config stays:\n%s", exc)

    # --- output -----------------------------------------------------------------------------------

    def environment(self) -> Environment:
        return Environment(
            next_hops=dict(self.live.next_hops),
            health={tid: s.to_dataplane() for tid, s in self.live.health.items()},
            admin=dict(self.live.admin),
            metrics=self.metrics(),
            routes=dict(self.live.routes),
        )

    def metrics(self) -> Mapping[int, float]:
        """Per-target metric for the metric-driven methods of the services that use them."""
        methods = {s.method for s in self.config.servers if s.registered and s.enabled}
        if not methods & set(_METRIC_METHODS):
            return {}
        if Method.AGENT in methods or Method.RNDAGENT in methods:
            return dict(self.health.loads())
        if Method.BANDWIDTH in methods:
            return self._bandwidth()
        counts: dict[int, float] = {}
        for entry in self.engine.sessions():
            counts[entry.target_id] = counts.get(entry.target_id, 0) + 1
        return {t.id: counts.get(t.id, 0.0) for t in self.config.targets}

    def _bandwidth(self) -> dict[int, float]:
        now = time.monotonic()
        rates: dict[int, float] = {}
        for target in self.config.targets:
            total = self.engine.target_stats(target.id)["bytes"]
            then, before = self.live.bytes_seen.get(target.id, (now, total))
            rates[target.id] = (total - before) / (now - then) if now > then else 0.0
            self.live.bytes_seen[target.id] = (now, total)
        return rates

    def _republish(self) -> None:
        desired = compile_state(self.config, self.environment())
        changes = diff(self.desired, desired)
        if changes:
            self.engine.apply(changes)
            self.engine.steer(desired)
        self.desired = desired


def hostname(config: Config) -> str:
    return config.hostname or socket.gethostname()
