"""The HTTP API against a real port on 127.0.0.1, with urllib; /metrics parsed by prometheus-client."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dsrlb.control.client import ControlClient
from dsrlb.control.http import HttpApi

OPENAPI = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def request(
        self, path: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as reply:
                return reply.status, dict(reply.headers), reply.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, path: str, method: str = "GET", body: Any = None, **kw: Any) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"} if method == "POST" else {}
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        status, _, raw = self.request(path, method, data, headers | kw.get("headers", {}))
        return status, json.loads(raw)


@pytest.fixture
def api(loop_thread: Any, demo: Any) -> Iterator[Api]:
    server = HttpApi(demo.registry(), host="127.0.0.1", port=0, metrics=demo.metrics)
    loop_thread.run(server.start())
    try:
        host, port = server.address
        assert host == "127.0.0.1" and port > 0
        yield Api(f"http://127.0.0.1:{port}")
    finally:
        loop_thread.run(server.stop())


def test_get_returns_the_same_json_as_the_socket(api: Api, served: Any) -> None:
    status, body = api.json("/api/v1/show/targets")
    assert status == 200
    with ControlClient.for_instance(served.instance) as client:
        over_socket = client.request("show", ["targets"])
    assert body == {"id": None, "ok": True, "result": over_socket.result}
    status, one = api.json("/api/v1/show/target/2?json=1")
    assert status == 200 and [t["name"] for t in one["result"]["targets"]] == ["web2"]


def test_post_runs_actions(api: Api, demo: Any) -> None:
    status, body = api.json("/api/v1/disable/targets/1,3", "POST")
    assert status == 200 and body["result"] == {"targets": [1, 3], "state": "disabled"}
    assert body["text"] == "2 target(s) now disabled"
    assert demo.targets[1].state == "disabled" and demo.targets[2].state == "up"
    status, body = api.json("/api/v1/drain", "POST", {"args": ["target", 2]})
    assert status == 200 and demo.targets[2].state == "draining"
    status, body = api.json("/api/v1/reload", "POST")
    assert status == 200 and body["result"] == {"reloads": 1}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "fragment"),
    [
        ("GET", "/api/v1/reload", None, 405, "changes state: use POST"),
        ("GET", "/api/v1/enable/target/1", None, 405, "use POST"),
        ("POST", "/api/v1/show/targets", None, 405, "read-only: use GET"),
        ("GET", "/api/v1/show/tagrets", None, 404, "did you mean 'show targets'"),
        ("POST", "/api/v1/enable/target/9", None, 409, "no target 9"),
        ("POST", "/api/v1/enable/target/x", None, 400, "is not an id"),
        ("GET", "/api/v1/crash", None, 500, "ZeroDivisionError"),
        ("GET", "/api/v1/subscribe", None, 409, "control socket only"),
        ("GET", "/nothing/here", None, 404, "the API is under /api/v1/"),
        ("POST", "/api/v1/reload", {"args": "x"}, 400, "body must be"),
        ("POST", "/metrics", None, 405, "read-only"),
    ],
)
def test_errors_map_to_statuses(
    api: Api, method: str, path: str, body: Any, status: int, fragment: str
) -> None:
    got, reply = api.json(path, method, body)
    assert got == status
    assert reply["ok"] is False and fragment in reply["error"]["message"]


def test_post_without_json_content_type_is_refused(api: Api, demo: Any) -> None:
    # A cross-site form post (text/plain or form-encoded) must not reach an action.
    status, _, raw = api.request("/api/v1/disable/target/1", "POST", b"x=1",
                                 {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415 and demo.targets[1].state == "up"
    assert b"Content-Type: application/json" in raw


def test_foreign_host_header_is_refused_on_loopback(api: Api) -> None:
    status, _, _ = api.request("/api/v1/show/targets", headers={"Host": "evil.example:8439"})
    assert status == 403
    for host in ("localhost:1", "127.0.0.1", "[::1]:8439"):
        assert api.request("/api/v1/hello", headers={"Host": host})[0] == 200


def test_help_at_the_api_root(api: Api) -> None:
    status, body = api.json("/api/v1/")
    assert status == 200
    assert {"show targets", "disable targets", "reload", "help"} <= {c["command"] for c in body["result"]}


def raw_http(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def test_malformed_http_gets_a_clear_status(loop_thread: Any, demo: Any) -> None:
    server = HttpApi(demo.registry(), port=0)
    loop_thread.run(server.start())
    try:
        port = server.address[1]
        assert raw_http(port, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        huge_head = b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n"
        assert raw_http(port, huge_head).startswith(b"HTTP/1.1 431 ")
        chunked = b"POST /api/v1/reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        assert raw_http(port, chunked).startswith(b"HTTP/1.1 501 ")
        assert raw_http(port, b"DELETE /api/v1 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
        head = raw_http(port, b"HEAD /api/v1/hello HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
        assert raw_http(port, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")  # no provider
        # The server still answers normally afterwards.
        assert b'"hostname":"lb-test"' in raw_http(port, b"GET /api/v1/hello HTTP/1.0\r\n\r\n")
    finally:
        loop_thread.run(server.stop())


def test_metrics_parse_and_carry_the_counters(api: Api, demo: Any) -> None:
    demo.targets[2].state = "draining"
    status, headers, raw = api.request("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(raw.decode())
        for s in family.samples
    }

    def value(metric: str, /, **labels: str) -> float:
        return samples[(metric, tuple(sorted(labels.items())))]

    web1 = {"target": "1", "name": "web1", "address": "192.0.2.11"}
    web2 = {"target": "2", "name": "web2", "address": "192.0.2.12"}
    assert value("dsrlb_target_packets_total", **web1) == 100
    assert value("dsrlb_target_bytes_total", **web1) == 150_000
    assert value("dsrlb_target_sessions", **web1) == 3
    assert value("dsrlb_target_up", **web1) == 1 and value("dsrlb_target_up", **web2) == 0
    assert value("dsrlb_target_state", state="draining", **web2) == 1
    assert value("dsrlb_target_state", state="up", **web2) == 0
    assert value("dsrlb_target_probe_latency_seconds", **web1) == pytest.approx(0.0004)
    www = {"service": "1", "name": "www", "address": "203.0.113.10", "ports": "80"}
    assert value("dsrlb_service_packets_total", **www) == 140
    assert value("dsrlb_service_sessions_created_total", **www) == 7
    assert value("dsrlb_engine_drops_total", reason="malformed") == 1
    assert value("dsrlb_engine_packets_total", counter="rx") == 140
    assert value("dsrlb_vrrp_master") == 1
    assert value("dsrlb_build_info", version="0.1.0", hostname="lb-test", engine="reference") == 1


def test_metrics_provider_failure_is_a_500_not_a_crash(loop_thread: Any, demo: Any) -> None:
    def broken() -> Any:
        raise RuntimeError("engine gone")

    server = HttpApi(demo.registry(), port=0, metrics=broken)
    loop_thread.run(server.start())
    try:
        status, _, raw = Api(f"http://127.0.0.1:{server.address[1]}").request("/metrics")
        assert status == 500 and b"engine gone" in raw
    finally:
        loop_thread.run(server.stop())


def test_openapi_document_matches_what_is_served(api: Api) -> None:
    spec = json.loads(OPENAPI.read_text())
    assert spec["openapi"].startswith("3.")
    for path, operations in spec["paths"].items():
        concrete = path.replace("{ids}", "1")
        for method in operations:
            if method == "get":
                status, _, _ = api.request(concrete)
            else:
                status, _, _ = api.request(concrete, "POST", b"", {"Content-Type": "application/json"})
            assert status == 200, f"{method.upper()} {path} -> {status}"
