"""The configuration model: frozen dataclasses, nothing else.

Everything dsrlb does starts from a `Config`. The BalanceNG-dialect parser, the importers (lvs.cf,
keepalived.conf) and the canonical writer all produce or consume exactly these types, and
`parse(write(c)) == c` holds for every valid `Config`, so every field below has a native spelling
(given in each field's comment; keywords marked *ext* are dsrlb extensions to the BalanceNG dialect,
used mainly by the importers).

Identity: objects are numbered (`server 1`, `target 2`); ids are unique per kind. Collections are
tuples sorted by id so that equality does not depend on the order of statements in a file.

Lifecycle (BalanceNG): an object that is defined but not `register`ed does not exist for the
engine; registered but not `enable`d means configured but out of service.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address


class Protocol(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"


class Method(enum.StrEnum):
    """Target selection methods (DESIGN §3)."""

    RR = "rr"  # round robin over operational targets (default)
    WRR = "wrr"  # weighted round robin
    RANDOM = "random"
    WRANDOM = "wrandom"  # random, weighted
    HASH = "hash"  # hash of the client address
    MAGLEV = "maglev"  # consistent hash of the session key (weighted Maglev ring)
    FIRST = "first"  # first operational target in list order
    SESSION = "session"  # fewest active sessions
    BANDWIDTH = "bandwidth"  # least recent bytes/s
    AGENT = "agent"  # lowest agent-reported load
    RNDAGENT = "rndagent"  # random, weighted by spare capacity reported by the agent


class SessionKey(enum.StrEnum):
    """`sessionid` on a server: what identifies a client's session."""

    SRC = "src"  # client address (default): all connections of a client stick to one target
    SRC_PORT = "src+port"  # client address and port: one session per connection


class ReturnMatch(enum.StrEnum):
    """`sessionid` on a target: how return traffic from the target is matched to a session (NAT)."""

    DST = "dst"
    DST_PORT = "dst+port"


@dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive range of ports; a single port has first == last."""

    first: int
    last: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


# --- health checks -------------------------------------------------------------------------------
# Every check probes every `interval` seconds; the target goes down when it has had no successful
# probe for `timeout` seconds and comes up on the next success (BalanceNG semantics). The target's
# HealthPolicy (rise/fall/quiesce) refines this for imported keepalived and Piranha settings.


@dataclass(frozen=True)
class PingCheck:
    """`ping I,T` / `ping6 I,T`: ICMP echo to the target (or gateway) address."""

    interval: int
    timeout: int
    ipv6: bool = False


@dataclass(frozen=True)
class NeighbourCheck:
    """*ext* `arp I,T` / `ndp I,T`: the target answers ARP (IPv4) or neighbour solicitation (IPv6)."""

    interval: int
    timeout: int
    ipv6: bool = False


@dataclass(frozen=True)
class TcpOpenCheck:
    """`tcpopen P,I,T`: a TCP connection to port P can be opened."""

    port: int
    interval: int
    timeout: int


@dataclass(frozen=True)
class AgentCheck:
    """`agent P,I,T` / `agent6 P,I,T`: the load agent on UDP port P answers; its load feeds methods."""

    port: int
    interval: int
    timeout: int
    ipv6: bool = False


@dataclass(frozen=True)
class ScriptCheck:
    """`script "cmd",I,T`: exit 0 means up; $ipaddr$, $ipaddr6$ and $port$ are substituted."""

    command: str
    interval: int
    timeout: int


@dataclass(frozen=True)
class HttpCheck:
    """*ext* `http P,"/path",I,T` / `https P,"/path",I,T`, refined by `httpstatus`, `httpbody`, `httphost`.

    Up when the GET answers with a status inside one of `status` and, if `body_regex` is set, a body
    matching it. Imported from keepalived HTTP_GET / SSL_GET.
    """

    port: int
    path: str
    interval: int
    timeout: int
    tls: bool = False
    status: tuple[PortRange, ...] = (PortRange(200, 399),)  # `httpstatus 200-299,302`
    body_regex: str | None = None  # `httpbody "regex"`
    host: str | None = None  # `httphost "name"`


@dataclass(frozen=True)
class SendExpectCheck:
    """*ext* `sendexpect P,"send","expect",I,T` (+ `expectregex enable`): Piranha nanny's send/expect."""

    port: int
    send: str
    expect: str
    interval: int
    timeout: int
    regex: bool = False


Check = PingCheck | NeighbourCheck | TcpOpenCheck | AgentCheck | ScriptCheck | HttpCheck | SendExpectCheck


@dataclass(frozen=True)
class HealthPolicy:
    """How check results turn into target state beyond the BalanceNG timeout window.

    rise: consecutive successes needed to come up (*ext* `rise N`, default 1).
    fall: consecutive failures that take it down before the window ends (*ext* `fall N`; 0 = only
          the timeout window decides, the BalanceNG default).
    quiesce: a down target keeps its sessions and gets weight 0 instead of being removed
          (*ext* `quiesce enable`; Piranha quiesce_server, keepalived inhibit_on_failure).
    """

    rise: int = 1
    fall: int = 0
    quiesce: bool = False


# --- objects ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interface:
    """`interface N { name eth0; access raw; trackval 10 }`."""

    id: int
    name: str | None = None
    access: str | None = None  # `access raw`: accepted and shown (BalanceNG raw socket mode)
    trackval: int | None = None  # VRRP priority decrement when this link is down
    registered: bool = False
    enabled: bool = False


@dataclass(frozen=True)
class Network:
    """`network N { addr; mask; real; virt; addr6; mask6; real6; virt6; syncpeer; interface(s) }`.

    `real` is the balancer's own address (source of health checks and ARP); `virt` is the address
    shared by the VRRP pair and used as the targets' gateway under NAT. `mask6` alone with `real6`
    defines the IPv6 prefix (seed 003).
    """

    id: int
    name: str | None = None
    addr: IPv4Address | None = None
    mask: IPv4Address | None = None
    real: IPv4Address | None = None
    virt: IPv4Address | None = None
    addr6: IPv6Address | None = None
    mask6: int | None = None
    real6: IPv6Address | None = None
    virt6: IPv6Address | None = None
    syncpeer: IPAddress | None = None
    interfaces: tuple[int, ...] = ()  # `interface 1` or `interfaces 1,3`
    registered: bool = False
    enabled: bool = False

    @property
    def ipv4_network(self) -> IPv4Network | None:
        if self.addr is None or self.mask is None:
            return None
        return IPv4Network(f"{self.addr}/{self.mask}", strict=False)

    @property
    def ipv6_network(self) -> IPv6Network | None:
        if self.mask6 is None:
            return None
        base = self.addr6 if self.addr6 is not None else self.real6
        if base is None:
            return None
        return IPv6Network(f"{base}/{self.mask6}", strict=False)


@dataclass(frozen=True)
class Vrrp:
    """`vrrp { vrid; priority; network; tracking enable }` (+ *ext* `advert`, `peers`, `authpass`,
    `preemptdelay`)."""

    vrid: int
    priority: int = 100
    network: int | None = None
    tracking: bool = False
    advert_interval: float = 1.0  # *ext* `advert 1` (seconds; keepalived advert_int)
    unicast_peers: tuple[IPAddress, ...] = ()  # *ext* `peers 192.0.2.2,192.0.2.3`
    auth_pass: str | None = None  # *ext* `authpass "secret"` (keepalived PASS authentication)
    preempt_delay: float = 0.0  # *ext* `preemptdelay 30` (seconds; keepalived preempt_delay)


@dataclass(frozen=True)
class Gateway:
    """`gateway { ipaddr / ipaddr6; ping / ping6 I,T; trackval N }`."""

    ipaddr: IPv4Address | None = None
    ipaddr6: IPv6Address | None = None
    checks: tuple[Check, ...] = ()
    trackval: int | None = None


@dataclass(frozen=True)
class Server:
    """A virtual server: `server N { ipaddr|ipaddr6; port|ports; protocol; method; targets; ... }`.

    `ports` empty means an any-port service. More than one port (or a range) means one session spans
    all of them, and the targets must carry no port or protocol (seed 000).
    """

    id: int
    address: IPAddress | None = None  # `ipaddr` or `ipaddr6`
    name: str | None = None
    ports: tuple[PortRange, ...] = ()  # `port 80` or `ports 80,443,33000-33999`
    protocol: Protocol | None = None  # None: both tcp and udp
    method: Method = Method.RR
    targets: tuple[int, ...] = ()  # primary targets, in order (`first` uses it)
    backup: tuple[int, ...] = ()  # `backup 3,4`: serve only when all primaries are down
    sessionid: SessionKey = SessionKey.SRC
    timeout: int | None = None  # `timeout N`: session idle timeout in s (None: per-protocol default)
    registered: bool = False
    enabled: bool = False

    @property
    def multi_port(self) -> bool:
        return len(self.ports) > 1 or any(r.first != r.last for r in self.ports)

    @property
    def single_port(self) -> int | None:
        if len(self.ports) == 1 and self.ports[0].first == self.ports[0].last:
            return self.ports[0].first
        return None


@dataclass(frozen=True)
class Target:
    """A real server: `target N { ipaddr|ipaddr6; port; protocol; checks...; dsr enable; ... }`."""

    id: int
    address: IPAddress | None = None  # `ipaddr` or `ipaddr6`
    name: str | None = None
    port: int | None = None  # None: same port as the client asked for
    protocol: Protocol | None = None
    dsr: bool = False  # `dsr enable`: rewrite only the destination MAC
    weight: int = 1  # *ext* `weight N` (wrr, wrandom, maglev)
    sessionid: ReturnMatch | None = None  # `sessionid dst|dst+port` (NAT return matching)
    checks: tuple[Check, ...] = ()
    health: HealthPolicy = field(default_factory=HealthPolicy)
    registered: bool = False
    enabled: bool = False


@dataclass(frozen=True)
class Config:
    """A whole configuration. Settings are `set` keys as written, sorted by key."""

    hostname: str | None = None
    remark: str | None = None
    modules: tuple[str, ...] = ()
    settings: tuple[tuple[str, str], ...] = ()
    interfaces: tuple[Interface, ...] = ()
    networks: tuple[Network, ...] = ()
    vrrp: Vrrp | None = None
    gateway: Gateway | None = None
    servers: tuple[Server, ...] = ()
    targets: tuple[Target, ...] = ()

    def setting(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.settings:
            if k == key:
                return v
        return default

    def server(self, sid: int) -> Server | None:
        return next((s for s in self.servers if s.id == sid), None)

    def target(self, tid: int) -> Target | None:
        return next((t for t in self.targets if t.id == tid), None)

    def network(self, nid: int) -> Network | None:
        return next((n for n in self.networks if n.id == nid), None)

    def interface(self, iid: int) -> Interface | None:
        return next((i for i in self.interfaces if i.id == iid), None)
