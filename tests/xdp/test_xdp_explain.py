"""`dsrlb explain` with the XDP program's answer beside the reference's.

The Explainer drives the real BPF object (BPF_PROG_TEST_RUN, ingress lo) with the Change list,
frames, clock and random numbers it gives the reference, so on a correct program every flow agrees:
every method (the random ones too, through the injected rand32), DSR and NAT, IPv4 and IPv6, TCP and
UDP, new sessions and hits. A real disagreement is made without touching production code: the XDP
maps are left holding a session the reference has never seen.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsrlb.cli.main import main
from dsrlb.config import loads
from dsrlb.engine.explain import Explainer, Flow, parse_flow
from dsrlb.xdp.dataplane import XdpDataplane

pytestmark = pytest.mark.root

METHODS = ("rr", "wrr", "random", "wrandom", "hash", "maglev", "first", "session", "bandwidth", "agent",
           "rndagent")

TARGETS = """\
target 1 {
          ipaddr 203.0.113.11
          dsr enable
          weight 3
          agent 439,2,5
}
target 2 {
          ipaddr 203.0.113.12
          dsr enable
          agent 439,2,5
}
target 3 {
          ipaddr 203.0.113.13
          port 8080
}
target 4 {
          ipaddr6 2001:db8:b::14
          port 5353
}
target 5 {
          ipaddr 203.0.113.15
          dsr enable
}
register  targets 1,2,3,4,5
enable    targets 1,2,3,4
"""


def config_text(method: str) -> str:
    """Server 1: DSR on :80 with `method`; 2: NAT to target 3 with sessionid src+port; 3: IPv6 UDP NAT;
    4: any-port DSR service on two ports whose only primary is disabled, so its backup serves."""
    return f"""\
server 1 {{
          ipaddr 192.0.2.10
          port 80
          protocol tcp
          method {method}
          targets 1,2
}}
server 2 {{
          ipaddr 192.0.2.11
          port 443
          protocol tcp
          sessionid src+port
          targets 3
}}
server 3 {{
          ipaddr6 2001:db8:a::10
          port 53
          protocol udp
          targets 4
}}
server 4 {{
          ipaddr 192.0.2.12
          ports 80,443
          targets 5
          backup 1
}}
register  servers 1,2,3,4
enable    servers 1,2,3,4
{TARGETS}"""


def flows() -> list[Flow]:
    clients = [f"198.51.100.{n}" for n in range(1, 9)]
    out = [parse_flow(f"{c}:{40000 + i}", "192.0.2.10:80") for i, c in enumerate(clients)]
    out += [parse_flow(f"{c}:{41000 + i}", "192.0.2.10:80") for i, c in enumerate(clients[:3])]  # hits
    out += [parse_flow("198.51.100.1:40000", "192.0.2.11:443"),
            parse_flow("198.51.100.1:40001", "192.0.2.11:443"),
            parse_flow("[2001:db8:c::7]:5353", "[2001:db8:a::10]:53", "udp"),
            parse_flow("198.51.100.2:1000", "192.0.2.12:443"),
            parse_flow("198.51.100.2:1000", "192.0.2.99:80"),  # no such service: both pass
            parse_flow("198.51.100.2:1000", "192.0.2.10:80", "udp")]  # wrong protocol: both pass
    return out


@pytest.mark.parametrize("method", METHODS)
def test_xdp_agrees_with_the_reference(xdp: XdpDataplane, method: str) -> None:
    explainer = Explainer(loads(config_text(method)), seed=7, xdp=xdp)
    reports = [explainer.explain(flow) for flow in flows()]
    for report in reports:
        assert report.xdp is not None and report.reference is not None
        assert not report.disagree, (report.flow, report.differences)
        assert report.xdp == report.reference  # verdict, target, session and every output byte
    targets = [r.answer.target for r in reports]
    assert set(targets[:11]) <= {1, 2} and targets[11:13] == [3, 3] and targets[13] == 4
    assert targets[14] == 1 and reports[14].backup  # the backup of server 4
    assert targets[15:] == [None, None] and {r.answer.verdict for r in reports[15:]} == {"PASS"}
    assert [r.answer.session for r in reports[8:11]] == ["hit"] * 3
    assert reports[11].reference and reports[11].reference.frame[30:34] == bytes([203, 0, 113, 13])  # NAT


def test_xdp_alone_answers_like_the_reference(xdp: XdpDataplane) -> None:
    config = loads(config_text("wrandom"))
    alone = Explainer(config, seed=3, xdp=xdp, reference=False)
    xdp_reports = [alone.explain(flow) for flow in flows()]
    reference = Explainer(config, seed=3)
    for got, flow in zip(xdp_reports, flows(), strict=True):
        assert got.reference is None and got.xdp is not None
        expected = reference.explain(flow)
        assert got.answer == expected.answer and got.reason == expected.reason


def test_a_session_only_xdp_knows_is_a_disagreement(xdp: XdpDataplane) -> None:
    """XDP is left holding a session of client .9 to target 2 (made while target 1 was disabled);
    the reference has no such session and, with method `first`, picks target 1."""
    flow = parse_flow("198.51.100.9:40000", "192.0.2.10:80")
    only_target_2 = config_text("first").replace("enable    targets 1,2,3,4", "enable    targets 2,3,4")
    before = Explainer(loads(only_target_2), xdp=xdp, reference=False).explain(flow)
    assert before.answer.target == 2 and before.answer.session == "new"
    report = Explainer(loads(config_text("first")), xdp=xdp).explain(flow)
    assert report.reference is not None and report.xdp is not None
    assert (report.reference.target, report.reference.session) == (1, "new")
    assert (report.xdp.target, report.xdp.session) == (2, "hit")
    assert report.disagree
    assert report.differences == ("target 2 (xdp) vs 1 (reference)", "session hit (xdp) vs new (reference)",
                                  "output bytes differ: 1 byte(s), the first at offset 4")
    row = report.as_json()
    assert row["disagree"] is True and row["target"] == 1 and row["xdp"] == 2


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "dsrlb.conf"
    path.write_text(config_text("maglev"))
    return path


def _rows(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_cli_default_shows_both_engines(config_file: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    flow_file = tmp_path / "flows"
    flow_file.write_text("198.51.100.7:40000 192.0.2.10:80\n198.51.100.7:40001 192.0.2.10:80\n"
                         "[2001:db8:c::7]:5353 [2001:db8:a::10]:53 udp\n")
    assert main(["explain", "-c", str(config_file), "--flows", str(flow_file), "--json"]) == 0
    captured = capsys.readouterr()
    assert "note" not in captured.err
    rows = _rows(captured.out)
    assert [r["engine"] for r in rows] == ["reference"] * 3
    assert [r["xdp"] for r in rows] == [r["target"] for r in rows] and rows[2]["xdp"] == 4
    assert [r["xdp_session"] for r in rows] == ["new", "hit", "new"]
    assert all(r["disagree"] is False and r["differences"] == [] for r in rows)
    assert main(["explain", "-c", str(config_file), "--flows", str(flow_file)]) == 0
    table = capsys.readouterr().out
    assert "reference data path and XDP program" in table and "xdp" in table and "differs" not in table


def test_cli_xdp_engine_alone(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["explain", "-c", str(config_file), "--client", "198.51.100.9:1", "--vip", "192.0.2.10:80",
            "--json"]
    assert main([*argv, "--engine", "reference"]) == 0
    expected = _rows(capsys.readouterr().out)[0]
    assert main([*argv, "--engine", "xdp"]) == 0
    row = _rows(capsys.readouterr().out)[0]
    assert row["engine"] == "xdp" and row["target"] == row["xdp"] == expected["target"]
    assert row["reason"] == expected["reason"] and row["disagree"] is False


def test_cli_exit_1_when_a_flow_has_no_target(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "-c", str(config_file), "--client", "198.51.100.9:1", "--vip", "192.0.2.99:80",
                 "--json", "--engine", "both"]) == 1
    row = _rows(capsys.readouterr().out)[0]
    assert row["target"] is None and row["xdp"] is None and row["xdp_verdict"] == "PASS"
