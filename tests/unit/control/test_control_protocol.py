"""The Sans-I/O control protocol: framing, validation, limits, and fuzzing (never an exception)."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Network
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dsrlb.control.protocol import (
    ClientConnection,
    ErrorCode,
    Event,
    ProtocolViolation,
    Rejected,
    Request,
    Response,
    ServerConnection,
    encode_response,
    parse_request,
    to_jsonable,
)


def lines_of(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


def test_request_round_trip_through_both_connections() -> None:
    client, server = ClientConnection(), ServerConnection()
    request_id, data = client.send_request("show", ["targets"], want_json=True)
    (request,) = server.receive_data(data)
    assert request == Request(request_id, "show", ("targets",), True)
    assert request.words == ("show", "targets")
    assert server.pending == 1
    out = server.send_response(Response.success(request_id, {"targets": []}, "none"))
    assert server.pending == 0
    assert client.receive_data(out) == [Response(request_id, True, {"targets": []}, "none")]


def test_requests_split_across_chunks_and_joined_in_one() -> None:
    server = ServerConnection()
    data = b'{"id": 1, "cmd": "reload"}\n{"id": 2, "cmd": "show", "args": ["stats"]}\n'
    items = []
    for i in range(len(data)):  # one byte at a time
        items += server.receive_data(data[i : i + 1])
    calls = [(r.id, r.words) for r in items if isinstance(r, Request)]
    assert calls == [(1, ("reload",)), (2, ("show", "stats"))]
    assert ServerConnection().receive_data(data) == items


def test_malformed_requests_get_error_responses_and_the_connection_goes_on() -> None:
    server = ServerConnection()
    items = server.receive_data(
        b"not json\n"
        b"[1, 2]\n"
        b'{"id": true, "cmd": "x"}\n'
        b'{"id": 5}\n'
        b'{"id": 6, "cmd": "show", "args": "targets"}\n'
        b'{"id": 7, "cmd": "show", "args": [null]}\n'
        b'{"id": 8, "cmd": "show", "json": "yes"}\n'
        b"\xff\xfe\n"
        b"\n"
        b'{"id": 9, "cmd": "enable", "args": ["target", 3]}\n'
    )
    rejected = [i for i in items if isinstance(i, Rejected)]
    assert [r.response.id for r in rejected] == [None, None, None, 5, 6, 7, 8, None]
    assert {r.response.error.code for r in rejected if r.response.error} == {ErrorCode.BAD_REQUEST}
    assert items[-1] == Request(9, "enable", ("target", "3"))
    body = lines_of(server.send_rejection(rejected[3]))[0]
    error = {"code": "bad_request", "message": "'cmd' must be a non-empty string"}
    assert body == {"id": 5, "ok": False, "error": error}


def test_overlong_line_is_rejected_once_and_the_next_line_works() -> None:
    server = ServerConnection(max_line=100)
    items = server.receive_data(b'{"id": 1, "cmd": "' + b"x" * 150)
    items += server.receive_data(b"y" * 500)
    items += server.receive_data(b'"}\n{"id": 2, "cmd": "reload"}\n')
    assert len(items) == 2
    assert isinstance(items[0], Rejected) and items[0].response.error is not None
    assert items[0].response.error.code is ErrorCode.LINE_TOO_LONG
    assert items[1] == Request(2, "reload")
    # An overlong line that arrives complete in one chunk is reported the same way.
    (item,) = ServerConnection(max_line=10).receive_data(b'{"id": 3, "cmd": "reload"}\n')
    assert isinstance(item, Rejected)


def test_pending_limit_rejects_as_busy_until_responses_go_out() -> None:
    server = ServerConnection(max_pending=2)
    items = server.receive_data(b"".join(b'{"id": %d, "cmd": "x"}\n' % i for i in range(4)))
    assert [type(i) for i in items] == [Request, Request, Rejected, Rejected]
    busy = items[2]
    assert isinstance(busy, Rejected) and busy.response.id == 2
    assert busy.response.error is not None and busy.response.error.code is ErrorCode.BUSY
    assert isinstance(items[0], Request)
    server.send_response(Response.success(items[0].id, None))
    assert isinstance(server.receive_data(b'{"id": 9, "cmd": "x"}\n')[0], Request)


def test_events_and_client_side_violations() -> None:
    client = ClientConnection()
    server = ServerConnection()
    out = server.send_event(Event({"type": "target_state", "target": 3, "state": "down"}))
    assert client.receive_data(out) == [Event({"type": "target_state", "target": 3, "state": "down"})]
    items = client.receive_data(b'garbage\n{"id": 1}\n{"id": 1, "ok": false}\n[]\n{"event": 3}\n')
    assert len(items) == 5 and all(isinstance(i, ProtocolViolation) for i in items)
    unknown_code = client.receive_data(b'{"id": 1, "ok": false, "error": {"code": "new", "message": "m"}}\n')
    assert unknown_code == [Response.failure(1, ErrorCode.INTERNAL, "m")]


class Colour(enum.Enum):
    RED = "red"


@dataclass(frozen=True)
class Row:
    address: IPv4Address
    prefix: IPv6Network
    colour: Colour
    ratio: float
    tags: frozenset[str]


def test_to_jsonable_converts_model_values() -> None:
    row = Row(IPv4Address("192.0.2.1"), IPv6Network("2001:db8::/32"), Colour.RED, float("nan"),
              frozenset({"b", "a"}))
    assert to_jsonable({"rows": (row,), 3: b"\x01\x02"}) == {
        "rows": [{"address": "192.0.2.1", "prefix": "2001:db8::/32", "colour": "red", "ratio": None,
                  "tags": ["a", "b"]}],
        "3": "0102",
    }


def test_unencodable_result_becomes_internal_error_not_an_exception() -> None:
    class Hostile:
        """to_jsonable falls back to str() for unknown objects; this one's str() fails."""

        def __str__(self) -> str:
            raise RuntimeError("no")

    body = lines_of(encode_response(Response.success(1, Hostile())))[0]
    assert body["ok"] is False and body["error"]["code"] == "internal"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_fuzz_server_connection_never_raises_on_random_bytes(chunks: list[bytes]) -> None:
    server = ServerConnection(max_line=64, max_pending=3)
    for chunk in chunks:
        for item in server.receive_data(chunk):
            assert isinstance(item, Request | Rejected)
            if isinstance(item, Rejected):
                assert lines_of(server.send_rejection(item))[0]["ok"] is False


@settings(max_examples=300)
@given(st.lists(json_values | st.dictionaries(st.sampled_from(["id", "cmd", "args", "json"]), json_values),
                max_size=6))
def test_fuzz_server_connection_on_random_json_lines(values: list[object]) -> None:
    server = ServerConnection()
    data = b"".join(json.dumps(v).encode() + b"\n" for v in values)
    items = server.receive_data(data)
    assert len(items) == len(values)
    for value, item in zip(values, items, strict=True):
        assert item == parse_request(value)
        if isinstance(item, Request):
            assert isinstance(value, dict) and item.cmd == value["cmd"].strip()
            server.send_response(Response.success(item.id, value))


json_lines = json_values.map(lambda v: json.dumps(v).encode() + b"\n")


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=200) | json_lines, max_size=8))
def test_fuzz_client_connection_never_raises(chunks: list[bytes]) -> None:
    client = ClientConnection(max_line=128)
    for chunk in chunks:
        for item in client.receive_data(chunk):
            assert isinstance(item, Response | Event | ProtocolViolation)
