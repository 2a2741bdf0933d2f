"""keepalived.conf -> dsrlb Config (the mapping; the syntax is in keepalived_parse.py).

Converted: the first `vrrp_instance` (VRRP), `virtual_server` blocks (servers), their `real_server`s
(targets) and checkers (TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK, PING_CHECK), `global_defs`
router_id and lvs_sync_daemon. Known keywords without an equivalent give a warning; unknown keywords,
bad numbers and bad addresses are errors, as keepalived's `-t` config test would report them.
docs/importers.md lists every keyword and what it becomes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address, IPv6Interface
from pathlib import Path

from dsrlb.config.importers.common import (
    IPVS_SCHEDULERS,
    ConversionWarning,
    ImportResult,
    covering_network,
    fail,
)
from dsrlb.config.importers.keepalived_checks import CheckContext, CheckDefaults, convert_checker
from dsrlb.config.importers.keepalived_parse import (
    ReadFile,
    Statement,
    address,
    expect_args,
    expect_block,
    integer,
    parse_keepalived,
    seconds,
    unknown,
)
from dsrlb.config.importers.keepalived_vrrp import VrrpInstance, read_vrrp_instance
from dsrlb.model import (
    Check,
    Config,
    HealthPolicy,
    Interface,
    IPAddress,
    Network,
    PortRange,
    Protocol,
    Server,
    SessionKey,
    Target,
    Vrrp,
)

# Top-level sections that have no equivalent: converted to a warning each.
_IGNORED_SECTIONS: dict[str, str] = {
    "vrrp_sync_group": "VRRP sync groups have no equivalent (one VRRP instance per balancer)",
    "vrrp_script": "tracking scripts have no equivalent (ignored)",
    "virtual_server_group": "virtual server groups are not converted (ignored)",
    "static_ipaddress": "static addresses are the system's business (ignored)",
    "static_routes": "static routes are the system's business (ignored)",
    "static_rules": "static rules are the system's business (ignored)",
    "track_file": "tracking files have no equivalent (ignored)",
    "vrrp_track_file": "tracking files have no equivalent (ignored)",
    "track_process": "tracking processes have no equivalent (ignored)",
    "vrrp_track_process": "tracking processes have no equivalent (ignored)",
    "linkbeat_use_polling": "has no equivalent (ignored)",
    "net_namespace": "network namespaces are chosen when starting dsrlb (ignored)",
    "instance": "instances are chosen with dsrlb -i (ignored)",
    "garp_group": "gratuitous ARP groups have no equivalent (ignored)",
    "bfd_instance": "BFD has no equivalent (ignored)",
    "use_pid_dir": "has no equivalent (ignored)",
}

_IGNORED_VS_KEYWORDS: dict[str, str] = {
    "ha_suspend": "has no equivalent (ignored)",
    "alpha": "targets start up in dsrlb; alpha is ignored",
    "omega": "has no equivalent (ignored)",
    "quorum": "quorum has no equivalent (ignored)",
    "quorum_up": "quorum has no equivalent (ignored)",
    "quorum_down": "quorum has no equivalent (ignored)",
    "hysteresis": "quorum has no equivalent (ignored)",
    "ops": "one-packet scheduling has no equivalent (ignored)",
    "one_packet_scheduler": "one-packet scheduling has no equivalent (ignored)",
    "hashed": "scheduler flags have no equivalent (ignored)",
    "flag-1": "scheduler flags have no equivalent (ignored)",
    "flag-2": "scheduler flags have no equivalent (ignored)",
    "flag-3": "scheduler flags have no equivalent (ignored)",
    "sh-port": "scheduler flags have no equivalent (ignored)",
    "sh-fallback": "scheduler flags have no equivalent (ignored)",
    "mh-port": "scheduler flags have no equivalent (ignored)",
    "mh-fallback": "scheduler flags have no equivalent (ignored)",
    "sorry_server_inhibit": "has no equivalent (ignored)",
    "sorry_server_lvs_method": "the sorry server uses the service's forwarding (ignored)",
    "smtp_alert": "mail alerts have no equivalent (ignored)",
    "ip_family": "the family follows the addresses (ignored)",
    "warmup": "has no equivalent (ignored)",
}

_IGNORED_RS_KEYWORDS: dict[str, str] = {
    "notify_up": "notification scripts have no equivalent (ignored)",
    "notify_down": "notification scripts have no equivalent (ignored)",
    "uthreshold": "connection thresholds have no equivalent (ignored)",
    "lthreshold": "connection thresholds have no equivalent (ignored)",
    "smtp_alert": "mail alerts have no equivalent (ignored)",
    "alpha": "targets start up in dsrlb; alpha is ignored",
    "warmup": "has no equivalent (ignored)",
}

_UNSUPPORTED_CHECKERS = ("UDP_CHECK", "DNS_CHECK", "SMTP_CHECK", "BFD_CHECK", "FILE_CHECK")
_DEFAULT_KEYS = ("retry", "nb_get_retry", "delay_before_retry", "connect_timeout", "delay_loop")


@dataclass
class _Walker:
    filename: str
    fwmarks: Mapping[int, tuple[PortRange, ...]]
    warnings: list[ConversionWarning] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    hostname: str | None = None
    vrrp: VrrpInstance | None = None
    sync_statement: Statement | None = None
    fwmark_statements: dict[int, Statement] = field(default_factory=dict)

    def warn(self, stmt: Statement, message: str, setting: str | None = None) -> None:
        self.warnings.append(ConversionWarning(stmt.file, stmt.line, setting or stmt.name, message))


# --- virtual servers ------------------------------------------------------------------------------


@dataclass
class _VirtualServer:
    stmt: Statement
    address: IPAddress | None
    ports: tuple[PortRange, ...]
    fwmark: bool
    delay_loop: float = 60.0
    method_name: str = "wlc"
    method_stmt: Statement | None = None
    kind: str = "NAT"
    persistence: int | None = None
    protocol: Protocol = Protocol.TCP
    sorry: tuple[IPAddress, int] | None = None
    virtualhost: str | None = None
    defaults: CheckDefaults = field(default_factory=CheckDefaults)


def _virtual_header(walker: _Walker, stmt: Statement) -> _VirtualServer | None:
    args = expect_args(stmt, 2, 2, "virtual_server ADDRESS PORT | fwmark MARK | group NAME")
    if args[0].text == "group":
        walker.warn(stmt, f"virtual server group {args[1].text} is not converted (ignored)", "virtual_server")
        return None
    if args[0].text == "fwmark":
        mark = integer(args[1], 1, 2**32 - 1)
        if mark in walker.fwmarks:
            ports = walker.fwmarks[mark]
        else:
            walker.warn(
                stmt,
                f"keepalived.conf does not list the ports iptables marks with {mark}; converted "
                f"to an any-port server (give them with --fwmark {mark}=PORTS)",
                "fwmark",
            )
            ports = ()
        # A firewall-mark service has no address of its own in keepalived; the VIPs are in vrrp.
        return _VirtualServer(stmt, None, ports, fwmark=True)
    port = integer(args[1], 0, 65535)
    return _VirtualServer(stmt, address(args[0]), (PortRange(port, port),) if port else (), fwmark=False)


def _virtual_server(walker: _Walker, stmt: Statement) -> None:
    vs = _virtual_header(walker, stmt)
    block = expect_block(stmt)
    if vs is None:
        return
    reals: list[Statement] = []
    for sub in block:
        name = sub.name
        if name == "delay_loop":
            vs.delay_loop = seconds(expect_args(sub, 1, 1, "delay_loop SECONDS")[0], 0.001)
        elif name in ("lb_algo", "lvs_sched"):
            tok = expect_args(sub, 1, 1, f"{name} rr|wrr|lc|wlc|...")[0]
            if tok.text not in IPVS_SCHEDULERS:
                raise fail(tok.position, "unknown scheduler", "one of " + ", ".join(IPVS_SCHEDULERS))
            vs.method_name, vs.method_stmt = tok.text, sub
        elif name in ("lb_kind", "lvs_method"):
            tok = expect_args(sub, 1, 1, f"{name} DR|NAT|TUN")[0]
            if tok.text.upper() not in ("DR", "NAT", "TUN"):
                raise fail(tok.position, "unknown forwarding method", "DR, NAT or TUN")
            vs.kind = tok.text.upper()
            if vs.kind == "TUN":
                walker.warn(
                    sub,
                    "IP-in-IP tunnelling has no equivalent; targets are converted as DSR "
                    "(they must be on-link)",
                )
        elif name == "persistence_timeout":
            args = expect_args(sub, 0, 1, "persistence_timeout [SECONDS]")
            vs.persistence = integer(args[0], 1, 2**31 - 1) if args else 360
        elif name == "persistence_granularity":
            tok = expect_args(sub, 1, 1, "persistence_granularity NETMASK")[0]
            if tok.text not in ("255.255.255.255", "128"):
                walker.warn(
                    sub,
                    f"persistence by network ({tok.text}) has no equivalent; sessions are kept "
                    "per client address",
                )
        elif name == "protocol":
            tok = expect_args(sub, 1, 1, "protocol TCP|UDP|SCTP")[0]
            if tok.text.upper() not in ("TCP", "UDP", "SCTP"):
                raise fail(tok.position, "unknown protocol", "TCP, UDP or SCTP")
            if tok.text.upper() == "SCTP":
                walker.warn(sub, "SCTP is not balanced by dsrlb; this virtual server is not converted")
                return
            vs.protocol = Protocol(tok.text.lower())
        elif name == "sorry_server":
            args = expect_args(sub, 1, 2, "sorry_server ADDRESS [PORT]")
            vs.sorry = (address(args[0]), integer(args[1], 0, 65535) if len(args) > 1 else 0)
        elif name == "virtualhost":
            vs.virtualhost = expect_args(sub, 1, 1, "virtualhost NAME")[0].text
        elif name == "real_server":
            reals.append(sub)
        elif name in _DEFAULT_KEYS[:-1] or name == "inhibit_on_failure":
            vs.defaults = vs.defaults.with_setting(sub)
        elif name in _IGNORED_VS_KEYWORDS:
            walker.warn(sub, _IGNORED_VS_KEYWORDS[name])
        else:
            known = [
                *_IGNORED_VS_KEYWORDS,
                "delay_loop",
                "lb_algo",
                "lvs_sched",
                "lb_kind",
                "lvs_method",
                "persistence_timeout",
                "persistence_granularity",
                "protocol",
                "sorry_server",
                "virtualhost",
                "real_server",
                *_DEFAULT_KEYS[:-1],
                "inhibit_on_failure",
            ]
            raise unknown(sub, "virtual_server", known)
    _emit_server(walker, vs, reals)


def _emit_server(walker: _Walker, vs: _VirtualServer, reals: list[Statement]) -> None:
    mapping = IPVS_SCHEDULERS[vs.method_name]
    if mapping.note and vs.method_stmt is not None:
        walker.warn(vs.method_stmt, f"{vs.method_name}: {mapping.note}")
    elif mapping.note:
        walker.warn(vs.stmt, f"no lb_algo: keepalived's default wlc: {mapping.note}", "lb_algo")
    dsr = vs.kind in ("DR", "TUN")
    if vs.persistence:
        sessionid, timeout = SessionKey.SRC, vs.persistence
    else:
        sessionid, timeout = SessionKey.SRC_PORT, None
    server_id = len(walker.servers) + 1
    first = len(walker.targets) + 1
    for real in reals:
        walker.targets.append(_real_server(walker, vs, real, len(walker.targets) + 1, dsr))
    primaries = [t for t in walker.targets[first - 1 :]]
    if mapping.method.value == "first":
        primaries.sort(key=lambda t: -t.weight)  # fo/ovf: the heaviest target first
    backups: tuple[int, ...] = ()
    if vs.sorry is not None:
        sorry_address, sorry_port = vs.sorry
        single = len(vs.ports) == 1 and vs.ports[0].first == vs.ports[0].last
        walker.targets.append(
            Target(
                id=len(walker.targets) + 1,
                address=sorry_address,
                name="sorry-server",
                port=(sorry_port or vs.ports[0].first) if single else None,
                protocol=vs.protocol if single else None,
                dsr=dsr,
                registered=True,
                enabled=True,
            )
        )
        backups = (len(walker.targets),)
    address_value: IPAddress | None = vs.address
    if vs.fwmark:
        address_value = None  # chosen by _fwmark_addresses once every server is known
        walker.fwmark_statements[server_id] = vs.stmt
    walker.servers.append(
        Server(
            id=server_id,
            address=address_value,
            ports=vs.ports,
            protocol=vs.protocol,
            method=mapping.method,
            targets=tuple(t.id for t in primaries),
            backup=backups,
            sessionid=sessionid,
            timeout=timeout,
            registered=True,
            enabled=True,
        )
    )


def _real_server(walker: _Walker, vs: _VirtualServer, stmt: Statement, target_id: int, dsr: bool) -> Target:
    args = expect_args(stmt, 1, 2, "real_server ADDRESS [PORT]")
    real_address = address(args[0])
    rport = integer(args[1], 0, 65535) if len(args) > 1 else 0
    weight = 1
    defaults = vs.defaults
    checks: list[Check] = []
    policies: list[HealthPolicy] = []
    checkers: list[Statement] = []
    for sub in stmt.block or []:
        name = sub.name
        if name == "weight":
            weight = integer(expect_args(sub, 1, 1, "weight N")[0], 0, 65535)
        elif name == "inhibit_on_failure" or name in _DEFAULT_KEYS or name == "virtualhost":
            defaults = defaults.with_setting(sub)
        elif name in ("TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "PING_CHECK"):
            checkers.append(sub)
        elif name in _UNSUPPORTED_CHECKERS:
            walker.warn(sub, f"{name} has no equivalent; the checker is not converted")
        elif name in _IGNORED_RS_KEYWORDS:
            walker.warn(sub, _IGNORED_RS_KEYWORDS[name])
        else:
            known = [
                "weight",
                "inhibit_on_failure",
                "TCP_CHECK",
                "HTTP_GET",
                "SSL_GET",
                "MISC_CHECK",
                "PING_CHECK",
                "virtualhost",
                *_DEFAULT_KEYS,
                *_UNSUPPORTED_CHECKERS,
                *_IGNORED_RS_KEYWORDS,
            ]
            raise unknown(sub, "real_server", known)
    check_port = rport or (vs.ports[0].first if vs.ports else 0)
    context = CheckContext(real_address, check_port, vs.delay_loop, vs.virtualhost, walker.warn)
    for checker in checkers:
        converted, policy = convert_checker(checker, defaults, context)
        checks.extend(converted)
        if converted:
            policies.append(policy)
    single = len(vs.ports) == 1 and vs.ports[0].first == vs.ports[0].last
    port: int | None = None
    if single:
        port = rport or vs.ports[0].first
        if dsr and port != vs.ports[0].first:
            walker.warn(
                stmt,
                f"direct routing cannot change ports: the target gets port {vs.ports[0].first}, not {port}",
                "real_server",
            )
            port = vs.ports[0].first
    # One policy per target: the slowest to declare it down wins (all checks must pass anyway).
    health = HealthPolicy(
        rise=1, fall=max((p.fall for p in policies), default=0), quiesce=defaults.inhibit_on_failure
    )
    return Target(
        id=target_id,
        address=real_address,
        port=port,
        protocol=vs.protocol if single else None,
        dsr=dsr,
        weight=weight,
        checks=tuple(checks),
        health=health,
        registered=True,
        enabled=True,
    )


# --- top level ------------------------------------------------------------------------------------


def _global_defs(walker: _Walker, stmt: Statement) -> None:
    for sub in expect_block(stmt):
        if sub.name == "router_id":
            walker.hostname = expect_args(sub, 1, 1, "router_id NAME")[0].text
        elif sub.name == "lvs_sync_daemon":
            expect_args(sub, 2, 12, "lvs_sync_daemon INTERFACE VRRP_INSTANCE [id N] ...")
            walker.sync_statement = sub
        else:
            walker.warn(sub, "global setting without an equivalent (ignored)")


def _sync_peer(walker: _Walker) -> IPAddress | None:
    stmt = walker.sync_statement
    if stmt is None:
        return None
    peers = walker.vrrp.unicast_peers if walker.vrrp else ()
    if len(peers) == 1:
        return peers[0]
    walker.warn(
        stmt,
        "dsrlb synchronises sessions with one peer address; give the VRRP instance exactly one "
        "unicast_peer (not converted)",
    )
    return None


def _interfaces(walker: _Walker) -> list[str]:
    names = walker.vrrp.interface_names() if walker.vrrp else []
    if not names:
        names.append("eth0")
        walker.warnings.append(
            ConversionWarning(
                walker.filename, 1, "interface", "no vrrp_instance names an interface; using eth0"
            )
        )
    return names


def _network(walker: _Walker, iid: int, name: str, main: bool) -> Network | None:
    """The network on interface `name`: prefixes from its virtual addresses; on the instance's own
    interface also the node address (unicast_src_ip) and the DSR targets."""
    instance = walker.vrrp
    vips = instance.addresses_on(name) if instance else []
    real = instance.own_address if instance and main else None
    members = (
        [t.address for t in walker.targets if isinstance(t.address, IPv4Address) and t.dsr] if main else []
    )
    prefixes = [a.interface.network.prefixlen for a in vips if a.interface.version == 4]
    wide = [a.interface.ip for a in vips if a.interface.version == 4 and a.interface.network.prefixlen < 32]
    anchor: IPv4Address | None = real if isinstance(real, IPv4Address) else None
    anchor = anchor or next((a for a in wide if isinstance(a, IPv4Address)), None)
    if anchor is None and main:
        anchor = members[0] if members else None
    network = Network(id=iid, name=name, interfaces=(iid,), registered=True, enabled=True)
    servers = {s.address for s in walker.servers}
    if anchor is not None:
        net = covering_network(anchor, members, [p for p in prefixes if p < 32])
        virt = next(
            (
                a.interface.ip
                for a in vips
                if isinstance(a.interface.ip, IPv4Address)
                and a.interface.ip in net
                and a.interface.ip not in servers
            ),
            None,
        )
        network = replace(
            network,
            addr=net.network_address,
            mask=net.netmask,
            real=real if isinstance(real, IPv4Address) else None,
            virt=virt if isinstance(virt, IPv4Address) else None,
        )
    six = next(
        (
            a.interface
            for a in vips
            if isinstance(a.interface, IPv6Interface) and a.interface.network.prefixlen < 128
        ),
        None,
    )
    if six is not None:
        network = replace(
            network,
            addr6=six.network.network_address,
            mask6=six.network.prefixlen,
            real6=real if isinstance(real, IPv6Address) else None,
        )
    if network.ipv4_network is None and network.ipv6_network is None:
        return None
    return network


def _networks(walker: _Walker, names: list[str]) -> tuple[Network, ...]:
    instance = walker.vrrp
    networks: list[Network] = []
    for i, name in enumerate(names):
        network = _network(walker, i + 1, name, main=i == 0)
        if network is not None:
            networks.append(network)
    if networks:
        networks[0] = replace(networks[0], syncpeer=_sync_peer(walker))
    where_file = instance.stmt.file if instance else walker.filename
    where_line = instance.stmt.line if instance else 1
    if instance is not None and instance.own_address is None:
        walker.warnings.append(
            ConversionWarning(
                where_file,
                where_line,
                "unicast_src_ip",
                "keepalived.conf does not give this node's own address; add `real` to network 1 by hand",
            )
        )
    known = [n for net in networks for n in (net.ipv4_network, net.ipv6_network) if n is not None]
    for target in walker.targets:
        if not any(target.address in n for n in known):
            why = "DSR targets must be on-link" if target.dsr else "NAT targets need the balancer as gateway"
            walker.warnings.append(
                ConversionWarning(
                    where_file,
                    where_line,
                    "real_server",
                    f"target {target.address} is on no network of the balancer ({why})",
                )
            )
    return tuple(networks)


def _fwmark_addresses(walker: _Walker) -> None:
    """keepalived's fwmark services have no address (iptables decides what is marked): give each the
    first virtual address no other server uses."""
    used = {s.address for s in walker.servers if s.address is not None}
    candidates = [a.interface.ip for a in walker.vrrp.addresses] if walker.vrrp else []
    for index, server in enumerate(walker.servers):
        if server.address is not None:
            continue
        free = next((a for a in candidates if a not in used), None)
        stmt = walker.fwmark_statements[server.id]
        if free is None:
            walker.warn(
                stmt,
                "a firewall-mark service has no address and no unused virtual address is left; "
                "add ipaddr to the server by hand",
                "fwmark",
            )
            continue
        used.add(free)
        walker.servers[index] = replace(server, address=free)
        walker.warn(
            stmt, f"a firewall-mark service has no address; using the unused virtual address {free}", "fwmark"
        )


def import_keepalived(
    path_or_text: str | Path,
    filename: str | None = None,
    *,
    fwmarks: Mapping[int, tuple[PortRange, ...]] | None = None,
    read_file: ReadFile | None = None,
    expand_glob: Callable[[str], list[str]] | None = None,
) -> ImportResult:
    """Convert keepalived.conf: a Path is read from disk, a str is the text itself (`filename` names it
    and anchors relative includes). Raises `ConfigErrors` on bad input, OSError if a Path cannot be read."""
    if isinstance(path_or_text, Path):
        filename = filename or str(path_or_text)
        text = path_or_text.read_text(encoding="utf-8", errors="replace")
    else:
        text = path_or_text
        filename = filename or "keepalived.conf"
    kwargs = {"read_file": read_file} if read_file else {}
    statements, notes = parse_keepalived(text, filename, expand_glob=expand_glob, **kwargs)
    walker = _Walker(filename, fwmarks or {})
    for note in notes:
        walker.warnings.append(
            ConversionWarning(
                note.file, note.line, "include", f"{note.pattern} matches no file (nothing included)"
            )
        )
    virtual_servers: list[Statement] = []
    for stmt in statements:
        if stmt.name == "global_defs":
            _global_defs(walker, stmt)
        elif stmt.name == "vrrp_instance":
            if walker.vrrp is None:
                walker.vrrp = read_vrrp_instance(stmt, walker.warn)
            else:
                walker.warn(stmt, "dsrlb runs one VRRP instance; only the first is converted (ignored)")
        elif stmt.name == "virtual_server":
            virtual_servers.append(stmt)
        elif stmt.name in _IGNORED_SECTIONS:
            walker.warn(stmt, _IGNORED_SECTIONS[stmt.name])
        else:
            raise unknown(
                stmt,
                "keepalived.conf",
                ["global_defs", "vrrp_instance", "virtual_server", "include", *_IGNORED_SECTIONS],
            )
    for stmt in virtual_servers:
        _virtual_server(walker, stmt)
    _fwmark_addresses(walker)
    names = _interfaces(walker)
    trackvals = walker.vrrp.trackvals if walker.vrrp else {}
    interfaces = tuple(
        Interface(id=i + 1, name=name, trackval=trackvals.get(name), registered=True, enabled=True)
        for i, name in enumerate(names)
    )
    networks = _networks(walker, names)
    vrrp_network = networks[0].id if networks else None
    vrrp: Vrrp | None = walker.vrrp.to_model(network=vrrp_network) if walker.vrrp else None
    settings = (("vrrppreempt", "0"),) if walker.vrrp and walker.vrrp.nopreempt else ()
    config = Config(
        hostname=walker.hostname,
        settings=settings,
        interfaces=interfaces,
        networks=networks,
        vrrp=vrrp,
        servers=tuple(walker.servers),
        targets=tuple(walker.targets),
    )
    order = {name: i for i, name in enumerate(dict.fromkeys(w.file for w in walker.warnings))}
    warnings = sorted(walker.warnings, key=lambda w: (order[w.file], w.line))
    return ImportResult(config, tuple(warnings))
