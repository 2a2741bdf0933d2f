"""Sub-statements of the object blocks: interface, network, vrrp, gateway, server and target.

Each handler reads the values of one sub-statement and returns the amended (frozen) object, the key
of the field it set (for "given twice in one block" errors and the SourceMap) and the position of the
value, which validation errors point at. Health checks append to the object's check list; `httpstatus`,
`httpbody`, `httphost` and `expectregex` refine the most recent http/https or sendexpect check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from dsrlb.config import keywords as kw
from dsrlb.config.cursor import Cursor
from dsrlb.config.errors import Position, SourceMap
from dsrlb.config.lexer import Kind, Token
from dsrlb.model import (
    AgentCheck,
    Check,
    Gateway,
    HttpCheck,
    Interface,
    Method,
    NeighbourCheck,
    Network,
    PingCheck,
    PortRange,
    Protocol,
    ReturnMatch,
    ScriptCheck,
    SendExpectCheck,
    Server,
    SessionKey,
    Target,
    TcpOpenCheck,
    Vrrp,
)

Handler = Callable[[Any, Token], tuple[Any, str, Position]]

PROTOCOLS = {p.value: p for p in Protocol}
METHODS = {m.value: m for m in Method}
SESSION_KEYS = {k.value: k for k in SessionKey}
RETURN_MATCHES = {k.value: k for k in ReturnMatch}

# Check keyword -> (argument signature, usage text).
CHECK_SIGNATURES: dict[str, tuple[tuple[str, ...], str]] = {
    "ping": (("int", "int"), "ping INTERVAL,TIMEOUT"),
    "ping6": (("int", "int"), "ping6 INTERVAL,TIMEOUT"),
    "arp": (("int", "int"), "arp INTERVAL,TIMEOUT"),
    "ndp": (("int", "int"), "ndp INTERVAL,TIMEOUT"),
    "tcpopen": (("int", "int", "int"), "tcpopen PORT,INTERVAL,TIMEOUT"),
    "agent": (("int", "int", "int"), "agent PORT,INTERVAL,TIMEOUT"),
    "agent6": (("int", "int", "int"), "agent6 PORT,INTERVAL,TIMEOUT"),
    "script": (("str", "int", "int"), 'script "COMMAND",INTERVAL,TIMEOUT'),
    "http": (("int", "str", "int", "int"), 'http PORT,"/PATH",INTERVAL,TIMEOUT'),
    "https": (("int", "str", "int", "int"), 'https PORT,"/PATH",INTERVAL,TIMEOUT'),
    "sendexpect": (("int", "str", "str", "int", "int"), 'sendexpect PORT,"SEND","EXPECT",INTERVAL,TIMEOUT'),
}


def build_check(keyword: str, args: list[Any]) -> Check:
    """The model check for a check keyword and its already type-checked arguments."""
    if keyword in ("ping", "ping6"):
        return PingCheck(args[0], args[1], ipv6=keyword == "ping6")
    if keyword in ("arp", "ndp"):
        return NeighbourCheck(args[0], args[1], ipv6=keyword == "ndp")
    if keyword == "tcpopen":
        return TcpOpenCheck(args[0], args[1], args[2])
    if keyword in ("agent", "agent6"):
        return AgentCheck(args[0], args[1], args[2], ipv6=keyword == "agent6")
    if keyword == "script":
        return ScriptCheck(args[0], args[1], args[2])
    if keyword in ("http", "https"):
        return HttpCheck(args[0], args[1], args[2], args[3], tls=keyword == "https")
    return SendExpectCheck(args[0], args[1], args[2], args[3], args[4])


@dataclass
class Objects:
    """The objects defined so far, by id (vrrp and gateway are single)."""

    interfaces: dict[int, Interface] = field(default_factory=dict)
    networks: dict[int, Network] = field(default_factory=dict)
    servers: dict[int, Server] = field(default_factory=dict)
    targets: dict[int, Target] = field(default_factory=dict)
    vrrp: Vrrp | None = None
    gateway: Gateway | None = None

    def get(self, kind: str, oid: int) -> Any:
        if kind == "vrrp":
            return self.vrrp
        if kind == "gateway":
            return self.gateway
        return self._table(kind).get(oid)

    def put(self, kind: str, oid: int, obj: Any) -> None:
        if kind == "vrrp":
            self.vrrp = obj
        elif kind == "gateway":
            self.gateway = obj
        else:
            self._table(kind)[oid] = obj

    def _table(self, kind: str) -> dict[int, Any]:
        tables: dict[str, dict[int, Any]] = {
            "interface": self.interfaces,
            "network": self.networks,
            "server": self.servers,
            "target": self.targets,
        }
        return tables[kind]


def _new(kind: str, oid: int) -> Any:
    if kind == "interface":
        return Interface(oid)
    if kind == "network":
        return Network(oid)
    if kind == "server":
        return Server(oid)
    if kind == "target":
        return Target(oid)
    if kind == "vrrp":
        return Vrrp(vrid=0)  # vrid is required; a block without one is reported by the parser
    return Gateway()


class ObjectGrammar:
    def __init__(self, cursor: Cursor, where: SourceMap) -> None:
        self.cursor = cursor
        self.where = where
        self.handlers: dict[str, dict[str, Handler]] = {
            "interface": {"name": self._name, "access": self._access, "trackval": self._trackval},
            "network": self._network_handlers(),
            "vrrp": self._vrrp_handlers(),
            "gateway": {
                "ipaddr": self._ipaddr,
                "ipaddr6": self._ipaddr6,
                "trackval": self._trackval,
                **{name: self._check for name in kw.GATEWAY_CHECK_KEYWORDS},
            },
            "server": self._server_handlers(),
            "target": self._target_handlers(),
        }

    # --- statement structure -----------------------------------------------------------------------

    def statement(
        self, objects: Objects, kind: str, oid: int, keyword: Token, id_token: Token | None
    ) -> None:
        """`kind [oid] { ... }` or the one-line `kind [oid] sub value...`; the keyword/id are consumed."""
        cursor = self.cursor
        token = cursor.peek()
        label = f"{kind} {oid}" if oid else kind
        if token.kind is Kind.LBRACE:
            if objects.get(kind, oid) is not None:
                first = self.where.find(kind, oid)
                raise cursor.fail(
                    id_token or keyword,
                    f"duplicate id: {label} is already defined at line {first.line}",
                    f"a new {kind} id" if oid else f"one {kind} block",
                )
            cursor.next()
            objects.put(kind, oid, _new(kind, oid))
            self.where.record(kind, oid, "", keyword.position)
            seen: dict[str, Position] = {}
            self.block_body(lambda: self._sub(objects, kind, oid, seen), keyword, f"a {kind} keyword")
            return
        if token.kind is not Kind.WORD:
            raise cursor.fail(token, f"incomplete {label} statement", f"'{{' or a {kind} keyword")
        if objects.get(kind, oid) is None:
            objects.put(kind, oid, _new(kind, oid))
            self.where.record(kind, oid, "", keyword.position)
        self._sub(objects, kind, oid, None)

    def block_body(self, sub: Callable[[], None], opener: Token, expected: str) -> None:
        """Sub-statements up to the closing brace (the opening brace is consumed)."""
        cursor = self.cursor
        while True:
            cursor.skip_newlines()
            token = cursor.peek()
            if token.kind is Kind.RBRACE:
                cursor.next()
                return
            if token.kind is Kind.EOF:
                raise cursor.fail(
                    token, f"the '{opener.text}' block opened on line {opener.line} is not closed", "'}'"
                )
            sub()
            after = cursor.peek()
            if after.kind not in (Kind.NEWLINE, Kind.RBRACE, Kind.EOF):
                raise cursor.fail(after, "unexpected text after the setting", "end of line")

    def _sub(self, objects: Objects, kind: str, oid: int, seen: dict[str, Position] | None) -> None:
        cursor = self.cursor
        token = cursor.peek()
        table = self.handlers[kind]
        name = token.text.lower()
        if token.kind is not Kind.WORD or name not in table:
            close = kw.suggestion(token.text, table) if token.kind is Kind.WORD else None
            hint = f"; did you mean '{close}'?" if close else ""
            raise cursor.fail(token, f"unknown {kind} keyword{hint}", f"one of {kw.one_of(sorted(table))}")
        cursor.next()
        obj, key, where = table[name](objects.get(kind, oid), token)
        if seen is not None:
            if key in seen:
                raise cursor.fail(
                    token,
                    f"{name} given twice in this block (first on line {seen[key].line})",
                    "each setting once per block",
                )
            seen[key] = token.position
        objects.put(kind, oid, obj)
        self.where.record(kind, oid, key, where)

    # --- shared handlers ---------------------------------------------------------------------------

    def _name(self, obj: Any, token: Token) -> tuple[Any, str, Position]:
        value, at = self.cursor.text("a name")
        return replace(obj, name=value), "name", at.position

    def _access(self, obj: Any, token: Token) -> tuple[Any, str, Position]:
        value, at = self.cursor.choice({"raw": "raw"}, "access mode")
        return replace(obj, access=value), "access", at.position

    def _trackval(self, obj: Any, token: Token) -> tuple[Any, str, Position]:
        value, at = self.cursor.integer("trackval")
        return replace(obj, trackval=value), "trackval", at.position

    def _ipaddr(self, obj: Any, token: Token) -> tuple[Any, str, Position]:
        value, at = self.cursor.ipv4("ipaddr")
        attr = "ipaddr" if isinstance(obj, Gateway) else "address"
        return replace(obj, **{attr: value}), attr, at.position

    def _ipaddr6(self, obj: Any, token: Token) -> tuple[Any, str, Position]:
        value, at = self.cursor.ipv6("ipaddr6")
        attr = "ipaddr6" if isinstance(obj, Gateway) else "address"
        return replace(obj, **{attr: value}), attr, at.position

    def _protocol(self, obj: Any, token: Token) -> tuple[Any, str, Position]:
        value, at = self.cursor.choice(PROTOCOLS, "protocol")
        return replace(obj, protocol=value), "protocol", at.position

    def _check(self, obj: Any, token: Token) -> tuple[Any, str, Position]:
        keyword = token.text.lower()
        signature, usage = CHECK_SIGNATURES[keyword]
        args = self.cursor.arguments(keyword, signature, usage)
        check = build_check(keyword, [value for value, _ in args])
        key = f"checks.{len(obj.checks)}"
        return replace(obj, checks=(*obj.checks, check)), key, token.position

    def _field(self, attr: str, read: Callable[[], tuple[Any, Token]]) -> Handler:
        def handler(obj: Any, token: Token) -> tuple[Any, str, Position]:
            value, at = read()
            return replace(obj, **{attr: value}), attr, at.position

        return handler

    def _ids(self, attr: str, what: str) -> Handler:
        def handler(obj: Any, token: Token) -> tuple[Any, str, Position]:
            items = self.cursor.id_list(what)
            kind = type(obj).__name__.lower()
            seen: set[int] = set()
            for oid, at in items:
                # The first mention of an id locates "not defined" errors; a repeat locates "listed twice".
                suffix = ".again" if oid in seen else ""
                self.where.record(kind, obj.id, f"{attr}[{oid}]{suffix}", at.position, first=not suffix)
                seen.add(oid)
            return replace(obj, **{attr: tuple(oid for oid, _ in items)}), attr, items[0][1].position

        return handler

    # --- per-kind tables -----------------------------------------------------------------------------

    def _network_handlers(self) -> dict[str, Handler]:
        c = self.cursor
        return {
            "name": self._name,
            "addr": self._field("addr", lambda: c.ipv4("addr")),
            "mask": self._field("mask", self._mask),
            "real": self._field("real", lambda: c.ipv4("real")),
            "virt": self._field("virt", lambda: c.ipv4("virt")),
            "addr6": self._field("addr6", lambda: c.ipv6("addr6")),
            "mask6": self._field("mask6", lambda: c.integer("mask6")),
            "real6": self._field("real6", lambda: c.ipv6("real6")),
            "virt6": self._field("virt6", lambda: c.ipv6("virt6")),
            "syncpeer": self._field("syncpeer", lambda: c.ip("syncpeer")),
            "interface": self._ids("interfaces", "interface"),
            "interfaces": self._ids("interfaces", "interface"),
        }

    def _mask(self) -> tuple[IPv4Address, Token]:
        """`mask 255.255.255.0`, or a prefix length `mask 24` (stored as the dotted mask)."""
        token = self.cursor.peek()
        if token.kind is Kind.NUMBER:
            length, at = self.cursor.integer("mask")
            if length > 32:
                raise self.cursor.fail(at, "IPv4 prefix length out of range", "0-32 or a dotted mask")
            return IPv4Network(f"0.0.0.0/{length}").netmask, at
        return self.cursor.ipv4("mask")

    def _vrrp_handlers(self) -> dict[str, Handler]:
        c = self.cursor
        return {
            "vrid": self._field("vrid", lambda: c.integer("vrid")),
            "priority": self._field("priority", lambda: c.integer("priority")),
            "network": self._field("network", lambda: c.integer("network")),
            "tracking": self._field("tracking", lambda: c.switch("tracking")),
            "advert": self._field("advert_interval", lambda: c.decimal("advert")),
            "peers": self._peers,
            "authpass": self._field("auth_pass", lambda: c.text("a password")),
            "preemptdelay": self._field("preempt_delay", lambda: c.decimal("preemptdelay")),
        }

    def _peers(self, obj: Any, token: Token) -> tuple[Any, str, Position]:
        items = self.cursor.comma_list(lambda: self.cursor.ip("peers"))
        for index, (_, at) in enumerate(items):
            self.where.record("vrrp", 0, f"unicast_peers[{index}]", at.position)
        return replace(obj, unicast_peers=tuple(a for a, _ in items)), "unicast_peers", items[0][1].position

    def _server_handlers(self) -> dict[str, Handler]:
        c = self.cursor
        return {
            "name": self._name,
            "ipaddr": self._ipaddr,
            "ipaddr6": self._ipaddr6,
            "port": self._field("ports", lambda: _single_port(c)),
            "ports": self._ports,
            "protocol": self._protocol,
            "sessionid": self._field("sessionid", lambda: c.choice(SESSION_KEYS, "server sessionid")),
            "method": self._field("method", lambda: c.choice(METHODS, "method")),
            "targets": self._ids("targets", "target"),
            "backup": self._ids("backup", "target"),
            "timeout": self._field("timeout", lambda: c.integer("timeout")),
        }

    def _ports(self, obj: Any, token: Token) -> tuple[Any, str, Position]:
        ranges, tokens = self.cursor.range_list("port")
        for index, at in enumerate(tokens):
            self.where.record("server", obj.id, f"ports[{index}]", at.position)
        return replace(obj, ports=ranges), "ports", tokens[0].position

    def _target_handlers(self) -> dict[str, Handler]:
        c = self.cursor
        return {
            "name": self._name,
            "ipaddr": self._ipaddr,
            "ipaddr6": self._ipaddr6,
            "port": self._field("port", lambda: c.integer("port")),
            "protocol": self._protocol,
            "weight": self._field("weight", lambda: c.integer("weight")),
            **{name: self._check for name in kw.CHECK_KEYWORDS},
            "httpstatus": self._refine_http,
            "httpbody": self._refine_http,
            "httphost": self._refine_http,
            "expectregex": self._refine_sendexpect,
            "rise": self._health("rise"),
            "fall": self._health("fall"),
            "quiesce": self._health("quiesce"),
            "sessionid": self._field("sessionid", lambda: c.choice(RETURN_MATCHES, "target sessionid")),
            "dsr": self._field("dsr", lambda: c.switch("dsr")),
        }

    def _health(self, attr: str) -> Handler:
        def handler(obj: Any, token: Token) -> tuple[Any, str, Position]:
            value: Any
            value, at = self.cursor.switch(attr) if attr == "quiesce" else self.cursor.integer(attr)
            return replace(obj, health=replace(obj.health, **{attr: value})), attr, at.position

        return handler

    def _last_check(self, obj: Any, token: Token, kind: type[Any], needs: str) -> int:
        for index in range(len(obj.checks) - 1, -1, -1):
            if isinstance(obj.checks[index], kind):
                return index
        raise self.cursor.fail(
            token,
            f"{token.text} refines the last {needs} check, and this target has none yet",
            f"{needs} check before {token.text}",
        )

    def _refine_http(self, obj: Any, token: Token) -> tuple[Any, str, Position]:
        index = self._last_check(obj, token, HttpCheck, "http or https")
        keyword = token.text.lower()
        value: Any
        if keyword == "httpstatus":
            value, tokens = self.cursor.range_list("HTTP status")
            attr, at = "status", tokens[0]
        else:
            value, at = self.cursor.text("a quoted string")
            attr = "body_regex" if keyword == "httpbody" else "host"
        return self._replace_check(obj, index, attr, value), f"checks.{index}.{attr}", at.position

    def _refine_sendexpect(self, obj: Any, token: Token) -> tuple[Any, str, Position]:
        index = self._last_check(obj, token, SendExpectCheck, "sendexpect")
        value, at = self.cursor.switch("expectregex")
        return self._replace_check(obj, index, "regex", value), f"checks.{index}.regex", at.position

    @staticmethod
    def _replace_check(obj: Any, index: int, attr: str, value: Any) -> Any:
        checks = list(obj.checks)
        checks[index] = replace(checks[index], **{attr: value})
        return replace(obj, checks=tuple(checks))


def _single_port(cursor: Cursor) -> tuple[tuple[PortRange, ...], Token]:
    port, at = cursor.integer("port")
    return (PortRange(port, port),), at
