"""`dsrlb explain`: which target a flow goes to, and why: the reference data path's answer and the
XDP program's, side by side, with any disagreement flagged.

    dsrlb explain -c FILE --client 198.51.100.7:40000 --vip 192.0.2.10:80 [--proto tcp|udp] [--json]
    dsrlb explain -c FILE --flows FLOWS      # one `CLIENT:PORT VIP:PORT [tcp|udp]` per line
    dsrlb explain ... --engine reference|xdp|both

All registered and enabled targets are assumed up. Flows are answered in order by one data path per
engine, so a second flow of a client shows the session hit. The XDP side is the real BPF object,
loaded privately (never attached, nothing pinned) with test inputs, run with BPF_PROG_TEST_RUN on
ingress ifindex 1 (lo, which exists in every network namespace); it needs root. Without `--engine`,
both engines answer when BPF works here, else the reference alone with a note on stderr.

Exit status: 0 every flow has a target and the engines agree, 1 some flow has none or the engines
disagree, 2 usage, file or configuration errors, or an engine asked for by `--engine` cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from dsrlb.config import DEFAULT_CONFIG_PATH, ConfigErrors, load
from dsrlb.engine.compile import DesiredState, compile_state
from dsrlb.engine.explain import (
    Explainer,
    Flow,
    FlowReport,
    FlowSyntaxError,
    explain_environment,
    parse_flow,
    parse_flow_line,
)
from dsrlb.model import Config

if TYPE_CHECKING:
    # Imported lazily at run time: the xdp package binds the system libbpf with ctypes when imported,
    # and `dsrlb` (which imports every command module) must work where libbpf is missing.
    from dsrlb.xdp.dataplane import XdpDataplane, XdpSizes

ENGINE_CHOICES = ("reference", "xdp", "both")
_TITLES = {
    "reference": "reference data path",
    "xdp": "XDP program",
    "both": "reference data path and XDP program",
}


class XdpUnavailable(Exception):
    """The XDP program cannot be loaded and run here; the message says why."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="show which target a flow goes to, and why",
        description="Run synthesized packets through the reference data path and the XDP program "
        "(BPF_PROG_TEST_RUN) with every registered, enabled target assumed up, and show the chosen "
        "target, method, session and reason, flagging any flow where the two engines disagree.",
        epilog="exit status: 0 every flow has a target and the engines agree, 1 some flow has none or "
        "the engines disagree, 2 usage or config errors, or --engine asks for an engine that cannot run",
    )
    parser.add_argument("-c", "--config", metavar="FILE", default=DEFAULT_CONFIG_PATH,
                        help=f"configuration file (default: {DEFAULT_CONFIG_PATH})")
    parser.add_argument("--client", metavar="ADDR:PORT", help="client address and port ([v6]:port)")
    parser.add_argument("--vip", metavar="ADDR:PORT", help="virtual server address and port")
    parser.add_argument("--proto", choices=("tcp", "udp"), default="tcp", help="protocol (default tcp)")
    parser.add_argument("--flows", metavar="FILE",
                        help="file of flows, one `CLIENT:PORT VIP:PORT [tcp|udp]` per line ('-': stdin)")
    parser.add_argument("--engine", choices=ENGINE_CHOICES, default=None,
                        help="which data path answers: the pure-Python reference, the XDP program "
                        "(BPF_PROG_TEST_RUN, needs root), or both compared (default: both when BPF "
                        "works here, else the reference with a note)")
    parser.add_argument("--json", action="store_true", help="one JSON object per flow and line")
    parser.set_defaults(func=run)


def _read_flows(args: argparse.Namespace) -> list[Flow]:
    if args.flows is not None:
        if args.client or args.vip:
            raise FlowSyntaxError("give either --flows or --client/--vip, not both")
        text = sys.stdin.read() if args.flows == "-" else Path(args.flows).read_text(encoding="utf-8")
        flows = []
        for number, line in enumerate(text.splitlines(), 1):
            try:
                flow = parse_flow_line(line)
            except FlowSyntaxError as exc:
                raise FlowSyntaxError(f"{args.flows}:{number}: {exc}") from None
            if flow is not None:
                flows.append(flow)
        return flows
    if not args.client or not args.vip:
        raise FlowSyntaxError("give --client ADDR:PORT and --vip ADDR:PORT, or --flows FILE")
    return [parse_flow(args.client, args.vip, args.proto)]


def _xdp_cell(report: FlowReport) -> str:
    xdp = report.xdp
    if xdp is None:
        return "-"
    shown = "none" if xdp.target is None else str(xdp.target)
    return f"[bold red]{shown} differs[/bold red]" if report.disagree else shown


def _print_table(reports: list[FlowReport], engine: str) -> None:
    """A table of the answers, then one `why` line per flow (long reasons stay readable at 80 columns)
    and one line per flow where the engines disagree, naming every difference."""
    table = Table(title=f"dsrlb explain ({_TITLES[engine]}, all enabled targets up)")
    table.add_column("#", no_wrap=True)
    table.add_column("client", overflow="fold", min_width=12)
    table.add_column("vip/proto", overflow="fold", min_width=12)
    for column in ("target", "method", "session"):
        table.add_column(column, no_wrap=True)
    with_xdp = engine == "both"
    if with_xdp:
        table.add_column("xdp", no_wrap=True)
    for number, report in enumerate(reports, 1):
        row = report.as_json()
        target = "none" if row["target"] is None else str(row["target"])
        cells = [str(number), row["client"], f"{row['vip']}/{row['proto']}",
                 target + (" (backup)" if row["backup"] else ""), row["method"] or "-", row["session"] or "-"]
        if with_xdp:
            cells.append(_xdp_cell(report))
        table.add_row(*cells)
    console = Console()
    console.print(table)
    for number, report in enumerate(reports, 1):
        console.print(f"#{number}: {report.reason}", soft_wrap=True, highlight=False)
    for number, report in enumerate(reports, 1):
        if report.disagree:
            console.print(f"[bold red]#{number}: the XDP program disagrees with the reference:[/bold red] "
                          + "; ".join(report.differences), soft_wrap=True, highlight=False)


def xdp_sizes_for(state: DesiredState) -> XdpSizes:
    """Map sizes that hold this config (the tables array is services x 65537 entries, so no more)."""
    from dsrlb.xdp.dataplane import XdpSizes

    keys = sum(len(spec.keys) for spec in state.services.values())
    vips = {key.address for spec in state.services.values() for key in spec.keys}
    return XdpSizes(services=max(1, len(state.services)), service_keys=max(16, keys),
                    targets=max(8, len(state.targets)), vips=max(16, len(vips)),
                    routes=max(16, len(state.routes)), local_addresses=max(16, len(state.local_addresses)),
                    ring_bytes=1 << 16)


@contextmanager
def open_xdp(config: Config) -> Iterator[XdpDataplane]:
    """The XDP program loaded for explaining `config` (test inputs on, not attached, not pinned);
    closed on exit. Raises XdpUnavailable with the reason when BPF cannot work here."""
    if os.geteuid() != 0:
        raise XdpUnavailable("not running as root (loading BPF and BPF_PROG_TEST_RUN need root)")
    try:
        from dsrlb.xdp.build import BpfBuildError
        from dsrlb.xdp.dataplane import XdpDataplane
    except (ImportError, OSError) as exc:  # ctypes finds no libbpf
        raise XdpUnavailable(f"the XDP package cannot be used: {exc}") from exc
    sizes = xdp_sizes_for(compile_state(config, explain_environment(config)))
    try:
        dataplane = XdpDataplane(sizes, test_inputs=True)
    except (BpfBuildError, OSError) as exc:  # LibbpfError is an OSError
        raise XdpUnavailable(f"the XDP program cannot be loaded: {exc}") from exc
    try:
        yield dataplane
    finally:
        dataplane.close()


def _explain(config: Config, flows: list[Flow], xdp: XdpDataplane | None,
             reference: bool) -> list[FlowReport]:
    explainer = Explainer(config, xdp=xdp, reference=reference)
    return [explainer.explain(flow) for flow in flows]


def _explain_with_xdp(config: Config, flows: list[Flow], reference: bool) -> list[FlowReport]:
    """Both engines (or XDP alone); XdpUnavailable when XDP cannot load or cannot hold the config."""
    from dsrlb.xdp.dataplane import XdpDataplaneError
    from dsrlb.xdp.slots import SlotsExhausted

    with open_xdp(config) as xdp:
        try:
            return _explain(config, flows, xdp, reference)
        except (XdpDataplaneError, SlotsExhausted, OSError) as exc:
            raise XdpUnavailable(f"the XDP program cannot be programmed with this config: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    try:
        flows = _read_flows(args)
    except FlowSyntaxError as exc:
        print(f"dsrlb explain: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"dsrlb explain: cannot read flows: {exc}", file=sys.stderr)
        return 2
    try:
        config = load(args.config)
    except ConfigErrors as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"dsrlb explain: cannot read {args.config}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    engine = args.engine or "both"
    if engine == "reference":
        reports = _explain(config, flows, None, True)
    else:
        try:
            reports = _explain_with_xdp(config, flows, reference=engine == "both")
        except XdpUnavailable as exc:
            if args.engine is not None:
                print(f"dsrlb explain: --engine {engine}: {exc}", file=sys.stderr)
                return 2
            print(f"dsrlb explain: note: no XDP answer, {exc}; the reference data path answers alone "
                  "(--engine reference asks for it alone and silences this note)", file=sys.stderr)
            engine = "reference"
            reports = _explain(config, flows, None, True)
    if args.json:
        for report in reports:
            print(json.dumps(report.as_json(), sort_keys=True))
    else:
        _print_table(reports, engine)
    ok = all(r.answer.target is not None and not r.disagree for r in reports)
    return 0 if ok else 1
