"""The lab agents' per-target load: established connections on the service ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dsrlb.lab.connload import established_on, main

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
TAIL = "00000000:00000000 00:00000000 00000000     0        0 1 1"


def row(local: str, remote: str, state: str) -> str:
    return f"   0: {local} {remote} {state} {TAIL}"


def test_counts_only_established_connections_on_the_given_ports(tmp_path: Path) -> None:
    v4 = tmp_path / "tcp"
    v4.write_text("\n".join([
        HEADER,
        row("0A00000A:0050", "00000000:0000", "0A"),  # listening on :80
        row("0A00000A:0050", "0B00000A:9C40", "01"),  # established on :80
        row("0A00000A:01BB", "0B00000A:9C41", "01"),  # established on :443
        row("0A00000A:0050", "0B00000A:9C42", "06"),  # time-wait on :80
        row("0A00000A:1F90", "0B00000A:9C43", "01"),  # established on :8080
    ]) + "\n")
    v6 = tmp_path / "tcp6"
    loopback6 = "0" * 24 + "01000000"
    v6.write_text("\n".join([HEADER, row(f"{loopback6}:0050", f"{loopback6}:A000", "01")]) + "\n")
    assert established_on([80], [v4, v6]) == 2
    assert established_on([80, 443], [v4, v6]) == 3
    assert established_on([8080], [v4, v6]) == 1
    assert established_on([25], [v4, v6]) == 0
    assert established_on([80], [tmp_path / "missing"]) == 0


def test_sees_a_real_connection_in_this_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert established_on([port]) == 0
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = server.accept()
            with accepted:
                # Both ends are ESTABLISHED; only the server's has the service port as its local port.
                assert established_on([port]) == 1
                assert main(["--port", str(port)]) == 0
                assert capsys.readouterr().out == "1\n"
