"""`dsrlb show WHAT`: configuration now, running state once the daemon exists.

`dsrlb show config -c FILE [--json]` prints the file's configuration in canonical form (or the model
as JSON). The other WHATs of DESIGN §4 (servers, targets, sessions, networks, vrrp, sync, stats) need
a running daemon; they are registered in SHOW_HANDLERS by the modules that implement them, and until
then answer with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from dsrlb.config import ConfigErrors, parse_checked, write
from dsrlb.config.jsonview import config_to_json

# What `show` knows about (DESIGN §4); handlers are filled in as the features land.
SHOW_TOPICS = ("servers", "targets", "sessions", "networks", "vrrp", "sync", "config", "stats")


def show_config(args: argparse.Namespace) -> int:
    if args.config is None:
        print("dsrlb show config without -c FILE needs a running daemon (not available yet)", file=sys.stderr)
        return 2
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


SHOW_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {"config": show_config}


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
    if what in SHOW_TOPICS:
        print(f"dsrlb show {what} needs a running daemon (not available yet)", file=sys.stderr)
    else:
        print(
            f"dsrlb show: unknown WHAT '{args.what}'; choose from {', '.join(SHOW_TOPICS)}", file=sys.stderr
        )
    return 2
