"""Rich renderers for show results (control/views.py); used by `dsrlb control` and `dsrlb show`.

`render_result(data, text)` picks the renderer from the result's own key ("targets", ...). A result
without a view is shown as the daemon's text, or as pretty JSON. Data that claims a view but does not
have its shape is shown as JSON with a note, never a traceback.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, cast

from rich.console import Group, RenderableType
from rich.json import JSON
from rich.table import Table
from rich.text import Text

from dsrlb.control.protocol import to_jsonable
from dsrlb.control.views import (
    RESULT_VIEWS,
    NetworksResult,
    NetworkView,
    ServersResult,
    ServerView,
    SessionsResult,
    SessionView,
    StatsResult,
    StatsView,
    TargetsResult,
    TargetView,
    ViewShapeError,
    check_view,
    result_kind,
)

STATE_STYLES: Mapping[str, str] = {
    "up": "bold green",
    "down": "bold red",
    "disabled": "dim",
    "draining": "yellow",
    "backup": "cyan",
}


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def _opt(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def human_bytes(count: int) -> str:
    """1536 -> '1.5 KiB' (binary units, like ip -h)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # unreachable; keeps mypy sure of a return


def human_duration(seconds: float) -> str:
    """93784 -> '1d2h3m', 75 -> '1m15s', 0.4 -> '0s'."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h{minutes}m"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _address(address: str | None, port: int | None) -> str:
    if address is None:
        return "-"
    shown = f"[{address}]" if ":" in address else address
    return f"{shown}:{port}" if port is not None else address


def render_targets(rows: list[TargetView], now: float | None = None) -> Table:
    now = time.time() if now is None else now
    table = Table(title="targets", title_justify="left")
    for header in ("id", "name", "address", "state", "since", "reason"):
        table.add_column(header)
    for header in ("sessions", "packets", "bytes", "latency"):
        table.add_column(header, justify="right")
    for row in sorted(rows, key=lambda r: r["id"]):
        since = row["since"]
        latency = row["latency_ms"]
        table.add_row(
            str(row["id"]),
            _opt(row["name"]),
            _address(row["address"], row["port"]),
            _state(row["state"]),
            "-" if since is None else human_duration(now - since),
            _opt(row["reason"]),
            str(row["sessions"]),
            str(row["packets"]),
            human_bytes(row["bytes"]),
            "-" if latency is None else f"{latency:.1f} ms",
        )
    return table


def render_servers(rows: list[ServerView]) -> Table:
    table = Table(title="servers", title_justify="left")
    for header in ("id", "name", "address", "ports", "proto", "method", "state", "targets"):
        table.add_column(header)
    for header in ("up", "sessions", "packets", "bytes"):
        table.add_column(header, justify="right")
    for row in sorted(rows, key=lambda r: r["id"]):
        targets = ",".join(map(str, row["targets"])) or "-"
        if row["backup"]:
            targets += " backup " + ",".join(map(str, row["backup"]))
        table.add_row(
            str(row["id"]),
            _opt(row["name"]),
            _opt(row["address"]),
            row["ports"],
            row["protocol"] or "tcp+udp",
            row["method"],
            _state(row["state"]),
            targets,
            f"{row['targets_up']}/{len(row['targets']) + len(row['backup'])}",
            str(row["sessions"]),
            str(row["packets"]),
            human_bytes(row["bytes"]),
        )
    return table


def render_sessions(rows: list[SessionView], total: int | None = None) -> Table:
    shown = len(rows)
    title = "sessions" if total is None or total == shown else f"sessions ({shown} of {total} shown)"
    table = Table(title=title, title_justify="left")
    for header in ("server", "client", "target"):
        table.add_column(header)
    for header in ("idle", "expires in"):
        table.add_column(header, justify="right")
    for row in sorted(rows, key=lambda r: (r["server"], r["client"], r["client_port"])):
        client = _address(row["client"], row["client_port"] or None)
        table.add_row(
            str(row["server"]), client, str(row["target"]),
            human_duration(row["idle_s"]), human_duration(row["expires_s"]),
        )
    return table


def render_networks(rows: list[NetworkView]) -> Table:
    table = Table(title="networks", title_justify="left")
    for header in ("id", "name", "interfaces", "state", "addr", "real", "virt", "addr6", "real6", "virt6"):
        table.add_column(header)
    for row in sorted(rows, key=lambda r: r["id"]):
        table.add_row(
            str(row["id"]), _opt(row["name"]), ",".join(row["interfaces"]) or "-", _state(row["state"]),
            _opt(row["addr"]), _opt(row["real"]), _opt(row["virt"]),
            _opt(row["addr6"]), _opt(row["real6"]), _opt(row["virt6"]),
        )
    return table


def render_stats(stats: StatsView) -> Group:
    summary = Table.grid(padding=(0, 2))
    summary.add_row("engine", stats["engine"])
    summary.add_row("uptime", human_duration(stats["uptime_s"]))
    summary.add_row("sessions", str(stats["sessions"]))
    counters = Table(title="engine counters", title_justify="left")
    counters.add_column("counter")
    counters.add_column("packets", justify="right")
    for name, value in sorted(stats["counters"].items()):
        counters.add_row(name, str(value))
    drops = Table(title="drops by reason", title_justify="left")
    drops.add_column("reason")
    drops.add_column("packets", justify="right")
    for name, value in sorted(stats["drops"].items()):
        drops.add_row(name, str(value))
    return Group(summary, counters, drops)


def _render_view(kind: str, data: Any, now: float | None) -> RenderableType:
    check_view(data, RESULT_VIEWS[kind])
    if kind == "targets":
        return render_targets(cast(TargetsResult, data)["targets"], now)
    if kind == "servers":
        return render_servers(cast(ServersResult, data)["servers"])
    if kind == "sessions":
        sessions = cast(SessionsResult, data)
        return render_sessions(sessions["sessions"], sessions["total"])
    if kind == "networks":
        return render_networks(cast(NetworksResult, data)["networks"])
    return render_stats(cast(StatsResult, data)["stats"])


def render_result(data: Any, text: str | None = None, now: float | None = None) -> RenderableType:
    """The renderable for a command's result: a view's table, else the text, else pretty JSON."""
    kind = result_kind(data)
    if kind is not None:
        try:
            return _render_view(kind, data, now)
        except ViewShapeError as exc:
            # An action's result may reuse a view's key ({"targets": [2], "state": "draining"}); its text
            # is then what to show. Without text, show the data and say why it is not a table.
            if text is None:
                return Group(Text(f"(result does not have the {kind} shape: {exc})", style="yellow"),
                             _json(data))
    if text is not None:
        return Text(text)
    if data is None:
        return Text("ok")
    return _json(data)


def _json(data: Any) -> RenderableType:
    return JSON(json.dumps(to_jsonable(data)))

