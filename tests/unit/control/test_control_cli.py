"""`dsrlb control` driven non-interactively (-e, stdin) and through a pty; the rich renderers."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from dsrlb.cli.main import main
from dsrlb.control.commands import ParsedArgs
from dsrlb.control.render import human_bytes, human_duration, render_result
from dsrlb.paths import instance_paths

DSRLB = Path(sys.executable).parent / "dsrlb"


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich tables would otherwise wrap at 80 in captured output


def test_execute_one_command_renders_a_table(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-i", served.instance, "control", "-e", "show targets"]) == 0
    out = capsys.readouterr().out
    assert "web1" in out and "192.0.2.11:80" in out and "[2001:db8::13]:80" in out
    assert "tcpopen 80 refused" in out and "146.5 KiB" in out


def test_execute_several_and_json(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["-i", served.instance, "control", "--json", "-e", "disable target 2", "-e", "show target 2"]
    status = main(argv)
    assert status == 0
    out = capsys.readouterr().out
    decoder = json.JSONDecoder()
    first, first_end = decoder.raw_decode(out)
    second, _ = decoder.raw_decode(out[first_end:].lstrip())
    assert first == {"targets": [2], "state": "disabled"}
    assert second["targets"][0]["state"] == "disabled"


def test_refused_command_exits_1_with_the_message(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-i", served.instance, "control", "-e", "show tagrets"]) == 1
    err = capsys.readouterr().err
    assert "unknown command 'show tagrets'; did you mean 'show targets'" in err
    assert "Traceback" not in err
    assert main(["-i", served.instance, "control", "-e", 'show "targets']) == 1
    assert "cannot split the line" in capsys.readouterr().err


def test_no_daemon_exits_2_with_a_clear_message(run_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-i", "7", "control", "-e", "show targets"]) == 2
    err = capsys.readouterr().err
    socket_path = instance_paths("7").control_socket
    assert f"dsrlb instance 7 is not running (no control socket at {socket_path})" in err


def test_commands_on_stdin_stop_at_quit(served: Any) -> None:
    lines = "# a comment\nshow stats\n\nenable target 3\nhelp\nquit\ndisable target 1\n"
    done = subprocess.run([str(DSRLB), "-i", served.instance, "control"], input=lines, capture_output=True,
                          text=True, timeout=60, env=os.environ | {"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "engine counters" in done.stdout and "malformed" in done.stdout  # show stats as tables
    assert "1 target(s) now up" in done.stdout
    assert "disable targets IDS" in done.stdout  # help
    assert served.demo.targets[3].state == "up" and served.demo.targets[1].state == "up"  # nothing after quit


def test_interactive_shell_prompt_completion_and_history(served: Any) -> None:
    """Through a pty: the prompt is the daemon's hostname, TAB completes, history is saved."""
    pid, fd = pty.fork()
    if pid == 0:  # child: become `dsrlb control` on the pty
        os.execve(str(DSRLB), [str(DSRLB), "-i", served.instance, "control"], os.environ | {"TERM": "dumb"})
    output = b""

    def read_until(marker: bytes) -> None:
        nonlocal output
        deadline = time.monotonic() + 20  # a guard against hanging, not a timing assertion
        while marker not in output:
            assert time.monotonic() < deadline, f"no {marker!r} in {output!r}"
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    output += os.read(fd, 65536)
                except OSError:
                    break

    try:
        read_until(b"lb-test# ")
        os.write(fd, b"drain targ\t")  # completes to `drain target` (and lists target/targets)
        os.write(fd, b"s 2\r")
        read_until(b"now draining")
        os.write(fd, b"quit\r")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert served.demo.targets[2].state == "draining"
    history = instance_paths(served.instance).state_dir / "control_history"
    assert "drain targets 2" in history.read_text()


def render(data: Any, text: str | None = None) -> str:
    console = Console(record=True, width=200, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(render_result(data, text, now=1_700_000_000.0))
    console.file.close()
    return console.export_text()


def test_renderers_of_every_view(demo: Any) -> None:
    no_args = ParsedArgs()
    targets = render(demo.show_targets(no_args).data)
    assert "1m30s" in targets and "0.4 ms" in targets  # since (now - 90 s) and latency
    servers = render(demo.registry().find("show servers").handler(no_args).data)
    assert "203.0.113.10" in servers and "2/3" in servers
    sessions = render(demo.show_sessions(no_args).data)
    assert "198.51.100.7" in sessions and "14m56s" in sessions
    networks = render(demo.show_networks(no_args).data)
    assert "192.0.2.0/24" in networks and "eth0" in networks
    stats = render(demo.show_stats(no_args).data)
    assert "1h2m" in stats and "drops by reason" in stats


def test_render_falls_back_without_a_traceback() -> None:
    bad = render({"targets": [{"id": 1}]})
    assert "does not have the targets shape" in bad and "missing 'name'" in bad
    assert render({"config": "x"}, "hostname lb1").strip() == "hostname lb1"
    assert render({"targets": [2], "state": "up"}, "1 target(s) now up").strip() == "1 target(s) now up"
    assert '"a": 1' in render({"a": 1})
    assert render(None).strip() == "ok"


def test_human_units() -> None:
    assert [human_bytes(n) for n in (512, 1536, 3 << 40)] == ["512 B", "1.5 KiB", "3.0 TiB"]
    assert [human_duration(s) for s in (0.4, 75, 93784)] == ["0s", "1m15s", "1d2h3m"]
