"""The reference data path: docs/datapath.md in Python, the oracle the XDP program must match.

`ReferenceDataplane` implements the `Dataplane` protocol. It is also the AF_PACKET engine's core, so
the per-packet path works on bytes/bytearray with precomputed, byte-keyed dictionaries: one parse,
two or three dict lookups and in-place rewrites. Control operations (`apply`) may be slow.

No input frame makes `run` raise: everything that is not understood is PASSed or DROPped with a
counter (§1). Time only comes in as `now_ns`; randomness only from the injected `rand32`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address

from dsrlb.engine.checksum import update_checksum_field, update_udp_checksum_field
from dsrlb.engine.dataplane import (
    Change,
    NextHop,
    RemoveService,
    RemoveTarget,
    Result,
    ServiceSpec,
    SessionEntry,
    SetLocalAddress,
    SetNextHop,
    SetRoute,
    SetTable,
    SetTargetState,
    TargetSpec,
    TargetState,
    UpsertService,
    UpsertTarget,
    Verdict,
)
from dsrlb.engine.hashing import hash_client, hash_session_key
from dsrlb.engine.icmp import IcmpTranslator
from dsrlb.engine.packet import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    ST_FRAGMENT,
    ST_MALFORMED,
    ST_OK,
    parse_frame,
)
from dsrlb.model import Method, ReturnMatch, SessionKey

COUNTER_NAMES = (
    "rx", "pass", "drop", "tx", "redirect", "malformed", "fragment", "no_target", "no_route",
    "session_new", "session_hit", "session_moved", "nat_return", "icmp_translated",
)
OBJECT_COUNTER_NAMES = ("packets", "bytes", "sessions_new")
DEFAULT_SESSION_CAPACITY = 1 << 20

_COUNTER_METHODS = frozenset({Method.RR, Method.WRR, Method.SESSION, Method.BANDWIDTH, Method.AGENT})
_RANDOM_METHODS = frozenset({Method.RANDOM, Method.WRANDOM, Method.RNDAGENT})
_USABLE = (TargetState.UP, TargetState.NO_NEW)


def _system_rand32() -> int:
    return random.getrandbits(32)


class ServiceRuntime:
    """A service as the hot path uses it."""

    __slots__ = ("counter", "id", "method", "per_port", "spec", "stats", "table", "timeout_ns")

    def __init__(self, spec: ServiceSpec) -> None:
        self.id = spec.id
        self.table: tuple[int, ...] = ()
        self.counter = 0
        self.stats = dict.fromkeys(OBJECT_COUNTER_NAMES, 0)
        self.update(spec)

    def update(self, spec: ServiceSpec) -> None:
        self.spec = spec
        self.method = spec.method
        self.per_port = spec.session_key is SessionKey.SRC_PORT
        self.timeout_ns = spec.timeout * 1_000_000_000


class TargetRuntime:
    """A target as the hot path uses it: packed address, port bytes, next hop."""

    __slots__ = ("address", "dsr", "next_hop", "port", "return_port", "spec", "state", "stats", "usable")

    def __init__(self, spec: TargetSpec) -> None:
        self.stats = dict.fromkeys(OBJECT_COUNTER_NAMES, 0)
        self.update(spec)

    def update(self, spec: TargetSpec) -> None:
        self.spec = spec
        self.address = spec.address.packed
        self.port = spec.port
        self.dsr = spec.dsr
        self.return_port = spec.return_match is ReturnMatch.DST_PORT
        self.state = spec.state
        self.next_hop = spec.next_hop
        self._refresh()

    def set_state(self, state: TargetState) -> None:
        self.state = state
        self._refresh()

    def set_next_hop(self, next_hop: NextHop | None) -> None:
        self.next_hop = next_hop
        self._refresh()

    def _refresh(self) -> None:
        self.usable = self.state in _USABLE and self.next_hop is not None


class ReturnEntry:
    """A NAT return entry: what to restore on traffic from a target to a client (§5)."""

    __slots__ = ("last_seen_ns", "service_id", "target_id", "timeout_ns", "vip", "vip_port")

    def __init__(
        self, vip: bytes, vip_port: int, service_id: int, target_id: int, timeout_ns: int, last_seen_ns: int
    ) -> None:
        self.vip = vip
        self.vip_port = vip_port
        self.service_id = service_id
        self.target_id = target_id
        self.timeout_ns = timeout_ns
        self.last_seen_ns = last_seen_ns


class ReferenceDataplane:
    """The oracle data path (docs/datapath.md). Not thread-safe: one owner drives it."""

    def __init__(
        self,
        rand32: Callable[[], int] = _system_rand32,
        session_capacity: int = DEFAULT_SESSION_CAPACITY,
    ) -> None:
        self._rand32 = rand32
        self._capacity = session_capacity
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self._services: dict[int, ServiceRuntime] = {}
        self._tables: dict[int, tuple[int, ...]] = {}
        self._keys: dict[tuple[bytes, int, int], ServiceRuntime] = {}
        self._vips: set[bytes] = set()
        self._targets: dict[int, TargetRuntime] = {}
        self._local: set[bytes] = set()
        self._routes: list[tuple[IPv4Network | IPv6Network, NextHop]] = []
        # (service id, client address, client port or 0) -> [target id, last_seen_ns]
        self._sessions: dict[tuple[int, bytes, int], list[int]] = {}
        # (proto, target addr, target port, client addr, client port or 0) -> ReturnEntry
        self._returns: dict[tuple[int, bytes, int, bytes, int], ReturnEntry] = {}
        self._events: list[SessionEntry] = []
        self._icmp = IcmpTranslator(self)

    # --- control -----------------------------------------------------------------------------------

    def apply(self, changes: Sequence[Change]) -> None:
        for change in changes:
            self._apply_one(change)

    def _apply_one(self, change: Change) -> None:
        if isinstance(change, UpsertService):
            self._upsert_service(change.spec)
        elif isinstance(change, RemoveService):
            self._remove_service(change.service_id)
        elif isinstance(change, UpsertTarget):
            existing = self._targets.get(change.spec.id)
            if existing is None:
                self._targets[change.spec.id] = TargetRuntime(change.spec)
            else:
                existing.update(change.spec)
        elif isinstance(change, RemoveTarget):
            self._targets.pop(change.target_id, None)
        elif isinstance(change, SetTargetState):
            target = self._targets.get(change.target_id)
            if target is not None:
                target.set_state(change.state)
        elif isinstance(change, SetNextHop):
            target = self._targets.get(change.target_id)
            if target is not None:
                target.set_next_hop(change.next_hop)
        elif isinstance(change, SetTable):
            self._tables[change.service_id] = tuple(change.table)
            service = self._services.get(change.service_id)
            if service is not None:
                service.table = self._tables[change.service_id]
        elif isinstance(change, SetRoute):
            self._routes = [(p, nh) for p, nh in self._routes if p != change.prefix]
            if change.next_hop is not None:
                self._routes.append((change.prefix, change.next_hop))
                self._routes.sort(key=lambda route: -route[0].prefixlen)
        elif isinstance(change, SetLocalAddress):
            if change.present:
                self._local.add(change.address.packed)
            else:
                self._local.discard(change.address.packed)

    def _upsert_service(self, spec: ServiceSpec) -> None:
        service = self._services.get(spec.id)
        if service is None:
            service = ServiceRuntime(spec)
            service.table = self._tables.get(spec.id, ())
            self._services[spec.id] = service
        else:
            service.update(spec)
            self._keys = {k: s for k, s in self._keys.items() if s is not service}
        for key in spec.keys:
            self._keys[(key.address.packed, key.protocol, key.port)] = service
        self._vips = {k[0] for k in self._keys}

    def _remove_service(self, service_id: int) -> None:
        service = self._services.pop(service_id, None)
        self._tables.pop(service_id, None)
        if service is None:
            return
        self._keys = {k: s for k, s in self._keys.items() if s is not service}
        self._vips = {k[0] for k in self._keys}
        self._sessions = {k: v for k, v in self._sessions.items() if k[0] != service_id}
        self._returns = {k: v for k, v in self._returns.items() if v.service_id != service_id}

    # --- inspection --------------------------------------------------------------------------------

    def stats(self) -> Mapping[str, int]:
        return dict(self.counters)

    def service_stats(self, service_id: int) -> Mapping[str, int]:
        service = self._services.get(service_id)
        return dict(service.stats) if service else dict.fromkeys(OBJECT_COUNTER_NAMES, 0)

    def target_stats(self, target_id: int) -> Mapping[str, int]:
        target = self._targets.get(target_id)
        return dict(target.stats) if target else dict.fromkeys(OBJECT_COUNTER_NAMES, 0)

    def sessions(self) -> Sequence[SessionEntry]:
        return [
            SessionEntry(sid, ip_address(client), port, value[0], value[1])
            for (sid, client, port), value in self._sessions.items()
        ]

    def session_target(self, service_id: int, client: bytes, client_port: int) -> int | None:
        value = self._sessions.get((service_id, client, client_port))
        return None if value is None else value[0]

    def drain_session_events(self) -> list[SessionEntry]:
        """New and moved sessions since the last call (the ring buffer the sync reads)."""
        events, self._events = self._events, []
        return events

    def install_sessions(self, entries: Sequence[SessionEntry]) -> int:
        """Sessions from the peer (Dataplane.install_sessions)."""
        installed = 0
        sessions = self._sessions
        for entry in entries:
            if entry.service_id not in self._services or entry.target_id not in self._targets:
                continue
            key = (entry.service_id, entry.client.packed, entry.client_port)
            held = sessions.get(key)
            if held is not None and held[1] >= entry.last_seen_ns:
                continue
            if held is None and len(sessions) >= self._capacity:
                del sessions[next(iter(sessions))]
            sessions[key] = [entry.target_id, entry.last_seen_ns]
            installed += 1
        return installed

    # --- the hot path ------------------------------------------------------------------------------

    def run(self, frame: bytes, ingress_ifindex: int, now_ns: int) -> Result:
        counters = self.counters
        counters["rx"] += 1
        view = parse_frame(frame)
        status = view.status
        if status != ST_OK:
            if status == ST_MALFORMED:
                counters["malformed"] += 1
                if view.dst is not None and view.dst in self._vips:
                    return self._drop(frame)
            elif status == ST_FRAGMENT and view.dst in self._vips:
                counters["fragment"] += 1
                return self._drop(frame)
            return self._pass(frame)
        proto = view.proto
        if proto in (IPPROTO_TCP, IPPROTO_UDP):
            l4 = view.l4
            sport = (frame[l4] << 8) | frame[l4 + 1]
            dport = (frame[l4 + 2] << 8) | frame[l4 + 3]
            dst = view.dst
            assert dst is not None
            if self._returns:
                entry = self._returns.get((proto, view.src, sport, dst, dport))
                if entry is None:
                    entry = self._returns.get((proto, view.src, sport, dst, 0))
                if entry is not None and now_ns - entry.last_seen_ns <= entry.timeout_ns:
                    return self._nat_return(frame, ingress_ifindex, view.l3, l4, view.version, proto,
                                            entry, now_ns)
            service = self._keys.get((dst, proto, dport))
            if service is None:
                service = self._keys.get((dst, proto, 0))
                if service is None:
                    return self._pass(frame)
            return self._forward(frame, ingress_ifindex, now_ns, view.l3, l4, view.version, proto,
                                 view.src, sport, dport, service)
        if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
            result = self._icmp.translate(frame, view, ingress_ifindex, now_ns)
            if result is not None:
                return result
        return self._pass(frame)

    def _pass(self, frame: bytes) -> Result:
        self.counters["pass"] += 1
        return Result(Verdict.PASS, frame, None)

    def _drop(self, frame: bytes) -> Result:
        self.counters["drop"] += 1
        return Result(Verdict.DROP, frame, None)

    def _send(self, frame: bytes | bytearray, next_hop: NextHop, ingress_ifindex: int) -> Result:
        out = next_hop.dst_mac + next_hop.src_mac + frame[12:]
        if next_hop.ifindex == ingress_ifindex:
            self.counters["tx"] += 1
            return Result(Verdict.TX, out, next_hop.ifindex)
        self.counters["redirect"] += 1
        return Result(Verdict.REDIRECT, out, next_hop.ifindex)

    def _select(self, service: ServiceRuntime, client: bytes, session_port: int) -> int | None:
        table = service.table
        if not table:
            return None
        method = service.method
        if method in _COUNTER_METHODS:
            index = service.counter % len(table)
            service.counter += 1
        elif method in _RANDOM_METHODS:
            index = (self._rand32() & 0xFFFFFFFF) % len(table)
        elif method is Method.HASH:
            index = hash_client(client) % len(table)
        elif method is Method.MAGLEV:
            index = hash_session_key(client, session_port) % len(table)
        else:  # FIRST
            index = 0
        return table[index]

    def _forward(
        self, frame: bytes, ingress_ifindex: int, now_ns: int, l3: int, l4: int, version: int,
        proto: int, client: bytes, sport: int, dport: int, service: ServiceRuntime,
    ) -> Result:
        counters = self.counters
        session_port = sport if service.per_port else 0
        key = (service.id, client, session_port)
        session = self._sessions.get(key)
        target = None
        if session is not None and now_ns - session[1] <= service.timeout_ns:
            target = self._targets.get(session[0])
            if target is not None and target.usable:
                counters["session_hit"] += 1
                session[1] = now_ns
            else:
                target = self._new_session(service, key, client, session_port, now_ns, "session_moved")
        else:
            target = self._new_session(service, key, client, session_port, now_ns, "session_new")
        if target is None:
            counters["no_target"] += 1
            return self._drop(frame)
        next_hop = target.next_hop
        assert next_hop is not None
        if target.dsr:
            result = self._send(frame, next_hop, ingress_ifindex)
        else:
            rewritten = self._nat_forward(frame, l3, l4, version, proto, target, dport)
            if rewritten is None:
                return self._pass(frame)
            self._record_return(proto, target, dport, client, sport, service, now_ns)
            result = self._send(rewritten, next_hop, ingress_ifindex)
        size = len(frame)
        service.stats["packets"] += 1
        service.stats["bytes"] += size
        target.stats["packets"] += 1
        target.stats["bytes"] += size
        return result

    def _new_session(
        self, service: ServiceRuntime, key: tuple[int, bytes, int], client: bytes, session_port: int,
        now_ns: int, counter: str,
    ) -> TargetRuntime | None:
        target_id = self._select(service, client, session_port)
        if target_id is None:
            return None
        target = self._targets.get(target_id)
        if target is None or not target.usable:
            return None
        sessions = self._sessions
        if key in sessions:
            sessions[key] = [target_id, now_ns]
        else:
            if len(sessions) >= self._capacity:
                del sessions[next(iter(sessions))]
            sessions[key] = [target_id, now_ns]
        self.counters[counter] += 1
        service.stats["sessions_new"] += 1
        target.stats["sessions_new"] += 1
        self._events.append(SessionEntry(service.id, ip_address(client), session_port, target_id, now_ns))
        return target

    def _nat_forward(
        self, frame: bytes, l3: int, l4: int, version: int, proto: int, target: TargetRuntime, dport: int
    ) -> bytearray | None:
        """Destination rewrite of §3 / §3.1; None when the TTL forbids forwarding."""
        ttl_at = l3 + 8 if version == 4 else l3 + 7
        ttl = frame[ttl_at]
        if ttl <= 1:
            return None
        new_addr = target.address
        addr_at = l3 + 16 if version == 4 else l3 + 24
        addr_end = addr_at + len(new_addr)
        old_addr = frame[addr_at:addr_end]
        old_ports = frame[l4 : l4 + 4]
        new_port = dport if target.port is None else target.port
        new_ports = old_ports[:2] + new_port.to_bytes(2, "big")
        buf = bytearray(frame)
        if proto == IPPROTO_TCP:
            update_checksum_field(buf, l4 + 16, old_addr + old_ports, new_addr + new_ports)
        else:
            update_udp_checksum_field(buf, l4 + 6, old_addr + old_ports, new_addr + new_ports)
        buf[addr_at:addr_end] = new_addr
        buf[l4 : l4 + 4] = new_ports
        if version == 4:
            update_checksum_field(
                buf, l3 + 10, old_addr + bytes((ttl, proto, 0, 0)), new_addr + bytes((ttl - 1, proto, 0, 0))
            )
        buf[ttl_at] = ttl - 1
        return buf

    def _record_return(
        self, proto: int, target: TargetRuntime, dport: int, client: bytes, sport: int,
        service: ServiceRuntime, now_ns: int,
    ) -> None:
        target_port = dport if target.port is None else target.port
        key = (proto, target.address, target_port, client, sport if target.return_port else 0)
        entry = self._returns.get(key)
        if entry is not None and entry.target_id == target.spec.id and entry.service_id == service.id:
            entry.last_seen_ns = now_ns
            return
        returns = self._returns
        if entry is None and len(returns) >= self._capacity:
            del returns[next(iter(returns))]
        vip = self._vip_of(service, proto, dport)
        returns[key] = ReturnEntry(vip, dport, service.id, target.spec.id, service.timeout_ns, now_ns)

    def _vip_of(self, service: ServiceRuntime, proto: int, dport: int) -> bytes:
        for key in service.spec.keys:
            if key.protocol == proto and key.port in (dport, 0):
                return key.address.packed
        return service.spec.keys[0].address.packed

    def route(self, client: bytes) -> NextHop | None:
        """The longest-prefix route to a client (packed address)."""
        address = ip_address(client)
        for prefix, next_hop in self._routes:
            if address.version == prefix.version and address in prefix:
                return next_hop
        return None

    def _nat_return(
        self, frame: bytes, ingress_ifindex: int, l3: int, l4: int, version: int, proto: int,
        entry: ReturnEntry, now_ns: int,
    ) -> Result:
        """Source rewrite back to VIP:port (§5), routed to the client."""
        vip, vport = entry.vip, entry.vip_port
        dst_at = l3 + 16 if version == 4 else l3 + 24
        next_hop = self.route(bytes(frame[dst_at : dst_at + len(vip)]))
        if next_hop is None:
            self.counters["no_route"] += 1
            return self._pass(frame)
        buf = bytearray(frame)
        ttl_at = l3 + 8 if version == 4 else l3 + 7
        ttl = buf[ttl_at]
        if ttl <= 1:
            return self._pass(frame)
        entry.last_seen_ns = now_ns
        src_at = l3 + 12 if version == 4 else l3 + 8
        old_addr = bytes(buf[src_at : src_at + len(vip)])
        old_ports = bytes(buf[l4 : l4 + 4])
        new_ports = bytes((vport >> 8, vport & 0xFF)) + old_ports[2:]
        if proto == IPPROTO_TCP:
            update_checksum_field(buf, l4 + 16, old_addr + old_ports, vip + new_ports)
        else:
            update_udp_checksum_field(buf, l4 + 6, old_addr + old_ports, vip + new_ports)
        buf[src_at : src_at + len(vip)] = vip
        buf[l4 : l4 + 4] = new_ports
        if version == 4:
            update_checksum_field(
                buf, l3 + 10, old_addr + bytes((ttl, proto, 0, 0)), vip + bytes((ttl - 1, proto, 0, 0))
            )
        buf[ttl_at] = ttl - 1
        self.counters["nat_return"] += 1
        size = len(frame)
        service = self._services.get(entry.service_id)
        if service is not None:
            service.stats["packets"] += 1
            service.stats["bytes"] += size
        target = self._targets.get(entry.target_id)
        if target is not None:
            target.stats["packets"] += 1
            target.stats["bytes"] += size
        return self._send(buf, next_hop, ingress_ifindex)
