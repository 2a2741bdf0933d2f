"""The `dsrlb` command: global options, then one sub-command per module in COMMAND_MODULES.

Each command module defines `register(subparsers) -> None`, which adds its parser(s) and sets
`func=callable(args) -> int` as the default. Exit codes: 0 ok, 1 the thing checked is bad (config
errors, a flow with no target), 2 usage or environment errors.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from dsrlb import __version__
from dsrlb.paths import InstanceNameError, instance_paths

# Command modules in help order. A module that is not installed (a partial checkout) is left out.
COMMAND_MODULES: tuple[str, ...] = (
    "daemon",  # start stop restart reload status
    "check",
    "show",
    "control",
    "convert",
    "explain",
    "target",
    "agent",
    "lab",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsrlb",
        description="dsrlb: layer-4 server load balancer (Direct Server Return and NAT, XDP fast path).",
    )
    parser.add_argument("--version", action="version", version=f"dsrlb {__version__}")
    parser.add_argument(
        "-i", "--instance", default="0",
        help="instance name: selects pidfile, control socket and state directory (default: 0)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(f"dsrlb.cli.{name}") is None:
            continue
        importlib.import_module(f"dsrlb.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        instance_paths(args.instance)
    except InstanceNameError as exc:
        parser.error(str(exc))
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
