"""What the facade returns: frozen dataclasses, decoded from rtnetlink messages by pure functions.

The decoders take anything with `get_attr(name)` and `[field]` (pyroute2's message objects), so
they hold no handle and do no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
    ip_interface,
    ip_network,
)
from typing import Any, Protocol

IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface
IPNetwork = IPv4Network | IPv6Network

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
RTM_NEWLINK = 16
RTM_DELLINK = 17


class RtnlMessage(Protocol):
    def get_attr(self, name: str) -> Any: ...

    def __getitem__(self, key: str) -> Any: ...


class OperState(enum.StrEnum):
    """IF_OPER_* as RFC 2863 names them (the kernel's IFLA_OPERSTATE)."""

    UNKNOWN = "UNKNOWN"
    NOTPRESENT = "NOTPRESENT"
    DOWN = "DOWN"
    LOWERLAYERDOWN = "LOWERLAYERDOWN"
    TESTING = "TESTING"
    DORMANT = "DORMANT"
    UP = "UP"


def _oper_state(raw: object) -> OperState:
    try:
        return OperState(str(raw))
    except ValueError:
        return OperState.UNKNOWN


@dataclass(frozen=True)
class LinkInfo:
    index: int
    name: str
    mac: str | None  # "aa:bb:cc:dd:ee:ff"; None for links without one
    mtu: int
    oper_state: OperState
    admin_up: bool  # IFF_UP: set up by an administrator
    carrier: bool  # IFF_LOWER_UP
    kind: str | None  # "veth", "bridge", ... (IFLA_INFO_KIND)
    master: int | None  # ifindex of the bridge/bond it is enslaved to

    @property
    def up(self) -> bool:
        """Usable for traffic: administratively up and operationally up.

        Links without operational state reporting (lo, some virtual ones) say UNKNOWN; they count as
        up when administratively up and with carrier, as `ip link` users expect.
        """
        if not self.admin_up:
            return False
        if self.oper_state is OperState.UP:
            return True
        return self.oper_state is OperState.UNKNOWN and self.carrier

    @property
    def mac_bytes(self) -> bytes | None:
        return bytes.fromhex(self.mac.replace(":", "")) if self.mac else None


def link_from_msg(msg: RtnlMessage) -> LinkInfo:
    flags = int(msg["flags"])
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo is not None else None
    return LinkInfo(
        index=int(msg["index"]),
        name=str(msg.get_attr("IFLA_IFNAME")),
        mac=msg.get_attr("IFLA_ADDRESS"),
        mtu=int(msg.get_attr("IFLA_MTU") or 0),
        oper_state=_oper_state(msg.get_attr("IFLA_OPERSTATE")),
        admin_up=bool(flags & IFF_UP),
        carrier=bool(flags & IFF_LOWER_UP),
        kind=kind,
        master=msg.get_attr("IFLA_MASTER"),
    )


@dataclass(frozen=True)
class LinkEvent:
    """A link appeared, changed or went away (RTM_NEWLINK / RTM_DELLINK)."""

    index: int
    name: str
    up: bool
    oper_state: OperState
    removed: bool = False


def link_event_from_msg(msg_type: int, msg: RtnlMessage) -> LinkEvent | None:
    if msg_type not in (RTM_NEWLINK, RTM_DELLINK):
        return None
    link = link_from_msg(msg)
    removed = msg_type == RTM_DELLINK
    return LinkEvent(link.index, link.name, link.up and not removed, link.oper_state, removed)


@dataclass(frozen=True)
class AddressInfo:
    ifindex: int
    interface: IPInterface  # address with its prefix length
    label: str | None

    @property
    def address(self) -> IPAddress:
        return self.interface.ip


def address_from_msg(msg: RtnlMessage) -> AddressInfo:
    # IFA_LOCAL is the local address on point-to-point links; IFA_ADDRESS otherwise (and for IPv6).
    raw = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    return AddressInfo(
        ifindex=int(msg["index"]),
        interface=ip_interface(f"{raw}/{int(msg['prefixlen'])}"),
        label=msg.get_attr("IFA_LABEL"),
    )


@dataclass(frozen=True)
class RouteInfo:
    """The kernel's answer to `ip route get ADDRESS`: where a packet to it leaves, and via whom."""

    destination: IPAddress
    ifindex: int
    gateway: IPAddress | None  # None: on-link, the destination itself is the next hop
    source: IPAddress | None  # preferred source address
    table: int

    @property
    def next_hop(self) -> IPAddress:
        return self.gateway if self.gateway is not None else self.destination


def route_from_msg(destination: IPAddress, msg: RtnlMessage) -> RouteInfo:
    gateway = msg.get_attr("RTA_GATEWAY")
    via = msg.get_attr("RTA_VIA")  # IPv4 route with an IPv6 next hop (RFC 5549)
    if gateway is None and via is not None:
        gateway = via.get("addr") if isinstance(via, dict) else None
    source = msg.get_attr("RTA_PREFSRC")
    return RouteInfo(
        destination=destination,
        ifindex=int(msg.get_attr("RTA_OIF") or 0),
        gateway=ip_address(gateway) if gateway else None,
        source=ip_address(source) if source else None,
        table=int(msg.get_attr("RTA_TABLE") or msg["table"]),
    )


class RouteType(enum.IntEnum):
    """RTN_* route types (rtm_type): what a matching packet meets."""

    UNSPEC = 0
    UNICAST = 1
    LOCAL = 2
    BROADCAST = 3
    ANYCAST = 4
    MULTICAST = 5
    BLACKHOLE = 6
    UNREACHABLE = 7
    PROHIBIT = 8
    THROW = 9
    NAT = 10
    XRESOLVE = 11


RT_TABLE_MAIN = 254
RT_TABLE_LOCAL = 255  # addresses of this host, broadcast and anycast routes


@dataclass(frozen=True)
class RouteEntry:
    """One route of a routing table, as `ip route show table N` lists it.

    A multipath route (RTA_MULTIPATH) is given by its first next hop; `paths` counts them all.
    """

    prefix: IPNetwork
    ifindex: int  # 0 for routes without a device (blackhole, unreachable...)
    gateway: IPAddress | None  # None: the prefix is on-link (a connected route)
    metric: int
    table: int
    protocol: int  # RTPROT_*: 2 kernel, 3 boot, 4 static...
    kind: RouteType
    paths: int = 1

    @property
    def connected(self) -> bool:
        """Packets to the prefix go straight to the destination's own neighbour entry."""
        return self.kind is RouteType.UNICAST and self.gateway is None and self.ifindex != 0

    @property
    def is_default(self) -> bool:
        return self.prefix.prefixlen == 0


def _route_type(raw: Any) -> RouteType:
    try:
        return RouteType(int(raw))
    except (TypeError, ValueError):
        return RouteType.UNSPEC


def _gateway_of(msg: RtnlMessage) -> IPAddress | None:
    gateway = msg.get_attr("RTA_GATEWAY")
    via = msg.get_attr("RTA_VIA")  # IPv4 route with an IPv6 next hop (RFC 5549)
    if gateway is None and isinstance(via, dict):
        gateway = via.get("addr")
    return ip_address(gateway) if gateway else None


def route_entry_from_msg(msg: RtnlMessage) -> RouteEntry:
    family = int(msg["family"])
    any_address = "0.0.0.0" if family == 2 else "::"
    prefix = ip_network(f"{msg.get_attr('RTA_DST') or any_address}/{int(msg['dst_len'])}", strict=False)
    ifindex = int(msg.get_attr("RTA_OIF") or 0)
    gateway = _gateway_of(msg)
    paths = 1
    multipath = msg.get_attr("RTA_MULTIPATH")
    if multipath:
        first = multipath[0]
        ifindex = int(first["oif"]) if ifindex == 0 else ifindex
        gateway = gateway or _gateway_of(first)
        paths = len(multipath)
    return RouteEntry(
        prefix=prefix,
        ifindex=ifindex,
        gateway=gateway,
        metric=int(msg.get_attr("RTA_PRIORITY") or 0),
        table=int(msg.get_attr("RTA_TABLE") or msg["table"]),
        protocol=int(msg["proto"]),
        kind=_route_type(msg["type"]),
        paths=paths,
    )


FR_ACT_TO_TBL = 1  # a rule's action: look the packet up in its table
FIB_RULE_INVERT = 0x2
# Attributes a rule carries that select nothing (a default rule has exactly these).
_PLAIN_RULE_ATTRS = frozenset({"FRA_TABLE", "FRA_PRIORITY", "FRA_PROTOCOL", "FRA_SUPPRESS_PREFIXLEN"})
_NO_SUPPRESSION = (0xFFFFFFFF, -1)


@dataclass(frozen=True)
class RuleEntry:
    """One policy routing rule (`ip rule`).

    `plain`: the rule matches every packet and looks up its table, as the three default rules (local,
    main, default) do; a rule with any selector (from, to, fwmark, iif, oif, uidrange, l3mdev...), a
    suppression or another action is not plain.
    """

    family: int
    priority: int
    table: int
    action: int
    plain: bool


def rule_from_msg(msg: RtnlMessage) -> RuleEntry:
    attrs = {item[0]: item[1] for item in msg["attrs"]}
    action = int(msg["action"])
    plain = (
        action == FR_ACT_TO_TBL
        and int(msg["dst_len"]) == 0 and int(msg["src_len"]) == 0 and int(msg["tos"]) == 0
        and not int(msg["flags"]) & FIB_RULE_INVERT
        and set(attrs) <= _PLAIN_RULE_ATTRS
        and attrs.get("FRA_SUPPRESS_PREFIXLEN", -1) in _NO_SUPPRESSION
    )
    return RuleEntry(
        family=int(msg["family"]),
        priority=int(attrs.get("FRA_PRIORITY") or 0),
        table=int(attrs.get("FRA_TABLE") or msg["table"]),
        action=action,
        plain=plain,
    )


class NeighbourState(enum.IntFlag):
    """NUD_* states of the kernel neighbour table."""

    NONE = 0x00
    INCOMPLETE = 0x01
    REACHABLE = 0x02
    STALE = 0x04
    DELAY = 0x08
    PROBE = 0x10
    FAILED = 0x20
    NOARP = 0x40
    PERMANENT = 0x80


# States in which the entry's MAC address may be used to send (the kernel itself sends to STALE,
# DELAY and PROBE entries while it re-verifies them, RFC 4861 §7.3.2).
USABLE_STATES = (
    NeighbourState.REACHABLE | NeighbourState.STALE | NeighbourState.DELAY | NeighbourState.PROBE
    | NeighbourState.PERMANENT | NeighbourState.NOARP
)


@dataclass(frozen=True)
class Neighbour:
    address: IPAddress
    ifindex: int
    mac: str | None
    state: NeighbourState

    @property
    def usable(self) -> bool:
        return self.mac is not None and bool(int(self.state) & _USABLE_BITS)


_USABLE_BITS = int(USABLE_STATES)
# NUD_* values made once: building an IntFlag per entry dominates decoding a large neighbour dump.
_NUD_STATES = tuple(NeighbourState(value) for value in range(0x100))


def neighbour_from_msg(msg: RtnlMessage) -> Neighbour:
    return Neighbour(
        address=ip_address(msg.get_attr("NDA_DST")),
        ifindex=int(msg["ifindex"]),
        mac=msg.get_attr("NDA_LLADDR"),
        state=_NUD_STATES[int(msg["state"]) & 0xFF],
    )


class Resolution(enum.StrEnum):
    RESOLVED = "resolved"
    INCOMPLETE = "incomplete"  # asked, no answer within the bound
    FAILED = "failed"  # the kernel gave up (NUD_FAILED)


@dataclass(frozen=True)
class NeighbourResolution:
    """Outcome of resolving the next hop towards `address` (the gateway when it is routed)."""

    address: IPAddress
    next_hop: IPAddress
    ifindex: int
    outcome: Resolution
    mac: str | None = None

    @property
    def resolved(self) -> bool:
        return self.outcome is Resolution.RESOLVED

    def describe(self) -> str:
        if self.resolved:
            return f"{self.address} via {self.next_hop}: {self.mac} (ifindex {self.ifindex})"
        return f"{self.address} via {self.next_hop}: neighbour {self.outcome.value} (ifindex {self.ifindex})"
