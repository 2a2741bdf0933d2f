"""Fixtures for the control-plane tests: a small real command set and an event loop in a thread.

`DemoBalancer` is a tiny balancer state (targets with states and counters) with the commands the daemon
will register (show, enable/disable/drain, reload, show config); the tests drive the real registry,
server, client, HTTP API and shell against it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dsrlb.control.commands import CommandFailed, CommandResult, Param, ParamKind, ParsedArgs, Registry
from dsrlb.control.metrics import MetricsSnapshot, ServiceCounters, TargetCounters
from dsrlb.control.server import ControlServer

T = TypeVar("T")
NOW = 1_700_000_000.0


@dataclass
class DemoTarget:
    id: int
    name: str
    address: str
    port: int
    state: str = "up"
    since: float = NOW - 90
    reason: str = ""
    sessions: int = 0
    packets: int = 0
    bytes: int = 0


class DemoBalancer:
    def __init__(self, hostname: str = "lb-test", instance: str = "0") -> None:
        self.hostname = hostname
        self.instance = instance
        self.targets = {
            1: DemoTarget(1, "web1", "192.0.2.11", 80, sessions=3, packets=100, bytes=150_000),
            2: DemoTarget(2, "web2", "192.0.2.12", 80, sessions=1, packets=40, bytes=2048),
            3: DemoTarget(3, "web3", "2001:db8::13", 80, state="down", reason="tcpopen 80 refused"),
        }
        self.config_text = "hostname lb-test\nserver 1 {\n  ipaddr 203.0.113.10\n  port 80\n}\n"
        self.reloads = 0
        self.on_event: Callable[[dict[str, Any]], object] = lambda event: None

    # --- views ---------------------------------------------------------------------------------

    def target_view(self, t: DemoTarget) -> dict[str, Any]:
        return {"id": t.id, "name": t.name, "address": t.address, "port": t.port, "state": t.state,
                "since": t.since, "reason": t.reason, "sessions": t.sessions, "packets": t.packets,
                "bytes": t.bytes, "latency_ms": 0.4 if t.state == "up" else None}

    def server_view(self) -> dict[str, Any]:
        up = sum(1 for t in self.targets.values() if t.state == "up")
        return {"id": 1, "name": "www", "address": "203.0.113.10", "ports": "80", "protocol": "tcp",
                "method": "rr", "state": "up" if up else "down", "targets": sorted(self.targets),
                "backup": [],
                "targets_up": up, "sessions": sum(t.sessions for t in self.targets.values()),
                "packets": sum(t.packets for t in self.targets.values()),
                "bytes": sum(t.bytes for t in self.targets.values())}

    # --- commands ------------------------------------------------------------------------------

    def registry(self) -> Registry:
        registry = Registry(info=lambda: {"hostname": self.hostname, "instance": self.instance})
        ids = Param("ids", ParamKind.IDS, required=False, completer=lambda: [str(i) for i in self.targets])
        need_ids = Param("ids", ParamKind.IDS, help="target ids: 1,2,5-7",
                         completer=lambda: [str(i) for i in self.targets])
        registry.command("show targets", "list targets", params=[ids],
                         aliases=["show target"])(self.show_targets)
        registry.command("show servers", "list servers", aliases=["show server"])(
            lambda args: CommandResult({"servers": [self.server_view()]}))
        registry.command("show sessions", "list sessions")(self.show_sessions)
        registry.command("show networks", "list networks")(self.show_networks)
        registry.command("show stats", "engine counters")(self.show_stats)
        registry.command("show config", "the running configuration")(
            lambda args: CommandResult({"config": self.config_text}, self.config_text))
        for verb, state in (("enable", "up"), ("disable", "disabled"), ("drain", "draining")):
            registry.command(f"{verb} targets", f"{verb} targets", params=[need_ids],
                             aliases=[f"{verb} target"], action=True)(self._set_state(state))
        registry.command("reload", "reload the configuration file", action=True)(self.reload)
        registry.command("crash", "a handler with a bug")(lambda args: CommandResult({"x": 1 / 0}))
        return registry

    def show_targets(self, args: ParsedArgs) -> CommandResult:
        wanted = args.ids("ids") or tuple(self.targets)
        missing = [i for i in wanted if i not in self.targets]
        if missing:
            raise CommandFailed(f"no target {missing[0]}")
        return CommandResult({"targets": [self.target_view(self.targets[i]) for i in wanted]})

    def show_sessions(self, args: ParsedArgs) -> CommandResult:
        rows = [{"server": 1, "client": "198.51.100.7", "client_port": 0, "target": 1, "idle_s": 3.5,
                 "expires_s": 896.5}]
        return CommandResult({"sessions": rows, "total": 1})

    def show_networks(self, args: ParsedArgs) -> CommandResult:
        rows = [{"id": 1, "name": None, "interfaces": ["eth0"], "addr": "192.0.2.0/24", "real": "192.0.2.2",
                 "virt": "192.0.2.1", "addr6": None, "real6": None, "virt6": None, "state": "up"}]
        return CommandResult({"networks": rows})

    def show_stats(self, args: ParsedArgs) -> CommandResult:
        return CommandResult({"stats": {"engine": "reference", "uptime_s": 3725.0, "sessions": 4,
                                        "counters": {"rx": 140, "tx": 139, "drop": 1},
                                        "drops": {"malformed": 1}}})

    def _set_state(self, state: str) -> Callable[[ParsedArgs], CommandResult]:
        def handler(args: ParsedArgs) -> CommandResult:
            ids = args.ids("ids")
            missing = [i for i in ids if i not in self.targets]
            if missing:
                raise CommandFailed(f"no target {missing[0]}")
            for i in ids:
                self.targets[i].state = state
                self.on_event({"type": "target_state", "target": i, "state": state})
            return CommandResult({"targets": list(ids), "state": state},
                                 f"{len(ids)} target(s) now {state}")
        return handler

    async def reload(self, args: ParsedArgs) -> CommandResult:
        await asyncio.sleep(0)  # an async handler, as the daemon's reload will be
        self.reloads += 1
        return CommandResult({"reloads": self.reloads}, "configuration reloaded")

    def metrics(self) -> MetricsSnapshot:
        server = self.server_view()
        return MetricsSnapshot(
            hostname=self.hostname, engine="reference",
            services=(ServiceCounters(1, "www", "203.0.113.10", "80", server["packets"], server["bytes"], 7,
                                      server["sessions"]),),
            targets=tuple(TargetCounters(t.id, t.name, t.address, t.state, t.packets, t.bytes, t.sessions,
                                         t.sessions, 0.4 if t.state == "up" else None)
                          for t in self.targets.values()),
            engine_counters={"rx": 140, "tx": 139, "drop": 1}, drops={"malformed": 1, "no_target": 0},
            vrrp_master=True, uptime_s=3725.0,
        )


class LoopThread:
    """An asyncio loop running in a thread, so blocking clients (CLI, urllib) can talk to servers on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="control-test-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        # The bound only keeps a broken test from hanging the suite; nothing is timed.
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def call(self, fn: Callable[[], T]) -> T:
        async def wrapper() -> T:
            return fn()
        return self.run(wrapper())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture
def run_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """DSRLB_RUN_DIR/DSRLB_STATE_DIR in a short temp dir (unix socket paths are limited to 107 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="dsrlbc-", dir="/tmp"))
    monkeypatch.setenv("DSRLB_RUN_DIR", str(root / "run"))
    monkeypatch.setenv("DSRLB_STATE_DIR", str(root / "state"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def instance_name() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def demo() -> DemoBalancer:
    return DemoBalancer()


@pytest.fixture
def make_demo() -> type[DemoBalancer]:
    return DemoBalancer


@dataclass
class Served:
    """A running control server for a DemoBalancer."""

    server: ControlServer
    demo: DemoBalancer
    instance: str
    runner: LoopThread


@pytest.fixture
def served(
    run_root: Path, loop_thread: LoopThread, demo: DemoBalancer, instance_name: str
) -> Iterator[Served]:
    demo.instance = instance_name
    server = ControlServer.for_instance(demo.registry(), instance_name)
    demo.on_event = server.publish  # handlers run on the loop, so publish() directly
    loop_thread.run(server.start())
    try:
        yield Served(server, demo, instance_name, loop_thread)
    finally:
        loop_thread.run(server.stop())
