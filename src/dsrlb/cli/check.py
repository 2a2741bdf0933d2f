"""`dsrlb check -c FILE`: parse and validate a configuration without touching the system.

Exit codes: 0 valid (one summary line on stdout), 1 the file has errors (one line each on stderr, in
the `FILE:LINE:COL: error: ...` format editors understand), 2 the file cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dsrlb.config import DEFAULT_CONFIG_PATH, ConfigErrors, parse_checked
from dsrlb.model import Config


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check a configuration file",
        description="Parse and validate a BalanceNG-dialect configuration file. Nothing is applied.",
        epilog="exit status: 0 valid, 1 the file has errors, 2 the file cannot be read",
    )
    parser.add_argument(
        "-c", "--config", metavar="FILE", default=DEFAULT_CONFIG_PATH,
        help=f"configuration file (default: {DEFAULT_CONFIG_PATH})",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.set_defaults(func=run)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def summary_counts(config: Config) -> dict[str, Any]:
    return {
        "hostname": config.hostname,
        "interfaces": len(config.interfaces),
        "networks": len(config.networks),
        "servers": len(config.servers),
        "targets": len(config.targets),
        "vrrp": config.vrrp.vrid if config.vrrp is not None else None,
    }


def summary_line(path: str, config: Config) -> str:
    parts = [
        _plural(len(config.interfaces), "interface"),
        _plural(len(config.networks), "network"),
        _plural(len(config.servers), "server"),
        _plural(len(config.targets), "target"),
    ]
    if config.vrrp is not None:
        parts.append(f"vrrp vrid {config.vrrp.vrid}")
    host = f" (hostname {config.hostname})" if config.hostname else ""
    return f"{path}: ok{host}: {', '.join(parts)}"


def run(args: argparse.Namespace) -> int:
    path = str(args.config)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if args.json:
            print(json.dumps({"file": path, "ok": False, "readable": False, "reason": reason}))
        print(f"dsrlb check: cannot read {path}: {reason}", file=sys.stderr)
        return 2
    try:
        config = parse_checked(data, path).config
    except ConfigErrors as exc:
        if args.json:
            errors = [error.as_dict() for error in exc.errors]
            print(json.dumps({"file": path, "ok": False, "readable": True, "errors": errors}, indent=2))
        print(exc, file=sys.stderr)
        return 1
    if args.json:
        print(
            json.dumps(
                {"file": path, "ok": True, "readable": True, "summary": summary_counts(config)}, indent=2
            )
        )
    else:
        print(summary_line(path, config))
    return 0
