"""Hypothesis strategies that build valid Configs (every rule of validate.py satisfied by construction).

Shapes covered: IPv4-only, IPv6-only and dual-stack networks; any-port, single-port and multi-port
servers with DSR and NAT targets; every check kind with its refinements; names, remarks and strings
with quotes, backslashes, control characters and non-ASCII text, which the writer must quote.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from hypothesis import strategies as st

from dsrlb.config.keywords import SET_KEY_RANGES, SET_KEYS
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

any_text = st.text(max_size=20)
IFNAME_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789._-"


def v4_in(net: IPv4Network, draw: st.DrawFn) -> IPv4Address:
    return net[draw(st.integers(1, net.num_addresses - 2))]


def v6_in(net: IPv6Network, draw: st.DrawFn) -> IPv6Address:
    return net[draw(st.integers(1, 2**16))]


@st.composite
def timing(draw: st.DrawFn) -> tuple[int, int]:
    interval = draw(st.integers(1, 100))
    return interval, draw(st.integers(interval, 86400))


@st.composite
def checks_for(draw: st.DrawFn, ipv6: bool) -> list[Check]:
    out: list[Check] = []
    for kind in draw(st.lists(st.sampled_from(range(7)), max_size=4)):
        interval, timeout = draw(timing())
        port = draw(st.integers(1, 65535))
        if kind == 0:
            out.append(PingCheck(interval, timeout, ipv6=ipv6))
        elif kind == 1:
            out.append(NeighbourCheck(interval, timeout, ipv6=ipv6))
        elif kind == 2:
            out.append(TcpOpenCheck(port, interval, timeout))
        elif kind == 3:
            out.append(AgentCheck(port, interval, timeout, ipv6=ipv6))
        elif kind == 4:
            command = draw(st.text(min_size=1, max_size=30).filter(lambda s: s.strip() != ""))
            out.append(ScriptCheck(command, interval, timeout))
        elif kind == 5:
            pairs = draw(
                st.lists(st.tuples(st.integers(100, 599), st.integers(0, 99)), min_size=1, max_size=3)
            )
            status = tuple(PortRange(a, min(599, a + width)) for a, width in pairs)
            body = draw(st.none() | any_text.map(re.escape))
            out.append(
                HttpCheck(
                    port,
                    "/" + draw(any_text),
                    interval,
                    timeout,
                    tls=draw(st.booleans()),
                    status=draw(st.just(HttpCheck(0, "/", 1, 1).status) | st.just(status)),
                    body_regex=body,
                    host=draw(st.none() | any_text),
                )
            )
        else:
            regex = draw(st.booleans())
            expect = draw(any_text)
            out.append(
                SendExpectCheck(
                    port,
                    draw(any_text),
                    re.escape(expect) if regex else expect,
                    interval,
                    timeout,
                    regex=regex,
                )
            )
    return out


@st.composite
def networks_and_interfaces(draw: st.DrawFn) -> tuple[list[Interface], list[Network]]:
    names = draw(
        st.lists(st.text(IFNAME_ALPHABET, min_size=1, max_size=15), min_size=1, max_size=3, unique=True)
    )
    interfaces = [
        Interface(
            i + 1,
            name=name,
            access=draw(st.none() | st.just("raw")),
            trackval=draw(st.none() | st.integers(1, 255)),
            registered=True,
            enabled=draw(st.booleans()),
        )
        for i, name in enumerate(names)
    ]
    networks = []
    for nid in range(1, draw(st.integers(0, 3)) + 1):
        family = draw(st.sampled_from(["4", "6", "46"]))
        fields: dict[str, object] = {}
        if "4" in family:
            length = draw(st.integers(8, 29))
            net4 = IPv4Network(f"10.{nid}.0.0/{length}", strict=False)
            fields.update(
                addr=net4.network_address,
                mask=net4.netmask,
                real=v4_in(net4, draw),
                virt=draw(st.none() | st.just(v4_in(net4, draw))),
            )
        if "6" in family:
            net6 = IPv6Network(f"2001:db8:{nid}::/48")
            fields.update(
                mask6=48,
                real6=v6_in(net6, draw),
                virt6=draw(st.none() | st.just(v6_in(net6, draw))),
                addr6=draw(st.none() | st.just(net6.network_address)),
            )
        chosen = draw(st.lists(st.sampled_from([i.id for i in interfaces]), min_size=1, unique=True))
        registered = draw(st.booleans())
        networks.append(
            Network(
                nid,
                name=draw(st.none() | any_text),
                interfaces=tuple(chosen),
                syncpeer=draw(
                    st.none() | st.just(IPv4Address("192.0.2.9")) | st.just(IPv6Address("2001:db8::9"))
                ),
                registered=registered,
                enabled=registered and draw(st.booleans()),
                **fields,  # type: ignore[arg-type]
            )
        )
    return interfaces, networks


def _lifecycle(draw: st.DrawFn, must_register: bool = False) -> tuple[bool, bool]:
    registered = must_register or draw(st.booleans())
    return registered, registered and draw(st.booleans())


@st.composite
def configs(draw: st.DrawFn) -> Config:
    interfaces, networks = draw(networks_and_interfaces())
    prefixes4 = [n.ipv4_network for n in networks if n.ipv4_network is not None]
    prefixes6 = [n.ipv6_network for n in networks if n.ipv6_network is not None]
    servers: list[Server] = []
    targets: list[Target] = []
    for sid in range(1, draw(st.integers(0, 3)) + 1):
        ipv6 = draw(st.booleans())
        address: IPAddress = (
            IPv6Address(f"2001:db8:ffff::{sid}") if ipv6 else IPv4Address(f"198.51.100.{sid}")
        )
        shape = draw(st.sampled_from(["any", "single", "multi"]))
        ports: tuple[PortRange, ...] = ()
        if shape == "single":
            ports = (PortRange(p := draw(st.integers(1, 65535)), p),)
        elif shape == "multi":
            starts = sorted(draw(st.lists(st.integers(1, 6000), min_size=2, max_size=4, unique=True)))
            ports = tuple(PortRange(s * 10, s * 10 + draw(st.integers(0, 9))) for s in starts)
        protocol = draw(st.none() | st.sampled_from(Protocol))
        method = draw(st.sampled_from(Method))
        registered, enabled = _lifecycle(draw)
        mine: list[int] = []
        for _ in range(draw(st.integers(0, 3))):
            tid = len(targets) + 1
            dsr = draw(st.booleans())
            prefixes = prefixes6 if ipv6 else prefixes4
            if dsr and prefixes:
                net = draw(st.sampled_from(prefixes))
                taddr: IPAddress = v6_in(net, draw) if ipv6 else v4_in(net, draw)  # type: ignore[arg-type]
            else:
                taddr = IPv6Address(f"2001:db8:eeee::{tid}") if ipv6 else IPv4Address(f"203.0.113.{tid}")
            port = protocol_t = None
            if shape == "single":
                port = draw(
                    st.none() | st.just(ports[0].first) | (st.nothing() if dsr else st.integers(1, 65535))
                )
                protocol_t = draw(st.none() | st.just(protocol)) if protocol else None
            checks = draw(checks_for(ipv6))
            if method in (Method.AGENT, Method.RNDAGENT):
                checks.append(AgentCheck(439, 2, 5, ipv6=ipv6))
            t_registered, t_enabled = _lifecycle(draw, must_register=registered)
            targets.append(
                Target(
                    tid,
                    address=taddr,
                    name=draw(st.none() | any_text),
                    port=port,
                    protocol=protocol_t,
                    dsr=dsr,
                    weight=draw(st.integers(0, 65535)),
                    sessionid=draw(st.none() | st.sampled_from(ReturnMatch)),
                    checks=tuple(checks),
                    health=HealthPolicy(
                        draw(st.integers(1, 10)), draw(st.integers(0, 10)), draw(st.booleans())
                    ),
                    registered=t_registered,
                    enabled=t_enabled,
                )
            )
            mine.append(tid)
        split = draw(st.integers(0, len(mine)))
        servers.append(
            Server(
                sid,
                address=address,
                name=draw(st.none() | any_text),
                ports=ports,
                protocol=protocol,
                method=method,
                targets=tuple(mine[:split]),
                backup=tuple(mine[split:]),
                sessionid=draw(st.sampled_from(SessionKey)),
                timeout=draw(st.none() | st.integers(1, 604800)),
                registered=registered,
                enabled=enabled,
            )
        )
    vrrp = None
    if draw(st.booleans()):
        vrrp = Vrrp(
            vrid=draw(st.integers(1, 255)),
            priority=draw(st.integers(1, 255)),
            network=draw(st.none() | st.sampled_from([n.id for n in networks] or [None])),
            tracking=draw(st.booleans()),
            advert_interval=draw(st.integers(1, 25500)) / 100,
            preempt_delay=draw(st.integers(0, 100000)) / 100,
            unicast_peers=tuple(
                draw(
                    st.lists(
                        st.sampled_from(
                            [IPv4Address("192.0.2.2"), IPv4Address("192.0.2.3"), IPv6Address("2001:db8::2")]
                        ),
                        unique=True,
                    )
                )
            ),
            auth_pass=draw(
                st.none()
                | st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=8)
            ),
        )
    gateway = None
    if draw(st.booleans()):
        v4 = draw(st.none() | st.just(IPv4Address("192.0.2.254")))
        v6 = (
            IPv6Address("2001:db8::fe")
            if v4 is None
            else draw(st.none() | st.just(IPv6Address("2001:db8::fe")))
        )
        gw_checks: list[Check] = []
        if v4 is not None and draw(st.booleans()):
            gw_checks.append(PingCheck(*draw(timing())))
        if v6 is not None and draw(st.booleans()):
            gw_checks.append(NeighbourCheck(*draw(timing()), ipv6=True))
        gateway = Gateway(v4, v6, tuple(gw_checks), draw(st.none() | st.integers(1, 255)))
    settings = {}
    for key in draw(st.lists(st.sampled_from(sorted(SET_KEYS)), unique=True, max_size=4)):
        kind = SET_KEYS[key]
        value = draw(
            st.sampled_from(["0", "1"])
            if kind == "flag"
            else st.integers(*SET_KEY_RANGES[key]).map(str)  # keys dsrlb acts on have a range
            if key in SET_KEY_RANGES
            else st.integers(0, 10**6).map(str)
            if kind == "count"
            else any_text
        )
        settings[key] = value
    return Config(
        hostname=draw(st.none() | any_text),
        remark=draw(st.none() | any_text),
        modules=tuple(draw(st.lists(any_text, max_size=3))),
        settings=tuple(sorted(settings.items())),
        interfaces=tuple(interfaces),
        networks=tuple(networks),
        vrrp=vrrp,
        gateway=gateway,
        servers=tuple(servers),
        targets=tuple(targets),
    )
