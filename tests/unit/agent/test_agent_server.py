"""The agent's load sources and the `dsrlb agent` command line (no sockets: see tests/netns)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from dsrlb.agent.server import AgentServer, loadavg_percent, parse_load, script_load
from dsrlb.cli import agent as agent_cli


def test_parse_load_takes_the_first_sane_number() -> None:
    assert parse_load("42\n") == 42.0
    assert parse_load("load: 12.5 percent") == 12.5
    assert parse_load("no number here") is None
    assert parse_load("-3") is None
    assert parse_load("1e12") is None


def test_loadavg_percent_is_a_whole_non_negative_percentage() -> None:
    value = loadavg_percent()
    assert value >= 0 and value == int(value)


def test_script_load_runs_without_a_shell_and_reports_failures_as_unavailable() -> None:
    assert asyncio.run(script_load("echo 73")) == 73.0
    assert asyncio.run(script_load("sh -c 'echo 5; echo 61'")) == 61.0  # the last line counts
    assert asyncio.run(script_load("false")) is None
    assert asyncio.run(script_load("sleep 5", timeout=0.2)) is None  # killed, not waited for
    assert asyncio.run(script_load("echo $(hostname)")) is None  # no shell: the text is printed as is


def test_stale_or_missing_load_is_unavailable() -> None:
    server = AgentServer(439)
    assert server._current_load() is None  # not started: no sample yet


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert agent_cli.main(["70000"]) == 2
    assert agent_cli.main(["--bind", "not-an-address", "439"]) == 2
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert agent_cli.main(["--secret-file", str(empty), "439"]) == 2
    assert agent_cli.main(["--secret-file", str(tmp_path / "missing"), "439"]) == 2
    err = capsys.readouterr().err
    assert "not in 1..65535" in err and "not an IP address" in err and "the file is empty" in err


def test_register_adds_the_agent_command() -> None:
    parser = argparse.ArgumentParser(prog="dsrlb")
    agent_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["agent", "-6", "--script", "echo 1", "10000"])
    assert args.func is agent_cli.run and args.ipv6 and args.port == 10000 and args.script == "echo 1"
