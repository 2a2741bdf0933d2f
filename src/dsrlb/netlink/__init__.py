"""dsrlb.netlink: a pyroute2 facade for links, addresses, routes, neighbours, link events and sysctls.

Everything works in the current network namespace or in a named one (`netns=` / `Netlink(netns)`),
which is how labs and tests drive their namespaces from one process.
"""

from dsrlb.netlink.errors import LinkNotFoundError, NamespaceNotFoundError, NetlinkFacadeError, NoRouteError
from dsrlb.netlink.events import LinkChange, LinkTracker, LinkWatcher
from dsrlb.netlink.handle import Netlink
from dsrlb.netlink.keepers import AddressKeeper
from dsrlb.netlink.namespace import entered_netns, list_netns, netns_exists, run_in_netns
from dsrlb.netlink.sysctl import Sysctl, SysctlError, SysctlKeeper, read_sysctl, sysctl_exists, write_sysctl
from dsrlb.netlink.types import (
    AddressInfo,
    LinkEvent,
    LinkInfo,
    Neighbour,
    NeighbourResolution,
    NeighbourState,
    OperState,
    Resolution,
    RouteEntry,
    RouteInfo,
    RouteType,
    RuleEntry,
)

__all__ = [
    "AddressInfo",
    "AddressKeeper",
    "LinkChange",
    "LinkEvent",
    "LinkInfo",
    "LinkNotFoundError",
    "LinkTracker",
    "LinkWatcher",
    "NamespaceNotFoundError",
    "Neighbour",
    "NeighbourResolution",
    "NeighbourState",
    "Netlink",
    "NetlinkFacadeError",
    "NoRouteError",
    "OperState",
    "Resolution",
    "RouteEntry",
    "RouteInfo",
    "RouteType",
    "RuleEntry",
    "Sysctl",
    "SysctlError",
    "SysctlKeeper",
    "entered_netns",
    "list_netns",
    "netns_exists",
    "read_sysctl",
    "run_in_netns",
    "sysctl_exists",
    "write_sysctl",
]
