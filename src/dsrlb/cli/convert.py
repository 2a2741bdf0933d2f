"""`dsrlb convert FILE`: Piranha lvs.cf or keepalived.conf -> canonical dsrlb configuration.

The converted configuration goes to stdout (the canonical writer's text, so `dsrlb check` accepts it);
every source setting without an exact equivalent is a `FILE:LINE: warning: ...` line on stderr.
Exit codes: 0 converted, 1 the input (or the converted result) has errors, each as
`FILE:LINE:COL: error: ...` on stderr, 2 the file cannot be read or the options are wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dsrlb.config import ConfigErrors, loads, write
from dsrlb.config.importers import (
    FwmarkOptionError,
    ImportResult,
    detect_format,
    import_keepalived,
    import_lvs,
    parse_fwmark_options,
)

CONVERTED_NAME = "<converted>"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a Piranha lvs.cf or keepalived.conf to a dsrlb configuration",
        description=(
            "Read a Piranha lvs.cf or a keepalived.conf and print the equivalent dsrlb configuration "
            "(canonical BalanceNG dialect) on stdout. Settings without an exact equivalent are reported "
            "as FILE:LINE: warning lines on stderr."
        ),
        epilog="exit status: 0 converted, 1 the input has errors, 2 the file cannot be read or bad options",
    )
    parser.add_argument("file", metavar="FILE", help="lvs.cf or keepalived.conf to convert")
    parser.add_argument(
        "--from", dest="source_format", choices=("lvs", "keepalived"),
        help="source format (default: detected from the content, then the file name)",
    )  # fmt: skip
    parser.add_argument(
        "--fwmark", action="append", default=[], metavar="MARK=PORTS",
        help="ports behind a firewall mark, e.g. 80=80,443 (repeatable); without it a firewall-mark "
        "service becomes an any-port server",
    )  # fmt: skip
    parser.add_argument(
        "--node", choices=("primary", "backup"), default="primary",
        help="lvs.cf: convert for the primary (default) or the backup router",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print config, warnings and errors as JSON")
    parser.set_defaults(func=run)


def _fail_usage(args: argparse.Namespace, message: str, **extra: Any) -> int:
    if args.json:
        print(json.dumps({"file": args.file, "ok": False, "reason": message, **extra}, indent=2))
    print(f"dsrlb convert: {message}", file=sys.stderr)
    return 2


def _convert(args: argparse.Namespace, text: str, source_format: str) -> ImportResult:
    fwmarks = parse_fwmark_options(args.fwmark)
    if source_format == "lvs":
        return import_lvs(text, args.file, fwmarks=fwmarks, node=args.node)
    if args.node != "primary":
        print("dsrlb convert: --node has no effect on keepalived.conf (it is per node)", file=sys.stderr)
    return import_keepalived(text, args.file, fwmarks=fwmarks)


def run(args: argparse.Namespace) -> int:
    path = str(args.file)
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        return _fail_usage(args, f"cannot read {path}: {exc.strerror or exc}", readable=False)
    source_format = args.source_format or detect_format(text, path)
    if source_format is None:
        return _fail_usage(args, f"cannot tell whether {path} is lvs.cf or keepalived.conf: use --from")
    try:
        result = _convert(args, text, source_format)
    except FwmarkOptionError as exc:
        return _fail_usage(args, str(exc))
    except OSError as exc:  # an included file that exists but cannot be read
        return _fail_usage(args, f"cannot read {exc.filename}: {exc.strerror or exc}", readable=False)
    except ConfigErrors as exc:
        if args.json:
            errors = [error.as_dict() for error in exc.errors]
            body = {"file": path, "format": source_format, "ok": False, "errors": errors}
            print(json.dumps(body, indent=2))
        print(exc, file=sys.stderr)
        return 1
    output = write(result.config)
    try:
        loads(output, CONVERTED_NAME)
    except ConfigErrors as exc:
        # The source was readable but says something dsrlb rejects (e.g. two services on one address
        # and port): show the converted text's errors so the operator can fix the source.
        print(f"dsrlb convert: the converted configuration of {path} is not valid:", file=sys.stderr)
        print(exc, file=sys.stderr)
        if args.json:
            errors = [error.as_dict() for error in exc.errors]
            body = {"file": path, "format": source_format, "ok": False, "config": output, "errors": errors}
            print(json.dumps(body, indent=2))
        return 1
    for warning in result.warnings:
        print(warning, file=sys.stderr)
    if args.json:
        warnings = [w.as_dict() for w in result.warnings]
        body = {"file": path, "format": source_format, "ok": True, "config": output, "warnings": warnings}
        print(json.dumps(body, indent=2))
    else:
        sys.stdout.write(output)
    return 0
