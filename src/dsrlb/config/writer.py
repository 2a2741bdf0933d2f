"""The canonical writer: a Config as BalanceNG-dialect text in the layout of the seed configurations.

Layout (seed 000 node 2): the leading keyword of every top-level statement is padded to 10 columns,
block bodies are indented by 10, objects come in the order hostname, remark, modules, set, interfaces,
vrrp, networks, gateway, servers, targets, and each kind's blocks are followed by its `register` and
`enable` lines (singular word for one id, plural word and a comma list for several). Fields equal to
their defaults are left out, except the VRRP priority, which the seeds always spell out.

`loads(write(c)) == c` holds for every valid Config: every field of the model has a spelling here
and the parser reads each spelling back to the same value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from dsrlb.config.keywords import PLURAL
from dsrlb.model import (
    AgentCheck,
    Check,
    Config,
    Gateway,
    HealthPolicy,
    HttpCheck,
    Interface,
    IPAddress,
    Method,
    NeighbourCheck,
    Network,
    PingCheck,
    PortRange,
    ScriptCheck,
    Server,
    SessionKey,
    Target,
    TcpOpenCheck,
    Vrrp,
)

INDENT = 10
_BARE_WORD = re.compile(r"[A-Za-z0-9_.:/+@%=*~^!?#$&'<>|;\[\]()-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_DEFAULT_STATUS = HttpCheck(0, "/", 1, 1).status
_DEFAULT_HEALTH = HealthPolicy()


def quote(text: str) -> str:
    """`text` as a double-quoted string with the escapes the lexer reads back."""
    out = ['"']
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def word(text: str) -> str:
    """`text` bare when it reads back as one word, quoted otherwise."""
    if _BARE_WORD.fullmatch(text) and not text.startswith("//"):
        return text
    return quote(text)


def decimal(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def ranges(items: Iterable[PortRange]) -> str:
    return ",".join(str(r) for r in items)


def ids(items: Iterable[int]) -> str:
    return ",".join(str(i) for i in items)


def lead(keyword: str, rest: str = "") -> str:
    """A top-level line: keyword padded to INDENT columns (at least one blank), then the rest."""
    padded = keyword.ljust(INDENT) if len(keyword) < INDENT else keyword + " "
    return (padded + rest).rstrip()


def block(keyword: str, oid: int | None, body: Sequence[str]) -> list[str]:
    head = lead(keyword, ("" if oid is None else f"{oid} ") + "{")
    return [head, *(" " * INDENT + line for line in body), "}"]


def lifecycle(kind: str, objects: Sequence[Interface | Network | Server | Target]) -> list[str]:
    lines = []
    for verb, chosen in (
        ("register", [o.id for o in objects if o.registered]),
        ("enable", [o.id for o in objects if o.enabled]),
    ):
        if chosen:
            noun = kind if len(chosen) == 1 else PLURAL[kind]
            lines.append(lead(verb, f"{noun} {ids(chosen)}"))
    return lines


def _address(address: IPAddress | None) -> list[str]:
    if address is None:
        return []
    return [f"ipaddr{'6' if address.version == 6 else ''} {address}"]


def check_lines(check: Check) -> list[str]:
    timing = f"{check.interval},{check.timeout}"
    if isinstance(check, PingCheck):
        return [f"ping{'6' if check.ipv6 else ''} {timing}"]
    if isinstance(check, NeighbourCheck):
        return [f"{'ndp' if check.ipv6 else 'arp'} {timing}"]
    if isinstance(check, TcpOpenCheck):
        return [f"tcpopen {check.port},{timing}"]
    if isinstance(check, AgentCheck):
        return [f"agent{'6' if check.ipv6 else ''} {check.port},{timing}"]
    if isinstance(check, ScriptCheck):
        return [f"script {quote(check.command)},{timing}"]
    if isinstance(check, HttpCheck):
        lines = [f"{'https' if check.tls else 'http'} {check.port},{quote(check.path)},{timing}"]
        if check.status != _DEFAULT_STATUS:
            lines.append(f"httpstatus {ranges(check.status)}")
        if check.body_regex is not None:
            lines.append(f"httpbody {quote(check.body_regex)}")
        if check.host is not None:
            lines.append(f"httphost {quote(check.host)}")
        return lines
    lines = [f"sendexpect {check.port},{quote(check.send)},{quote(check.expect)},{timing}"]
    if check.regex:
        lines.append("expectregex enable")
    return lines


def _checks(checks: Iterable[Check]) -> list[str]:
    return [line for check in checks for line in check_lines(check)]


def interface_body(iface: Interface) -> list[str]:
    body = []
    if iface.name is not None:
        body.append(f"name {word(iface.name)}")
    if iface.access is not None:
        body.append(f"access {word(iface.access)}")
    if iface.trackval is not None:
        body.append(f"trackval {iface.trackval}")
    return body


def network_body(net: Network) -> list[str]:
    body = [] if net.name is None else [f"name {word(net.name)}"]
    for attr in ("addr", "mask", "real", "virt", "addr6", "mask6", "real6", "virt6", "syncpeer"):
        value = getattr(net, attr)
        if value is not None:
            body.append(f"{attr} {value}")
    if net.interfaces:
        body.append(f"{'interface' if len(net.interfaces) == 1 else 'interfaces'} {ids(net.interfaces)}")
    return body


def vrrp_body(vrrp: Vrrp) -> list[str]:
    body = [f"vrid {vrrp.vrid}", f"priority {vrrp.priority}"]
    if vrrp.network is not None:
        body.append(f"network {vrrp.network}")
    if vrrp.tracking:
        body.append("tracking enable")
    if vrrp.advert_interval != 1.0:
        body.append(f"advert {decimal(vrrp.advert_interval)}")
    if vrrp.unicast_peers:
        body.append("peers " + ",".join(str(p) for p in vrrp.unicast_peers))
    if vrrp.auth_pass is not None:
        body.append(f"authpass {quote(vrrp.auth_pass)}")
    if vrrp.preempt_delay:
        body.append(f"preemptdelay {decimal(vrrp.preempt_delay)}")
    return body


def gateway_body(gateway: Gateway) -> list[str]:
    body = []
    if gateway.ipaddr is not None:
        body.append(f"ipaddr {gateway.ipaddr}")
    if gateway.ipaddr6 is not None:
        body.append(f"ipaddr6 {gateway.ipaddr6}")
    body.extend(_checks(gateway.checks))
    if gateway.trackval is not None:
        body.append(f"trackval {gateway.trackval}")
    return body


def server_body(server: Server) -> list[str]:
    body = [] if server.name is None else [f"name {word(server.name)}"]
    body.extend(_address(server.address))
    if server.single_port is not None:
        body.append(f"port {server.single_port}")
    elif server.ports:
        body.append(f"ports {ranges(server.ports)}")
    if server.protocol is not None:
        body.append(f"protocol {server.protocol}")
    if server.sessionid is not SessionKey.SRC:
        body.append(f"sessionid {server.sessionid}")
    if server.method is not Method.RR:
        body.append(f"method {server.method}")
    if server.targets:
        body.append(f"targets {ids(server.targets)}")
    if server.backup:
        body.append(f"backup {ids(server.backup)}")
    if server.timeout is not None:
        body.append(f"timeout {server.timeout}")
    return body


def target_body(target: Target) -> list[str]:
    body = [] if target.name is None else [f"name {word(target.name)}"]
    body.extend(_address(target.address))
    if target.port is not None:
        body.append(f"port {target.port}")
    if target.protocol is not None:
        body.append(f"protocol {target.protocol}")
    if target.weight != 1:
        body.append(f"weight {target.weight}")
    body.extend(_checks(target.checks))
    health = target.health
    if health.rise != _DEFAULT_HEALTH.rise:
        body.append(f"rise {health.rise}")
    if health.fall != _DEFAULT_HEALTH.fall:
        body.append(f"fall {health.fall}")
    if health.quiesce:
        body.append("quiesce enable")
    if target.sessionid is not None:
        body.append(f"sessionid {target.sessionid}")
    if target.dsr:
        body.append("dsr enable")
    return body


def write(config: Config) -> str:
    """Canonical text of `config` (ends with a newline)."""
    lines: list[str] = []
    if config.hostname is not None:
        lines.append(lead("hostname", word(config.hostname)))
    if config.remark is not None:
        lines.append(lead("remark", quote(config.remark)))
    if config.modules:
        lines.append(lead("modules", ",".join(word(m) for m in config.modules)))
    if config.settings:
        lines.extend(block("set", None, [f"{key} {word(value)}" for key, value in config.settings]))
    for iface in config.interfaces:
        lines.extend(block("interface", iface.id, interface_body(iface)))
    lines.extend(lifecycle("interface", config.interfaces))
    if config.vrrp is not None:
        lines.extend(block("vrrp", None, vrrp_body(config.vrrp)))
    for net in config.networks:
        lines.extend(block("network", net.id, network_body(net)))
    lines.extend(lifecycle("network", config.networks))
    if config.gateway is not None:
        lines.extend(block("gateway", None, gateway_body(config.gateway)))
    for server in config.servers:
        lines.extend(block("server", server.id, server_body(server)))
    lines.extend(lifecycle("server", config.servers))
    for target in config.targets:
        lines.extend(block("target", target.id, target_body(target)))
    lines.extend(lifecycle("target", config.targets))
    return "\n".join(lines) + "\n"
