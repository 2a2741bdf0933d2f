"""`dsrlb explain` end to end through the CLI entry point (reference engine: no root needed), the
engine-neutral answer reading, the comparison of two engines' answers, and the fall back to the
reference when the XDP program cannot load. The XDP column itself: tests/xdp/test_xdp_explain.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsrlb.cli.main import main
from dsrlb.engine.explain import (
    EngineAnswer,
    FlowReport,
    FlowSyntaxError,
    compare_answers,
    parse_flow,
    parse_flow_line,
    synthetic_next_hop,
    target_from_mac,
)
from dsrlb.engine.hashing import hash_session_key
from dsrlb.engine.tables import Candidate, maglev_ring
from dsrlb.xdp.build import BPF_SOURCE_DIR, MAIN_PROGRAM

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


def explain(*argv: str) -> int:
    """`dsrlb explain` on the reference engine only (the XDP side needs root: tests/xdp)."""
    return main(["explain", "--engine", "reference", *argv])


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
    assert explain("-c", str(config_file), "--flows", str(flows), "--json") == 0
    rows = _json_lines(capsys.readouterr().out)
    assert [r["session"] for r in rows] == ["new", "hit", "new", "new"]
    assert [r["target"] for r in rows] == [1, 1, 1, 4]  # target 2 is not enabled
    assert rows[0]["method"] == "maglev" and "Maglev ring" in str(rows[0]["reason"])
    assert rows[2]["backup"] is False and rows[3]["vip"] == "[2001:db8:a::10]:53"
    assert all(r["xdp"] is None and r["disagree"] is False for r in rows)


def test_maglev_reason_names_the_slot(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain("-c", str(config_file), "--client", "198.51.100.9:1", "--vip", "192.0.2.10:80",
                   "--json") == 0
    row = _json_lines(capsys.readouterr().out)[0]
    slot = hash_session_key(bytes([198, 51, 100, 9]), 0) % 65537
    assert f"slot {slot} " in str(row["reason"])
    assert maglev_ring([Candidate(1)])[slot] == row["target"]


def test_no_server_and_no_target_exit_1(config_file: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert explain("-c", str(config_file), "--client", "198.51.100.9:1", "--vip", "192.0.2.99:80",
                   "--json") == 1
    row = _json_lines(capsys.readouterr().out)[0]
    assert row["target"] is None and row["service"] is None and row["verdict"] == "PASS"
    no_backup = tmp_path / "b.conf"
    no_backup.write_text(CONFIG.replace("enable    targets 1,3,4", "enable    targets 4"))
    assert explain("-c", str(no_backup), "--client", "198.51.100.9:1", "--vip", "192.0.2.11:80") == 1
    assert "no target is up" in capsys.readouterr().out


def test_backup_in_use_is_reported(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only_backup = tmp_path / "c.conf"
    only_backup.write_text(CONFIG.replace("enable    targets 1,3,4", "enable    targets 3"))
    assert explain("-c", str(only_backup), "--client", "198.51.100.9:1", "--vip", "192.0.2.11:80",
                   "--json") == 0
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
    assert explain("-c", str(config_file), *argv) == 2
    assert "dsrlb explain:" in capsys.readouterr().err


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("server 1 {\n          bogus 1\n}\n")
    assert explain("-c", str(bad), "--client", "198.51.100.9:1", "--vip", "192.0.2.10:80") == 2
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


FLOW = parse_flow("198.51.100.9:1", "192.0.2.10:80")
FORWARDED = EngineAnswer(1, "new", "TX", bytes.fromhex("020000000101") + bytes(20))


def test_equal_answers_agree() -> None:
    same = EngineAnswer(1, "new", "TX", bytes(FORWARDED.frame))
    assert compare_answers(FORWARDED, same) == ()
    report = FlowReport(FLOW, 1, "rr", False, FORWARDED, "why", same)
    assert not report.disagree and report.as_json()["xdp"] == 1 and report.as_json()["differences"] == []


def test_every_kind_of_difference_is_named() -> None:
    other_target = EngineAnswer(2, "new", "TX", bytes.fromhex("020000000201") + bytes(20))
    assert compare_answers(FORWARDED, other_target) == (
        "target 2 (xdp) vs 1 (reference)", "output bytes differ: 1 byte(s), the first at offset 4")
    dropped = EngineAnswer(None, None, "DROP", bytes(26))
    found = compare_answers(FORWARDED, dropped)
    assert found[:3] == ("verdict DROP (xdp) vs TX (reference)", "target none (xdp) vs 1 (reference)",
                         "session - (xdp) vs new (reference)")
    assert "output bytes differ" in found[3]
    longer = EngineAnswer(1, "new", "TX", FORWARDED.frame + b"\0")
    assert compare_answers(FORWARDED, longer) == ("output frame of 27 bytes (xdp) vs 26 (reference)",)


def test_a_disagreement_is_flagged_in_json_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    from dsrlb.cli.explain import _print_table

    hit = EngineAnswer(2, "hit", "TX", bytes.fromhex("020000000201") + bytes(20))
    report = FlowReport(FLOW, 1, "rr", False, FORWARDED, "server 1: new session", hit)
    row = report.as_json()
    assert row["disagree"] is True and row["target"] == 1 and row["xdp"] == 2
    assert row["xdp_session"] == "hit" and "session hit (xdp) vs new (reference)" in row["differences"]
    _print_table([report], "both")
    out = capsys.readouterr().out
    assert "2 differs" in out and "the XDP program disagrees with the reference" in out


def test_a_report_without_reference_answers_with_xdp() -> None:
    report = FlowReport(FLOW, 1, "rr", False, None, "why", FORWARDED)
    assert report.answer is FORWARDED and not report.disagree and report.as_json()["engine"] == "xdp"
    with pytest.raises(ValueError):
        FlowReport(FLOW, 1, "rr", False, None, "why", None)


@pytest.fixture
def no_bpf_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment where the XDP object cannot be had: no clang and an empty object cache (and, for
    a non-root run, no root either). A packaged object would defeat this, so such installs skip."""
    if (BPF_SOURCE_DIR / f"{MAIN_PROGRAM}.bpf.o").exists():
        pytest.skip("a packaged BPF object exists: clang is not needed to load the program")
    monkeypatch.setenv("DSRLB_CLANG", str(tmp_path / "no-such-clang"))
    monkeypatch.setenv("DSRLB_BPF_CACHE", str(tmp_path / "empty-cache"))


@pytest.mark.usefixtures("no_bpf_object")
def test_default_falls_back_to_the_reference_with_a_note(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", "-c", str(config_file), "--client", "198.51.100.9:1", "--vip", "192.0.2.10:80",
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert "note: no XDP answer" in captured.err and "reference data path answers alone" in captured.err
    row = _json_lines(captured.out)[0]
    assert row["engine"] == "reference" and row["xdp"] is None and row["xdp_verdict"] is None


@pytest.mark.usefixtures("no_bpf_object")
@pytest.mark.parametrize("engine", ["xdp", "both"])
def test_asking_for_xdp_where_it_cannot_run_exits_2(
    config_file: Path, engine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", "-c", str(config_file), "--client", "198.51.100.9:1", "--vip", "192.0.2.10:80",
                 "--engine", engine]) == 2
    assert f"--engine {engine}:" in capsys.readouterr().err
