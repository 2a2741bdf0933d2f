"""The daemon's composition root without root or namespaces: a fake engine and a fake netlink side.

- health events are coalesced into one republish per burst, and their events are published only after
  the data path has the change; a control command flushes a pending republish before it answers;
- a reload that cannot be applied is refused cleanly (ReloadRefused, `reload` answers an ordinary
  failure, not `internal`) and leaves config, addresses and health checks as they were: an unreadable
  agent secret, changed interfaces, a netlink failure, a health-check failure (the network side is
  put back);
- Plumbing.apply is all or nothing: an address that cannot be added takes back the ones added before.
"""

from __future__ import annotations

import asyncio
import resource
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dsrlb.control.commands import CommandFailed
from dsrlb.daemon.commands import build_registry
from dsrlb.daemon.core import Daemon, ReloadRefused, raise_open_files_limit
from dsrlb.daemon.plumbing import AddressPlan, Plumbing, Refreshed, plan_addresses
from dsrlb.engine.compile import DesiredState
from dsrlb.engine.dataplane import Change, IPAddress, IPNetwork, NextHop, SessionEntry, TargetState
from dsrlb.health.state import HealthState, TargetStateChanged
from dsrlb.model import Config
from dsrlb.netlink.errors import NetlinkFacadeError

T = TypeVar("T")
TARGETS = 200


def config_text(targets: int = TARGETS, *, extra_interface: bool = False, secret: str | None = None,
                port: int = 80) -> str:
    ids = list(range(1, targets + 1))
    lines = ["interface 1 {", "          name eth0", "}", "register  interface 1", "enable    interface 1",
             "network 1 {", "          addr 192.0.2.0", "          mask 255.255.255.0",
             "          real 192.0.2.252", "          interface 1", "}",
             "register  network 1", "enable    network 1",
             "server    1 {", "          ipaddr 192.0.2.10", f"          port {port}",
             "          protocol tcp", f"          targets {','.join(map(str, ids))}", "}",
             "register  server 1", "enable    server 1"]
    for tid in ids:
        lines += [f"target    {tid} {{", f"          ipaddr 192.0.2.{19 + tid}", f"          port {port}",
                  "          protocol tcp", "          dsr enable", "}"]
    lines += [f"register  targets {','.join(map(str, ids))}", f"enable    targets {','.join(map(str, ids))}"]
    if extra_interface:
        lines += ["interface 2 {", "          name eth1", "}", "register  interface 2",
                  "enable    interface 2",
                  "network 2 {", "          addr 198.51.100.0", "          mask 255.255.255.0",
                  "          real 198.51.100.252", "          interface 2", "}",
                  "register  network 2", "enable    network 2"]
    if secret is not None:
        lines.append(f'set       agentsecretfile "{secret}"')
    return "\n".join(lines) + "\n"


class FakeEngine:
    name = "fake"

    def __init__(self, journal: list[tuple[str, Any]]) -> None:
        self.journal = journal
        self.interfaces: tuple[str, ...] | None = None
        self.applied: list[Sequence[Change]] = []
        self.target_limit: int | None = None  # as XDP's fixed map sizes (daemon/xdp_runner.py)

    def start(self, interfaces: Sequence[str]) -> None:
        self.interfaces = tuple(interfaces)

    def stop(self) -> None:
        self.interfaces = None

    def apply(self, changes: Sequence[Change]) -> None:
        self.applied.append(changes)
        self.journal.append(("apply", len(changes)))

    def capacity_problem(self, config: Config) -> str | None:
        limit = self.target_limit
        if limit is not None and len(config.targets) > limit:
            return f"targets {len(config.targets)} > {limit}; restart the daemon to apply this config"
        return None

    def steer(self, state: DesiredState) -> None:
        pass

    def stats(self) -> Mapping[str, int]:
        return {}

    def sessions(self) -> Sequence[SessionEntry]:
        return []

    def drain_session_events(self) -> list[SessionEntry]:
        return []

    def service_stats(self, service_id: int) -> Mapping[str, int]:
        return {"packets": 0, "bytes": 0, "sessions_new": 0}

    def target_stats(self, target_id: int) -> Mapping[str, int]:
        return {"packets": 0, "bytes": 0, "sessions_new": 0}


class FakePlumbing:
    """Records plans; `fail` makes the next apply raise (as a netlink error would)."""

    def __init__(self) -> None:
        self.plans: list[AddressPlan] = []
        self.fail: Exception | None = None
        self.released = False
        self.hold = threading.Event()
        self.passes = self.abandoned = 0

    def apply(self, plan: AddressPlan) -> None:
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        self.plans.append(plan)

    def release(self) -> None:
        self.released = True

    def link_local(self, ifname: str) -> None:
        return None

    def refresh(self, addresses: Iterable[IPAddress], networks: tuple[IPNetwork, ...] = (),
                stop: Callable[[], bool] = lambda: False) -> Refreshed | None:
        """Every address resolves; with `hold` set, a pass that only a stop ends (a slow one)."""
        self.passes += 1
        while self.hold.is_set():
            if stop():
                self.abandoned += 1
                return None
            time.sleep(0.005)
        hop = NextHop(2, b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02")
        return Refreshed(dict.fromkeys(addresses, hop), {})


class Harness:
    def __init__(self, daemon: Daemon, engine: FakeEngine, plumbing: FakePlumbing,
                 journal: list[tuple[str, Any]], workdir: Path) -> None:
        self.daemon, self.engine, self.plumbing, self.journal, self.workdir = (
            daemon, engine, plumbing, journal, workdir)

    def write(self, name: str, text: str) -> Path:
        path = self.workdir / name
        path.write_text(text)
        return path


def run(scenario: Callable[[Harness], Coroutine[Any, Any, T]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> T:
    monkeypatch.setenv("DSRLB_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("DSRLB_STATE_DIR", str(tmp_path / "state"))
    config = tmp_path / "dsrlb.conf"
    config.write_text(config_text())
    journal: list[tuple[str, Any]] = []
    engine, plumbing = FakeEngine(journal), FakePlumbing()

    async def main() -> T:
        daemon = Daemon(config, "unit", "afpacket", plumbing=plumbing,  # type: ignore[arg-type]
                        engine_impl=engine)
        original = daemon.control.publish

        def publish(data: Mapping[str, Any]) -> int:
            journal.append(("event", dict(data)))
            return original(data)

        daemon.control.publish = publish  # type: ignore[method-assign]
        await daemon._start()
        try:
            return await scenario(Harness(daemon, engine, plumbing, journal, tmp_path))
        finally:
            await daemon._shutdown()

    return asyncio.run(main())


def down(target_id: int) -> TargetStateChanged:
    return TargetStateChanged(target_id, HealthState.UP, HealthState.DOWN, time.monotonic(), "test", None)


async def settle(h: Harness, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while h.daemon.republish_pending:
        assert time.monotonic() < deadline, "the coalesced republish did not run"
        await asyncio.sleep(0.01)


def target_states(daemon: Daemon) -> dict[int, TargetState]:
    assert daemon.desired is not None
    return {tid: spec.state for tid, spec in daemon.desired.targets.items()}


# --- coalescing ------------------------------------------------------------------------------------


def test_a_burst_of_health_events_is_one_republish_and_events_follow_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(h: Harness) -> None:
        assert set(target_states(h.daemon).values()) == {TargetState.UP}
        before = h.daemon.republishes
        h.journal.clear()
        for tid in range(1, TARGETS + 1):
            h.daemon._on_health(down(tid))
        # nothing recompiled yet, and no event says "down" before the data path has it
        assert h.daemon.republish_pending and h.daemon.republishes == before and h.journal == []
        await settle(h)
        assert h.daemon.republishes == before + 1
        assert h.journal[0][0] == "apply" and [k for k, _ in h.journal[1:]] == ["event"] * TARGETS
        assert {e["id"] for _, e in h.journal[1:]} == set(range(1, TARGETS + 1))
        assert all(e["type"] == "target" and e["new"] == "down" and e["old"] == "up"
                   for _, e in h.journal[1:])
        assert set(target_states(h.daemon).values()) == {TargetState.DOWN}

    run(scenario, tmp_path, monkeypatch)


def test_republishes_are_spaced_by_the_gap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(h: Harness) -> None:
        h.daemon._on_health(down(1))
        await settle(h)
        first = time.monotonic()
        h.daemon._on_health(down(2))  # right after a republish: waits for the gap, then runs
        await settle(h)
        assert time.monotonic() - first >= h.daemon.republish_gap() * 0.9
        assert target_states(h.daemon)[2] is TargetState.DOWN

    run(scenario, tmp_path, monkeypatch)


def test_a_command_flushes_the_pending_republish_before_it_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(h: Harness) -> None:
        registry = build_registry(h.daemon)
        h.daemon._on_health(down(1))
        assert h.daemon.republish_pending
        await registry.run(["show", "targets"])
        assert not h.daemon.republish_pending
        assert target_states(h.daemon)[1] is TargetState.DOWN
        assert [k for k, _ in h.journal[-2:]] == ["apply", "event"]  # the event after the change
        assert h.journal[-1][1]["id"] == 1
        # `disable target` answers once the engine has the change
        applied = len(h.engine.applied)
        result = await registry.run(["disable", "target", "2"])
        assert result.data == {"targets": [2], "admin": "disabled"}
        assert len(h.engine.applied) == applied + 1
        assert target_states(h.daemon)[2] is TargetState.NO_NEW

    run(scenario, tmp_path, monkeypatch)


# --- next hops --------------------------------------------------------------------------------------


def test_next_hops_come_from_one_refresh_per_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(h: Harness) -> None:
        assert h.plumbing.passes == 1  # the start
        assert set(h.daemon.live.next_hops) == set(range(1, TARGETS + 1))
        h.daemon._last_next_hops = -float("inf")
        await h.daemon.tick()
        assert h.plumbing.passes == 2

    run(scenario, tmp_path, monkeypatch)


def test_a_stop_ends_a_refresh_pass_in_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass that would not end by itself (10,000 slow targets) is abandoned when the daemon is asked
    to stop, and what the daemon knew of its next hops stays."""
    async def scenario(h: Harness) -> None:
        known = dict(h.daemon.live.next_hops)
        h.plumbing.hold.set()
        h.daemon._last_next_hops = -float("inf")
        tick = asyncio.ensure_future(h.daemon.tick())
        while h.plumbing.passes < 2:
            await asyncio.sleep(0.005)
        assert not tick.done()
        h.daemon.request_stop()  # what SIGTERM and `stop` do
        await tick
        assert h.plumbing.abandoned == 1 and h.daemon.live.next_hops == known

    run(scenario, tmp_path, monkeypatch)


# --- reload refusals -------------------------------------------------------------------------------


def test_reload_with_an_unreadable_agent_secret_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(h: Harness) -> None:
        running, plans = h.daemon.config, len(h.plumbing.plans)
        bad = h.write("secret.conf", config_text(port=8080, secret=str(h.workdir / "missing-secret")))
        with pytest.raises(ReloadRefused, match=r"agentsecretfile .*missing-secret"):
            await h.daemon.reload(bad)
        assert h.daemon.config is running and len(h.plumbing.plans) == plans
        # through the control command: an ordinary failure with the reason, not `internal`
        with pytest.raises(CommandFailed, match=r"(?s)reload refused.*agentsecretfile"):
            await build_registry(h.daemon).run(["reload", str(bad)])
        assert h.daemon.config is running

    run(scenario, tmp_path, monkeypatch)


def test_reload_that_changes_the_interfaces_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(h: Harness) -> None:
        running, plans = h.daemon.config, len(h.plumbing.plans)
        assert h.engine.interfaces == ("eth0",)
        more = h.write("more.conf", config_text(extra_interface=True))
        with pytest.raises(ReloadRefused, match=r"interfaces change \(eth0 -> eth0, eth1\).*restart"):
            await h.daemon.reload(more)
        assert h.daemon.config is running and len(h.plumbing.plans) == plans
        # a config on the same interfaces still reloads
        same = h.write("same.conf", config_text(targets=3))
        await h.daemon.reload(same)
        assert len(h.daemon.config.targets) == 3 and h.daemon.config_path == same

    run(scenario, tmp_path, monkeypatch)


def test_reload_that_adds_vrrp_or_a_sync_peer_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The virtual router and the session sync run as they started (daemon/vrrp_role.py, sync/)."""
    async def scenario(h: Harness) -> None:
        running, plans = h.daemon.config, len(h.plumbing.plans)
        vrrp = h.write("vrrp.conf", config_text() + "vrrp {\n          vrid 9\n          priority 200\n}\n")
        with pytest.raises(ReloadRefused, match=r"vrrp settings change.*restart"):
            await h.daemon.reload(vrrp)
        synced = h.write("sync.conf", config_text().replace("          real 192.0.2.252",
                                                            "          real 192.0.2.252\n"
                                                            "          syncpeer 192.0.2.251"))
        with pytest.raises(ReloadRefused, match=r"session sync settings change.*restart"):
            await h.daemon.reload(synced)
        assert h.daemon.config is running and len(h.plumbing.plans) == plans

    run(scenario, tmp_path, monkeypatch)


def test_reload_beyond_the_engine_capacity_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(h: Harness) -> None:
        running, plans = h.daemon.config, len(h.plumbing.plans)
        h.engine.target_limit = 2
        larger = h.write("larger.conf", config_text(targets=3))
        with pytest.raises(ReloadRefused, match=r"targets 3 > 2.*restart"):
            await h.daemon.reload(larger)
        assert h.daemon.config is running and len(h.plumbing.plans) == plans

    run(scenario, tmp_path, monkeypatch)


def test_reload_whose_network_side_fails_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(h: Harness) -> None:
        running = h.daemon.config
        reconfigured: list[object] = []
        monkeypatch.setattr(h.daemon.health, "reconfigure", reconfigured.append)
        h.plumbing.fail = NetlinkFacadeError("RTM_NEWADDR: Operation not permitted")
        new = h.write("new.conf", config_text(targets=3))
        with pytest.raises(ReloadRefused, match=r"network side could not be applied.*not permitted"):
            await h.daemon.reload(new)
        assert h.daemon.config is running and reconfigured == []
        assert len(h.daemon.desired.targets) == TARGETS  # type: ignore[union-attr]

    run(scenario, tmp_path, monkeypatch)


def test_reload_whose_health_checks_fail_puts_the_network_side_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(h: Harness) -> None:
        running = h.daemon.config

        def broken(config: object) -> None:
            raise ValueError("no such probe")

        monkeypatch.setattr(h.daemon.health, "reconfigure", broken)
        new = h.write("new.conf", config_text(targets=3, port=8080))
        with pytest.raises(ReloadRefused, match="health checks could not be applied: no such probe"):
            await h.daemon.reload(new)
        assert h.daemon.config is running
        # the new plan went in, then the running config's plan was put back
        assert h.plumbing.plans[-2] == plan_addresses(load_text(new))
        assert h.plumbing.plans[-1] == plan_addresses(running)

    run(scenario, tmp_path, monkeypatch)


def load_text(path: Path) -> Any:
    from dsrlb.config import load

    return load(str(path))


# --- Plumbing.apply is all or nothing --------------------------------------------------------------


class FlakyNetlink:
    """Enough of Netlink for Plumbing.apply with one interface per network and no gateway."""

    def __init__(self, refuse: str) -> None:
        self.refuse = refuse
        self.present: list[tuple[str, IPv4Interface]] = []

    def add_address(self, ifname: str, interface: IPv4Interface, nodad: bool = False) -> bool:
        if str(interface) == self.refuse:
            raise NetlinkFacadeError(f"{interface}: File exists")
        if (ifname, interface) in self.present:
            return False
        self.present.append((ifname, interface))
        return True

    def remove_address(self, ifname: str, interface: IPv4Interface) -> bool:
        if (ifname, interface) not in self.present:
            return False
        self.present.remove((ifname, interface))
        return True


@pytest.fixture
def plans(tmp_path: Path) -> Iterator[tuple[AddressPlan, AddressPlan]]:
    first, second = tmp_path / "a.conf", tmp_path / "b.conf"
    first.write_text(config_text(targets=2))
    second.write_text(config_text(targets=2).replace("192.0.2.10", "192.0.2.11")
                      .replace("real 192.0.2.252", "real 192.0.2.251"))
    yield plan_addresses(load_text(first)), plan_addresses(load_text(second))


def test_plumbing_apply_takes_back_its_own_additions_when_one_fails(
        plans: tuple[AddressPlan, AddressPlan]) -> None:
    running, failing = plans
    netlink = FlakyNetlink(refuse="192.0.2.11/32")  # the new VIP; the new real address goes in first
    plumbing = Plumbing(netlink)  # type: ignore[arg-type]
    plumbing.apply(running)
    before = list(netlink.present)
    assert {str(i) for _, i in before} == {"192.0.2.252/24", "192.0.2.10/32"}
    with pytest.raises(NetlinkFacadeError, match="File exists"):
        plumbing.apply(failing)
    assert netlink.present == before  # 192.0.2.251/24 was added, then taken back; nothing removed
    netlink.refuse = ""
    plumbing.apply(failing)  # and the plan applies later as if the failure had not happened
    assert {str(i) for _, i in netlink.present} == {"192.0.2.251/24", "192.0.2.11/32"}
    plumbing.release()
    assert netlink.present == []


def test_the_open_files_limit_is_raised_towards_the_hard_limit_never_lowered() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        wanted = 2048 if hard == resource.RLIM_INFINITY else min(2048, hard)
        assert raise_open_files_limit(2048) == wanted == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert raise_open_files_limit(512) == wanted  # never lowered
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
