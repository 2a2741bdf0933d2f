"""`dsrlb lab NAME`: a namespace lab of a seed topology, verified, with live traffic through the VIP.

    dsrlb lab dsr|ha-dsr|lvs-dr|ipv6-nat [--engine xdp|afpacket] [--requests N] [--duration S]
              [--keep] [--json]
    dsrlb lab --list
    dsrlb lab --cleanup       # remove what labs of killed dsrlb processes left behind
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from dsrlb.lab import BUILDERS, Lab, LabError, cleanup_stale_labs, run_lab
from dsrlb.lab.runner import ENGINES, wait_for_interrupt
from dsrlb.netlink import NetlinkFacadeError

DESCRIPTIONS = {
    "dsr": "seed 001: single-legged DSR, one balancer, two targets with the VIP on lo",
    "ha-dsr": "seed 000: two DSR balancer nodes (VRRP + session sync), targets on 80+443 with agents",
    "lvs-dr": "seed 004: LVS direct routing, two routers, two real servers",
    "ipv6-nat": "seed 003: IPv6 NAT 8080->80, three legs per balancer, VRRP tracking",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lab", help="build a namespace lab of a seed topology and drive traffic through it",
        description="Builds the seed topology NAME in network namespaces (documentation addresses "
        "only, nothing leaves the lab), checks it, runs the balancer with the seed's configuration "
        "remapped into the lab, drives HTTP traffic from the client and shows requests per target. "
        "Everything is removed on exit, Ctrl-C or SIGTERM.",
    )
    parser.add_argument("name", nargs="?", choices=sorted(BUILDERS), metavar="NAME",
                        help=f"one of: {', '.join(sorted(BUILDERS))}")
    parser.add_argument("--engine", choices=ENGINES, default="xdp", help="data path of the balancer")
    parser.add_argument("--requests", type=int, default=200, help="HTTP requests to send (bounded)")
    parser.add_argument("--duration", type=float, default=10.0, help="stop traffic after S seconds")
    parser.add_argument("--keep", action="store_true", help="keep the lab up until Ctrl-C")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--list", action="store_true", help="list the labs")
    parser.add_argument("--cleanup", action="store_true",
                        help="remove namespaces and processes left by labs whose dsrlb was killed")
    parser.set_defaults(func=run)


def _list(console: Console) -> int:
    table = Table(title="dsrlb labs")
    table.add_column("name")
    table.add_column("what")
    for name in sorted(BUILDERS):
        table.add_row(name, DESCRIPTIONS.get(name, ""))
    console.print(table)
    return 0


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=args.json)
    if args.list:
        return _list(console)
    if os.geteuid() != 0:
        print("dsrlb lab: needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.cleanup:
        removed = cleanup_stale_labs()
        names = f": {' '.join(removed)}" if removed else ""
        print(f"removed {len(removed)} stale lab namespace(s){names}")
        return 0
    if args.name is None:
        print("dsrlb lab: name a lab (--list shows them)", file=sys.stderr)
        return 2
    if args.requests < 0 or args.duration < 0:
        print("dsrlb lab: --requests and --duration must not be negative", file=sys.stderr)
        return 2
    try:
        with Lab() as lab:
            result = run_lab(lab, args.name, args.engine, args.requests, args.duration, console)
            if args.json:
                print(json.dumps({
                    "lab": args.name,
                    "namespaces": lab.roles,
                    "verified": result.verification.ok,
                    "checks": [{"what": c.what, "ok": c.ok, "detail": c.detail}
                               for c in result.verification.checks],
                    "balancer_running": result.balancer_running,
                    "message": result.message,
                    "failures": result.failures(),
                    "replies": result.traffic.replies if result.traffic else {},
                    "address_map": dict(result.topology.address_map),
                }, indent=2))
            else:
                console.print(result.message)
            if args.keep:
                wait_for_interrupt(console)
    except (LabError, NetlinkFacadeError) as exc:
        print(f"dsrlb lab: {exc}", file=sys.stderr)
        return 2
    failures = result.failures()
    for failure in failures:
        print(f"dsrlb lab: {failure}", file=sys.stderr)
    return 1 if failures else 0
