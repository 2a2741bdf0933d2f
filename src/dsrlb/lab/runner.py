"""`dsrlb lab NAME`: build a seed topology, verify it, run the balancer, drive traffic, show it live.

The balancer step is `run_balancer`, which the daemon fills in: until then it raises
NotImplementedError and `run_lab` stops after the verified topology with a clear message.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from dsrlb.lab.builders import BUILDERS
from dsrlb.lab.capture import DsrProof, ReplyCapture
from dsrlb.lab.core import Lab
from dsrlb.lab.topology import LabTopology
from dsrlb.lab.traffic import TrafficReport, drive_http
from dsrlb.lab.verify import Verification, verify_topology

ENGINES = ("xdp", "afpacket")


@dataclass(frozen=True)
class LabRun:
    topology: LabTopology
    verification: Verification
    balancer_running: bool
    message: str
    traffic: TrafficReport | None = None
    dsr_proof: DsrProof | None = None


def run_balancer(lab: Lab, config_path: Path, engine: str) -> None:
    """Start the balancer on the lab's balancer node(s) with `config_path`, using `engine`.

    For the daemon to fill in: start `dsrlb start --foreground -c CONFIG` (see the topology's
    run_plan) in each balancer namespace through `lab.spawn`, wait until it serves the VIP, and
    return; the lab stops it on exit.
    """
    raise NotImplementedError("the dsrlb daemon is not available yet")


def traffic_table(topology: LabTopology, report: TrafficReport) -> Table:
    """Requests per target, live: one row per target, then errors and totals."""
    ports = ", ".join(map(str, topology.ports))
    table = Table(title=f"lab {topology.name}: http://{topology.vip} ports {ports}")
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
               console: Console) -> tuple[TrafficReport, DsrProof | None]:
    """Traffic through the VIP with the live table, capturing replies for the DSR proof."""
    capture = None
    if topology.dsr and topology.capture_point is not None:
        capture = ReplyCapture(*topology.capture_point, topology.vip, topology.ports)
    empty = TrafficReport(0)
    with Live(traffic_table(topology, empty), console=console, refresh_per_second=4) as live:
        def progress(report: TrafficReport) -> None:
            live.update(traffic_table(topology, report))

        if capture is not None:
            with capture:
                report = drive_http(topology.client_netns, topology.vip, topology.ports,
                                    topology.client_sources, requests, duration, on_progress=progress)
        else:
            report = drive_http(topology.client_netns, topology.vip, topology.ports,
                                topology.client_sources, requests, duration, on_progress=progress)
        live.update(traffic_table(topology, report))
    proof = None
    if capture is not None:
        target_macs = {t.mac: t.name for t in topology.targets}
        balancer_macs = tuple(m for b in topology.balancers for m in b.macs)
        proof = capture.proof(target_macs, balancer_macs)
    return report, proof


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
    try:
        for balancer in topology.balancers:
            run_balancer(lab, balancer.config_path, engine)
    except NotImplementedError as exc:
        message = (f"topology built and verified; {exc}, so no traffic went through the VIP "
                   f"{topology.vip}. Planned: " + "; ".join(
                       f"{p.purpose} in {p.netns}" for p in topology.run_plan if not p.started))
        return LabRun(topology, verification, False, message)
    report, proof = drive_live(lab, topology, requests, duration, console)
    message = f"{report.answered}/{report.sent} requests answered"
    if proof is not None:
        message += f"; {proof.describe()}"
    return LabRun(topology, verification, True, message, report, proof)
