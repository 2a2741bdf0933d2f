"""The AF_PACKET engine: the reference data path on raw sockets (BalanceNG's "access raw" mode).

One SOCK_RAW packet socket per balancer interface receives every frame the interface receives; each
frame goes through a `Dataplane` (the reference) and TX/REDIRECT results are sent out of the egress
interface's socket. The kernel still gets its own copy of every frame (packet taps run before the IP
stack), so the balanced VIP traffic is kept from the stack by `steal.KernelSteal` (an nftables rule in
the raw prerouting hook, which runs after the taps); everything else is the kernel's, as with XDP_PASS.

Two things the raw socket hides are restored from PACKET_AUXDATA (packet(7)) before the data path sees
a frame, so that it sees the frame as it was on the wire:
- a VLAN tag the driver stripped into skb metadata is re-inserted;
- a frame from a local sender on a veth may carry a partial checksum (CHECKSUM_PARTIAL: the L4
  checksum field holds only the pseudo-header sum, TP_STATUS_CSUMNOTREADY); it is completed here,
  since a frame we forward leaves through a packet socket and nobody would complete it later.
"""

from __future__ import annotations

import errno
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from dsrlb.afpacket.checksum_fix import complete_partial_checksum
from dsrlb.engine.dataplane import Dataplane, Verdict

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
PACKET_OTHERHOST = 3
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
_AUXDATA = struct.Struct("IIIHHHH")  # struct tpacket_auxdata
_BATCH = 256  # frames read from one socket before looking at the others
_RCVBUF = 8 << 20


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

    def as_dict(self) -> dict[str, int]:
        return {f"afpacket_{k}": v for k, v in vars(self).items()}


@dataclass
class _Port:
    name: str
    ifindex: int
    sock: socket.socket


@dataclass
class AfPacketEngine:
    """Runs `dataplane` over raw sockets on `interfaces` until `stop()`.

    `apply`, `stats` and `sessions` of the data path are called from other threads through `lock`;
    the receive loop holds it per batch, not per frame.
    """

    dataplane: Dataplane
    interfaces: Sequence[str]
    clock_ns: Callable[[], int] = time.monotonic_ns
    counters: EngineCounters = field(default_factory=EngineCounters)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ports: dict[int, _Port] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def open(self) -> None:
        for name in self.interfaces:
            ifindex = socket.if_nametoindex(name)
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            try:
                sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
                sock.bind((name, ETH_P_ALL))
                sock.setblocking(False)
            except OSError:
                sock.close()
                self.close()
                raise
            self._ports[ifindex] = _Port(name, ifindex, sock)

    def close(self) -> None:
        for port in self._ports.values():
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

    def stats(self) -> Mapping[str, int]:
        with self.lock:
            merged = dict(self.dataplane.stats())
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
        with self.lock:
            for _ in range(_BATCH):
                try:
                    data, ancdata, _flags, address = port.sock.recvmsg(65536, 64)
                except BlockingIOError:
                    return
                except OSError as exc:
                    if exc.errno in (errno.ENETDOWN, errno.ENXIO):
                        return
                    raise
                pkttype = address[2]
                if pkttype == PACKET_OUTGOING:
                    continue
                if pkttype == PACKET_OTHERHOST:
                    self.counters.ignored_otherhost += 1
                    continue
                self.counters.rx += 1
                frame = self._restore(data, ancdata)
                self._forward(frame, port.ifindex)

    def _restore(self, data: bytes, ancdata: list[tuple[int, int, bytes]]) -> bytes:
        for level, kind, payload in ancdata:
            if level != SOL_PACKET or kind != PACKET_AUXDATA or len(payload) < _AUXDATA.size:
                continue
            status, _len, _snap, _mac, _net, tci, tpid = _AUXDATA.unpack_from(payload)
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

    def _forward(self, frame: bytes, ingress: int) -> None:
        result = self.dataplane.run(frame, ingress, self.clock_ns())
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
        except OSError:
            self.counters.tx_errors += 1
