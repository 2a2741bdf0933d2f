"""The daemon: the composition root (DESIGN §1).

config -> desired state -> Change list -> engine, re-computed whenever an input changes: a reload, a
health event, an operator's enable/disable/drain, a next hop that resolves or changes, and the
control tick that republishes metric-driven tables (docs/datapath.md §4).

Health events are coalesced: each marks the state dirty, and one republish (a recompile of the
whole desired state: tens of milliseconds with 10,000 targets) serves every event of a burst. It
runs on the next loop pass, or, when the last one was recent, `republish_gap()` after it (3x the
cost of a republish, 0.05-0.5 s), far inside a probe interval. A target event is published on the
control socket only after the republish that carried it, and every control command flushes a
pending republish before it answers, so what a command or an event says the data path has already
got.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import threading
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
from dsrlb.daemon.plumbing import AddressPlan, Plumbing, plan_addresses
from dsrlb.daemon.vrrp_role import HaConfigError, VrrpPlan, VrrpRole, plan_vrrp
from dsrlb.engine.compile import AdminState, DesiredState, Environment, compile_state, diff
from dsrlb.engine.dataplane import IPNetwork, NextHop, SessionEntry
from dsrlb.health.scheduler import HealthConfigError, HealthScheduler, agent_secret
from dsrlb.health.state import HealthEvent, HealthState, TargetStateChanged
from dsrlb.model import Config, Method
from dsrlb.paths import InstancePaths, instance_paths
from dsrlb.sync.driver import SyncConfigError, SyncDriver, plan_sync
from dsrlb.sync.peer import REFRESH_SECONDS, Received
from dsrlb.vrrp.driver import VrrpDriver
from dsrlb.vrrp.machine import Event as VrrpEvent
from dsrlb.vrrp.machine import State as VrrpState
from dsrlb.vrrp.machine import VrrpRouter

log = logging.getLogger("dsrlb.daemon")
T = TypeVar("T")

TICK_SECONDS = 1.0
NEXT_HOP_REFRESH_SECONDS = 5.0
_METRIC_METHODS = (Method.SESSION, Method.BANDWIDTH, Method.AGENT, Method.RNDAGENT)
# Coalesced republishes (module docstring) are at least this far apart, and at least
# REPUBLISH_GAP_FACTOR times the last one's cost: a burst of events spends at most about a quarter
# of the event loop on recompiling. Never more than REPUBLISH_MAX_GAP, which bounds how late a
# health change reaches the data path (probe intervals are whole seconds).
REPUBLISH_MIN_GAP = 0.05
REPUBLISH_GAP_FACTOR = 3.0
REPUBLISH_MAX_GAP = 0.5


# Each health probe in flight holds a socket, and the scheduler runs up to half the soft limit at once
# (health/scheduler.py default_concurrency): Linux's default soft limit of 1024 would cap a daemon with
# thousands of targets at 512 concurrent probes. Raise it towards the hard limit (the unit file sets
# LimitNOFILE), as keepalived and other network daemons do.
WANTED_OPEN_FILES = 1 << 17


def raise_open_files_limit(wanted: int = WANTED_OPEN_FILES) -> int:
    """Raise the soft RLIMIT_NOFILE to min(wanted, hard); never lower it. The soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit to %d: %s", target, exc)
    return soft


class ReloadRefused(Exception):
    """A reload that cannot be applied (a config that does not validate, an unreadable agent secret,
    changed interfaces, a netlink failure): the running config, addresses and health checks stay."""


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
                 xdp_mode: str = "auto", http: tuple[str, int] | None = None, *,
                 plumbing: Plumbing | None = None, engine_impl: Engine | None = None) -> None:
        """`plumbing` and `engine_impl` replace the netlink side and the executor (tests)."""
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
        self.plumbing = plumbing if plumbing is not None else self._netlink_thread.submit(Plumbing).result()
        self.engine: Engine = (engine_impl if engine_impl is not None
                               else make_engine(engine, instance, xdp_mode, self.config))
        raise_open_files_limit()  # before the scheduler sizes its concurrency from it
        self.health = HealthScheduler(self.config)
        registry = build_registry(self)
        self.control = ControlServer(registry, self.paths.control_socket)
        self.http = None if http is None else HttpApi(registry, host=http[0], port=http[1],
                                                      metrics=lambda: metrics_snapshot(self))
        self.desired: DesiredState | None = None
        # VRRP (daemon/vrrp_role.py): without a vrrp block the balancer holds the shared addresses
        # (virt, virt6, VIPs) for good; with one, only while it is master.
        self.vrrp: VrrpRole | None = None
        self.sync: SyncDriver | None = None  # session sync with the HA peer (sync/)
        self._last_sync_refresh = 0.0
        self._sync_walk: asyncio.Task[None] | None = None  # a refresh or resync walking the table
        self._resync_pending = False
        self.holds_virtual = True
        self._address_lock = asyncio.Lock()  # a role change and a reload move addresses one at a time
        self._stop = asyncio.Event()
        # The same, for the netlink thread: a refresh pass looks at it between chunks of targets.
        self._halt = threading.Event()
        self._reload_lock = asyncio.Lock()  # SIGHUP and `reload` commands one after the other
        self._last_next_hops = 0.0
        self.session_events = 0
        self._served: frozenset[str] | None = None  # the interfaces the engine was started on
        # coalesced republishing (module docstring)
        self._republish_handle: asyncio.TimerHandle | None = None
        self._republished_at = -float("inf")  # time.monotonic() at the end of the last republish
        self._republish_cost = 0.0  # seconds the last republish took
        self._held_events: list[dict[str, Any]] = []  # target events waiting for their republish
        self._closing = False
        self.republishes = 0

    # --- lifecycle --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start everything, serve until SIGTERM/SIGINT (SIGHUP reloads), then undo everything."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
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
        self._halt.set()
        self._stop.set()

    async def _start(self) -> None:
        vrrp_plan = await self._vrrp_plan(self.config)
        self.holds_virtual = vrrp_plan is None
        plan = plan_addresses(self.config, self.holds_virtual)
        await self._on_netlink(self.plumbing.apply, plan)
        await self._refresh_next_hops()
        self.engine.start(plan.interfaces)
        self._served = frozenset(plan.interfaces)
        self.health.subscribe(self._on_health)
        await self.health.start()
        self._republish()
        try:
            sync_plan = plan_sync(self.config)
        except SyncConfigError as exc:
            raise HaConfigError(str(exc)) from exc
        if sync_plan is not None:
            self.sync = SyncDriver(sync_plan, self._on_synced)
            try:
                await self.sync.start()
            except OSError as exc:
                raise HaConfigError(str(exc.strerror or exc)) from exc
            self._last_sync_refresh = time.monotonic()
        if vrrp_plan is not None:
            self.vrrp = VrrpRole(vrrp_plan, self._on_vrrp_role, self.control.publish, _vrrp_driver)
            await self.vrrp.start()
        await self.control.start()
        if self.http is not None:
            try:
                await self.http.start()
                log.info("HTTP API and /metrics on %s:%d", *self.http.address)
            except OSError as exc:  # the balancer runs on without its HTTP API
                log.error("HTTP API not started on %s:%d: %s", self.http.host, self.http.port, exc)
                self.http = None

    async def _shutdown(self) -> None:
        self._closing = True
        self._halt.set()  # a refresh pass still on the netlink thread ends at its next chunk
        if self._republish_handle is not None:
            self._republish_handle.cancel()
            self._republish_handle = None
        if self.vrrp is not None:  # resign first: the backup takes over after Skew_Time, not 3 intervals
            try:
                await self.vrrp.stop()
                await self.vrrp.settled()
            except Exception:
                log.exception("stopping VRRP")
        if self._sync_walk is not None:
            self._sync_walk.cancel()
        steps = [self.control.stop, self.health.stop] + ([self.http.stop] if self.http else []) + (
            [self.sync.stop] if self.sync else [])
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
            # published by the republish that carries the change to the data path
            self._held_events.append({"type": "target", "id": event.target_id, "old": str(event.old),
                                      "new": str(event.new), "reason": event.reason, "time": time.time()})
            self._schedule_republish()
        else:  # the gateway check: shown, announced, and read by VRRP tracking on the next tick
            log.info("gateway %s -> %s: %s", event.old, event.new, event.reason)
            self.control.publish({"type": "gateway", "old": str(event.old), "new": str(event.new),
                                  "reason": event.reason, "time": time.time()})

    async def _vrrp_plan(self, config: Config) -> VrrpPlan | None:
        if config.vrrp is None:
            return None
        return await self._on_netlink(plan_vrrp, config, self.plumbing.link_local)

    async def _on_vrrp_role(self, master: bool) -> None:
        """Mastership changed: the master holds the shared addresses and announces them (gratuitous
        ARP, unsolicited NA: RFC 5798 §6.4.1), a backup removes them (DESIGN §1)."""
        async with self._address_lock:
            if self._closing:
                return
            self.holds_virtual = master
            plan = plan_addresses(self.config, master)
            await self._on_netlink(self.plumbing.apply, plan)
            if master:
                own = {a.ip for _, a in plan_addresses(self.config, False).addresses}
                await self._on_netlink(self.plumbing.announce, {a.ip for _, a in plan.addresses} - own)

    async def _track(self) -> None:
        """VRRP tracking: tracked links down and the gateway check lower the priority."""
        if self.vrrp is None:
            return
        plan = self.vrrp.plan
        if not plan.tracked_links and not plan.gateway_trackval:
            return
        down = await self._on_netlink(self.plumbing.links_down, [name for name, _ in plan.tracked_links])
        gateway = self.health.gateway()
        self.vrrp.track(down, gateway is not None and gateway.state is HealthState.DOWN)

    def _on_synced(self, received: Received) -> None:
        """Sessions from the HA peer go into the engine; a peer that (re)started gets our table."""
        if received.sessions:
            self.engine.install_sessions(received.sessions)
        if received.resync and self.sync is not None and self.sync.plan.autoresync:
            self._resync_pending = True
            self._walk_for_sync(None)

    def _sync_sessions(self, events: list[SessionEntry], now: float) -> None:
        """New and moved sessions to the peer at once; every REFRESH_SECONDS the ones that saw
        traffic since the last refresh, so the peer's copies of live sessions do not idle out."""
        if self.sync is None:
            return
        self.sync.send_sessions(events)
        if now - self._last_sync_refresh >= REFRESH_SECONDS and self._sync_walk is None:
            window = int((now - self._last_sync_refresh + 1.0) * 1e9)
            self._last_sync_refresh = now
            # A VRRP backup sees no traffic: what looks fresh in its table is what the master sent it,
            # and sending that back would double the sync traffic for nothing.
            if self.vrrp is None or self.vrrp.state is VrrpState.MASTER:
                self._walk_for_sync(window)

    def _walk_for_sync(self, window_ns: int | None) -> None:
        """Send the sessions idle for at most `window_ns` (None: all, a resync) to the peer. The walk
        of the session table (2-3 us a session from XDP's maps) runs on a worker thread and the
        sending in slices, so a table of a million sessions never stalls the event loop."""
        if self._sync_walk is not None or self.sync is None or self._closing:
            return  # the running walk starts the pending resync when it ends
        sync = self.sync
        if window_ns is None:
            self._resync_pending = False

        def select() -> list[SessionEntry]:
            sessions = self.engine.sessions()
            if window_ns is None:
                return list(sessions)
            now_ns = time.monotonic_ns()
            return [e for e in sessions if now_ns - e.last_seen_ns <= window_ns]

        async def walk() -> None:
            await sync.send_sessions_paced(await asyncio.to_thread(select))

        def done(task: asyncio.Task[None]) -> None:
            self._sync_walk = None
            if not task.cancelled() and task.exception() is not None:
                log.error("session sync: sending the session table: %s", task.exception())
            if self._resync_pending:
                self._walk_for_sync(None)

        self._sync_walk = asyncio.get_running_loop().create_task(walk())
        self._sync_walk.add_done_callback(done)

    async def tick(self) -> None:
        # Draining the session events every tick keeps the reference's list and XDP's ring buffer
        # bounded; they go to the HA peer (session sync) and are counted for `show stats`.
        events = self.engine.drain_session_events()
        self.session_events += len(events)
        now = time.monotonic()
        self._sync_sessions(events, now)
        if now - self._last_next_hops >= NEXT_HOP_REFRESH_SECONDS:
            await self._refresh_next_hops()
        await self._track()
        self._republish()

    async def _refresh_next_hops(self) -> None:
        """Every target's next hop and the NAT return routes, from one snapshot of the kernel
        (Plumbing.refresh). A stopping daemon abandons the pass within a chunk of targets (or a
        neighbour poll), and what the daemon knew stays."""
        self._last_next_hops = time.monotonic()
        targets = [(t.id, t.address) for t in self.config.targets if t.registered and t.address is not None]
        networks = tuple(net for n in self.config.networks
                         for net in (n.ipv4_network, n.ipv6_network) if net is not None)
        done = await self._on_netlink(self.plumbing.refresh, [address for _, address in targets], networks,
                                      self._halt.is_set)
        if done is None:
            return
        self.live.next_hops = {tid: hop for tid, address in targets
                               if (hop := done.next_hops.get(address)) is not None}
        self.live.routes = dict(done.routes)

    def set_admin(self, target_ids: tuple[int, ...], state: AdminState) -> None:
        for tid in target_ids:
            self.live.admin[tid] = state
            self.live.admin_since[tid] = time.time()
        self._republish()

    async def reload(self, path: Path | None = None) -> Config:
        """Load and apply a new config; one that cannot be applied raises ReloadRefused and leaves the
        running config, the kernel's addresses and routes, and the health checks as they were.

        The checks that need no change come first (the config, the agent secret, the interfaces the
        engine serves); then the network side (undone by Plumbing itself when it fails half way), then
        the health checks (the network side is put back when they fail), then the data path."""
        async with self._reload_lock:
            return await self._reload(Path(path) if path is not None else self.config_path)

    async def _reload(self, source: Path) -> Config:
        try:
            new = configuration.load(str(source))
        except configuration.ConfigErrors as exc:
            raise ReloadRefused(str(exc)) from exc
        except OSError as exc:
            raise ReloadRefused(f"{source}: {exc.strerror}") from exc
        try:
            agent_secret(new)
        except HealthConfigError as exc:
            raise ReloadRefused(f"{source}: {exc}") from exc
        self._check_interfaces(plan_addresses(new), source)
        await self._check_vrrp(new, source)
        problem = self.engine.capacity_problem(new)
        if problem is not None:
            raise ReloadRefused(f"{source}: {problem}")
        async with self._address_lock:  # not while a VRRP role change moves addresses
            plan = plan_addresses(new, self.holds_virtual)
            old_plan = plan_addresses(self.config, self.holds_virtual)
            try:
                await self._on_netlink(self.plumbing.apply, plan)
            except Exception as exc:
                log.exception("reload: applying the addresses of %s", source)
                raise ReloadRefused(f"{source}: the network side could not be applied: {exc}") from exc
            try:
                self.health.reconfigure(new)
            except Exception as exc:
                await self._restore_network(old_plan)
                raise ReloadRefused(f"{source}: the health checks could not be applied: {exc}") from exc
            self.config, self.config_path = new, source
        kept = {tid: s for tid, s in self.live.admin.items() if new.target(tid) is not None}
        self.live.admin = kept
        await self._refresh_next_hops()
        self._republish()
        self.control.publish({"type": "reload", "config": str(source), "time": time.time()})
        return new

    def _check_interfaces(self, plan: AddressPlan, source: Path) -> None:
        """The engine attaches to its interfaces once, at start: a config that serves others needs
        a restart (a reload would leave them unserved)."""
        served = self._served
        if served is not None and frozenset(plan.interfaces) != served:
            def listed(names: frozenset[str]) -> str:
                return ", ".join(sorted(names)) or "none"

            raise ReloadRefused(
                f"{source}: the balancer's interfaces change ({listed(served)} -> "
                f"{listed(frozenset(plan.interfaces))}); the engine serves the interfaces it started "
                "on: restart the daemon to apply this config")

    async def _check_vrrp(self, new: Config, source: Path) -> None:
        """The virtual router and the session sync run as they started: a reload may change what the
        router shares (servers, VIPs: they move with mastership from now on), not the router itself
        or the sync peer."""
        try:
            plan = await self._vrrp_plan(new)
        except HaConfigError as exc:
            raise ReloadRefused(f"{source}: {exc}") from exc
        running = self.vrrp.plan if self.vrrp is not None else None
        if (plan is None) != (running is None) or (
                plan is not None and running is not None and plan.identity() != running.identity()):
            raise ReloadRefused(f"{source}: the vrrp settings change; the virtual router runs as it "
                                "started: restart the daemon to apply this config")
        try:
            sync_plan = plan_sync(new)
        except SyncConfigError as exc:
            raise ReloadRefused(f"{source}: {exc}") from exc
        if sync_plan != (self.sync.plan if self.sync is not None else None):
            raise ReloadRefused(f"{source}: the session sync settings change (syncpeer, sessionsync*); the "
                                "sync runs as it started: restart the daemon to apply this config")

    async def _restore_network(self, plan: AddressPlan) -> None:
        try:
            await self._on_netlink(self.plumbing.apply, plan)
        except Exception:
            log.exception("reload: restoring the running config's addresses")

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

    def _schedule_republish(self) -> None:
        """Republish soon, once for every change until then (module docstring)."""
        if self._republish_handle is not None or self._closing:
            return
        delay = self._republished_at + self.republish_gap() - time.monotonic()
        loop = asyncio.get_running_loop()
        self._republish_handle = loop.call_later(max(0.0, delay), self._republish)

    def republish_gap(self) -> float:
        """The least time between coalesced republishes."""
        return min(REPUBLISH_MAX_GAP, max(REPUBLISH_MIN_GAP, REPUBLISH_GAP_FACTOR * self._republish_cost))

    @property
    def republish_pending(self) -> bool:
        return self._republish_handle is not None

    def flush_republish(self) -> None:
        """Run a pending republish now (before a control command answers)."""
        if self._republish_handle is not None and not self._closing:
            self._republish()

    def _republish(self) -> None:
        if self._republish_handle is not None:
            self._republish_handle.cancel()
            self._republish_handle = None
        events, self._held_events = self._held_events, []
        started = time.monotonic()
        try:
            desired = compile_state(self.config, self.environment())
            changes = diff(self.desired, desired)
            if changes:
                self.engine.apply(changes)
                self.engine.steer(desired)
            self.desired = desired
            self.republishes += 1
        finally:
            self._republished_at = time.monotonic()
            self._republish_cost = self._republished_at - started
            for event in events:
                self.control.publish(event)


def _vrrp_driver(router: VrrpRouter, ifname: str, on_event: Callable[[VrrpEvent], None]) -> VrrpDriver:
    return VrrpDriver(router, ifname, on_event)


def hostname(config: Config) -> str:
    return config.hostname or socket.gethostname()
