"""`dsrlb show WHAT`: a configuration file, or the running daemon's state.

`dsrlb show config -c FILE [--json]` prints the file's configuration in canonical form (or the model
as JSON). Without -c, and for servers, targets, sessions, networks and stats, the running instance
(`-i`) answers over its control socket; tables are rendered with rich, `--json` prints the result.
`vrrp` and `sync` answer that this version has no VRRP or session sync yet (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from dsrlb.cli.control import Shell
from dsrlb.config import ConfigErrors, parse_checked, write
from dsrlb.config.jsonview import config_to_json
from dsrlb.control.client import ControlClient, ControlClientError, NotRunningError

# What `show` knows about (DESIGN §4).
SHOW_TOPICS = ("servers", "targets", "sessions", "networks", "gateway", "vrrp", "sync", "config", "stats")


def show_running(args: argparse.Namespace) -> int:
    """Ask the running instance (`show WHAT`) and print the answer as a table or JSON."""
    try:
        with ControlClient.for_instance(args.instance) as client:
            shell = Shell(client, Console(), Console(stderr=True), bool(args.json))
            return shell.execute(f"show {args.what.lower()}") or 0
    except NotRunningError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ControlClientError as exc:
        print(f"dsrlb show: {exc}", file=sys.stderr)
        return 2


def show_config(args: argparse.Namespace) -> int:
    if args.config is None:
        return show_running(args)
    path = str(args.config)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        print(f"dsrlb show: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        config = parse_checked(data, path).config
    except ConfigErrors as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(config_to_json(config), indent=2))
    else:
        sys.stdout.write(write(config))
    return 0


SHOW_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "config": show_config,
    **dict.fromkeys(("servers", "targets", "sessions", "networks", "gateway", "vrrp", "sync", "stats"),
                    show_running),
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "show",
        help="show the configuration or the running state",
        description="Show the configuration (canonical form) or, with a running daemon, its state.",
        epilog="WHAT is one of: " + ", ".join(SHOW_TOPICS),
    )
    parser.add_argument("what", metavar="WHAT", help="what to show: " + " | ".join(SHOW_TOPICS))
    parser.add_argument("-c", "--config", metavar="FILE", help="read the configuration from FILE")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    what = str(args.what).lower()
    handler = SHOW_HANDLERS.get(what)
    if handler is not None:
        return handler(args)
    print(f"dsrlb show: unknown WHAT '{args.what}'; choose from {', '.join(SHOW_TOPICS)}", file=sys.stderr)
    return 2
