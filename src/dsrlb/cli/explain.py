"""`dsrlb explain`: which target a flow goes to, and why, computed by the reference data path.

    dsrlb explain -c FILE --client 198.51.100.7:40000 --vip 192.0.2.10:80 [--proto tcp|udp] [--json]
    dsrlb explain -c FILE --flows FLOWS      # one `CLIENT:PORT VIP:PORT [tcp|udp]` per line

All registered and enabled targets are assumed up. Flows are answered in order by one data path, so
a second flow of a client shows the session hit. Exit status: 0 every flow has a target, 1 some flow
has none, 2 usage, file or configuration errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dsrlb.config import DEFAULT_CONFIG_PATH, ConfigErrors, load
from dsrlb.engine.explain import Explainer, Flow, FlowReport, FlowSyntaxError, parse_flow, parse_flow_line


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="show which target a flow goes to, and why",
        description="Run synthesized packets through the reference data path with every registered, "
        "enabled target assumed up, and show the chosen target, method, session and reason.",
        epilog="exit status: 0 every flow has a target, 1 some flow has none, 2 usage or config errors",
    )
    parser.add_argument("-c", "--config", metavar="FILE", default=DEFAULT_CONFIG_PATH,
                        help=f"configuration file (default: {DEFAULT_CONFIG_PATH})")
    parser.add_argument("--client", metavar="ADDR:PORT", help="client address and port ([v6]:port)")
    parser.add_argument("--vip", metavar="ADDR:PORT", help="virtual server address and port")
    parser.add_argument("--proto", choices=("tcp", "udp"), default="tcp", help="protocol (default tcp)")
    parser.add_argument("--flows", metavar="FILE",
                        help="file of flows, one `CLIENT:PORT VIP:PORT [tcp|udp]` per line ('-': stdin)")
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


def _print_table(reports: list[FlowReport]) -> None:
    """A table of the answers, then one `why` line per flow (long reasons stay readable at 80 columns)."""
    table = Table(title="dsrlb explain (reference data path, all enabled targets up)")
    table.add_column("#", min_width=2, no_wrap=True)
    for column in ("client", "vip"):
        table.add_column(column, overflow="fold", min_width=12)
    for column in ("proto", "target", "method", "session", "backup"):
        table.add_column(column, no_wrap=True, min_width=4)
    with_xdp = any(r.xdp is not None for r in reports)
    if with_xdp:
        table.add_column("xdp", no_wrap=True)
    for number, report in enumerate(reports, 1):
        row = report.as_json()
        target = "none" if row["target"] is None else str(row["target"])
        cells = [str(number), row["client"], row["vip"], row["proto"], target, row["method"] or "-",
                 row["session"] or "-", "yes" if row["backup"] else "no"]
        if with_xdp:
            xdp = row["xdp"]
            cells.append("-" if xdp is None else f"{xdp['target']}{' DISAGREES' if row['disagree'] else ''}")
        table.add_row(*cells)
    console = Console()
    console.print(table)
    for number, report in enumerate(reports, 1):
        console.print(f"#{number}: {report.reason}", soft_wrap=True, highlight=False)


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
    explainer = Explainer(config)
    reports = [explainer.explain(flow) for flow in flows]
    if args.json:
        for report in reports:
            print(json.dumps(report.as_json(), sort_keys=True))
    else:
        _print_table(reports)
    return 0 if all(r.reference.target is not None for r in reports) else 1
