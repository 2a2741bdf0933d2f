"""The AF_PACKET engine: the reference data path on raw sockets (BalanceNG's "access raw" mode).

One packet socket per balancer interface receives the frames of that interface; each frame goes
through a `Dataplane` (the reference) and TX/REDIRECT results are sent out of the egress interface's
socket. The kernel still gets its own copy of every frame (packet taps run before the IP stack), so
the balanced VIP traffic is kept from the stack by `steal.KernelSteal` (an nftables rule in the raw
prerouting hook, which runs after the taps); everything else is the kernel's, as with XDP_PASS.

Speed (docs/afpacket.md has the figures): frames arrive through a PACKET_MMAP ring (`ring.RxRing`,
TPACKET_V2), so a busy loop reads shared memory instead of making a recvmsg call per frame; a
classic-BPF socket filter (`sockfilter`) lets up only frames the data path acts on (to a VIP, from a
NAT target, ICMP), once `apply` has told the engine the addresses; the frames of one batch share one
`now`. Because of the filter, the data path's `rx`/`pass` counters count only the frames let up.

Two things the raw socket hides are restored from the slot header (the PACKET_AUXDATA fields, see
packet(7)) before the data path sees a frame, so that it sees the frame as it was on the wire:
- a VLAN tag the driver stripped into skb metadata is re-inserted;
- a frame from a local sender on a veth may carry a partial checksum (CHECKSUM_PARTIAL: the L4
  checksum field holds only the pseudo-header sum, TP_STATUS_CSUMNOTREADY); it is completed here,
  since a frame we forward leaves through a packet socket and nobody would complete it later.
"""

from __future__ import annotations

import fcntl
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from dsrlb.afpacket.checksum_fix import complete_partial_checksum
from dsrlb.afpacket.ring import (
    PKTTYPE_OFFSET,
    SLOT_HEADER,
    TP_STATUS_COPY,
    TP_STATUS_USER,
    RingGeometry,
    RxRing,
)
from dsrlb.afpacket.sockfilter import BalancedAddresses, Insn, install
from dsrlb.engine.dataplane import Change, Dataplane, Verdict

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
PACKET_OTHERHOST = 3
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
_RESTORE = TP_STATUS_CSUMNOTREADY | TP_STATUS_VLAN_VALID
_RELEASE = b"\x00\x00\x00\x00"
SIOCGIFMTU = 0x8921
_BATCH = 256  # frames read from one ring before looking at the others (and sharing one `now`)
DEFAULT_RING_BYTES = 8 << 20  # per interface: 4096 slots of 2 KiB, a burst of ~40 ms at 100 kpps


@dataclass
class EngineCounters:
    """Engine-level counters, beside the data path's own (`Dataplane.stats()`)."""

    rx: int = 0
    tx: int = 0
    tx_errors: int = 0
    no_egress_socket: int = 0
    checksum_completed: int = 0
    vlan_restored: int = 0
    ignored_otherhost: int = 0
    ring_drops: int = 0  # frames the kernel dropped because a ring was full
    oversize_copied: int = 0  # frames larger than a slot, read whole from the receive queue
    truncated_dropped: int = 0  # frames larger than a slot whose whole copy the kernel could not queue
    filter_updates: int = 0
    filter_fallbacks: int = 0  # a narrow filter the kernel refused: all IP is let up instead

    def as_dict(self) -> dict[str, int]:
        return {f"afpacket_{k}": v for k, v in vars(self).items()}


@dataclass
class _Port:
    name: str
    ifindex: int
    sock: socket.socket
    ring: RxRing


def interface_mtu(name: str) -> int:
    """The interface's MTU (SIOCGIFMTU), 1500 when it cannot be read."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            answer = fcntl.ioctl(probe.fileno(), SIOCGIFMTU, struct.pack("16si", name.encode()[:15], 0))
        except OSError:
            return 1500
    return int(struct.unpack("16si", answer)[1])


@dataclass
class AfPacketEngine:
    """Runs `dataplane` over packet sockets on `interfaces` until `stop()`.

    `apply`, `stats` and `sessions` of the data path are called from other threads through `lock`;
    the receive loop holds it per batch, not per frame. Changes should go through `apply`, which
    also narrows the socket filters to the balanced addresses.
    """

    dataplane: Dataplane
    interfaces: Sequence[str]
    clock_ns: Callable[[], int] = time.monotonic_ns
    counters: EngineCounters = field(default_factory=EngineCounters)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ring_bytes: int = DEFAULT_RING_BYTES
    addresses: BalancedAddresses = field(default_factory=BalancedAddresses)
    _ports: dict[int, _Port] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def open(self) -> None:
        program = self.addresses.program()
        for name in self.interfaces:
            try:
                self._ports[socket.if_nametoindex(name)] = self._open_port(name, program)
            except OSError:
                self.close()
                raise

    def _open_port(self, name: str, program: Sequence[Insn]) -> _Port:
        ifindex = socket.if_nametoindex(name)
        # Protocol 0: the socket receives nothing until bind, so no frame of another interface (or
        # one the filter would refuse) slips in while it is being set up.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            if not install(sock, program):
                self.counters.filter_fallbacks += 1
            ring = RxRing(sock, RingGeometry.for_mtu(interface_mtu(name), self.ring_bytes))
            try:
                sock.bind((name, ETH_P_ALL))
                sock.setblocking(False)
            except OSError:
                ring.close()
                raise
        except OSError:
            sock.close()
            raise
        return _Port(name, ifindex, sock, ring)

    def close(self) -> None:
        for port in self._ports.values():
            port.ring.close()
            port.sock.close()
        self._ports.clear()

    def start(self) -> None:
        """Open the sockets (if needed) and run the receive loop in a daemon thread."""
        if not self._ports:
            self.open()
        self._stop.clear()
        self._thread = threading.Thread(target=self.run_forever, name="dsrlb-afpacket", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.close()

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply `changes` to the data path and follow the balanced addresses in the socket filters."""
        with self.lock:
            self.dataplane.apply(changes)
            if self.addresses.apply(changes) and self._ports:
                program = self.addresses.program()
                for port in self._ports.values():
                    if not install(port.sock, program):  # an atomic replacement (SO_ATTACH_FILTER)
                        self.counters.filter_fallbacks += 1
                self.counters.filter_updates += 1

    def stats(self) -> Mapping[str, int]:
        with self.lock:
            merged = dict(self.dataplane.stats())
            self.counters.ring_drops = sum(port.ring.collect_drops() for port in self._ports.values())
        merged.update(self.counters.as_dict())
        return merged

    def run_forever(self) -> None:
        with selectors.DefaultSelector() as sel:
            for port in self._ports.values():
                sel.register(port.sock, selectors.EVENT_READ, port)
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    self._drain(key.data)

    def _drain(self, port: _Port) -> None:
        """Up to _BATCH frames from the port's ring through the data path, in ring order."""
        ring = port.ring
        ring_map = ring.map
        slot_size, slots = ring.geometry.slot_size, ring.geometry.slots
        unpack = SLOT_HEADER.unpack_from
        counters = self.counters
        with self.lock:
            now = self.clock_ns()
            position = ring.position
            for _ in range(_BATCH):
                offset = position * slot_size
                status, _len, snaplen, mac, _net, _sec, _nsec, tci, tpid = unpack(ring_map, offset)
                if not status & TP_STATUS_USER:
                    break
                pkttype = ring_map[offset + PKTTYPE_OFFSET]
                frame: bytes | None = ring_map[offset + mac : offset + mac + snaplen]
                if status & TP_STATUS_COPY:
                    frame = ring.read_copy()  # the whole frame; the slot holds a truncated copy
                ring_map[offset : offset + 4] = _RELEASE  # the slot is the kernel's again
                position = position + 1 if position + 1 < slots else 0
                if frame is None:
                    counters.truncated_dropped += 1
                    continue
                if status & TP_STATUS_COPY:
                    counters.oversize_copied += 1
                if pkttype == PACKET_OUTGOING:
                    continue
                if pkttype == PACKET_OTHERHOST:
                    counters.ignored_otherhost += 1
                    continue
                counters.rx += 1
                if status & _RESTORE:
                    frame = self._restore(frame, status, tci, tpid)
                self._forward(frame, port.ifindex, now)
            ring.position = position

    def _restore(self, data: bytes, status: int, tci: int, tpid: int) -> bytes:
        if status & TP_STATUS_VLAN_VALID:
            if not status & TP_STATUS_VLAN_TPID_VALID:
                tpid = 0x8100
            data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
            self.counters.vlan_restored += 1
        if status & TP_STATUS_CSUMNOTREADY:
            fixed = complete_partial_checksum(data)
            if fixed is not None:
                data = fixed
                self.counters.checksum_completed += 1
        return data

    def _forward(self, frame: bytes, ingress: int, now: int) -> None:
        result = self.dataplane.run(frame, ingress, now)
        if result.verdict == Verdict.TX:
            egress = ingress
        elif result.verdict == Verdict.REDIRECT and result.ifindex is not None:
            egress = result.ifindex
        else:
            return  # PASS: the kernel has its own copy; DROP: nothing to do
        port = self._ports.get(egress)
        if port is None:
            self.counters.no_egress_socket += 1
            return
        try:
            port.sock.send(result.frame)
            self.counters.tx += 1
        except OSError:  # ENOBUFS, EMSGSIZE (a frame over the MTU), ENETDOWN ...: counted, never raised
            self.counters.tx_errors += 1
