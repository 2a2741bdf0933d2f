"""The model as plain JSON-able data (`dsrlb show config --json`, the control API).

Dataclasses become dicts with their field names; addresses and enums become strings; a PortRange
becomes "80" or "33000-33999" as in the config text; tuples become lists. Each health check carries
a "type" with its config keyword (ping, ping6, arp, ndp, tcpopen, agent, agent6, script, http, https,
sendexpect), so a consumer can tell checks of the same shape apart.
"""

from __future__ import annotations

import enum
from dataclasses import fields, is_dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from dsrlb.model import (
    AgentCheck,
    Check,
    Config,
    HttpCheck,
    NeighbourCheck,
    PingCheck,
    PortRange,
    ScriptCheck,
    SendExpectCheck,
    TcpOpenCheck,
)

JsonValue = None | bool | int | float | str | list[Any] | dict[str, Any]


def check_type(check: Check) -> str:
    """The config keyword of a check."""
    if isinstance(check, PingCheck):
        return "ping6" if check.ipv6 else "ping"
    if isinstance(check, NeighbourCheck):
        return "ndp" if check.ipv6 else "arp"
    if isinstance(check, AgentCheck):
        return "agent6" if check.ipv6 else "agent"
    if isinstance(check, HttpCheck):
        return "https" if check.tls else "http"
    if isinstance(check, TcpOpenCheck):
        return "tcpopen"
    if isinstance(check, ScriptCheck):
        return "script"
    assert isinstance(check, SendExpectCheck)
    return "sendexpect"


_CHECK_TYPES = (PingCheck, NeighbourCheck, TcpOpenCheck, AgentCheck, ScriptCheck, HttpCheck, SendExpectCheck)


def to_json(value: object) -> JsonValue:
    """`value` (a Config or any part of one) as JSON-able data."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, str):
        return value
    if isinstance(value, IPv4Address | IPv6Address):
        return str(value)
    if isinstance(value, PortRange):
        return str(value)
    if isinstance(value, tuple | list):
        return [to_json(item) for item in value]
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        if isinstance(value, _CHECK_TYPES):
            out["type"] = check_type(value)
        for item in fields(value):
            out[item.name] = to_json(getattr(value, item.name))
        return out
    raise TypeError(f"no JSON form for {type(value).__name__}")


def config_to_json(config: Config) -> dict[str, Any]:
    """The whole config; settings become an object (they are unique, sorted keys)."""
    data = to_json(config)
    assert isinstance(data, dict)
    data["settings"] = dict(config.settings)
    return data
