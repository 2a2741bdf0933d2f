"""dsrlb's VRRP driver against a real keepalived (2.2.x) on a veth pair between two namespaces.

    d (dsrlb, in this process): eth0 192.0.2.1/24, fe80::(eui64)  ==veth==  k (keepalived): eth0 192.0.2.2/24

The dsrlb side is a `VrrpDriver` on an asyncio loop in a thread that has entered `d`; keepalived runs in
`k` in the foreground and reports its state through a `notify` script that appends it to a file. Every
election is run for VRRPv2 with a password, VRRPv3 over IPv6 (link-local sources) and VRRPv3 over IPv4
with unicast peers, in both directions: the higher priority wins, and a resigning master (priority 0)
is replaced after Skew_Time instead of Master_Down_Interval (RFC 5798 §6.4.2, RFC 3768 §6.4.2).
Names are unique per run (`dsrlb.lab.Lab`), only documentation addresses, no route out; the lab,
keepalived (by its PID) and the loop thread are torn down also when a test fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dsrlb.lab import Lab, LabProcess
from dsrlb.netlink import entered_netns, run_in_netns
from dsrlb.vrrp.announce import AnnounceError, send_gratuitous_arp, send_unsolicited_na
from dsrlb.vrrp.codec import IPAddress
from dsrlb.vrrp.driver import VrrpDriver
from dsrlb.vrrp.machine import (
    DropCounted,
    Event,
    RouterConfig,
    State,
    StateChanged,
    VrrpRouter,
    master_down_interval,
)

pytestmark = pytest.mark.root

T = TypeVar("T")
KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"
VRID = 51
IFNAME = "eth0"
D4, K4 = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")
VIP4, VIP6 = IPv4Address("192.0.2.100"), IPv6Address("2001:db8::100")
# A resigning master is replaced after Skew_Time (0.61 s at priority 100, 1 s interval). Without its
# priority-0 advertisement the backup would wait out Master_Down_Interval after the last advertisement,
# at least 3.61 - 1 = 2.61 s after the stop: a takeover within this bound proves the priority 0 worked.
TAKEOVER_BOUND = 2.0


@dataclass(frozen=True)
class Case:
    name: str
    version: int
    family: int
    auth: str | None = None
    unicast: bool = False


CASES = [pytest.param(case, id=case.name) for case in (
    Case("v2-ipv4-pass", 2, 4, auth="dsrlb-pw"),  # keepalived's default version, `auth_type PASS`
    Case("v3-ipv6", 3, 6),  # link-local sources, ff02::12
    Case("v3-ipv4-unicast", 3, 4, unicast=True),  # `unicast_peer`: the checksum covers the peer's address
)]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str | Callable[[], str]) -> None:
    """Poll `predicate` for at most `timeout` seconds (a bound, not a speed assertion); `what` may be
    a callable, so that the message shows the state at the timeout."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout} s: {what() if callable(what) else what}")
        time.sleep(0.02)


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


class DsrlbNode:
    """A VrrpDriver on an asyncio loop in a thread that has entered the namespace `netns`; `start` it."""

    def __init__(self, netns: str, config: RouterConfig,
                 on_event: Callable[[Event], None] | None = None) -> None:
        self.events: list[Event] = []
        self._extra = on_event
        self.driver = VrrpDriver(VrrpRouter(config), IFNAME, self._on_event)
        self._netns = netns
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._body, name=f"vrrp-{netns}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._failure is not None or self._loop is None:
            raise RuntimeError(f"the loop thread in {netns} did not start: {self._failure!r}")

    def start(self) -> None:
        self.call(self.driver.start())

    def _on_event(self, event: Event) -> None:
        self.events.append(event)
        if self._extra is not None:
            self._extra(event)

    def _body(self) -> None:
        try:
            with entered_netns(self._netns):  # sockets made on this loop live in `netns`
                loop = asyncio.new_event_loop()
                self._loop = loop
                self._ready.set()
                try:
                    loop.run_forever()
                finally:
                    loop.close()
        except BaseException as exc:  # reported by __init__
            self._failure = exc
        finally:
            self._ready.set()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def router(self) -> VrrpRouter:
        return self.driver.router

    @property
    def counters(self) -> dict[str, int]:
        return self.driver.counters

    def transitions(self) -> list[StateChanged]:
        return [e for e in self.events if isinstance(e, StateChanged)]

    def stop(self) -> None:
        self.call(self.driver.stop())

    def close(self) -> None:
        if self._loop is None or not self._thread.is_alive():
            return
        try:
            self.stop()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


@dataclass
class Keepalived:
    proc: LabProcess
    notified: Path  # one line per state keepalived entered (its `notify` script)
    vrrp_pidfile: Path
    conf: Path

    def states(self) -> list[str]:
        try:
            return self.notified.read_text().split()
        except FileNotFoundError:
            return []

    @property
    def state(self) -> str | None:
        states = self.states()
        return states[-1] if states else None

    def terminate(self) -> None:
        """SIGTERM to our keepalived's PID: it resigns (priority 0) and exits."""
        os.kill(self.proc.pid, signal.SIGTERM)

    def log(self) -> str:
        return self.proc.log.read_text(errors="replace") if self.proc.log.exists() else ""

    def reap_vrrp_child(self) -> None:
        """The VRRP child dies with its parent (keepalived sets PR_SET_PDEATHSIG); make sure, by its
        PID, and only if that PID is still a keepalived reading our own configuration file."""
        try:
            pid = int(self.vrrp_pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        end = time.monotonic() + 5
        while time.monotonic() < end:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return
            if b"keepalived" not in cmdline or str(self.conf).encode() not in cmdline:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)


@dataclass
class Interop:
    lab: Lab
    link_local: dict[str, IPv6Address]
    nodes: list[DsrlbNode] = field(default_factory=list)
    keepaliveds: list[Keepalived] = field(default_factory=list)

    def address(self, role: str, case: Case) -> IPAddress:
        if case.family == 6:
            return self.link_local[role]
        return D4 if role == "d" else K4

    def keepalived(self, case: Case, priority: int) -> Keepalived:
        work = self.lab.workdir / f"keepalived{len(self.keepaliveds)}"
        work.mkdir()
        notified, notify, conf = work / "states", work / "notify.sh", work / "keepalived.conf"
        # keepalived runs `notify` with: INSTANCE <name> <state> <priority>
        notify.write_text(f'#!/bin/sh\necho "$3" >> {notified}\n')
        notify.chmod(0o700)
        conf.write_text(keepalived_conf(case, priority, notify, self.address("k", case),
                                        self.address("d", case)))
        pidfile, vrrp_pidfile = work / "keepalived.pid", work / "vrrp.pid"
        proc = self.lab.spawn("k", f"keepalived{len(self.keepaliveds)}", [
            KEEPALIVED, "--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
            "--use-file", str(conf), "--pid", str(pidfile), "--vrrp_pid", str(vrrp_pidfile)])
        made = Keepalived(proc, notified, vrrp_pidfile, conf)
        self.keepaliveds.append(made)
        wait_until(lambda: made.state is not None, 10,
                   lambda: f"keepalived reports a state; log:\n{made.log()}")
        return made

    def dsrlb(self, case: Case, priority: int, on_event: Callable[[Event], None] | None = None,
              **overrides: Any) -> DsrlbNode:
        settings: dict[str, Any] = {
            "vrid": VRID, "priority": priority, "version": case.version, "family": case.family,
            "advert_interval": 1.0, "primary_address": self.address("d", case),
            "addresses": (VIP6,) if case.family == 6 else (VIP4,), "auth_pass": case.auth,
            "unicast_peers": (self.address("k", case),) if case.unicast else (),
        }
        settings.update(overrides)
        node = DsrlbNode(self.lab.ns("d"), RouterConfig(**settings), on_event)
        self.nodes.append(node)  # closed by the fixture even if it fails to start
        node.start()
        return node

    def close(self) -> None:
        try:
            for node in self.nodes:
                node.close()
        finally:
            for keepalived in self.keepaliveds:
                self.lab.stop(keepalived.proc)  # SIGTERM to its PID, SIGKILL after a grace period
                keepalived.reap_vrrp_child()
                print(f"--- keepalived log ({keepalived.conf}) ---\n{keepalived.log()[-4000:]}")


def keepalived_conf(case: Case, priority: int, notify: Path, src: IPAddress, peer: IPAddress) -> str:
    lines = [
        "global_defs {",
        "    router_id dsrlb_interop",
        "    script_user root",
        "}",
        "vrrp_instance VI_1 {",
        "    state BACKUP",
        f"    interface {IFNAME}",
        f"    virtual_router_id {VRID}",
        f"    priority {priority}",
        "    advert_int 1",
        f"    version {case.version}",
        f"    notify {notify}",
    ]
    if case.auth:
        lines += ["    authentication {", "        auth_type PASS", f"        auth_pass {case.auth}", "    }"]
    if case.unicast:
        # `old_unicast_checksum never`: no fallback to keepalived < 1.3.6's v3 unicast checksum (taken
        # with the group address), so only a checksum over our real destination passes (RFC 5798 §5.2.8)
        lines += [f"    unicast_src_ip {src}", "    unicast_peer {", f"        {peer}", "    }",
                  "    old_unicast_checksum never"]
    vip = f"{VIP6}/64" if case.family == 6 else f"{VIP4}/24"
    lines += ["    virtual_ipaddress {", f"        {vip}", "    }", "}", ""]
    return "\n".join(lines)


@pytest.fixture
def interop() -> Iterator[Interop]:
    with Lab("vr") as lab:
        lab.add_node("d")
        lab.add_node("k")
        lab.veth("d", IFNAME, "k", IFNAME)
        lab.address("d", IFNAME, f"{D4}/24")
        lab.address("k", IFNAME, f"{K4}/24")
        link_local: dict[str, IPv6Address] = {}

        def have_link_locals() -> bool:
            for role in ("d", "k"):
                found = [a.address for a in lab.netlink(role).addresses(IFNAME)
                         if isinstance(a.address, IPv6Address) and a.address.is_link_local]
                if found:
                    link_local[role] = found[0]
            return len(link_local) == 2

        wait_until(have_link_locals, 10, "the veth ends have their link-local addresses")
        made = Interop(lab, link_local)
        try:
            yield made
        finally:
            made.close()


def drops(node: DsrlbNode) -> dict[str, int]:
    return {k: v for k, v in node.counters.items() if k.startswith("drop_") and v}


# --- elections against keepalived -------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_dsrlb_outranks_keepalived_then_resigns(interop: Interop, case: Case) -> None:
    """dsrlb 200 vs keepalived 100: dsrlb is master, keepalived backup for longer than its
    Master_Down_Interval (so it accepts our advertisements); dsrlb stops, keepalived takes over
    after Skew_Time."""
    keepalived = interop.keepalived(case, priority=100)
    node = interop.dsrlb(case, priority=200)
    wait_until(lambda: node.router.state is State.MASTER and keepalived.state == "BACKUP", 15,
               lambda: f"dsrlb master ({node.router.state}), keepalived backup ({keepalived.states()})")
    seen = keepalived.states()
    hold_until = time.monotonic() + master_down_interval(case.version, 100, 1.0) + 0.5
    while time.monotonic() < hold_until:
        assert keepalived.states() == seen, "keepalived stopped hearing dsrlb's advertisements"
        assert node.router.state is State.MASTER
        time.sleep(0.05)
    assert node.counters["send_errors"] == node.counters["handler_errors"] == 0

    stopped_at = time.monotonic()
    node.stop()
    assert node.router.state is State.INITIALIZE
    wait_until(lambda: keepalived.state == "MASTER", 10, "keepalived takes over")
    took = time.monotonic() - stopped_at
    print(f"keepalived took over {took:.2f} s after dsrlb stopped")
    assert took < TAKEOVER_BOUND, f"keepalived took {took:.2f} s: it did not see the priority 0"
    wait_until(lambda: "Backup received priority 0 advertisement" in keepalived.log(), 5,
               "keepalived logs our priority-0 advertisement")
    assert [t.new for t in node.transitions()][-2:] == [State.MASTER, State.INITIALIZE]
    assert node.counters["send_errors"] == node.counters["handler_errors"] == 0
    node.stop()  # idempotent


@pytest.mark.parametrize("case", CASES)
def test_keepalived_outranks_dsrlb_then_resigns_on_sigterm(interop: Interop, case: Case) -> None:
    """keepalived 200 vs dsrlb 100: dsrlb is backup and knows keepalived as master; keepalived gets
    SIGTERM, sends priority 0, and dsrlb takes over after Skew_Time."""
    keepalived = interop.keepalived(case, priority=200)
    wait_until(lambda: keepalived.state == "MASTER", 10, lambda: f"keepalived master ({keepalived.states()})")
    node = interop.dsrlb(case, priority=100)
    master = interop.address("k", case)
    wait_until(lambda: node.router.master_address == master and node.counters["rx"] >= 2, 10,
               lambda: f"dsrlb hears keepalived ({node.router.state}, {node.counters})")
    assert node.router.state is State.BACKUP
    assert drops(node) == {}, "every advertisement of keepalived is accepted"
    assert node.counters["handler_errors"] == 0

    stopped_at = time.monotonic()
    keepalived.terminate()
    wait_until(lambda: node.router.state is State.MASTER, 10, "dsrlb takes over")
    took = time.monotonic() - stopped_at
    print(f"dsrlb took over {took:.2f} s after keepalived's SIGTERM")
    assert took < TAKEOVER_BOUND, f"dsrlb took {took:.2f} s to take over"
    assert f"{master} sent priority 0" in node.transitions()[-1].reason
    assert drops(node) == {}
    assert node.counters["send_errors"] == node.counters["handler_errors"] == 0


# --- the driver on its own ----------------------------------------------------------------------------


def test_driver_counts_bad_datagrams_send_errors_and_handler_failures(interop: Interop) -> None:
    """Garbage on the wire, an event handler that raises, and a source address we do not have are
    counted; none of them stops the driver."""
    case = Case("v3-ipv4", 3, 4)

    def failing(event: Event) -> None:
        if isinstance(event, StateChanged):
            raise RuntimeError("a broken event consumer")

    owner = interop.dsrlb(case, priority=255, on_event=failing)  # the address owner: master at once
    assert owner.router.state is State.MASTER and owner.counters["handler_errors"] == 1
    lost = interop.dsrlb(case, priority=255, vrid=VRID + 1, primary_address=IPv4Address("192.0.2.77"))
    assert lost.router.state is State.MASTER
    assert lost.counters["send_errors"] >= 1  # 192.0.2.77 is on no interface: the kernel refuses it

    def send_junk() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, 112) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, IFNAME.encode())
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
            valid = bytes.fromhex("3133640100640000") + VIP4.packed  # checksum left 0: wrong
            for junk in (b"\x31", valid):
                sock.sendto(junk, ("224.0.0.18", 0))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            sock.sendto(valid, ("224.0.0.18", 0))

    run_in_netns(interop.lab.ns("k"), send_junk)
    wait_until(lambda: owner.counters["drop_ttl"] >= 1 and owner.counters["drop_short"] >= 1
               and owner.counters["drop_checksum"] >= 1, 5, lambda: f"drops counted ({owner.counters})")
    tx = owner.counters["tx"]
    wait_until(lambda: owner.counters["tx"] > tx, 3, "the master keeps advertising")
    assert owner.router.state is State.MASTER and lost.router.state is State.MASTER
    assert owner.counters["handler_errors"] == 1
    assert any(isinstance(e, DropCounted) and e.reason == "ttl" for e in owner.events)


# --- announcements ------------------------------------------------------------------------------------


def test_gratuitous_arp_and_unsolicited_na_move_the_neighbour_entries(interop: Interop) -> None:
    """k knows the virtual addresses at an old MAC (the previous master); d's announcements replace it
    with d's MAC, as a failover needs (RFC 5798 §6.4.1)."""
    lab, old = interop.lab, "02:00:00:00:99:99"
    for vip in (VIP4, VIP6):
        sh("ip", "-n", lab.ns("k"), "neigh", "replace", str(vip), "lladdr", old, "dev", IFNAME,
           "nud", "stale")
    mac_text = lab.netlink("d").link(IFNAME).mac
    assert mac_text is not None
    mac = bytes.fromhex(mac_text.replace(":", ""))
    k = lab.netlink("k")

    def mac_of(vip: IPAddress) -> str | None:
        entry = k.neighbour(vip, IFNAME)
        return entry.mac if entry is not None else None

    assert mac_of(VIP4) == old and mac_of(VIP6) == old
    assert run_in_netns(lab.ns("d"), lambda: send_gratuitous_arp(IFNAME, mac, [VIP4], count=2)) == 2
    wait_until(lambda: mac_of(VIP4) == mac_text, 5, lambda: f"k learns {VIP4} at {mac_text} ({mac_of(VIP4)})")
    assert run_in_netns(lab.ns("d"), lambda: send_unsolicited_na(IFNAME, mac, [VIP6])) == 1
    wait_until(lambda: mac_of(VIP6) == mac_text, 5, lambda: f"k learns {VIP6} at {mac_text} ({mac_of(VIP6)})")
    shown = subprocess.run(["ip", "-n", lab.ns("k"), "-6", "neigh", "show", str(VIP6)], check=True,
                           capture_output=True, text=True).stdout
    assert "router" in shown.split(), shown  # the R flag (RFC 5798 §6.4.1)


def test_announce_errors_name_the_interface(interop: Interop) -> None:
    d, mac = interop.lab.ns("d"), bytes.fromhex("020000000001")
    with pytest.raises(AnnounceError, match="nosuch0"):
        run_in_netns(d, lambda: send_gratuitous_arp("nosuch0", mac, [VIP4]))
    with pytest.raises(AnnounceError, match="nosuch0"):
        run_in_netns(d, lambda: send_unsolicited_na("nosuch0", mac, [VIP6]))
    with pytest.raises(AnnounceError, match="6 bytes"):
        send_gratuitous_arp(IFNAME, b"\x02\x00", [VIP4])
