"""A real unix-socket control server (in a temp run dir) with the real synchronous client."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from dsrlb.control.client import CommandRejected, ControlClient, ControlClientError, NotRunningError
from dsrlb.control.protocol import ErrorCode
from dsrlb.control.server import ControlServer, ControlSocketBusy, ControlSocketError, probe_socket
from dsrlb.paths import instance_paths


def raw_exchange(path: Path, data: bytes, expect_lines: int) -> list[dict[str, Any]]:
    """Send raw bytes and read `expect_lines` JSON lines back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(os.fspath(path))
        sock.sendall(data)
        buffer = b""
        while buffer.count(b"\n") < expect_lines:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
    return [json.loads(line) for line in buffer.splitlines()]


def test_calls_and_errors_over_the_socket(served: Any) -> None:
    with ControlClient.for_instance(served.instance) as client:
        targets = client.call("show", ["targets"])
        assert [t["id"] for t in targets.data["targets"]] == [1, 2, 3]
        assert targets.data["targets"][2]["state"] == "down"
        assert client.call("disable", ["targets", "1,2"]).text == "2 target(s) now disabled"
        assert served.demo.targets[1].state == "disabled"
        assert client.call("reload", want_json=True).data == {"reloads": 1}
        with pytest.raises(CommandRejected) as unknown:
            client.call("show", ["tagrets"])
        assert unknown.value.code is ErrorCode.UNKNOWN_COMMAND and "show targets" in unknown.value.suggestions
        with pytest.raises(CommandRejected) as failed:
            client.call("enable", ["target", "9"])
        assert failed.value.code is ErrorCode.FAILED and failed.value.message == "no target 9"
        with pytest.raises(CommandRejected) as crashed:
            client.call("crash")
        assert crashed.value.code is ErrorCode.INTERNAL
        # The connection survives all of that.
        assert client.call("hello").data["hostname"] == "lb-test"


def test_socket_is_0600_and_removed_on_stop(run_root: Path, loop_thread: Any, demo: Any) -> None:
    server = ControlServer.for_instance(demo.registry(), "sockmode")
    path = instance_paths("sockmode").control_socket
    assert path.is_relative_to(run_root)
    loop_thread.run(server.start())
    try:
        mode = path.lstat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        assert sorted(p.name for p in path.parent.iterdir()) == ["control.sock"]  # no temporary name left
        assert probe_socket(path)
    finally:
        loop_thread.run(server.stop())
    assert not path.exists()
    message = r"dsrlb instance sockmode is not running \(no control socket at "
    with pytest.raises(NotRunningError, match=message):
        ControlClient.for_instance("sockmode").call("hello")


def test_stale_socket_is_replaced(run_root: Path, loop_thread: Any, demo: Any) -> None:
    path = instance_paths("stale").control_socket
    path.parent.mkdir(parents=True)
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(os.fspath(path))  # bound, never listening, then closed: what a crashed daemon leaves
    leftover.close()
    with pytest.raises(NotRunningError, match="stale control socket"):
        ControlClient.for_instance("stale").call("hello")
    assert not probe_socket(path)
    server = ControlServer.for_instance(demo.registry(), "stale")
    loop_thread.run(server.start())
    try:
        assert ControlClient.for_instance("stale").call("hello").data["hostname"] == "lb-test"
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    finally:
        loop_thread.run(server.stop())


def test_second_server_on_a_live_socket_is_refused(served: Any) -> None:
    intruder = ControlServer.for_instance(served.demo.registry(), served.instance)
    with pytest.raises(ControlSocketBusy, match="another dsrlb is already serving"):
        served.runner.run(intruder.start())
    # The live server is untouched.
    assert ControlClient.for_instance(served.instance).call("hello").data["hostname"] == "lb-test"


def test_a_path_that_is_not_a_socket_is_never_replaced(run_root: Path, loop_thread: Any, demo: Any) -> None:
    path = instance_paths("file").control_socket
    path.parent.mkdir(parents=True)
    path.write_text("precious")
    with pytest.raises(ControlSocketError, match="is not a socket"):
        loop_thread.run(ControlServer.for_instance(demo.registry(), "file").start())
    assert path.read_text() == "precious"


def test_stop_leaves_a_socket_someone_else_put_there(run_root: Path, loop_thread: Any, demo: Any) -> None:
    server = ControlServer.for_instance(demo.registry(), "moved")
    loop_thread.run(server.start())
    path = server.path
    path.unlink()
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        other.bind(os.fspath(path))
        loop_thread.run(server.stop())
        assert path.exists()
    finally:
        other.close()


def test_two_instances_side_by_side(run_root: Path, loop_thread: Any, make_demo: Any) -> None:
    first, second = make_demo(hostname="lb1"), make_demo(hostname="lb2")
    servers = [ControlServer.for_instance(first.registry(), "a"),
               ControlServer.for_instance(second.registry(), "b")]
    for server in servers:
        loop_thread.run(server.start())
    try:
        with ControlClient.for_instance("a") as a, ControlClient.for_instance("b") as b:
            a.call("drain", ["target", "2"])
            assert a.call("hello").data["hostname"] == "lb1"
            assert b.call("hello").data["hostname"] == "lb2"
            assert first.targets[2].state == "draining" and second.targets[2].state == "up"
    finally:
        for server in servers:
            loop_thread.run(server.stop())
    assert servers[0].path != servers[1].path
    assert not servers[0].path.exists() and not servers[1].path.exists()


def test_events_reach_subscribers_only(served: Any) -> None:
    with ControlClient.for_instance(served.instance) as watcher, \
            ControlClient.for_instance(served.instance) as actor:
        assert served.runner.call(lambda: served.server.publish({"type": "hello"})) == 0  # nobody yet
        actor.call("disable", ["target", "3"])  # published before the watcher subscribed: not seen
        events = watcher.subscribe()
        assert served.runner.call(lambda: served.server.subscribers) == 1
        actor.call("drain", ["targets", "1,2"])
        first, second = next(events), next(events)
        assert (first["type"], first["target"], first["state"]) == ("target_state", 1, "draining")
        assert (second["target"], second["state"]) == (2, "draining")
        assert isinstance(first["time"], float)
        watcher.call("unsubscribe")
        assert served.runner.call(lambda: served.server.subscribers) == 0


def test_event_stream_ends_when_the_server_stops(served: Any) -> None:
    client = ControlClient.for_instance(served.instance).connect()
    events = client.subscribe()
    served.server.publish_threadsafe({"type": "vrrp", "state": "master"})  # from this (non-loop) thread
    assert next(events)["state"] == "master"
    served.runner.run(served.server.stop())
    assert list(events) == []
    with pytest.raises(ControlClientError):
        client.call("hello")


def test_garbage_and_overlong_lines_get_errors_and_the_server_keeps_serving(served: Any) -> None:
    path = served.server.path
    garbage = b"\x00\xffjunk\n" + b"x" * 70_000 + b"\n"
    replies = raw_exchange(path, garbage + b'{"id": 7, "cmd": "hello"}\n', 3)
    assert [r["ok"] for r in replies] == [False, False, True]
    assert replies[0]["error"]["code"] == "bad_request"
    assert replies[1]["error"]["code"] == "line_too_long"
    assert replies[2]["id"] == 7 and replies[2]["result"]["hostname"] == "lb-test"
    # `cmd` may carry several words.
    (both,) = raw_exchange(path, b'{"id": 8, "cmd": "show  target", "args": ["2"]}\n', 1)
    assert [t["id"] for t in both["result"]["targets"]] == [2]
    # Pipelined requests are answered in order.
    pipelined = raw_exchange(path, b"".join(b'{"id": %d, "cmd": "hello"}\n' % i for i in range(20)), 20)
    assert [r["id"] for r in pipelined] == list(range(20))


def test_client_gets_an_error_for_an_overlong_request(served: Any) -> None:
    with ControlClient.for_instance(served.instance) as client, pytest.raises(CommandRejected) as caught:
        client.call("show", ["x" * 70_000])
    assert caught.value.code is ErrorCode.LINE_TOO_LONG


def test_a_client_that_disconnects_mid_request_does_not_hurt(served: Any) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(os.fspath(served.server.path))
        sock.sendall(b'{"id": 1, "cmd": "sh')
    with ControlClient.for_instance(served.instance) as client:
        assert client.call("hello").data["hostname"] == "lb-test"
