"""`dsrlb agent [-6] [--bind ADDR] [--secret-file F] [--script CMD] PORT`: the load agent for targets.

Runs in the foreground (systemd `Type=simple`), logs to stderr, exits 0 on SIGTERM/SIGINT and 2
when it cannot start (bad port, unreadable secret, address in use).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from ipaddress import ip_address
from typing import Any

from dsrlb.agent.server import AgentServer


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "agent",
        help="run the load agent on a target (answers `agent`/`agent6` health checks)",
        description="Answer the balancer's load queries on UDP PORT with this host's load: the 1-minute "
        "load average in percent of the CPUs, or the number on the last line printed by --script CMD.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-6", dest="ipv6", action="store_true",
                        help="listen on IPv6 (and IPv4-mapped) addresses: [::] unless --bind is given")
    parser.add_argument("--bind", metavar="ADDR", help="local address to listen on (default: all)")
    parser.add_argument("--secret-file", metavar="FILE",
                        help="shared secret (first line): only HMAC-authenticated queries are answered, "
                        "and replies are authenticated (the balancer's `set agentsecretfile`)")
    parser.add_argument("--script", metavar="CMD",
                        help="report the number on the last line CMD prints instead of the load average "
                        "(run without a shell every second, killed after 2 s)")
    parser.add_argument("port", metavar="PORT", type=int, help="UDP port (BalanceNG examples use 439)")


def _read_secret(path: str) -> bytes:
    with open(path, "rb") as f:
        secret = f.readline().strip()
    if not secret:
        raise ValueError("the file is empty")
    return secret


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="dsrlb agent: %(message)s", stream=sys.stderr)
    if not 1 <= args.port <= 65535:
        print(f"dsrlb agent: port {args.port} is not in 1..65535", file=sys.stderr)
        return 2
    if args.bind is not None:
        try:
            ip_address(args.bind)
        except ValueError:
            print(f"dsrlb agent: --bind {args.bind!r} is not an IP address", file=sys.stderr)
            return 2
    secret = None
    if args.secret_file:
        try:
            secret = _read_secret(args.secret_file)
        except (OSError, ValueError) as exc:
            print(f"dsrlb agent: --secret-file {args.secret_file}: {exc}", file=sys.stderr)
            return 2
    server = AgentServer(args.port, bind=args.bind, ipv6=args.ipv6, secret=secret, script=args.script)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.stop)
        await server.serve()

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"dsrlb agent: cannot listen on {server.bind} port {args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m dsrlb.cli.agent`), the same as `dsrlb agent`."""
    parser = argparse.ArgumentParser(prog="dsrlb agent")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
