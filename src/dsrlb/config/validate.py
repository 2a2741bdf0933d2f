"""Semantic checks of a Config: every problem, each at the position of the statement that caused it.

`validate(config, where)` returns a list of ConfigError sorted by position (empty when the config is
good). It takes the SourceMap the parser filled; importers that build a Config directly pass
`SourceMap("<their file>")` and get errors positioned at the top of that file.

The rules are those of BalanceNG where it states them (DSR cannot rewrite ports; targets of a
multi-port server carry no port or protocol) and the limits of the protocols involved elsewhere
(ports 1-65535, VRRP VRID and priority 1-255, RFC 5798 §5.2.3/§5.2.4).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Address, IPv6Network

from dsrlb.config import keywords as kw
from dsrlb.config.errors import ConfigError, SourceMap
from dsrlb.model import (
    AgentCheck,
    Check,
    Config,
    HttpCheck,
    IPAddress,
    NeighbourCheck,
    Network,
    PingCheck,
    PortRange,
    ScriptCheck,
    SendExpectCheck,
    Server,
    Target,
    TcpOpenCheck,
)

_AGENT_METHODS = ("agent", "rndagent")


class _Checker:
    def __init__(self, config: Config, where: SourceMap) -> None:
        self.config = config
        self.where = where
        self.errors: list[ConfigError] = []

    def error(self, kind: str, oid: int, fieldname: str, message: str, expected: str | None = None) -> None:
        self.errors.append(ConfigError.at(self.where.find(kind, oid, fieldname), message, expected))

    def in_range(
        self, kind: str, oid: int, fieldname: str, what: str, value: int, bounds: tuple[int, int]
    ) -> bool:
        low, high = bounds
        if low <= value <= high:
            return True
        self.error(kind, oid, fieldname, f"{what} {value} is out of range", f"{low}-{high}")
        return False

    def settings(self) -> None:
        # The parser has made count values whole numbers; a Config built by an importer or by hand has
        # not, so check digits (ASCII only, and few: int() takes other Unicode digits and caps the
        # length it parses). Errors sit at the value ("KEY.value"), falling back to the key, then to
        # the top of the file. The session timeouts are defaults of the server `timeout`: same range.
        for key, bounds in kw.SET_KEY_RANGES.items():
            value = self.config.setting(key)
            if value is None:
                continue
            where = f"{key}.value"
            if not re.fullmatch(rf"[0-9]{{1,{kw.MAX_NUMBER_DIGITS}}}", value):
                self.error("set", 0, where, f"{key} {value!r} is not a number", "a whole number")
                continue
            self.in_range("set", 0, where, key, int(value), bounds)

    def lifecycle(self, kind: str, oid: int, registered: bool, enabled: bool) -> None:
        if enabled and not registered:
            self.error(
                kind,
                oid,
                "enable",
                f"{kind} {oid} is enabled but not registered",
                f"`register {kind} {oid}` as well",
            )

    def id_list(
        self,
        kind: str,
        oid: int,
        attr: str,
        ids: Iterable[int],
        defined: dict[int, bool],
        owner_registered: bool,
        what: str,
    ) -> None:
        """Each id in an object's list exists, appears once, and is registered when the owner is."""
        seen: set[int] = set()
        for ref in ids:
            fieldname = f"{attr}[{ref}]"
            if ref in seen:
                self.error(
                    kind, oid, fieldname + ".again", f"{what} {ref} is listed twice", f"each {what} once"
                )
                continue
            seen.add(ref)
            if ref not in defined:
                self.error(
                    kind, oid, fieldname, f"{what} {ref} is not defined", f"the id of a defined {what}"
                )
            elif owner_registered and not defined[ref]:
                self.error(
                    kind,
                    oid,
                    fieldname,
                    f"{what} {ref} is used by registered {kind} {oid} but is not registered",
                    f"`register {what} {ref}`",
                )

    # --- objects ---------------------------------------------------------------------------------

    def interfaces(self) -> None:
        names: dict[str, int] = {}
        for iface in self.config.interfaces:
            iid = iface.id
            self.lifecycle("interface", iid, iface.registered, iface.enabled)
            if iface.name is None:
                self.error("interface", iid, "", f"interface {iid} has no name", "a line `name eth0`")
            elif not _good_ifname(iface.name):
                self.error(
                    "interface",
                    iid,
                    "name",
                    "bad interface name",
                    f"1-{kw.IFNAMSIZ} characters without '/', ':' or blanks",
                )
            elif iface.name in names:
                self.error(
                    "interface",
                    iid,
                    "name",
                    f"interface name {iface.name} is also used by interface {names[iface.name]}",
                    "a different interface name",
                )
            else:
                names[iface.name] = iid
            if iface.access not in (None, "raw"):
                self.error("interface", iid, "access", f"unknown access mode {iface.access}", "raw")
            if iface.trackval is not None:
                self.in_range("interface", iid, "trackval", "trackval", iface.trackval, kw.TRACKVAL_RANGE)

    def networks(self) -> None:
        interfaces = {i.id: i.registered for i in self.config.interfaces}
        for net in self.config.networks:
            nid = net.id
            self.lifecycle("network", nid, net.registered, net.enabled)
            if not net.interfaces:
                self.error("network", nid, "", f"network {nid} has no interface", "a line `interface N`")
            self.id_list(
                "network", nid, "interfaces", net.interfaces, interfaces, net.registered, "interface"
            )
            has_v4 = self._network_v4(net)
            has_v6 = self._network_v6(net)
            if not has_v4 and not has_v6:
                self.error(
                    "network",
                    nid,
                    "",
                    f"network {nid} has no addresses",
                    "addr, mask and real, or mask6 and real6",
                )

    def _network_v4(self, net: Network) -> bool:
        nid = net.id
        given = [name for name in ("addr", "mask", "real", "virt") if getattr(net, name) is not None]
        if not given:
            return False
        for name in ("addr", "mask"):
            if getattr(net, name) is None:
                self.error(
                    "network",
                    nid,
                    given[0],
                    f"network {nid} has {given[0]} but no {name}",
                    f"a line `{name} ...`",
                )
                return True
        assert net.addr is not None and net.mask is not None
        try:
            prefix = IPv4Network(f"{net.addr}/{net.mask}", strict=False)
        except ValueError:
            self.error(
                "network", nid, "mask", "mask is not a netmask", "contiguous ones such as 255.255.255.0"
            )
            return True
        self._inside(net, ("real", "virt"), prefix)
        return True

    def _inside(self, net: Network, names: tuple[str, ...], prefix: IPv4Network | IPv6Network) -> None:
        """Each of the network's addresses `names` that is set must lie inside `prefix`."""
        for name in names:
            address = getattr(net, name)
            if address is not None and address not in prefix:
                self.error("network", net.id, name, f"{name} {address} is outside network {prefix}",
                           f"an address inside {prefix}")

    def _network_v6(self, net: Network) -> bool:
        nid = net.id
        given = [name for name in ("addr6", "real6", "virt6", "mask6") if getattr(net, name) is not None]
        if not given:
            return False
        if net.mask6 is None:
            self.error(
                "network", nid, given[0], f"network {nid} has {given[0]} but no mask6", "a line `mask6 64`"
            )
            return True
        if not self.in_range("network", nid, "mask6", "mask6", net.mask6, (0, 128)):
            return True
        prefix = net.ipv6_network
        if prefix is None:
            self.error(
                "network",
                nid,
                "mask6",
                "mask6 needs addr6 or real6 to define the prefix",
                "a line `real6 ...` or `addr6 ...`",
            )
            return True
        self._inside(net, ("real6", "virt6"), prefix)
        return True

    def vrrp(self) -> None:
        vrrp = self.config.vrrp
        if vrrp is None:
            return
        if vrrp.vrid == 0 and not self.where.has("vrrp", 0, "vrid"):
            self.error("vrrp", 0, "", "vrrp has no vrid", "a line `vrid N` (1-255)")
        else:
            self.in_range("vrrp", 0, "vrid", "vrid", vrrp.vrid, kw.VRID_RANGE)
        self.in_range("vrrp", 0, "priority", "priority", vrrp.priority, kw.PRIORITY_RANGE)
        if vrrp.network is not None and self.config.network(vrrp.network) is None:
            self.error(
                "vrrp", 0, "network", f"network {vrrp.network} is not defined", "the id of a defined network"
            )
        # RFC 5798 §5.2.7: the advertisement interval is carried in centiseconds.
        centis = vrrp.advert_interval * 100
        if not 1 <= centis <= 25500 or abs(centis - round(centis)) > 1e-6:
            self.error(
                "vrrp",
                0,
                "advert_interval",
                f"advert {vrrp.advert_interval} is out of range",
                "0.01-255 seconds in steps of 0.01",
            )
        if not 0 <= vrrp.preempt_delay <= kw.PREEMPT_DELAY_MAX:
            self.error("vrrp", 0, "preempt_delay", f"preemptdelay {vrrp.preempt_delay} is out of range",
                       f"0-{kw.PREEMPT_DELAY_MAX} seconds")
        if vrrp.auth_pass is not None and not (
            0 < len(vrrp.auth_pass) <= kw.AUTHPASS_MAX
            and vrrp.auth_pass.isascii()
            and vrrp.auth_pass.isprintable()
        ):
            self.error(
                "vrrp", 0, "auth_pass", "bad authpass", f"1-{kw.AUTHPASS_MAX} printable ASCII characters"
            )
        seen: set[IPAddress] = set()
        for index, peer in enumerate(vrrp.unicast_peers):
            if peer in seen:
                self.error(
                    "vrrp", 0, f"unicast_peers[{index}]", f"peer {peer} is listed twice", "each peer once"
                )
            seen.add(peer)

    def gateway(self) -> None:
        gateway = self.config.gateway
        if gateway is None:
            return
        if gateway.ipaddr is None and gateway.ipaddr6 is None:
            self.error("gateway", 0, "", "gateway has no address", "a line `ipaddr ...` or `ipaddr6 ...`")
        if gateway.trackval is not None:
            self.in_range("gateway", 0, "trackval", "trackval", gateway.trackval, kw.TRACKVAL_RANGE)
        for index, check in enumerate(gateway.checks):
            self.check("gateway", 0, index, check)
            needs_v6 = getattr(check, "ipv6", False)
            if needs_v6 and gateway.ipaddr6 is None:
                self.error(
                    "gateway",
                    0,
                    f"checks.{index}",
                    "this check needs the gateway's ipaddr6",
                    "a line `ipaddr6 ...` or an IPv4 check",
                )
            elif not needs_v6 and gateway.ipaddr is None:
                self.error(
                    "gateway",
                    0,
                    f"checks.{index}",
                    "this check needs the gateway's ipaddr",
                    "a line `ipaddr ...` or an IPv6 check (ping6, ndp)",
                )

    def check(self, kind: str, oid: int, index: int, check: Check) -> None:
        key = f"checks.{index}"
        interval, timeout = check.interval, check.timeout
        if (
            self.in_range(kind, oid, key, "check interval", interval, (1, kw.MAX_INTERVAL))
            and self.in_range(kind, oid, key, "check timeout", timeout, (1, kw.MAX_INTERVAL))
            and timeout < interval
        ):
            self.error(
                kind,
                oid,
                key,
                f"check timeout {timeout} is shorter than its interval {interval}",
                "a timeout >= the interval",
            )
        if isinstance(check, TcpOpenCheck | AgentCheck | HttpCheck | SendExpectCheck):
            self.in_range(kind, oid, key, "check port", check.port, kw.PORT_RANGE)
        if isinstance(check, ScriptCheck) and not check.command.strip():
            self.error(kind, oid, key, "empty script command", "a command line")
        if isinstance(check, HttpCheck):
            if not check.path.startswith("/"):
                self.error(kind, oid, key, "http path must start with /", "a path such as /index.html")
            for code in check.status:
                if not (kw.HTTP_STATUS_RANGE[0] <= code.first and code.last <= kw.HTTP_STATUS_RANGE[1]):
                    self.error(kind, oid, f"{key}.status", f"HTTP status {code} is out of range", "100-599")
            self._regex(kind, oid, f"{key}.body_regex", check.body_regex)
        if isinstance(check, SendExpectCheck) and check.regex:
            self._regex(kind, oid, f"{key}.regex", check.expect)

    def _regex(self, kind: str, oid: int, fieldname: str, pattern: str | None) -> None:
        if pattern is None:
            return
        try:
            re.compile(pattern)
        except (re.error, RecursionError, OverflowError) as exc:
            self.error(kind, oid, fieldname, f"bad regular expression: {exc}", "a Python regular expression")

    def targets(self) -> None:
        families = {4: self._prefixes(4), 6: self._prefixes(6)}
        for target in self.config.targets:
            tid = target.id
            self.lifecycle("target", tid, target.registered, target.enabled)
            if target.address is None:
                self.error(
                    "target", tid, "", f"target {tid} has no address", "a line `ipaddr ...` or `ipaddr6 ...`"
                )
            if target.port is not None:
                self.in_range("target", tid, "port", "port", target.port, kw.PORT_RANGE)
            self.in_range("target", tid, "weight", "weight", target.weight, kw.WEIGHT_RANGE)
            self.in_range("target", tid, "rise", "rise", target.health.rise, (1, 1000))
            self.in_range("target", tid, "fall", "fall", target.health.fall, (0, 1000))
            for index, check in enumerate(target.checks):
                self.check("target", tid, index, check)
                self._check_family(target, index, check)
            address = target.address
            if target.dsr and address is not None:
                prefixes = families[address.version]
                if prefixes and not any(address in prefix for prefix in prefixes):
                    self.error(
                        "target",
                        tid,
                        "address",
                        f"DSR target {tid} ({address}) is not on any network",
                        "an address inside a network: DSR needs its targets on-link",
                    )

    def _prefixes(self, version: int) -> list[IPv4Network | IPv6Network]:
        nets: list[IPv4Network | IPv6Network] = []
        for net in self.config.networks:
            try:
                prefix = net.ipv4_network if version == 4 else net.ipv6_network
            except ValueError:
                continue  # a bad mask, reported on the network
            if prefix is not None:
                nets.append(prefix)
        return nets

    def _check_family(self, target: Target, index: int, check: Check) -> None:
        if target.address is None or not isinstance(check, PingCheck | NeighbourCheck | AgentCheck):
            return
        is_v6 = isinstance(target.address, IPv6Address)
        if check.ipv6 != is_v6:
            names = {
                PingCheck: ("ping", "ping6"),
                NeighbourCheck: ("arp", "ndp"),
                AgentCheck: ("agent", "agent6"),
            }
            v4_name, v6_name = names[type(check)]
            self.error(
                "target",
                target.id,
                f"checks.{index}",
                f"{v6_name if check.ipv6 else v4_name} does not fit the target's IPv{target.address.version} "
                "address",
                f"{v6_name if is_v6 else v4_name}",
            )

    def servers(self) -> None:
        targets = {t.id: t.registered for t in self.config.targets}
        for server in self.config.servers:
            sid = server.id
            self.lifecycle("server", sid, server.registered, server.enabled)
            if server.address is None:
                self.error(
                    "server", sid, "", f"server {sid} has no address", "a line `ipaddr ...` or `ipaddr6 ...`"
                )
            for index, ports in enumerate(server.ports):
                for port in (ports.first, ports.last):
                    if not kw.PORT_RANGE[0] <= port <= kw.PORT_RANGE[1]:
                        self.error(
                            "server", sid, f"ports[{index}]", f"port {port} is out of range", "1-65535"
                        )
                        break
            for index, ports in enumerate(server.ports[1:], start=1):
                if any(_overlap(ports, other) for other in server.ports[:index]):
                    self.error(
                        "server", sid, f"ports[{index}]", f"port {ports} is listed twice", "each port once"
                    )
            if server.timeout is not None:
                self.in_range("server", sid, "timeout", "timeout", server.timeout, kw.SESSION_TIMEOUT_RANGE)
            self.id_list("server", sid, "targets", server.targets, targets, server.registered, "target")
            self.id_list("server", sid, "backup", server.backup, targets, server.registered, "target")
            for ref in server.backup:
                if ref in server.targets:
                    self.error(
                        "server",
                        sid,
                        f"backup[{ref}]",
                        f"target {ref} is both primary and backup",
                        "backup targets that are not in `targets`",
                    )
            used = [
                t
                for ref in dict.fromkeys((*server.targets, *server.backup))
                if (t := self.config.target(ref))
            ]
            for target in used:
                self._server_target(server, target)
            # Load-driven methods have nothing to go on for a target without an agent.
            blind = [str(t.id) for t in used if not any(isinstance(c, AgentCheck) for c in t.checks)]
            if server.method.value in _AGENT_METHODS and blind:
                noun = "target" if len(blind) == 1 else "targets"
                self.error(
                    "server",
                    sid,
                    "method",
                    f"method {server.method} needs an agent check on {noun} {','.join(blind)}",
                    "an `agent P,I,T` or `agent6 P,I,T` line on every target",
                )
        self._same_service()

    def _server_target(self, server: Server, target: Target) -> None:
        sid, tid = server.id, target.id
        if (
            server.address is not None
            and target.address is not None
            and (server.address.version != target.address.version)
        ):
            self.error(
                "target",
                tid,
                "address",
                f"target {tid} is IPv{target.address.version} but server {sid} "
                f"is IPv{server.address.version}",
                "the same address family as the server",
            )
        if server.multi_port or not server.ports:
            shape = "multi-port" if server.ports else "any-port"
            for attr in ("port", "protocol"):
                if getattr(target, attr) is not None:
                    self.error(
                        "target",
                        tid,
                        attr,
                        f"target {tid} sets a {attr} but server {sid} is {shape}",
                        f"no {attr} on targets of {shape} servers",
                    )
        elif target.dsr and target.port is not None and target.port != server.single_port:
            self.error(
                "target",
                tid,
                "port",
                f"DSR cannot rewrite ports: target {tid} port {target.port} differs "
                f"from server {sid} port {server.single_port}",
                f"port {server.single_port} or no port",
            )
        if target.protocol is not None and server.protocol is not None and target.protocol != server.protocol:
            self.error(
                "target",
                tid,
                "protocol",
                f"target {tid} protocol {target.protocol} differs from server "
                f"{sid} protocol {server.protocol}",
                f"protocol {server.protocol}",
            )

    def _same_service(self) -> None:
        servers = [s for s in self.config.servers if s.address is not None]
        for index, server in enumerate(servers):
            for other in servers[:index]:
                if other.address != server.address:
                    continue
                if server.protocol and other.protocol and server.protocol != other.protocol:
                    continue
                if (
                    not server.ports
                    or not other.ports
                    or any(_overlap(a, b) for a in server.ports for b in other.ports)
                ):
                    self.error(
                        "server",
                        server.id,
                        "address",
                        f"server {server.id} overlaps server {other.id} "
                        f"(same address {server.address}, overlapping ports)",
                        "a distinct address or port",
                    )
                    break


def _overlap(a: PortRange, b: PortRange) -> bool:
    return a.first <= b.last and b.first <= a.last


def _good_ifname(name: str) -> bool:
    return (
        0 < len(name.encode()) <= kw.IFNAMSIZ and not any(ch in name for ch in "/: \t") and name.isprintable()
    )


def validate(config: Config, where: SourceMap | None = None) -> list[ConfigError]:
    """All semantic errors of `config`, sorted by position."""
    checker = _Checker(config, where if where is not None else SourceMap("<config>"))
    checker.settings()
    checker.interfaces()
    checker.networks()
    checker.vrrp()
    checker.gateway()
    checker.targets()
    checker.servers()
    return sorted(checker.errors, key=lambda e: (e.file, e.line, e.column))
