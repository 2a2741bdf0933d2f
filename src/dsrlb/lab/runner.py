"""`dsrlb lab NAME`: build a seed topology, verify it, run the balancer, drive traffic, show it live.

The balancer step is `run_balancer`: the real dsrlb daemon, started in the balancer's namespace with
the seed's configuration remapped into the lab's addresses.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from dsrlb.config import write
from dsrlb.config.importers import import_lvs
from dsrlb.config.importers.lvs import Node
from dsrlb.control.client import CommandRejected, ControlClient, ControlClientError
from dsrlb.lab.builders import BUILDERS
from dsrlb.lab.capture import DsrProof, NatProof, ReplyCapture
from dsrlb.lab.core import Lab, LabError, LabProcess
from dsrlb.lab.native_xdp import XdpPeerError, prepare_peer
from dsrlb.lab.topology import LabBalancer, LabTopology
from dsrlb.lab.traffic import TrafficReport, drive_http
from dsrlb.lab.verify import Verification, verify_topology
from dsrlb.model import PortRange

ENGINES = ("xdp", "afpacket")
# Labs attach XDP in native (driver) mode, as a balancer on real NICs would. A veth needs its far
# end prepared for that (an XDP_PASS program so XDP_TX/REDIRECT frames are delivered, and software
# checksums so the balancer sees finished ones): see dsrlb.lab.native_xdp and docs/labs.md.
LAB_XDP_MODE = "native"
# Labs whose balancer step runs and carries traffic; the others are built and verified only.
BALANCED_LABS = frozenset({"dsr", "lvs-dr", "ha-dsr", "ipv6-nat"})
LAB_HTTP = "127.0.0.1:8439"  # inside the balancer's own namespace: no clash between labs


@dataclass(frozen=True)
class LabRun:
    topology: LabTopology
    verification: Verification
    balancer_running: bool
    message: str
    traffic: TrafficReport | None = None
    dsr_proof: DsrProof | None = None
    nat_proof: NatProof | None = None

    def failures(self) -> list[str]:
        """What went wrong, for the exit status: checks, traffic, and the forwarding proof."""
        found = [f"check failed: {c.what}: {c.detail}" for c in self.verification.failures()]
        report = self.traffic
        if report is not None:
            found += [f"{count} request(s) failed: {kind}" for kind, count in sorted(report.errors.items())]
            if report.sent == 0 or report.answered < report.sent:
                found.append(f"{report.answered}/{report.sent} requests answered")
        found += [f"proof failed: {p.describe()}" for p in (self.dsr_proof, self.nat_proof)
                  if p is not None and not p.holds]
        return found


def run_balancer(lab: Lab, balancer: LabBalancer, engine: str, ready_timeout: float = 30.0,
                 xdp_mode: str = LAB_XDP_MODE, http: str = LAB_HTTP,
                 lvs_node: Node = "primary") -> LabProcess:
    """Start the dsrlb daemon on `balancer`'s node with its remapped seed config, and wait until it
    answers on its control socket with every registered target up (bounded). The lab stops it."""
    instance = balancer.netns  # unique per lab run, so labs side by side do not share sockets
    if engine == "xdp" and xdp_mode == "native":
        prepare_native_xdp(lab, balancer)
    config_path = native_config(balancer, lvs_node)
    argv = [sys.executable, "-m", "dsrlb.cli.main", "-i", instance, "start", "--foreground",
            "-c", str(config_path), "--engine", engine, "--xdp-mode", xdp_mode,
            "--http", http]
    proc = lab.spawn(balancer.role, "dsrlb", argv)
    client = ControlClient.for_instance(instance, timeout=2.0)
    deadline = time.monotonic() + ready_timeout
    states: list[str] = []
    while time.monotonic() < deadline:
        if not _alive(proc.pid):
            raise LabError(f"dsrlb on {balancer.name} exited: {_tail(proc.log)}")
        try:
            rows = client.call("show", ["targets"]).data["targets"]
            states = [f"{row['id']}:{row['state']}" for row in rows]
            if rows and all(row["state"] == "up" for row in rows) and _vrrp_settled(client):
                return proc
        except (ControlClientError, CommandRejected):
            pass
        time.sleep(0.2)
    raise LabError(f"dsrlb on {balancer.name} not ready within {ready_timeout:.0f} s "
                   f"(targets {', '.join(states) or 'unknown'}): {_tail(proc.log)}")


def _vrrp_settled(client: ControlClient) -> bool:
    """No VRRP, or master, or backup of a known master: the shared addresses are where they go.
    (Alone, a node becomes master after Master_Down_Interval: 3.2 s at priority 200.)"""
    vrrp = client.call("show", ["vrrp"]).data["vrrp"]
    return vrrp is None or vrrp["state"] == "master" or (vrrp["state"] == "backup" and bool(vrrp["master"]))


def vrrp_view(balancer: LabBalancer) -> dict[str, Any] | None:
    """`show vrrp` of the balancer's running daemon (None: no vrrp in its config)."""
    with ControlClient.for_instance(balancer.netns, timeout=5.0) as client:
        view = client.call("show", ["vrrp"]).data["vrrp"]
    return None if view is None else dict(view)


def prepare_native_xdp(lab: Lab, balancer: LabBalancer) -> None:
    """Make the far end of each of the balancer's veths fit for native XDP (dsrlb.lab.native_xdp)."""
    for ifname in balancer.interfaces:
        peer_role, peer_ifname = lab.peer(balancer.role, ifname)
        try:
            prepare_peer(lab.ns(peer_role), peer_ifname)
        except XdpPeerError as exc:
            raise LabError(f"native XDP on {balancer.role}:{ifname}: {exc}") from exc


# Seed 004's firewall mark 80 bundles ports 80 and 443 (its iptables rule); lvs.cf does not say so.
SEED_004_FWMARKS = {80: (PortRange(80, 80), PortRange(443, 443))}


def native_config(balancer: LabBalancer, lvs_node: Node = "primary") -> Path:
    """The balancer's config in dsrlb's dialect: a Piranha lvs.cf goes through the importer, as an
    operator would run `dsrlb convert --fwmark 80=80,443 [--node backup] lvs.cf` (warnings go to the
    lab's log): the same lvs.cf serves both routers, seen from the primary or from the backup."""
    if not balancer.config_path.name.endswith(".cf"):
        return balancer.config_path
    result = import_lvs(balancer.config_text, str(balancer.config_path), fwmarks=SEED_004_FWMARKS,
                        node=lvs_node)
    converted = balancer.config_path.with_suffix(".conf")
    converted.write_text(write(result.config))
    return converted


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def traffic_table(topology: LabTopology, report: TrafficReport) -> Table:
    """Requests per target, live: one row per target, then errors and totals."""
    ports = ", ".join(map(str, topology.ports))
    host = f"[{topology.vip}]" if topology.vip.version == 6 else str(topology.vip)
    table = Table(title=f"lab {topology.name}: http://{host} ports {ports}")
    table.add_column("target")
    table.add_column("address")
    table.add_column("replies", justify="right")
    table.add_column("share", justify="right")
    answered = report.answered or 1
    for target in topology.targets:
        count = report.replies.get(target.name, 0)
        table.add_row(target.name, str(target.address), str(count), f"{100 * count / answered:.1f}%")
    for name, count in sorted(report.replies.items()):
        if name not in {t.name for t in topology.targets}:
            table.add_row(f"[red]{name}[/red]", "?", str(count), "")
    for kind, count in sorted(report.errors.items()):
        table.add_row(f"[red]error: {kind}[/red]", "", str(count), "")
    table.caption = f"{report.sent} sent, {report.answered} answered, {report.elapsed:.1f} s"
    return table


def verification_table(topology: LabTopology, verification: Verification) -> Table:
    table = Table(title=f"lab {topology.name} (seed {topology.seed}): {topology.description}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for check in verification.checks:
        table.add_row(check.what, "[green]ok[/green]" if check.ok else "[red]FAILED[/red]", check.detail)
    return table


def drive_live(lab: Lab, topology: LabTopology, requests: int, duration: float,
               console: Console) -> tuple[TrafficReport, DsrProof | None, NatProof | None]:
    """Traffic through the VIP with the live table, capturing replies for the DSR or NAT proof."""
    capture = None
    if topology.capture_point is not None:
        capture = ReplyCapture(*topology.capture_point, topology.vip, topology.ports, topology.client_sources)
    empty = TrafficReport(0)
    with Live(traffic_table(topology, empty), console=console, refresh_per_second=4) as live:
        def progress(report: TrafficReport) -> None:
            live.update(traffic_table(topology, report))

        def drive() -> TrafficReport:
            return drive_http(topology.client_netns, topology.vip, topology.ports,
                              topology.client_sources, requests, duration, on_progress=progress)

        if capture is not None:
            with capture:
                report = drive()
        else:
            report = drive()
        live.update(traffic_table(topology, report))
    if capture is None:
        return report, None, None
    if topology.dsr:
        target_macs = {t.mac: t.name for t in topology.targets}
        balancer_macs = tuple(m for b in topology.balancers for m in b.macs)
        return report, capture.proof(target_macs, balancer_macs), None
    return report, None, capture.nat_proof(report.peers)


def wait_for_interrupt(console: Console) -> None:
    """--keep: leave the lab up until Ctrl-C or SIGTERM (the lab then cleans up)."""
    console.print("lab kept up; press Ctrl-C to tear it down")
    forever = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    while not forever.wait(3600):
        pass


def run_lab(lab: Lab, name: str, engine: str = "xdp", requests: int = 200, duration: float = 10.0,
            console: Console | None = None) -> LabRun:
    """Build lab `name` in `lab`, verify it, and run balancer and traffic once the daemon exists."""
    console = console or Console()
    topology = BUILDERS[name](lab)
    verification = verify_topology(topology)
    console.print(verification_table(topology, verification))
    if not verification.ok:
        return LabRun(topology, verification, False, "the topology failed its checks")
    if name not in BALANCED_LABS:
        return LabRun(topology, verification, False,
                      f"topology built and verified; the balancer step of lab {name} does not work yet")
    # The first node starts (and, alone, becomes master); the others of an HA pair join it as VRRP
    # backups (seed 004's one lvs.cf converted as seen from the backup router).
    first = topology.balancers[0]
    run_balancer(lab, first, engine)
    skipped: list[LabBalancer] = []
    joining = list(topology.balancers[1:])
    if joining and vrrp_view(first) is None:
        skipped, joining = skipped + joining, []
    for balancer in joining:
        run_balancer(lab, balancer, engine, lvs_node="backup")
    report, proof, nat_proof = drive_live(lab, topology, requests, duration, console)
    message = f"{report.answered}/{report.sent} requests answered"
    if joining:
        roles = [f"{b.name} {(vrrp_view(b) or {}).get('state', '?')}" for b in (first, *joining)]
        message += f"; VRRP: {', '.join(roles)}"
    for balancer in skipped:
        message += f"; node {balancer.name} not started: its config has no vrrp block"
    for shown in (proof, nat_proof):
        if shown is not None:
            message += f"; {shown.describe()}"
    return LabRun(topology, verification, True, message, report, proof, nat_proof)
