"""`XdpDataplane`: the Dataplane protocol (engine/dataplane.py) on the XDP program.

`apply()` turns Changes into map writes: service and target ids get map slots (freed on removal,
a re-added target gets its old slot back when it is free), keys, tables, routes and addresses go to
their maps. `run()` pushes one frame through the loaded program with BPF_PROG_TEST_RUN, which is
how tests hold the program to the reference and how `dsrlb explain` can ask the real data path.

Time and randomness: the kernel clock cannot be set, so an object loaded with
`test_inputs=True` reads `now_ns` (and, when given, `rand32`) from the `test_inputs` map that
`run()` fills; the production object (`test_inputs=False`, the default) has that code removed by
the verifier and uses bpf_ktime_get_coarse_ns() (docs/xdp.md) and bpf_get_prandom_u32(), so `run()`
there ignores `now_ns`.
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import socket
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from dsrlb.engine.dataplane import (
    Change,
    IPAddress,
    NextHop,
    RemoveService,
    RemoveTarget,
    Result,
    ServiceKey,
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
from dsrlb.model import Method, ReturnMatch, SessionKey
from dsrlb.paths import instance_paths
from dsrlb.xdp import build, layout
from dsrlb.xdp.clock import COARSE, ClockBase, calibrate
from dsrlb.xdp.libbpf import (
    Attachment,
    BpfMap,
    BpfObject,
    LibbpfError,
    RingBuffer,
    xdp_attach,
    xdp_detach,
)
from dsrlb.xdp.slots import (
    ServiceTable,
    ServiceTableFull,
    SlotAllocator,
    TableWriter,
    nat_source_bit,
    service_table_size,
)

log = logging.getLogger(__name__)

PROGRAM_NAME = "dsrlb_xdp"
PROGRAM_PIN_NAME = "dsrlb_xdp_prog"
CLOCK_PROGRAM_NAME = "dsrlb_clock"  # calibration only, never attached (xdp/clock.py)

_INDEX_KIND = {
    Method.RR: layout.INDEX_COUNTER, Method.WRR: layout.INDEX_COUNTER,
    Method.SESSION: layout.INDEX_COUNTER, Method.BANDWIDTH: layout.INDEX_COUNTER,
    Method.AGENT: layout.INDEX_COUNTER, Method.RANDOM: layout.INDEX_RANDOM,
    Method.WRANDOM: layout.INDEX_RANDOM, Method.RNDAGENT: layout.INDEX_RANDOM,
    Method.HASH: layout.INDEX_HASH_CLIENT, Method.MAGLEV: layout.INDEX_HASH_SESSION,
    Method.FIRST: layout.INDEX_FIRST,
}
_USABLE_STATES = (TargetState.UP, TargetState.NO_NEW)
_SESSION_KEY_SERVICE_ID = slice(16, 20)  # session_key.service_id in the packed key


class XdpDataplaneError(RuntimeError):
    """A change the XDP maps cannot hold (sizes exhausted, values out of range)."""


class FrameTooShort(XdpDataplaneError, ValueError):
    """BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header; no NIC delivers one to XDP."""


ETH_HLEN = 14


@dataclass(frozen=True)
class XdpSizes:
    """Map sizes, fixed at load (bpf_map__set_max_entries). Tables take services x 65537 x 8 bytes."""

    services: int = 64
    service_keys: int = 4096  # one per (VIP, protocol, port); port ranges expand
    targets: int = 1024
    sessions: int = 65536
    nat_returns: int = 65536
    routes: int = 1024
    local_addresses: int = 256
    vips: int = 1024
    ring_bytes: int = 1 << 20  # session event ring buffer, a power of two >= the page size


@dataclass
class _Service:
    slot: int
    spec: ServiceSpec | None = None
    table_len: int = 0
    table: tuple[int, ...] = ()


class XdpDataplane:
    """The XDP program loaded (not yet attached) and programmed through Changes."""

    def __init__(self, sizes: XdpSizes = XdpSizes(), *, test_inputs: bool = False,
                 object_path: Path | None = None, instance: str = "0") -> None:
        self.sizes = sizes
        self.instance = instance
        self.test_inputs = test_inputs
        self._obj = BpfObject(object_path or build.ensure_object())
        try:
            self._configure(sizes, test_inputs)
            self._obj.load()
            layout.check_layouts(self._obj)
        except BaseException:
            self._obj.close()
            raise
        self.program = self._obj.program(PROGRAM_NAME)
        self.maps: dict[str, BpfMap] = {m.name: m for m in self._obj.maps() if not m.name.startswith(".")
                                        and "." not in m.name}
        self._service_slots = SlotAllocator(sizes.services)
        self._target_slots = SlotAllocator(sizes.targets)
        self._tables = TableWriter(self.maps["tables"], layout.TABLE_MAX, self._target_slot)
        self._service_table = ServiceTable(self.maps["service_table"], service_table_size(sizes.service_keys))
        self._services: dict[int, _Service] = {}
        self._targets: dict[int, tuple[int, TargetSpec]] = {}
        self._key_owner: dict[ServiceKey, int] = {}  # as the reference: the last upsert owns a key
        self._vips: set[tuple[bytes, int]] = set()
        self._events: list[SessionEntry] = []
        self._ring = RingBuffer(self.maps["session_events"], self._on_event)
        self._rand32: int | None = None
        self._nat_source_words: dict[int, int] = {}  # nat_sources words written (index -> bits)
        self._routes: set[bytes] = set()
        self._local: set[bytes] = set()
        self._attachments: dict[int, Attachment] = {}
        self._pinned: Path | None = None
        # Test objects take `now` from test_inputs; production ones read jiffies once calibrated.
        self.clock = COARSE if test_inputs else self._calibrate_clock()

    def _configure(self, sizes: XdpSizes, test_inputs: bool) -> None:
        obj = self._obj
        for name, entries in (
            ("service_table", service_table_size(sizes.service_keys)), ("service_infos", sizes.services),
            ("rr_counters", sizes.services), ("tables", sizes.services * layout.TABLE_MAX),
            ("targets", sizes.targets), ("target_slots", sizes.targets), ("sessions", sizes.sessions),
            ("nat_returns", sizes.nat_returns), ("routes", sizes.routes), ("vips", sizes.vips),
            ("local_addrs", sizes.local_addresses), ("service_stats", sizes.services),
            ("target_stats", sizes.targets), ("session_events", sizes.ring_bytes),
        ):
            obj.map(name).set_max_entries(entries)
        rodata = obj.internal_map(".rodata")
        data = bytearray(obj.initial_value(rodata))
        offset, _ = layout.section_variable(obj, ".rodata", "injected_inputs")
        data[offset] = 1 if test_inputs else 0
        offset, size = layout.section_variable(obj, ".rodata", "service_table_mask")
        data[offset:offset + size] = (service_table_size(sizes.service_keys) - 1).to_bytes(size, "little")
        obj.set_initial_value(rodata, bytes(data))

    def _calibrate_clock(self) -> ClockBase:
        """Measure jiffies against the monotonic clock in the kernel and hand the program the result
        (xdp/clock.py); a failed measurement leaves the program on the coarse clock."""
        program = self._obj.program(CLOCK_PROGRAM_NAME)
        frame = bytes(64)

        def read() -> tuple[int, int]:
            result = program.test_run(frame)
            jiffies, monotonic = struct.unpack_from("<QQ", result.data)
            return jiffies, monotonic

        try:
            base = calibrate(read)
            self.maps["clock_base"].update(_u32(0), base.to_bytes())
        except LibbpfError as exc:
            log.warning("clock calibration failed (%s): the XDP program reads the coarse clock", exc)
            return COARSE
        if base.ns_per_jiffy == 0:
            log.warning("jiffies did not match a known HZ: the XDP program reads the coarse clock")
        return base

    # --- control -----------------------------------------------------------------------------------

    def apply(self, changes: Sequence[Change]) -> None:
        for change in changes:
            if isinstance(change, UpsertService):
                self._upsert_service(change.spec)
            elif isinstance(change, RemoveService):
                self._remove_service(change.service_id)
            elif isinstance(change, UpsertTarget):
                self._upsert_target(change.spec)
            elif isinstance(change, RemoveTarget):
                self._remove_target(change.target_id)
            elif isinstance(change, SetTargetState):
                self._update_target(change.target_id, state=change.state)
            elif isinstance(change, SetNextHop):
                self._update_target(change.target_id, next_hop=change.next_hop, set_next_hop=True)
            elif isinstance(change, SetTable):
                self._set_table(change.service_id, change.table)
            elif isinstance(change, SetRoute):
                self._set_route(change)
            elif isinstance(change, SetLocalAddress):
                self._set_local(change)
            else:
                raise XdpDataplaneError(f"unknown change {change!r}")

    def _service_entry(self, service_id: int) -> _Service:
        entry = self._services.get(service_id)
        if entry is None:
            slot = self._service_slots.allocate(service_id)
            entry = _Service(slot)
            self._services[service_id] = entry
            zero = bytes(8)
            self.maps["rr_counters"].update(_u32(slot), zero)
            self.maps["service_stats"].update(_u32(slot), bytes(layout.object_stats()))
        return entry

    def _write_service_info(self, service_id: int, entry: _Service) -> None:
        spec = entry.spec
        info = layout.service_info(id=service_id, table_len=entry.table_len)
        if spec is not None:
            info.timeout_ns = spec.timeout * 1_000_000_000
            info.index_kind = _INDEX_KIND[spec.method]
            info.per_port = spec.session_key is SessionKey.SRC_PORT
            info.active = 1
        self.maps["service_infos"].update(_u32(entry.slot), bytes(info))

    def _upsert_service(self, spec: ServiceSpec) -> None:
        if spec.timeout < 0:
            raise XdpDataplaneError(f"service {spec.id}: negative timeout {spec.timeout}")
        entry = self._service_entry(spec.id)
        entry.spec = spec
        self._write_service_info(spec.id, entry)
        for key, owner in list(self._key_owner.items()):
            if owner == spec.id and key not in spec.keys:
                del self._key_owner[key]
                self._service_table.remove(_service_key(key))
        for key in spec.keys:
            if not 0 <= key.port <= 0xFFFF or not 0 <= key.protocol <= 0xFF:
                raise XdpDataplaneError(f"service {spec.id}: bad key {key}")
            if key not in self._key_owner and len(self._service_table) >= self.sizes.service_keys:
                raise XdpDataplaneError(
                    f"service {spec.id}: the service table is full ({self.sizes.service_keys} keys; "
                    "load with a larger XdpSizes.service_keys)")
            ref = layout.service_ref(slot=entry.slot, return_vip=layout.addr_of(_return_vip(spec, key)))
            try:
                self._service_table.put(_service_key(key), ref)
            except ServiceTableFull as exc:
                raise XdpDataplaneError(f"service {spec.id}: {exc}; load with a larger "
                                        "XdpSizes.service_keys") from exc
            self._key_owner[key] = spec.id
        self._sync_vips()

    def _sync_vips(self) -> None:
        wanted: set[tuple[bytes, int]] = {(k.address.packed, k.address.version) for k in self._key_owner}
        vips = self.maps["vips"]
        for packed, family in self._vips - wanted:
            vips.delete(_addr_key(packed, family))
        for packed, family in wanted - self._vips:
            vips.update(_addr_key(packed, family), _u32(1))
        self._vips = wanted

    def _remove_service(self, service_id: int) -> None:
        entry = self._services.pop(service_id, None)
        if entry is None:
            return
        for key, owner in list(self._key_owner.items()):
            if owner == service_id:
                del self._key_owner[key]
                self._service_table.remove(_service_key(key))
        self._sync_vips()
        self.maps["service_infos"].update(_u32(entry.slot), bytes(layout.service_info()))
        self._tables.write(entry.slot, entry.table_len, ())
        self._service_slots.free(entry.slot)
        self._forget_service_state(service_id)

    def _forget_service_state(self, service_id: int) -> None:
        """Delete the service's sessions and NAT return entries, as the reference does."""
        wanted = _u32(service_id)
        sessions = self.maps["sessions"]
        for key in list(sessions.keys()):
            if key[_SESSION_KEY_SERVICE_ID] == wanted:
                sessions.delete(key)
        returns = self.maps["nat_returns"]
        for key, value in list(returns.items()):
            if layout.nat_value.from_buffer_copy(value).service_id == service_id:
                returns.delete(key)

    def _set_table(self, service_id: int, table: Sequence[int]) -> None:
        if len(table) > layout.TABLE_MAX:
            raise XdpDataplaneError(f"service {service_id}: table of {len(table)} > {layout.TABLE_MAX}")
        if any(not 0 <= tid <= 0xFFFFFFFF for tid in table):
            raise XdpDataplaneError(f"service {service_id}: a target id does not fit 32 bits")
        entry = self._service_entry(service_id)
        # Growing: entries first, then the length; shrinking: the length first. A packet never
        # indexes an entry that is not written yet.
        if len(table) >= entry.table_len:
            self._tables.write(entry.slot, entry.table_len, table)
            entry.table_len = len(table)
            self._write_service_info(service_id, entry)
        else:
            entry.table_len = len(table)
            self._write_service_info(service_id, entry)
            self._tables.write(entry.slot, len(table), table)
        entry.table = tuple(table)

    def _target_slot(self, target_id: int) -> int:
        known = self._targets.get(target_id)
        return known[0] if known else layout.SLOT_NONE

    def _refresh_table_hints(self, target_id: int) -> None:
        """A target got or lost its slot: rewrite the slot hints of the tables that name it."""
        for entry in self._services.values():
            if target_id in entry.table:
                self._tables.rewrite(entry.slot, entry.table[: entry.table_len])

    def _mark_nat_source(self, address: IPAddress) -> None:
        """Set the address' bit in nat_sources (maps.h) before any return entry can name it."""
        bit = nat_source_bit(layout.addr_of(address))
        word = bit // 64
        bits = self._nat_source_words.get(word, 0) | (1 << (bit % 64))
        if bits != self._nat_source_words.get(word):
            self.maps["nat_sources"].update(_u32(word), bits.to_bytes(8, "little"))
            self._nat_source_words[word] = bits

    def _upsert_target(self, spec: TargetSpec) -> None:
        if not spec.dsr:
            self._mark_nat_source(spec.address)
        known = self._targets.get(spec.id)
        if known is None:
            slot = self._target_slots.allocate(spec.id)
            self.maps["target_stats"].update(_u32(slot), bytes(layout.object_stats()))
        else:
            slot = known[0]
        self._targets[spec.id] = (slot, spec)
        self._write_target(slot, spec)
        self.maps["target_slots"].update(_u32(spec.id), _u32(slot))
        if known is None:
            self._refresh_table_hints(spec.id)

    def _write_target(self, slot: int, spec: TargetSpec) -> None:
        if spec.port is not None and not 0 <= spec.port <= 0xFFFF:
            raise XdpDataplaneError(f"target {spec.id}: bad port {spec.port}")
        if not 0 <= spec.id <= 0xFFFFFFFF:
            raise XdpDataplaneError(f"target id {spec.id} does not fit 32 bits")
        hop = spec.next_hop
        info = layout.target_info(
            addr=layout.addr_of(spec.address), id=spec.id, port=spec.port or 0,
            has_port=spec.port is not None, family=spec.address.version, dsr=spec.dsr,
            return_port=spec.return_match is ReturnMatch.DST_PORT,
            usable=spec.state in _USABLE_STATES and hop is not None, state=int(spec.state), in_use=1,
        )
        if hop is not None:
            info.ifindex = hop.ifindex
            info.dst_mac = layout.mac_array(hop.dst_mac)
            info.src_mac = layout.mac_array(hop.src_mac)
        self.maps["targets"].update(_u32(slot), bytes(info))

    def _update_target(self, target_id: int, *, state: TargetState | None = None,
                       next_hop: NextHop | None = None, set_next_hop: bool = False) -> None:
        known = self._targets.get(target_id)
        if known is None:
            return  # as the reference: a change for an unknown target is ignored
        slot, spec = known
        spec = TargetSpec(spec.id, spec.address, spec.port, spec.dsr, spec.return_match, spec.weight,
                          spec.state if state is None else state,
                          next_hop if set_next_hop else spec.next_hop)
        self._targets[target_id] = (slot, spec)
        self._write_target(slot, spec)

    def _remove_target(self, target_id: int) -> None:
        known = self._targets.pop(target_id, None)
        if known is None:
            return
        slot = known[0]
        self.maps["target_slots"].delete(_u32(target_id))
        self.maps["targets"].update(_u32(slot), bytes(layout.target_info()))
        self._target_slots.free(slot)
        self._refresh_table_hints(target_id)

    def _set_route(self, change: SetRoute) -> None:
        prefix = change.prefix
        mapped_bits = 96 if prefix.version == 4 else 0
        key = layout.route_key(prefixlen=32 + mapped_bits + prefix.prefixlen, family=prefix.version,
                               addr=layout.addr_of(prefix.network_address))
        routes = self.maps["routes"]
        if change.next_hop is None:
            routes.delete(bytes(key))
            self._routes.discard(bytes(key))
            return
        routes.update(bytes(key), bytes(_next_hop(change.next_hop)))
        self._routes.add(bytes(key))

    def _set_local(self, change: SetLocalAddress) -> None:
        key = _addr_key(change.address.packed, change.address.version)
        if change.present:
            self.maps["local_addrs"].update(key, _u32(1))
            self._local.add(key)
        else:
            self.maps["local_addrs"].delete(key)
            self._local.discard(key)

    def reset(self) -> None:
        """Back to the freshly loaded state (no services, targets, routes, sessions; counters 0),
        without reloading the program: tests reuse one verified object."""
        for service_id in list(self._services):
            self._remove_service(service_id)
        for target_id in list(self._targets):
            self._remove_target(target_id)
        for key in list(self._routes):
            self.maps["routes"].delete(key)
        for key in list(self._local):
            self.maps["local_addrs"].delete(key)
        self._routes.clear()
        self._local.clear()
        for name in ("sessions", "nat_returns", "target_slots", "vips"):
            bpf_map = self.maps[name]
            for key in list(bpf_map.keys()):
                bpf_map.delete(key)
        counters = self.maps["counters"]
        for index in range(len(layout.COUNTER_NAMES)):
            counters.update(_u32(index), bytes(8))
        self._service_slots = SlotAllocator(self.sizes.services)
        self._target_slots = SlotAllocator(self.sizes.targets)
        self._tables = TableWriter(self.maps["tables"], layout.TABLE_MAX, self._target_slot)
        self._service_table.clear()
        self._key_owner.clear()
        self._vips.clear()
        for word in self._nat_source_words:
            self.maps["nat_sources"].update(_u32(word), bytes(8))
        self._nat_source_words.clear()
        self.drain_session_events()
        self._rand32 = None

    # --- the data path -----------------------------------------------------------------------------

    def inject_rand32(self, value: int | None) -> None:
        """Test objects: the rand32 the next run()s use (None: the kernel's bpf_get_prandom_u32)."""
        if not self.test_inputs:
            raise XdpDataplaneError("rand32 can only be injected into an object loaded with test_inputs")
        self._rand32 = None if value is None else value & 0xFFFFFFFF

    def run(self, frame: bytes, ingress_ifindex: int, now_ns: int) -> Result:
        """One frame through the program (BPF_PROG_TEST_RUN); the ingress interface must exist."""
        if len(frame) < ETH_HLEN:
            raise FrameTooShort(f"a {len(frame)}-byte frame cannot reach XDP (shorter than {ETH_HLEN} bytes)")
        if self.test_inputs:
            inputs = layout.test_inputs(now_ns=now_ns & 0xFFFFFFFFFFFFFFFF, rand32=self._rand32 or 0,
                                        rand_set=self._rand32 is not None)
            self.maps["test_inputs"].update(_u32(0), bytes(inputs))
        egress = self.maps["last_egress"]
        egress.update(_u32(0), _u32(0))
        outcome = self.program.test_run(frame, ingress_ifindex)
        self._ring.poll(0)
        verdict = Verdict(outcome.retval) if outcome.retval <= Verdict.REDIRECT else Verdict.ABORTED
        ifindex: int | None = None
        if verdict in (Verdict.TX, Verdict.REDIRECT):
            values = egress.lookup_percpu(_u32(0)) or []
            ifindex = next((v for v in (int.from_bytes(b, "little") for b in values) if v), None)
        return Result(verdict, outcome.data, ifindex)

    # --- inspection --------------------------------------------------------------------------------

    def stats(self) -> Mapping[str, int]:
        counters = self.maps["counters"]
        result: dict[str, int] = {}
        for index, name in enumerate(layout.COUNTER_NAMES):
            values = counters.lookup_percpu(_u32(index)) or []
            result[name] = sum(int.from_bytes(v, "little") for v in values)
        return result

    def _object_stats(self, map_name: str, slot: int | None) -> Mapping[str, int]:
        total = {"packets": 0, "bytes": 0, "sessions_new": 0}
        if slot is None:
            return total
        for raw in self.maps[map_name].lookup_percpu(_u32(slot)) or []:
            stats = layout.object_stats.from_buffer_copy(raw)
            total["packets"] += stats.packets
            total["bytes"] += stats.bytes
            total["sessions_new"] += stats.sessions_new
        return total

    def service_stats(self, service_id: int) -> Mapping[str, int]:
        entry = self._services.get(service_id)
        return self._object_stats("service_stats", entry.slot if entry and entry.spec else None)

    def target_stats(self, target_id: int) -> Mapping[str, int]:
        known = self._targets.get(target_id)
        return self._object_stats("target_stats", known[0] if known else None)

    def sessions(self) -> Sequence[SessionEntry]:
        found: list[SessionEntry] = []
        key_of, value_of = layout.SESSION_KEY.unpack, layout.SESSION_VALUE.unpack
        for raw_key, raw_value in self.maps["sessions"].items():
            client, service_id, client_port, family = key_of(raw_key)
            last_seen_ns, target_id = value_of(raw_value)
            address = IPv4Address(client[12:]) if family == 4 else IPv6Address(client)
            found.append(SessionEntry(service_id, address, client_port, target_id, last_seen_ns))
        return found

    def set_session_last_seen(self, entry: SessionEntry, last_seen_ns: int) -> bool:
        """Move a session's idle clock (tests of expiry against the production kernel clock)."""
        key = layout.session_key(client=layout.addr_of(entry.client), service_id=entry.service_id,
                                 client_port=entry.client_port, family=entry.client.version)
        sessions = self.maps["sessions"]
        raw = sessions.lookup(bytes(key))
        if raw is None:
            return False
        value = layout.session_value.from_buffer_copy(raw)
        value.last_seen_ns = last_seen_ns
        sessions.update(bytes(key), bytes(value))
        return True

    def install_sessions(self, entries: Sequence[SessionEntry]) -> int:
        """Sessions from the peer (Dataplane.install_sessions): written with the target's slot, as the
        program writes them, so that the next packet of the flow is a hit on that target."""
        sessions = self.maps["sessions"]
        installed = 0
        for entry in entries:
            known = self._services.get(entry.service_id)
            slot = self._target_slot(entry.target_id)
            if known is None or known.spec is None or slot == layout.SLOT_NONE:
                continue
            key = bytes(layout.session_key(client=layout.addr_of(entry.client), service_id=entry.service_id,
                                           client_port=entry.client_port, family=entry.client.version))
            held = sessions.lookup(key)
            if held is not None and entry.last_seen_ns <= _last_seen(held):
                continue
            sessions.update(key, bytes(layout.session_value(last_seen_ns=entry.last_seen_ns,
                                                            target_id=entry.target_id, target_slot=slot)))
            installed += 1
        return installed

    def _on_event(self, record: bytes) -> None:
        if len(record) < ctypes.sizeof(layout.session_event):
            return
        event = layout.session_event.from_buffer_copy(record)
        self._events.append(SessionEntry(event.service_id, layout.address_from(event.client, event.family),
                                         event.client_port, event.target_id, event.last_seen_ns))

    def poll_session_events(self, timeout_ms: int = 0) -> int:
        return self._ring.poll(timeout_ms)

    def drain_session_events(self) -> list[SessionEntry]:
        """New and moved sessions since the last call, from the ring buffer."""
        self._ring.poll(0)
        events, self._events = self._events, []
        return events

    # --- attach, pin, close ------------------------------------------------------------------------

    def attach(self, interface: str | int, mode: str = "auto") -> Attachment:
        """Attach to an interface (name or index): native mode, else generic with a warning."""
        ifindex = interface if isinstance(interface, int) else socket.if_nametoindex(interface)
        attachment = xdp_attach(ifindex, self.program, mode)
        if attachment.message:
            log.warning("%s", attachment.message)
        self._attachments[ifindex] = attachment
        return attachment

    def detach(self, interface: str | int | None = None) -> None:
        """Detach from one interface, or from all when `interface` is None."""
        if interface is None:
            targets = list(self._attachments)
        else:
            targets = [interface if isinstance(interface, int) else socket.if_nametoindex(interface)]
        for ifindex in targets:
            attachment = self._attachments.pop(ifindex, None)
            if attachment is not None:
                xdp_detach(attachment)

    @property
    def attachments(self) -> tuple[Attachment, ...]:
        return tuple(self._attachments.values())

    def pin(self, directory: Path | None = None) -> Path:
        """Pin every map and the program under the instance's bpf dir (/sys/fs/bpf/dsrlb/<instance>)."""
        target = directory or instance_paths(self.instance).bpf_dir
        target.mkdir(parents=True, exist_ok=True)
        for name, bpf_map in self.maps.items():
            bpf_map.pin(target / name)
        self.program.pin(target / PROGRAM_PIN_NAME)
        self._pinned = target
        return target

    def unpin(self) -> None:
        """Remove the pins made by pin() and the directory if it is left empty."""
        target = self._pinned
        if target is None:
            return
        for name, bpf_map in self.maps.items():
            if (target / name).exists():
                bpf_map.unpin(target / name)
        if (target / PROGRAM_PIN_NAME).exists():
            self.program.unpin(target / PROGRAM_PIN_NAME)
        if target.exists() and not any(target.iterdir()):
            shutil.rmtree(target, ignore_errors=True)
        self._pinned = None

    def close(self) -> None:
        try:
            self.detach()
            self.unpin()
        finally:
            self._ring.close()
            self._obj.close()

    def __enter__(self) -> XdpDataplane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- encoding helpers --------------------------------------------------------------------------------


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def _service_key(key: ServiceKey) -> layout.service_key:
    return layout.service_key(addr=layout.addr_of(key.address), port=key.port, protocol=key.protocol,
                              family=key.address.version)


def _addr_key(packed: bytes, family: int) -> bytes:
    return bytes(layout.addr_key(addr=layout.addr_of_packed(packed), family=family))


def _next_hop(hop: NextHop) -> layout.next_hop:
    return layout.next_hop(ifindex=hop.ifindex, dst_mac=layout.mac_array(hop.dst_mac),
                           src_mac=layout.mac_array(hop.src_mac))


def _return_vip(spec: ServiceSpec, key: ServiceKey) -> IPAddress:
    """The VIP a NAT return entry made through `key` restores: the reference's _vip_of rule (the first
    key of the service with this protocol and this port or port 0), evaluated for the key's port."""
    for candidate in spec.keys:
        if candidate.protocol == key.protocol and candidate.port in (key.port, 0):
            return candidate.address
    return spec.keys[0].address


def _last_seen(raw_session_value: bytes) -> int:
    return int(layout.session_value.from_buffer_copy(raw_session_value).last_seen_ns)
