"""Keyword tables of the BalanceNG dialect: what is accepted where, and the limits dsrlb enforces.

Kept apart from the parser so that the writer, the validator, the docs test and the suggestion logic
(difflib "did you mean") all read the same lists.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable

# Top-level statements.
TOP_LEVEL = (
    "hostname",
    "remark",
    "modules",
    "set",
    "interface",
    "network",
    "vrrp",
    "gateway",
    "server",
    "target",
    "register",
    "enable",
    "disable",
    "unregister",
)

# Objects that register/enable/disable/unregister act on: singular and plural spellings.
LIFECYCLE_VERBS = ("register", "enable", "disable", "unregister")
LIFECYCLE_OBJECTS = {
    "interface": "interface",
    "interfaces": "interface",
    "network": "network",
    "networks": "network",
    "server": "server",
    "servers": "server",
    "target": "target",
    "targets": "target",
}
PLURAL = {"interface": "interfaces", "network": "networks", "server": "servers", "target": "targets"}

INTERFACE_KEYWORDS = ("name", "access", "trackval")
NETWORK_KEYWORDS = (
    "name",
    "addr",
    "mask",
    "real",
    "virt",
    "addr6",
    "mask6",
    "real6",
    "virt6",
    "syncpeer",
    "interface",
    "interfaces",
)
VRRP_KEYWORDS = ("vrid", "priority", "network", "tracking", "advert", "peers", "authpass", "preemptdelay")
PREEMPT_DELAY_MAX = 1000  # seconds, keepalived's limit
CHECK_KEYWORDS = (
    "ping",
    "ping6",
    "arp",
    "ndp",
    "tcpopen",
    "agent",
    "agent6",
    "script",
    "http",
    "https",
    "sendexpect",
)
GATEWAY_CHECK_KEYWORDS = ("ping", "ping6", "arp", "ndp")
GATEWAY_KEYWORDS = ("ipaddr", "ipaddr6", *GATEWAY_CHECK_KEYWORDS, "trackval")
SERVER_KEYWORDS = (
    "name",
    "ipaddr",
    "ipaddr6",
    "port",
    "ports",
    "protocol",
    "sessionid",
    "method",
    "targets",
    "backup",
    "timeout",
)
TARGET_KEYWORDS = (
    "name",
    "ipaddr",
    "ipaddr6",
    "port",
    "protocol",
    "weight",
    *CHECK_KEYWORDS,
    "httpstatus",
    "httpbody",
    "httphost",
    "expectregex",
    "rise",
    "fall",
    "quiesce",
    "sessionid",
    "dsr",
)

# `set` keys of BalanceNG that dsrlb accepts, stores (sorted) and shows. The value kind is checked:
# "flag" is 0 or 1, "count" a non-negative integer, "word" any single value. Keys that dsrlb acts on
# (marked "dsrlb:") are read through Config.setting(); the rest are accepted so that BalanceNG files load
# (docs/configuration.md §9 says which is which).
SET_KEYS: dict[str, str] = {
    "agentinterval": "count",
    "agentsecretfile": "word",  # dsrlb: shared secret of the load agents (docs/health.md)
    "syncsecretfile": "word",  # dsrlb: shared secret of the session sync (docs/vrrp.md)
    "alert": "word",  # dsrlb: command run when a target goes down (docs/health.md)
    "arpinterval": "count",
    "arptimeout": "count",
    "gwarpinterval": "count",
    "hcinterval": "count",
    "ipforwarding": "flag",
    "nataddr": "word",
    "sessionautoresync": "flag",
    "sessionsync": "flag",
    "sessionsyncack": "flag",
    "sessionsyncport": "count",
    "sessiontabsize": "count",  # dsrlb: entries of the XDP session table (daemon/xdp_runner.py)
    "sessiontimeout": "count",  # dsrlb: default session idle timeout, both protocols (engine/compile.py)
    "snmp": "flag",
    "tcpsessiontimeout": "count",  # dsrlb: default session idle timeout of TCP and protocol-less servers
    "threads": "count",
    "udpsessiontimeout": "count",  # dsrlb: default session idle timeout of UDP servers
    "upalert": "word",  # dsrlb: command run when a target comes back up
    "vrrpadvint": "count",
    "vrrppreempt": "flag",
    "vrrppreemptts": "count",
}

# Words that start other configuration languages: an error on one of them says what to do instead.
KEEPALIVED_WORDS = frozenset(
    {
        "global_defs",
        "vrrp_instance",
        "vrrp_sync_group",
        "virtual_server",
        "virtual_server_group",
        "vrrp_script",
        "static_ipaddress",
        "static_routes",
        "include",
    }
)
IMPORT_HINT = "it looks like a {kind}; convert it with `dsrlb convert`"

# Limits (inclusive). Ids are bounded so that id ranges (`targets 1-1000`) stay cheap to expand.
MAX_ID = 65535
PORT_RANGE = (1, 65535)
VRID_RANGE = (1, 255)
PRIORITY_RANGE = (1, 255)
TRACKVAL_RANGE = (1, 255)
WEIGHT_RANGE = (0, 65535)
HTTP_STATUS_RANGE = (100, 599)
MAX_INTERVAL = 86400  # health-check interval and timeout, seconds
SESSION_TIMEOUT_RANGE = (1, 7 * 86400)  # seconds: server `timeout` and the `set` *sessiontimeout keys
# `set` keys dsrlb acts on whose values have a range (checked at the value, config/validate.py).
SET_KEY_RANGES: dict[str, tuple[int, int]] = {
    "sessiontimeout": SESSION_TIMEOUT_RANGE,
    "tcpsessiontimeout": SESSION_TIMEOUT_RANGE,
    "udpsessiontimeout": SESSION_TIMEOUT_RANGE,
    # entries of the XDP session table (and of its NAT return table), fixed when the program loads
    "sessiontabsize": (1024, 1 << 24),
}
MAX_NUMBER_DIGITS = 18  # longer digit strings are refused before int() (CPython caps int parsing)
AUTHPASS_MAX = 8  # VRRPv2 simple text password: 8 octets of Authentication Data (RFC 2338 §5.3.10)
IFNAMSIZ = 15  # Linux interface names: at most 15 bytes, no '/', ':' or blanks


def suggestion(word: str, choices: Iterable[str]) -> str | None:
    """The closest choice to a misspelt word, or None."""
    close = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def one_of(choices: Iterable[str]) -> str:
    """A human list of choices for an "expected" text: "a, b or c"."""
    items = list(choices)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def enum_values(kind: type[enum.StrEnum]) -> tuple[str, ...]:
    return tuple(member.value for member in kind)
