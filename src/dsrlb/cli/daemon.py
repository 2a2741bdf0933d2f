"""`dsrlb start|stop|restart|reload|status`: running the balancer.

`start` validates the config first (nothing starts from a bad file), then runs the daemon in the
background and waits until its control socket answers; `--foreground` runs it in this process (for
systemd: see the shipped dsrlb@.service). `reload` asks the running daemon to re-read its file; a bad
file is refused and the running config stays.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dsrlb import config as configuration
from dsrlb.control.client import CommandRejected, ControlClient, ControlClientError, NotRunningError
from dsrlb.paths import instance_paths

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0


def _running_pid(instance: str) -> int | None:
    pidfile = instance_paths(instance).pidfile
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _validate(path: str) -> bool:
    try:
        configuration.load(path)
    except configuration.ConfigErrors as exc:
        print(exc, file=sys.stderr)
        return False
    except OSError as exc:
        print(f"dsrlb: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return False
    return True


def _http(args: argparse.Namespace) -> tuple[str, int] | None:
    """--http HOST:PORT, `off`; default 127.0.0.1:8439 for instance 0 and off for the others (so
    instances side by side do not fight over one port)."""
    spec = args.http if args.http is not None else ("127.0.0.1:8439" if args.instance == "0" else "off")
    if spec == "off":
        return None
    host, _, port = spec.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _http_spec(text: str) -> str:
    if text == "off":
        return text
    _host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or off, got {text!r}")
    return text


def _foreground(args: argparse.Namespace) -> int:
    from dsrlb.daemon.core import Daemon
    from dsrlb.daemon.engines import EngineError
    from dsrlb.daemon.vrrp_role import HaConfigError

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s dsrlb[%(process)d] %(levelname)s %(message)s")
    try:
        daemon = Daemon(Path(args.config), args.instance, args.engine, args.xdp_mode, _http(args))
        asyncio.run(daemon.run())
    except (EngineError, HaConfigError) as exc:  # bad input or a missing facility: no traceback
        logging.getLogger("dsrlb").error("%s", exc)
        return 2
    except Exception as exc:  # the daemon's own cleanup already ran; say why it stopped
        logging.getLogger("dsrlb").exception("dsrlb stopped: %s", exc)
        return 1
    return 0


def start(args: argparse.Namespace) -> int:
    if not _validate(args.config):
        return 1
    pid = _running_pid(args.instance)
    if pid is not None:
        print(f"dsrlb instance {args.instance} is already running (pid {pid})", file=sys.stderr)
        return 1
    if args.foreground:
        return _foreground(args)
    paths = instance_paths(args.instance)
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "dsrlb.cli.main", "-i", args.instance, "start", "-c",
            str(Path(args.config).resolve()), "--engine", args.engine, "--xdp-mode", args.xdp_mode,
            "--foreground"] + (["--http", args.http] if args.http else [])
    if args.verbose:
        argv.append("-v")
    with open(paths.log_file, "ab") as log:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            print(f"dsrlb failed to start (exit {child.returncode}); log {paths.log_file}:", file=sys.stderr)
            print(_tail(paths.log_file), file=sys.stderr)
            return 1
        try:
            info = ControlClient.for_instance(args.instance).call("hello").data
            print(f"dsrlb instance {args.instance} started (pid {child.pid}, engine {info.get('engine')})")
            return 0
        except ControlClientError:
            time.sleep(0.1)
    print(f"dsrlb did not answer within {START_TIMEOUT_S:.0f} s; log {paths.log_file}", file=sys.stderr)
    return 1


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(args: argparse.Namespace) -> int:
    pid = _running_pid(args.instance)
    if pid is None:
        print(f"dsrlb instance {args.instance} is not running", file=sys.stderr)
        return 0 if args.command == "restart" else 1
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"dsrlb instance {args.instance} stopped")
            return 0
        time.sleep(0.05)
    print(f"dsrlb instance {args.instance} (pid {pid}) did not stop within {STOP_TIMEOUT_S:.0f} s",
          file=sys.stderr)
    return 1


def restart(args: argparse.Namespace) -> int:
    if not _validate(args.config):
        return 1
    stopped = stop(args)
    return stopped if stopped else start(args)


def reload(args: argparse.Namespace) -> int:
    words = ["reload"] + ([str(Path(args.config).resolve())] if args.config else [])
    try:
        result = ControlClient.for_instance(args.instance).call_words(words)
    except NotRunningError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (ControlClientError, CommandRejected) as exc:
        print(f"dsrlb: {exc}", file=sys.stderr)
        return 1
    print(result.text or "reloaded")
    return 0


def status(args: argparse.Namespace) -> int:
    try:
        info = ControlClient.for_instance(args.instance).call("hello").data
    except NotRunningError:
        print(f"dsrlb instance {args.instance} is not running")
        return 3  # LSB: program is not running
    except ControlClientError as exc:
        print(f"dsrlb: {exc}", file=sys.stderr)
        return 1
    pid = _running_pid(args.instance)
    print(f"dsrlb instance {args.instance} is running (pid {pid}, engine {info.get('engine')}, "
          f"config {info.get('config')}, hostname {info.get('hostname')})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name, func, helptext in (
        ("start", start, "validate the config and start the balancer"),
        ("stop", stop, "stop the balancer and remove what it added"),
        ("restart", restart, "stop, then start"),
        ("reload", reload, "re-read the config (atomic; a bad file is refused)"),
        ("status", status, "is the instance running (exit 3 when not)"),
    ):
        parser = sub.add_parser(name, help=helptext, description=helptext)
        if name in ("start", "restart", "reload"):
            parser.add_argument("-c", "--config", default=None if name == "reload" else
                                configuration.DEFAULT_CONFIG_PATH, help="configuration file")
        if name in ("start", "restart"):
            parser.add_argument("--foreground", action="store_true", help="do not detach (systemd)")
            parser.add_argument("--engine", choices=("auto", "xdp", "afpacket"), default="auto",
                                help="data path: xdp (default when BPF works) or afpacket")
            parser.add_argument("--xdp-mode", choices=("auto", "native", "generic"), default="auto",
                                help="XDP attach mode: native (driver), generic (skb), or auto: native, "
                                     "else generic")
            parser.add_argument("--http", type=_http_spec, default=None, metavar="HOST:PORT",
                                help="HTTP API and /metrics (default 127.0.0.1:8439 for instance 0, "
                                     "off for others; `off` disables)")
            parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        parser.set_defaults(func=func)
