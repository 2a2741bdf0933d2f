"""`dsrlb check` and `dsrlb show config`: exit codes and output, through the real command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dsrlb.cli.main import main
from dsrlb.config import load, loads
from dsrlb.examples import example

GOOD = example("seed001-dsr").path


def test_check_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(GOOD)]) == 0
    out = capsys.readouterr().out
    assert out == f"{GOOD}: ok: 1 interface, 1 network, 1 server, 2 targets\n"


def test_check_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("server 1 {\n  ipaddr 192.0.2.1\n  method rrr\n}\n")
    assert main(["check", "-c", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"{bad}:3:10: error: unknown method")


def test_check_unreadable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(tmp_path / "missing.conf")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["check", "-c", str(tmp_path)]) == 2  # a directory


def test_check_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(GOOD), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["summary"]["targets"] == 2
    bad = tmp_path / "bad.conf"
    bad.write_text("register target 3\n")
    assert main(["check", "--json", "-c", str(bad)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["errors"][0] == {
        "file": str(bad),
        "line": 1,
        "column": 17,
        "token": "3",
        "message": "target 3 is not defined",
        "expected": "the id of a defined target",
    }


def test_show_config_is_canonical_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "config", "-c", str(GOOD)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("modules   vrrp,arp,ping,hc,master,slb,tnat,nat,rt\ninterface 1 {\n")
    assert loads(text) == load(GOOD)


def test_show_config_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "config", "-c", str(example("seed003-lb1").path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["hostname"] == "LB1"
    assert data["settings"] == {"ipforwarding": "1", "vrrppreempt": "1", "vrrppreemptts": "8"}
    assert data["servers"][0]["ports"] == ["8080"] and data["servers"][0]["sessionid"] == "src+port"
    assert data["targets"][0]["checks"][1] == {
        "type": "agent6",
        "port": 10000,
        "interval": 3,
        "timeout": 10,
        "ipv6": True,
    }


def test_show_config_errors_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("hostname\n")
    assert main(["show", "config", "-c", str(bad)]) == 1
    assert main(["show", "config", "-c", str(tmp_path / "nope")]) == 2
    assert main(["-i", "nobody", "show", "config"]) == 2  # no -c: asks a daemon, none runs
    capsys.readouterr()


def test_show_running_state_without_a_daemon(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DSRLB_RUN_DIR", str(tmp_path))
    assert main(["-i", "nobody", "show", "sessions"]) == 2
    assert "dsrlb instance nobody is not running" in capsys.readouterr().err
    assert main(["-i", "nobody", "show", "vrrp"]) == 2
    assert "dsrlb instance nobody is not running" in capsys.readouterr().err
    assert main(["-i", "nobody", "show", "sync"]) == 2
    assert "dsrlb instance nobody is not running" in capsys.readouterr().err
    assert main(["show", "bogus"]) == 2


def test_installed_command_exit_codes(tmp_path: Path) -> None:
    """The console script end to end (a subprocess, as an operator runs it)."""
    command = [sys.executable, "-m", "dsrlb.cli.main", "check", "-c"]
    ok = subprocess.run([*command, str(GOOD)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith(str(GOOD))
    bad = tmp_path / "bad.conf"
    bad.write_bytes(b"hostname \xff\n")
    failed = subprocess.run([*command, str(bad)], capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and "not valid UTF-8" in failed.stderr
    missing = subprocess.run([*command, str(tmp_path / "none")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2
