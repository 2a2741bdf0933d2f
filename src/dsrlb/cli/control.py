"""`dsrlb control`: BalanceNG-style interactive shell against a running instance.

    dsrlb control                     interactive: prompt `hostname#`, history, tab completion
    dsrlb control -e "show targets"   one command (repeat -e for several), then exit
    echo "show targets" | dsrlb control   commands from stdin when it is not a terminal

Exit code: 0 when every command succeeded, 1 when the daemon refused one, 2 when no daemon answers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from rich.console import Console

from dsrlb.control.client import CommandRejected, ControlClient, ControlClientError
from dsrlb.control.commands import CommandError, split_line
from dsrlb.control.protocol import to_jsonable
from dsrlb.control.render import render_result
from dsrlb.paths import instance_paths

QUIT_WORDS = frozenset({"quit", "exit"})
HISTORY_NAME = "control_history"
HISTORY_LENGTH = 1000


class Shell:
    """Runs command lines against one daemon and prints their results."""

    def __init__(self, client: ControlClient, console: Console, errors: Console, want_json: bool) -> None:
        self.client = client
        self.console = console
        self.errors = errors
        self.want_json = want_json

    def execute(self, line: str) -> int | None:
        """Run one line: exit status 0/1, or None for `quit`/`exit`. Raises ControlClientError."""
        try:
            words = split_line(line)
        except CommandError as exc:
            self.errors.print(f"error: {exc.message}", markup=False, highlight=False, soft_wrap=True)
            return 1
        if not words or words[0].startswith("#"):
            return 0
        if words[0].lower() in QUIT_WORDS and len(words) == 1:
            return None
        try:
            result = self.client.call_words(words, want_json=self.want_json)
        except CommandRejected as exc:
            self.errors.print(f"error: {exc.message}", markup=False, highlight=False, soft_wrap=True)
            return 1
        if self.want_json:
            # Plain print, not rich: scripts parse this.
            self.console.file.write(json.dumps(to_jsonable(result.data), indent=2) + "\n")
            self.console.file.flush()
        else:
            self.console.print(render_result(result.data, result.text))
        return 0

    def run_lines(self, lines: Iterable[str]) -> int:
        status = 0
        for line in lines:
            outcome = self.execute(line)
            if outcome is None:
                break
            status = max(status, outcome)
        return status

    def completions(self, line: str) -> list[str]:
        """Candidates for the last word of `line`, asked of the daemon (it knows ids and names)."""
        candidates: list[str] = []
        if " " not in line.lstrip():
            candidates += [w for w in sorted(QUIT_WORDS) if w.startswith(line.strip())]
        try:
            found = self.client.call("complete", [line]).data
        except (CommandRejected, ControlClientError):
            return candidates
        if isinstance(found, list):
            candidates += [c for c in found if isinstance(c, str)]
        return candidates

    def prompt(self) -> str:
        try:
            info = self.client.call("hello").data
        except CommandRejected:
            info = None
        hostname = info.get("hostname") if isinstance(info, dict) else None
        return f"{hostname if isinstance(hostname, str) and hostname else 'dsrlb'}# "


def history_path(instance: str) -> Path:
    """The state directory's history file, or ~/.dsrlb_history when that is not writable."""
    state_dir = instance_paths(instance).state_dir
    with contextlib.suppress(OSError):
        state_dir.mkdir(parents=True, exist_ok=True)
    if os.access(state_dir, os.W_OK):
        return state_dir / HISTORY_NAME
    return Path.home() / ".dsrlb_history"


class _ReadlineCompleter:
    """readline's completer protocol (text, state) over Shell.completions and the current line."""

    def __init__(self, shell: Shell, line_buffer: Callable[[], str]) -> None:
        self.shell = shell
        self.line_buffer = line_buffer
        self._matches: list[str] = []

    def __call__(self, text: str, state: int) -> str | None:
        if state == 0:
            self._matches = self.shell.completions(self.line_buffer())
        return self._matches[state] if state < len(self._matches) else None


def interactive(shell: Shell, instance: str) -> int:
    import readline  # only here: importing it changes how input() behaves

    history = history_path(instance)
    with contextlib.suppress(OSError):
        readline.read_history_file(history)
    readline.set_history_length(HISTORY_LENGTH)
    readline.set_completer_delims(" \t\n")

    def before_cursor() -> str:
        return readline.get_line_buffer()[: readline.get_endidx()]

    readline.set_completer(_ReadlineCompleter(shell, before_cursor))
    readline.parse_and_bind("tab: complete")
    prompt = shell.prompt()
    status = 0
    try:
        while True:
            try:
                line = input(prompt)
            except EOFError:
                shell.console.print()
                break
            except KeyboardInterrupt:
                shell.console.print()
                continue
            outcome = shell.execute(line)
            if outcome is None:
                break
            status = outcome
    finally:
        with contextlib.suppress(OSError):
            readline.write_history_file(history)
    return status


def run(args: argparse.Namespace) -> int:
    console = Console(file=sys.stdout)
    errors = Console(file=sys.stderr)
    client = ControlClient.for_instance(args.instance, timeout=args.timeout)
    try:
        with client:
            shell = Shell(client, console, errors, args.json)
            if args.execute:
                return shell.run_lines(args.execute)
            if not sys.stdin.isatty():
                return shell.run_lines(sys.stdin)
            return interactive(shell, args.instance)
    except ControlClientError as exc:
        errors.print(f"dsrlb control: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError("the timeout must be between 0 and 86400 seconds")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "control",
        help="interactive shell of the running instance (show, enable, disable, drain, reload)",
        description=(
            "Talk to the running dsrlb instance over its control socket. Without -e, reads commands from "
            "stdin when it is not a terminal, else opens an interactive shell with the prompt 'hostname#', "
            "history and tab completion ('help' lists the commands, 'quit' leaves)."
        ),
    )
    parser.add_argument(
        "-e", "--execute", action="append", metavar="COMMAND",
        help='run COMMAND (e.g. "show targets") and exit; may be repeated',
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON (for scripts)")
    parser.add_argument(
        "--timeout", type=_positive_seconds, default=30.0, metavar="SECONDS",
        help="how long to wait for each answer (default: 30)",
    )
    parser.set_defaults(func=run)
