"""Piranha lvs.cf -> dsrlb Config (the mapping; the grammar is in lvs_parse.py).

The file describes an LVS router pair (pulse heartbeat), virtual services (ipvsadm) and nanny health
monitors. The conversion is done as seen from the primary router; `node="backup"` gives the backup's
configuration (its own address as `real`, the lower VRRP priority). docs/importers.md lists every
setting and what it becomes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network
from typing import Literal

from dsrlb.config.errors import END_OF_FILE, Position
from dsrlb.config.importers.common import (
    IPVS_SCHEDULERS,
    ConversionWarning,
    ImportResult,
    base_device,
    covering_network,
    decode_c_escapes,
    derive_vrid,
    fail,
    master_down_interval,
    netmask_prefix,
)
from dsrlb.config.importers.lvs_parse import LvsFile, LvsServer, LvsVirtual, Value, int_value, parse_lvs
from dsrlb.model import (
    Check,
    Config,
    HealthPolicy,
    Interface,
    Network,
    PingCheck,
    PortRange,
    Protocol,
    ScriptCheck,
    SendExpectCheck,
    Server,
    SessionKey,
    Target,
    TcpOpenCheck,
    Vrrp,
)

Node = Literal["primary", "backup"]

PRIMARY_PRIORITY = 200
BACKUP_PRIORITY = 100
# nanny's built-in monitor for port 80 when no send/expect/send_program is configured.
NANNY_HTTP_SEND = "GET / HTTP/1.0\r\n\r\n"
NANNY_HTTP_EXPECT = "HTTP"

# Global settings that change nothing in dsrlb: (key, why).
_NO_EQUIVALENT_GLOBALS: dict[str, str] = {
    "serial_no": "the configuration serial number has no equivalent (ignored)",
    "primary_private": "private heartbeat addresses have no equivalent; VRRP runs on the public network",
    "backup_private": "private heartbeat addresses have no equivalent; VRRP runs on the public network",
    "primary_shared": "shared-storage settings have no equivalent (ignored)",
    "backup_shared": "shared-storage settings have no equivalent (ignored)",
    "reservation_conflict_action": "shared-storage settings have no equivalent (ignored)",
    "active_cmd": "commands run on a role change have no equivalent (ignored)",
    "inactive_cmd": "commands run on a role change have no equivalent (ignored)",
    "hard_shutdown": "has no equivalent (ignored)",
    "ipvsadm": "dsrlb programs its own data path; the ipvsadm path is ignored",
    "rsh_command": "dsrlb does not copy files between routers (ignored)",
    "sync": "dsrlb does not copy files between routers (ignored)",
    "heartbeat_port": "VRRP is IP protocol 112 and has no port (ignored)",
    "syncd_iface": "session sync runs to the peer's address; the interface is ignored",
    "syncd_id": "session sync has no sync id (ignored)",
    "tcpfin_timeout": "dsrlb tracks no TCP state; only the idle timeout is converted (ignored)",
}


@dataclass
class _Builder:
    """Accumulates objects and warnings while walking the parsed file."""

    parsed: LvsFile
    node: Node
    fwmarks: Mapping[int, tuple[PortRange, ...]]
    warnings: list[ConversionWarning] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)  # base devices, interface id = index + 1
    vip_prefixes: list[int] = field(default_factory=list)

    def warn(self, line: int, setting: str, message: str) -> None:
        self.warnings.append(ConversionWarning(self.parsed.filename, line, setting, message))

    def glob(self, key: str, default: Value | None = None) -> Value | None:
        return self.parsed.values.get(key, default)

    def interface_id(self, device: str) -> int:
        name = base_device(device)
        if name not in self.devices:
            self.devices.append(name)
        return self.devices.index(name) + 1

    @property
    def direct(self) -> bool:
        return self.glob("network", "nat") in ("direct", "tunnel")


def _require_address(builder: _Builder, key: str) -> IPv4Address:
    value = builder.glob(key)
    if not isinstance(value, IPv4Address):
        raise fail(
            Position(builder.parsed.filename, builder.parsed.last_line, 1, END_OF_FILE),
            f"{key} = ADDRESS is missing",
            f"{key} = ADDRESS (needed for --node {builder.node})",
        )
    return value


def _checks(builder: _Builder, virtual: LvsVirtual, rport: int) -> tuple[tuple[Check, ...], HealthPolicy]:
    """nanny: probe every `timeout` s (each probe may itself take up to `timeout` s); one failure takes
    the server out; it comes back after reentry // timeout consecutive successes (nanny's countThresh)."""
    values, lines = virtual.values, virtual.lines
    timeout = int_value(values, "timeout", 10)
    reentry = int_value(values, "reentry", 180)
    window = 2 * timeout
    policy = HealthPolicy(rise=max(1, reentry // timeout), fall=1, quiesce=values.get("quiesce_server") == 1)
    regex = values.get("use_regex") == 1
    send = values.get("send")
    expect = values.get("expect")
    program = values.get("send_program")
    if values.get("protocol") == "udp":
        if "send" in values or "expect" in values or "send_program" in values:
            builder.warn(
                lines.get("send", lines.get("expect", lines.get("send_program", virtual.line))),
                "send/expect",
                "UDP send/expect probes have no equivalent; using a ping check",
            )
        return (PingCheck(timeout, window),), policy
    if isinstance(program, str):
        # Like lvs.c's strip_quotes + nanny's external_check: %h is the real server, %p its port.
        command = " ".join(
            "$ipaddr$" if word == "%h" else "$port$" if word == "%p" else word for word in program.split(" ")
        )
        if "expect" in values:
            builder.warn(
                lines["expect"],
                "expect",
                "nanny compares send_program's output with expect; dsrlb script checks succeed on "
                "exit status 0 (expect ignored)",
            )
        return (ScriptCheck(command, timeout, window),), policy
    if send is None and expect is None:
        if int_value(values, "port", 80) != 80:
            return (TcpOpenCheck(rport, timeout, window),), policy
        send, expect = NANNY_HTTP_SEND, NANNY_HTTP_EXPECT
    send_text = decode_c_escapes(str(send)) if send is not None else ""
    expect_text = decode_c_escapes(str(expect)) if expect is not None else ""
    if expect_text == "*" and not regex:
        builder.warn(
            lines.get("expect", virtual.line),
            "expect",
            "nanny's wildcard '*' (any answer) becomes the regular expression '.'",
        )
        expect_text, regex = ".", True
    return (SendExpectCheck(rport, send_text, expect_text, timeout, window, regex=regex),), policy


def _virtual_warnings(builder: _Builder, virtual: LvsVirtual) -> None:
    values, lines = virtual.values, virtual.lines
    pmask = values.get("pmask")
    if pmask is not None and str(pmask) not in ("255.255.255.255", "0.0.0.0"):
        builder.warn(
            lines["pmask"],
            "pmask",
            f"persistence by network ({pmask}) has no equivalent; sessions are kept per client address",
        )
    monitor = values.get("load_monitor")
    if monitor is not None and monitor != "none":
        builder.warn(
            lines["load_monitor"],
            "load_monitor",
            f"load monitoring with {monitor} has no equivalent (use dsrlb agent and method agent)",
        )
    client_monitor = values.get("client_monitor")
    if client_monitor is not None and client_monitor != "/usr/sbin/nanny":
        builder.warn(
            lines["client_monitor"],
            "client_monitor",
            "dsrlb runs its own health checks; the monitor program is ignored",
        )
    for key in ("master", "dirs", "start_cmd", "stop_cmd"):
        if key in values:
            builder.warn(lines[key], key, "only used by failover services (ignored)")


def _server_ports(builder: _Builder, virtual: LvsVirtual, port: int) -> tuple[PortRange, ...]:
    fwmark = int_value(virtual.values, "fwmark", 0)
    if not fwmark:
        return (PortRange(port, port),)
    if fwmark in builder.fwmarks:
        return builder.fwmarks[fwmark]
    builder.warn(
        virtual.lines["fwmark"],
        "fwmark",
        f"lvs.cf does not list the ports iptables marks with {fwmark}; converted to an any-port "
        f"server (give the ports with --fwmark {fwmark}=PORTS, e.g. --fwmark {fwmark}=80,443)",
    )
    return ()


def _target(
    builder: _Builder,
    virtual: LvsVirtual,
    server: Server,
    real: LvsServer,
    checks: tuple[Check, ...],
    policy: HealthPolicy,
) -> Target:
    address = real.values.get("address")
    if not isinstance(address, IPv4Address):
        raise fail(
            Position(builder.parsed.filename, real.line, 1, "server"),
            f"server {real.name} has no address",
            "address = ADDRESS in the server block",
        )
    port: int | None = None
    protocol = None
    rport = int_value(real.values, "port", real.port)
    vport = server.single_port
    if vport is not None:
        protocol = server.protocol
        port = rport
        if builder.direct and rport != vport:
            # ipvsadm -g cannot rewrite ports: LVS-DR forwards to the virtual port whatever is written.
            builder.warn(
                real.lines.get("port", real.line),
                "port",
                f"direct routing cannot change ports: server {real.name} gets port {vport}, not {rport}",
            )
            port = vport
    return Target(
        id=len(builder.targets) + 1,
        address=address,
        name=real.name,
        port=port,
        protocol=protocol,
        dsr=builder.direct,
        weight=int_value(real.values, "weight", 1),
        checks=checks,
        health=policy,
        registered=True,
        enabled=real.values.get("active", 0) == 1,
    )


def _virtual(builder: _Builder, virtual: LvsVirtual) -> None:
    values, lines = virtual.values, virtual.lines
    vip = values.get("address")
    if not isinstance(vip, tuple):
        raise fail(
            Position(builder.parsed.filename, virtual.line, 1, "virtual"),
            f"virtual {virtual.name} has no address",
            "address = ADDRESS DEVICE in the virtual block",
        )
    address, device = vip
    assert isinstance(address, IPv4Address)
    builder.interface_id(str(device))
    mask = values.get("vip_nmask")
    if isinstance(mask, IPv4Address) and (prefix := netmask_prefix(mask)) is not None and prefix < 32:
        builder.vip_prefixes.append(prefix)
    port = int_value(values, "port", 80)
    protocol = Protocol.UDP if values.get("protocol") == "udp" else Protocol.TCP
    scheduler = str(values.get("scheduler", "wlc"))
    mapping = IPVS_SCHEDULERS[scheduler]
    if mapping.note:
        builder.warn(lines.get("scheduler", virtual.line), "scheduler", f"{scheduler}: {mapping.note}")
    persistent = int_value(values, "persistent", 0)
    timeout: int | None = persistent
    if persistent:
        sessionid = SessionKey.SRC
    else:
        # Without persistence IPVS schedules every connection on its own and ages it out after the
        # tcp/udp timeout (ipvsadm --set), 0 meaning the kernel default.
        sessionid = SessionKey.SRC_PORT
        key = "udp_timeout" if protocol is Protocol.UDP else "tcp_timeout"
        timeout = int_value(builder.parsed.values, key, 0) or None
    _virtual_warnings(builder, virtual)
    server = Server(
        id=len(builder.servers) + 1,
        address=address,
        name=virtual.name,
        ports=_server_ports(builder, virtual, port),
        protocol=protocol,
        method=mapping.method,
        sessionid=sessionid,
        timeout=timeout,
        registered=True,
        enabled=values.get("active", 0) == 1,
    )
    first_target = len(builder.targets) + 1
    for real in virtual.servers:
        rport = int_value(real.values, "port", real.port)
        checks, policy = _checks(builder, virtual, rport)
        builder.targets.append(_target(builder, virtual, server, real, checks, policy))
    primaries = tuple(range(first_target, len(builder.targets) + 1))
    backups: tuple[int, ...] = ()
    sorry = values.get("sorry_server")
    if isinstance(sorry, IPv4Address):
        # IPVS adds the sorry server when every real server is out: a dsrlb backup target.
        sorry_port = port if server.single_port is not None else None
        builder.targets.append(
            Target(
                id=len(builder.targets) + 1,
                address=sorry,
                name=f"{virtual.name}-sorry",
                port=sorry_port,
                protocol=protocol if sorry_port else None,
                dsr=builder.direct,
                registered=True,
                enabled=True,
            )
        )
        backups = (len(builder.targets),)
    builder.servers.append(_replace_targets(server, primaries, backups))


def _replace_targets(server: Server, targets: tuple[int, ...], backup: tuple[int, ...]) -> Server:
    return replace(server, targets=targets, backup=backup)


def _global_warnings(builder: _Builder) -> None:
    lines = builder.parsed.lines
    for key, why in _NO_EQUIVALENT_GLOBALS.items():
        if key in builder.parsed.values:
            builder.warn(lines[key], key, why)
    if builder.glob("debug_level", "NONE") != "NONE":
        builder.warn(lines["debug_level"], "debug_level", "use dsrlb's logging options instead (ignored)")
    if builder.glob("service", "lvs") == "fos":
        builder.warn(
            lines["service"],
            "service",
            "failover services (service = fos) have no equivalent; the virtual servers are converted",
        )
    if builder.glob("network") == "tunnel":
        builder.warn(
            lines["network"],
            "network",
            "IP-in-IP tunnelling has no equivalent; targets are converted as DSR (they must be on-link)",
        )
    for virtual in builder.parsed.virtuals:
        if virtual.failover:
            builder.warn(
                virtual.line, "failover", f"failover service {virtual.name} has no equivalent (ignored)"
            )


def _vrrp(builder: _Builder, own: IPv4Address) -> tuple[Vrrp | None, IPv4Address | None]:
    """Heartbeat between the routers -> VRRP; returns it and the peer's address."""
    lines = builder.parsed.lines
    backup = builder.glob("backup")
    if builder.glob("backup_active", 0) != 1 or not isinstance(backup, IPv4Address):
        return None, None
    primary = _require_address(builder, "primary")
    peer = backup if builder.node == "primary" else primary
    keepalive = int_value(builder.parsed.values, "keepalive", 2)
    deadtime = int_value(builder.parsed.values, "deadtime", 5)
    vips = [s.address for s in builder.servers]
    vrid = derive_vrid([primary, backup, *vips])
    builder.warn(
        lines.get("backup", 1),
        "backup",
        f"lvs.cf has no VRRP router id; using vrid {vrid} derived from the router and virtual "
        "addresses (check that no other VRRP router on the link uses it)",
    )
    down = master_down_interval(keepalive, BACKUP_PRIORITY)
    if abs(down - deadtime) > 1e-9:
        builder.warn(
            lines.get("deadtime", lines.get("keepalive", lines.get("backup", 1))),
            "deadtime",
            f"deadtime {deadtime} s: the VRRP backup declares the master dead after "
            f"3 x {keepalive} s + skew = {down:.2f} s (RFC 3768 section 6.1)",
        )
    if builder.glob("heartbeat", 1) == 0:
        builder.warn(
            lines["heartbeat"], "heartbeat", "heartbeat = 0: VRRP between the routers is used anyway"
        )
    priority = PRIMARY_PRIORITY if builder.node == "primary" else BACKUP_PRIORITY
    tracking = int_value(builder.parsed.values, "monitor_links", 0) != 0
    vrrp = Vrrp(
        vrid=vrid,
        priority=priority,
        network=1,
        tracking=tracking,
        advert_interval=float(keepalive),
        unicast_peers=(peer,),
    )
    return vrrp, peer


def _networks(builder: _Builder, own: IPv4Address, peer: IPv4Address | None) -> tuple[Network, ...]:
    lines = builder.parsed.lines
    if not builder.devices:
        builder.interface_id("eth0")
        builder.warn(lines.get("primary", 1), "primary", "no virtual server names a device; using eth0")
    members = [peer] if peer else []
    if builder.direct:
        members += [t.address for t in builder.targets if isinstance(t.address, IPv4Address)]
    public = covering_network(own, members, builder.vip_prefixes)
    syncpeer = peer if builder.glob("syncdaemon", 0) == 1 else None
    networks = [
        Network(
            id=1,
            name="public",
            addr=public.network_address,
            mask=public.netmask,
            real=own,
            syncpeer=syncpeer,
            interfaces=(1,),
            registered=True,
            enabled=True,
        )
    ]
    router = builder.glob("nat_router")
    if not builder.direct and isinstance(router, tuple):
        router_address, router_device = router
        assert isinstance(router_address, IPv4Address)
        mask = builder.glob("nat_nmask", IPv4Address("255.255.255.0"))
        private = IPv4Network(f"{router_address}/{mask}", strict=False)
        builder.warn(
            lines["nat_router"],
            "nat_router",
            f"lvs.cf does not give this router's own address on {private}; the network is "
            f"converted with virt {router_address} and no real address (add `real` by hand)",
        )
        networks.append(
            Network(
                id=2,
                name="nat",
                addr=private.network_address,
                mask=private.netmask,
                virt=router_address,
                interfaces=(builder.interface_id(str(router_device)),),
                registered=True,
                enabled=True,
            )
        )
    elif not builder.direct:
        builder.warn(
            lines.get("network", 1),
            "network",
            "network = nat without nat_router: the real servers need this balancer as their gateway",
        )
    known = [n.ipv4_network for n in networks]
    for target in builder.targets:
        if not any(target.address in net for net in known if net is not None):
            builder.warn(
                lines.get("network", 1),
                "network",
                f"real server {target.name} ({target.address}) is not on a network of this router",
            )
    return tuple(networks)


def import_lvs(
    text: str,
    filename: str,
    *,
    fwmarks: Mapping[int, tuple[PortRange, ...]] | None = None,
    node: Node = "primary",
) -> ImportResult:
    """Convert Piranha lvs.cf text. `fwmarks` gives the ports behind each firewall mark (`--fwmark`);
    `node` selects whose configuration to produce. Raises `ConfigErrors` on bad input."""
    builder = _Builder(parse_lvs(text, filename), node, fwmarks or {})
    _global_warnings(builder)
    own = _require_address(builder, "primary" if node == "primary" else "backup")
    for virtual in builder.parsed.virtuals:
        if not virtual.failover:
            _virtual(builder, virtual)
    vrrp, peer = _vrrp(builder, own)
    if node == "backup" and vrrp is None:
        raise fail(
            Position(filename, builder.parsed.lines.get("backup", 1), 1, "backup"),
            "--node backup needs a backup router",
            "backup_active = 1 and backup = ADDRESS",
        )
    networks = _networks(builder, own, peer)
    tracking = vrrp is not None and vrrp.tracking
    # monitor_links: pulse fails over when a link of a virtual service goes down -> VRRP tracking with a
    # decrement that takes the primary below the backup.
    trackval = PRIMARY_PRIORITY - BACKUP_PRIORITY + 1 if tracking else None
    interfaces = tuple(
        Interface(id=i + 1, name=name, trackval=trackval, registered=True, enabled=True)
        for i, name in enumerate(builder.devices)
    )
    config = Config(
        interfaces=interfaces,
        networks=networks,
        vrrp=vrrp,
        servers=tuple(builder.servers),
        targets=tuple(builder.targets),
    )
    warnings = sorted(builder.warnings, key=lambda w: w.line)
    return ImportResult(config, tuple(warnings))
