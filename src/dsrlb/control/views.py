"""Result shapes of the `show` commands, as they travel in JSON (control socket, HTTP API, `--json`).

Each show result is an object with one key naming its rows, so a result describes itself and the
renderers (control/render.py) need not know which command produced it:

    show servers   -> {"servers": [ServerView, ...]}
    show targets   -> {"targets": [TargetView, ...]}
    show sessions  -> {"sessions": [SessionView, ...], "total": N}   (rows may be capped; total is not)
    show networks  -> {"networks": [NetworkView, ...]}
    show stats     -> {"stats": StatsView}

Times are unix seconds (float); durations are seconds; counters are totals since the daemon started.
`check_view` validates untrusted JSON against these shapes so that a renderer fails with a clear
ViewShapeError, never a KeyError deep inside a table.
"""

# No `from __future__ import annotations` here: with string annotations, Python 3.11's TypedDict cannot
# see NotRequired[...] and would make every key required.
import types
import typing
from typing import Any, Literal, NotRequired, TypedDict, Union

TargetStateName = Literal["up", "down", "disabled", "draining"]
ServerStateName = Literal["up", "down", "disabled"]
TARGET_STATES: tuple[str, ...] = typing.get_args(TargetStateName)


class TargetView(TypedDict):
    id: int
    name: str | None
    address: str | None
    port: int | None  # None: the port the client asked for
    state: TargetStateName
    since: float | None  # when it entered `state`
    reason: str  # why it is in that state: "tcpopen 80 refused", "disabled by operator", ""
    sessions: int  # active sessions now
    packets: int
    bytes: int
    latency_ms: float | None  # last successful health probe's round trip
    dsr: NotRequired[bool]
    weight: NotRequired[int]
    load: NotRequired[int | None]  # agent-reported load, 0-100
    servers: NotRequired[list[int]]  # servers that use it
    checks: NotRequired[list[str]]  # the checks as configured: "tcpopen 80,5,16"


class ServerView(TypedDict):
    id: int
    name: str | None
    address: str | None
    ports: str  # "80", "80,443,33000-33999" or "any"
    protocol: str | None  # "tcp", "udp", None for both
    method: str
    state: ServerStateName  # up: at least one target can take new sessions
    targets: list[int]
    backup: list[int]
    targets_up: int
    sessions: int
    packets: int
    bytes: int


class SessionView(TypedDict):
    server: int
    client: str
    client_port: int  # 0 with `sessionid src`
    target: int
    idle_s: float
    expires_s: float


class NetworkView(TypedDict):
    id: int
    name: str | None
    interfaces: list[str]
    addr: str | None  # IPv4 prefix, "192.0.2.0/24"
    real: str | None
    virt: str | None
    addr6: str | None  # IPv6 prefix
    real6: str | None
    virt6: str | None
    state: str  # "up", "down", "disabled"; "backup" when VRRP holds virt addresses elsewhere


class StatsView(TypedDict):
    engine: str  # "xdp", "afpacket", "reference"
    uptime_s: float
    sessions: int  # active sessions now
    counters: dict[str, int]  # engine counters by name (docs/datapath.md §6)
    drops: dict[str, int]  # dropped packets by reason


class ServersResult(TypedDict):
    servers: list[ServerView]


class TargetsResult(TypedDict):
    targets: list[TargetView]


class SessionsResult(TypedDict):
    sessions: list[SessionView]
    total: int


class NetworksResult(TypedDict):
    networks: list[NetworkView]


class StatsResult(TypedDict):
    stats: StatsView


# The view a result's single key selects.
RESULT_VIEWS: dict[str, type] = {
    "servers": ServersResult,
    "targets": TargetsResult,
    "sessions": SessionsResult,
    "networks": NetworksResult,
    "stats": StatsResult,
}


class ViewShapeError(ValueError):
    """JSON that does not have the shape of a view."""


def result_kind(data: object) -> str | None:
    """Which view a result is ("targets", ...), or None for results without one."""
    if isinstance(data, dict):
        for key in RESULT_VIEWS:
            if key in data:
                return key
    return None


def check_view(data: object, view: type) -> None:
    """Raise ViewShapeError unless `data` has the shape of the TypedDict `view`."""
    _check(data, view, view.__name__)


def _check(value: object, expected: Any, where: str) -> None:
    origin = typing.get_origin(expected)
    if expected is Any:
        return
    if expected is type(None) or expected is None:
        if value is not None:
            raise ViewShapeError(f"{where}: expected null, got {type(value).__name__}")
        return
    if origin in (Union, types.UnionType):
        problems = []
        for option in typing.get_args(expected):
            try:
                _check(value, option, where)
                return
            except ViewShapeError as exc:
                problems.append(str(exc))
        raise ViewShapeError(problems[-1])
    if origin is Literal:
        if value not in typing.get_args(expected):
            raise ViewShapeError(f"{where}: {value!r} is not one of {typing.get_args(expected)}")
        return
    if origin is list:
        if not isinstance(value, list):
            raise ViewShapeError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(expected)
        for index, element in enumerate(value):
            _check(element, item, f"{where}[{index}]")
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise ViewShapeError(f"{where}: expected an object, got {type(value).__name__}")
        _, item = typing.get_args(expected)
        for key, element in value.items():
            _check(element, item, f"{where}.{key}")
        return
    if typing.is_typeddict(expected):
        if not isinstance(value, dict):
            raise ViewShapeError(f"{where}: expected an object, got {type(value).__name__}")
        hints = typing.get_type_hints(expected)
        for key in hints:
            if key in expected.__required_keys__ and key not in value:
                raise ViewShapeError(f"{where}: missing {key!r}")
        for key, hint in hints.items():
            if key in value:
                _check(value[key], hint, f"{where}.{key}")
        return
    if expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)  # JSON 3 is a fine float
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise ViewShapeError(f"{where}: expected {expected.__name__}, got {type(value).__name__}")
