"""`dsrlb convert`: stdout is a configuration `dsrlb check` accepts, warnings and errors on stderr."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest

from dsrlb.cli.main import main
from dsrlb.config import loads

SEED_004 = str(files("dsrlb.examples").joinpath("seed004-lvs.cf"))
KEEPALIVED = str(Path(__file__).parent / "data" / "keepalived.conf")


def test_lvs_cf_converts_and_checks(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["convert", SEED_004, "--fwmark", "80=80,443"]) == 0
    out, err = capsys.readouterr()
    config = loads(out, "converted")
    assert config.servers[0].multi_port
    assert f"{SEED_004}:1: warning: serial_no:" in err
    converted = tmp_path / "dsrlb.conf"
    converted.write_text(out)
    assert main(["check", "-c", str(converted)]) == 0


def test_keepalived_detected_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", KEEPALIVED, "--json"]) == 0
    out, _ = capsys.readouterr()
    body = json.loads(out)
    assert body["ok"] and body["format"] == "keepalived"
    assert loads(body["config"]).vrrp is not None
    assert any(w["setting"] == "fwmark" for w in body["warnings"])


def test_backup_node(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", SEED_004, "--node", "backup"]) == 0
    config = loads(capsys.readouterr().out)
    assert config.vrrp is not None and config.vrrp.priority == 100


def test_bad_input_exit_1_with_position(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "lvs.cf"
    bad.write_text("primary = 192.0.2.1\nkeepalive 2\n")
    assert main(["convert", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and f"{bad}:2:11: error: equal (=) expected" in err


def test_unreadable_file_and_bad_options_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["convert", str(tmp_path / "missing.cf")]) == 2
    assert main(["convert", SEED_004, "--fwmark", "80:80"]) == 2
    unknown = tmp_path / "mystery.txt"
    unknown.write_text("hello\n")
    assert main(["convert", str(unknown)]) == 2
    assert "use --from" in capsys.readouterr().err


def test_converted_result_that_dsrlb_rejects_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    clash = tmp_path / "keepalived.conf"
    clash.write_text("virtual_server 192.0.2.1 80 {\n}\nvirtual_server 192.0.2.1 80 {\n}\n")
    assert main(["convert", str(clash)]) == 1
    assert "not valid" in capsys.readouterr().err
