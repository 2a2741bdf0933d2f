"""`dsrlb target setup`: loopback VIPs and ARP sysctls on a DSR target, persistent files, undo.

    dsrlb target setup --vip 192.0.2.10 [--vip ...] [--vipaddrs FILE] [--interface eth0 ...]
                       [--persist debian|rhel|networkd|freebsd|solaris] [--root DIR]
                       [--dry-run] [--undo] [--state FILE] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dsrlb.netlink import NetlinkFacadeError
from dsrlb.paths import instance_paths
from dsrlb.target import PersistTarget, PlanError, SetupRequest, VipAddrsError, execute, expand_vipaddrs, plan
from dsrlb.target.plan import Action, Note, SaveRecord, vip_interface

EXIT_OK, EXIT_BAD, EXIT_USAGE = 0, 1, 2


def register(subparsers: Any) -> None:
    target = subparsers.add_parser(
        "target", help="prepare a real server (target) for Direct Server Return",
        description="Commands run on a target (real server), not on the balancer.",
    )
    sub = target.add_subparsers(dest="target_command", metavar="ACTION")
    setup = sub.add_parser(
        "setup", help="put VIPs on lo and set arp_ignore/arp_announce (DSR)",
        description="Put each VIP on the loopback interface as /32 or /128 and stop the target from "
        "answering or announcing them by ARP (net.ipv4.conf.{all,IF}.arp_ignore=1, arp_announce=2). "
        "Optionally write the persistent configuration for a system. --undo takes back exactly what "
        "earlier runs changed (recorded in the state file).",
    )
    setup.add_argument("--vip", action="append", default=[], metavar="ADDR",
                       help="a virtual IP address (IPv4 or IPv6); repeat for more")
    setup.add_argument("--vipaddrs", type=Path, metavar="FILE",
                       help="a vipaddrs file: addresses or /24-or-longer subnets, one per line, # comments")
    setup.add_argument("--interface", action="append", default=[], metavar="IF",
                       help="also set the ARP sysctls on this interface (besides 'all'); repeatable")
    setup.add_argument("--persist", choices=[p.value for p in PersistTarget],
                       help="also write reboot-safe configuration for this system")
    setup.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                       help="write persistent files (and the state file) under DIR instead of /")
    setup.add_argument("--state", type=Path, metavar="FILE",
                       help="where setup records what it changed (default: the instance's state dir)")
    setup.add_argument("--dry-run", action="store_true",
                       help="print every command and file it would write; change nothing")
    setup.add_argument("--undo", action="store_true", help="remove exactly what setup added")
    setup.add_argument("--json", action="store_true", help="print the actions as JSON")
    setup.set_defaults(func=run)
    target.set_defaults(func=lambda args: _no_action(target))


def _no_action(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _request(args: argparse.Namespace) -> SetupRequest:
    vips = [vip_interface(v) for v in args.vip]
    vipaddrs_text: str | None = None
    if args.vipaddrs is not None:
        try:
            vipaddrs_text = args.vipaddrs.read_text()
        except OSError as exc:
            raise PlanError(f"cannot read {args.vipaddrs}: {exc.strerror}") from exc
        vips += [vip_interface(str(a)) for a in expand_vipaddrs(vipaddrs_text, str(args.vipaddrs))]
    root: Path = args.root
    if args.state is not None:
        state_file = args.state
    else:
        default = instance_paths(args.instance).state_dir / "target-setup.json"
        state_file = root / str(default).lstrip("/")
    return SetupRequest(
        vips=tuple(dict.fromkeys(vips)),
        interfaces=tuple(dict.fromkeys(args.interface)),
        persist=PersistTarget(args.persist) if args.persist else None,
        root=root,
        vipaddrs_text=vipaddrs_text,
        state_file=state_file,
    )


def _as_json(action: Action) -> dict[str, Any]:
    return {"action": type(action).__name__, "command": action.command(),
            "changes": not isinstance(action, Note | SaveRecord)}


def run(args: argparse.Namespace) -> int:
    try:
        request = _request(args)
    except VipAddrsError as exc:
        print(f"dsrlb target setup: {exc}", file=sys.stderr)
        return EXIT_BAD
    except (PlanError, ValueError) as exc:
        print(f"dsrlb target setup: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not request.vips and not args.undo:
        print("dsrlb target setup: no VIP given (use --vip ADDR or --vipaddrs FILE)", file=sys.stderr)
        return EXIT_USAGE
    try:
        actions = plan(request, undo=args.undo)
        if args.dry_run:
            if args.json:
                print(json.dumps([_as_json(a) for a in actions], indent=2))
            else:
                print("# dry run: nothing is changed; these are the commands and files it would write")
                for action in actions:
                    print(action.command())
            return EXIT_OK
        lines: list[str] = []
        changed = execute(actions, report=lines.append)
    except (PlanError, NetlinkFacadeError) as exc:
        print(f"dsrlb target setup: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps({"changed": changed, "actions": [_as_json(a) for a in actions]}, indent=2))
    else:
        for line in lines:
            print(line)
        verb = "undo" if args.undo else "setup"
        print(f"# {verb}: {changed} change(s); record: {request.state_file}")
    return EXIT_OK
