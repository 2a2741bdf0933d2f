"""The control protocol, Sans-I/O: newline-delimited JSON over a byte stream (unix socket).

One JSON object per line, UTF-8, in both directions::

    -> {"id": 1, "cmd": "show", "args": ["targets"], "json": true}
    <- {"id": 1, "ok": true, "result": {...}, "text": "..."}
    <- {"id": 2, "ok": false, "error": {"code": "unknown_command", "message": "...", "suggestions": [...]}}
    -> {"id": 3, "cmd": "subscribe", "args": ["events"]}
    <- {"id": 3, "ok": true, "result": {"subscribed": "events"}}
    <- {"event": {"type": "target_state", ...}}

`cmd` plus `args` are the words of a command line (`show targets` = cmd "show", args ["targets"]).
`json: true` says the caller only wants data: the response then carries no human `text`.

The two connection objects below only turn bytes into messages and messages into bytes (the h11 shape);
the server and client drivers own the sockets. Malformed input never raises: the server side turns it
into an error response to send, the client side into a `ProtocolViolation` item.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import PurePath
from typing import Any, TypeAlias

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None
RequestId: TypeAlias = int | str | None

DEFAULT_MAX_LINE = 64 * 1024  # bytes per line, newline excluded
DEFAULT_MAX_PENDING = 64  # requests received and not yet answered, per connection
MAX_ARGS = 256


class ErrorCode(enum.StrEnum):
    """Machine-readable error codes; the HTTP API maps each to a status (docs/control.md)."""

    BAD_REQUEST = "bad_request"  # not JSON, not an object, wrong field types
    LINE_TOO_LONG = "line_too_long"
    BUSY = "busy"  # too many requests pending on this connection
    UNKNOWN_COMMAND = "unknown_command"
    BAD_ARGUMENTS = "bad_arguments"
    FAILED = "failed"  # the command ran and refused (e.g. unknown target id, reload with a bad config)
    INTERNAL = "internal"  # a bug in a handler; details are in the daemon's log
    UNAVAILABLE = "unavailable"  # the daemon cannot serve the command now (a handler raises it)


@dataclass(frozen=True)
class ErrorInfo:
    code: ErrorCode
    message: str
    suggestions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Request:
    """One command call: `words` is cmd followed by args."""

    id: RequestId
    cmd: str
    args: tuple[str, ...] = ()
    json: bool = False

    @property
    def words(self) -> tuple[str, ...]:
        # `"cmd": "show targets"` is accepted as well as `"cmd": "show", "args": ["targets"]`.
        return (*self.cmd.split(), *self.args)


@dataclass(frozen=True)
class Response:
    id: RequestId
    ok: bool
    result: Any = None  # any JSON-able value (see to_jsonable)
    text: str | None = None
    error: ErrorInfo | None = None

    @classmethod
    def success(cls, request_id: RequestId, result: Any, text: str | None = None) -> Response:
        return cls(request_id, True, result, text)

    @classmethod
    def failure(
        cls, request_id: RequestId, code: ErrorCode, message: str, suggestions: Sequence[str] = ()
    ) -> Response:
        return cls(request_id, False, error=ErrorInfo(code, message, tuple(suggestions)))


@dataclass(frozen=True)
class Event:
    """A pushed event (`{"event": {...}}`) for subscribers."""

    data: Mapping[str, Any]


@dataclass(frozen=True)
class Rejected:
    """Input the server could not accept; send `response` back (the connection stays usable)."""

    response: Response


@dataclass(frozen=True)
class ProtocolViolation:
    """Client side: a line from the server that is not a valid response or event."""

    message: str


# --- JSON --------------------------------------------------------------------------------------------


def to_jsonable(value: Any) -> JSONValue:
    """A plain JSON value for `value`: dataclasses, enums, addresses and paths become objects/strings.

    Non-finite floats become null because JSON has no spelling for them (RFC 8259 §6).
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((to_jsonable(v) for v in value), key=str)
    if isinstance(value, IPv4Address | IPv6Address | IPv4Network | IPv6Network | PurePath):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    return str(value)


def encode_line(obj: JSONValue) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode() + b"\n"


def response_to_json(response: Response) -> dict[str, JSONValue]:
    """The wire object of a response (also the body of the HTTP API)."""
    if response.ok:
        out: dict[str, JSONValue] = {"id": response.id, "ok": True, "result": to_jsonable(response.result)}
        if response.text is not None:
            out["text"] = response.text
        return out
    error = response.error or ErrorInfo(ErrorCode.INTERNAL, "error without details")
    err: dict[str, JSONValue] = {"code": error.code.value, "message": error.message}
    if error.suggestions:
        err["suggestions"] = list(error.suggestions)
    return {"id": response.id, "ok": False, "error": err}


def encode_response(response: Response) -> bytes:
    """Bytes for `response`; a result that cannot be encoded becomes an `internal` error, never a raise."""
    try:
        return encode_line(response_to_json(response))
    except Exception as exc:  # a result object's own __str__ or __iter__ may raise anything
        return encode_line(
            response_to_json(Response.failure(response.id, ErrorCode.INTERNAL, f"unencodable result: {exc}"))
        )


def encode_event(event: Event) -> bytes:
    return encode_line({"event": to_jsonable(event.data)})


def _valid_id(value: object) -> bool:
    # bool is an int subclass in Python; true/false are not ids.
    return value is None or (isinstance(value, int | str) and not isinstance(value, bool))


def parse_request(obj: object) -> Request | Rejected:
    """Validate one decoded JSON value as a request."""
    if not isinstance(obj, dict):
        return Rejected(Response.failure(None, ErrorCode.BAD_REQUEST, "a request must be a JSON object"))
    request_id = obj.get("id")
    if not _valid_id(request_id):
        return Rejected(Response.failure(None, ErrorCode.BAD_REQUEST, "'id' must be an integer or a string"))
    assert request_id is None or isinstance(request_id, int | str)

    def bad(message: str) -> Rejected:
        return Rejected(Response.failure(request_id, ErrorCode.BAD_REQUEST, message))

    cmd = obj.get("cmd")
    if not isinstance(cmd, str) or not cmd.strip():
        return bad("'cmd' must be a non-empty string")
    raw_args = obj.get("args", [])
    if not isinstance(raw_args, list):
        return bad("'args' must be a list of strings")
    if len(raw_args) > MAX_ARGS:
        return bad(f"too many arguments ({len(raw_args)} > {MAX_ARGS})")
    args: list[str] = []
    for arg in raw_args:
        # Numbers are accepted as words so that scripts may send {"args": ["target", 3]}.
        if isinstance(arg, str):
            args.append(arg)
        elif isinstance(arg, int) and not isinstance(arg, bool):
            args.append(str(arg))
        else:
            return bad("'args' must be a list of strings")
    want_json = obj.get("json", False)
    if not isinstance(want_json, bool):
        return bad("'json' must be true or false")
    return Request(request_id, cmd.strip(), tuple(args), want_json)


def parse_server_message(obj: object) -> Response | Event | ProtocolViolation:
    """Validate one decoded JSON value sent by a server."""
    if not isinstance(obj, dict):
        return ProtocolViolation("server sent a value that is not a JSON object")
    if "event" in obj:
        data = obj["event"]
        if not isinstance(data, dict):
            return ProtocolViolation("server sent an event that is not an object")
        return Event(data)
    request_id = obj.get("id")
    ok = obj.get("ok")
    if not _valid_id(request_id) or not isinstance(ok, bool):
        return ProtocolViolation("server sent a response without a valid 'id' and 'ok'")
    assert request_id is None or isinstance(request_id, int | str)
    if ok:
        text = obj.get("text")
        return Response(request_id, True, obj.get("result"), text if isinstance(text, str) else None)
    error = obj.get("error")
    if not isinstance(error, dict):
        return ProtocolViolation("server sent a failure without an 'error' object")
    try:
        code = ErrorCode(str(error.get("code")))
    except ValueError:
        code = ErrorCode.INTERNAL  # a newer server's code: keep the message, which says what happened
    message = error.get("message")
    suggestions = error.get("suggestions", [])
    if not isinstance(suggestions, list):
        suggestions = []
    return Response.failure(
        request_id,
        code,
        message if isinstance(message, str) else str(message),
        [s for s in suggestions if isinstance(s, str)],
    )


# --- line framing ------------------------------------------------------------------------------------


@dataclass
class _LineBuffer:
    """Splits a byte stream into lines, discarding (and reporting) any line longer than `max_line`."""

    max_line: int
    _buffer: bytearray = field(default_factory=bytearray)
    _discarding: bool = False

    def feed(self, data: bytes) -> Iterable[bytes | None]:
        """Yield complete lines (without the newline); None stands for one overlong line."""
        self._buffer += data
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                if len(self._buffer) > self.max_line:
                    # Report once and drop what we have: the rest of the line is dropped as it arrives.
                    if not self._discarding:
                        self._discarding = True
                        yield None
                    self._buffer.clear()
                return
            line = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            if self._discarding:
                self._discarding = False  # the tail of an overlong line, already reported
                continue
            if len(line) > self.max_line:
                yield None
                continue
            yield line.rstrip(b"\r")

    @property
    def buffered(self) -> int:
        return len(self._buffer)


def _decode_json(line: bytes) -> tuple[bool, object]:
    try:
        return True, json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False, None


class ServerConnection:
    """The server's side of one control connection.

    `receive_data` turns bytes into `Request`s (to dispatch, then answer with `send_response`) and
    `Rejected`s (whose response must be sent as they are). A request counts as pending from the moment it
    is returned until its response is sent; beyond `max_pending` new requests are rejected as `busy`,
    which bounds the memory one client can pin down.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self._lines = _LineBuffer(max_line)
        self.max_line = max_line
        self.max_pending = max_pending
        self.pending = 0
        self.subscribed = False

    def receive_data(self, data: bytes) -> list[Request | Rejected]:
        out: list[Request | Rejected] = []
        for line in self._lines.feed(data):
            if line is None:
                out.append(Rejected(Response.failure(
                    None, ErrorCode.LINE_TOO_LONG, f"request line longer than {self.max_line} bytes")))
                continue
            if not line.strip():
                continue  # blank lines are keep-alives
            decoded, obj = _decode_json(line)
            if not decoded:
                out.append(Rejected(Response.failure(None, ErrorCode.BAD_REQUEST, "request is not JSON")))
                continue
            item = parse_request(obj)
            if isinstance(item, Request):
                if self.pending >= self.max_pending:
                    item = Rejected(Response.failure(
                        item.id, ErrorCode.BUSY, f"more than {self.max_pending} requests pending"))
                else:
                    self.pending += 1
            out.append(item)
        return out

    def send_response(self, response: Response) -> bytes:
        """Bytes answering a `Request` returned by receive_data."""
        self.pending = max(0, self.pending - 1)
        return encode_response(response)

    def send_rejection(self, rejected: Rejected) -> bytes:
        return encode_response(rejected.response)

    def send_event(self, event: Event) -> bytes:
        return encode_event(event)


class ClientConnection:
    """The client's side: numbers requests and parses the server's lines."""

    def __init__(self, max_line: int = 16 * 1024 * 1024) -> None:
        # Responses (a big session table) may be far longer than requests.
        self._lines = _LineBuffer(max_line)
        self.max_line = max_line
        self._next_id = 1

    def send_request(self, cmd: str, args: Sequence[str] = (), want_json: bool = False) -> tuple[int, bytes]:
        request_id = self._next_id
        self._next_id += 1
        obj: dict[str, JSONValue] = {"id": request_id, "cmd": cmd, "args": list(args)}
        if want_json:
            obj["json"] = True
        return request_id, encode_line(obj)

    def receive_data(self, data: bytes) -> list[Response | Event | ProtocolViolation]:
        out: list[Response | Event | ProtocolViolation] = []
        for line in self._lines.feed(data):
            if line is None:
                out.append(ProtocolViolation(f"server line longer than {self.max_line} bytes"))
                continue
            if not line.strip():
                continue
            decoded, obj = _decode_json(line)
            out.append(parse_server_message(obj) if decoded else ProtocolViolation("server sent non-JSON"))
        return out
