"""`dsrlb explain` end to end through the CLI entry point, and the engine-neutral answer reading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsrlb.cli.main import main
from dsrlb.engine.explain import (
    FlowSyntaxError,
    parse_flow,
    parse_flow_line,
    synthetic_next_hop,
    target_from_mac,
)
from dsrlb.engine.hashing import hash_session_key
from dsrlb.engine.tables import Candidate, maglev_ring

CONFIG = """\
server 1 {
          ipaddr 192.0.2.10
          port 80
          protocol tcp
          method maglev
          targets 1,2
}
server 2 {
          ipaddr 192.0.2.11
          ports 80,443
          targets 1,2
          backup 3
}
server 3 {
          ipaddr6 2001:db8:a::10
          port 53
          protocol udp
          targets 4
}
register  servers 1,2,3
enable    servers 1,2,3
target 1 {
          ipaddr 203.0.113.11
          dsr enable
}
target 2 {
          ipaddr 203.0.113.12
          dsr enable
}
target 3 {
          ipaddr 203.0.113.13
          dsr enable
}
target 4 {
          ipaddr6 2001:db8:b::14
}
register  targets 1,2,3,4
enable    targets 1,3,4
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "dsrlb.conf"
    path.write_text(CONFIG)
    return path


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_flows_share_one_data_path(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flows = tmp_path / "flows"
    flows.write_text(
        "# client vip proto\n"
        "198.51.100.7:40000 192.0.2.10:80 tcp\n"
        "198.51.100.7:40001 192.0.2.10:80\n"
        "198.51.100.7:40000 192.0.2.11:443 tcp\n"
        "[2001:db8:c::7]:5353 [2001:db8:a::10]:53 udp\n"
    )
    assert main(["explain", "-c", str(config_file), "--flows", str(flows), "--json"]) == 0
    rows = _json_lines(capsys.readouterr().out)
    assert [r["session"] for r in rows] == ["new", "hit", "new", "new"]
    assert [r["target"] for r in rows] == [1, 1, 1, 4]  # target 2 is not enabled
    assert rows[0]["method"] == "maglev" and "Maglev ring" in str(rows[0]["reason"])
    assert rows[2]["backup"] is False and rows[3]["vip"] == "[2001:db8:a::10]:53"
    assert all(r["xdp"] is None and r["disagree"] is False for r in rows)


def test_maglev_reason_names_the_slot(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "-c", str(config_file), "--client", "198.51.100.9:1", "--vip", "192.0.2.10:80",
                 "--json"]) == 0
    row = _json_lines(capsys.readouterr().out)[0]
    slot = hash_session_key(bytes([198, 51, 100, 9]), 0) % 65537
    assert f"slot {slot} " in str(row["reason"])
    assert maglev_ring([Candidate(1)])[slot] == row["target"]


def test_no_server_and_no_target_exit_1(config_file: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "-c", str(config_file), "--client", "198.51.100.9:1", "--vip", "192.0.2.99:80",
                 "--json"]) == 1
    row = _json_lines(capsys.readouterr().out)[0]
    assert row["target"] is None and row["service"] is None and row["verdict"] == "PASS"
    no_backup = tmp_path / "b.conf"
    no_backup.write_text(CONFIG.replace("enable    targets 1,3,4", "enable    targets 4"))
    argv = ["explain", "-c", str(no_backup), "--client", "198.51.100.9:1", "--vip", "192.0.2.11:80"]
    assert main(argv) == 1
    assert "no target is up" in capsys.readouterr().out


def test_backup_in_use_is_reported(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only_backup = tmp_path / "c.conf"
    only_backup.write_text(CONFIG.replace("enable    targets 1,3,4", "enable    targets 3"))
    assert main(["explain", "-c", str(only_backup), "--client", "198.51.100.9:1", "--vip", "192.0.2.11:80",
                 "--json"]) == 0
    row = _json_lines(capsys.readouterr().out)[0]
    assert row["target"] == 3 and row["backup"] is True


@pytest.mark.parametrize("argv", [
    ["--client", "nonsense", "--vip", "192.0.2.10:80"],
    ["--client", "198.51.100.9:1"],
    ["--client", "198.51.100.9:70000", "--vip", "192.0.2.10:80"],
    ["--client", "[2001:db8::1]:1", "--vip", "192.0.2.10:80"],
    ["--flows", "/nonexistent/flows"],
])
def test_usage_errors_exit_2(config_file: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "-c", str(config_file), *argv]) == 2
    assert "dsrlb explain:" in capsys.readouterr().err


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("server 1 {\n          bogus 1\n}\n")
    assert main(["explain", "-c", str(bad), "--client", "198.51.100.9:1", "--vip", "192.0.2.10:80"]) == 2
    assert capsys.readouterr().err.strip()


def test_flow_parsing() -> None:
    assert parse_flow_line("   # only a comment") is None
    flow = parse_flow("[2001:db8::1]:443", "[2001:db8:a::10]:443", "UDP")
    assert flow.protocol == "udp" and flow.client_port == 443
    with pytest.raises(FlowSyntaxError, match="tcp or udp"):
        parse_flow("198.51.100.1:1", "192.0.2.10:80", "sctp")
    with pytest.raises(FlowSyntaxError, match="expected"):
        parse_flow_line("198.51.100.1:1")


def test_synthetic_mac_names_the_target() -> None:
    assert target_from_mac(synthetic_next_hop(70_000).dst_mac) == 70_000
    assert target_from_mac(synthetic_next_hop(1).src_mac) is None
