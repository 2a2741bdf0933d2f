"""A PACKET_MMAP receive ring (TPACKET_V2) on a packet socket: frames without a system call each.

packet(7) and Documentation/networking/packet_mmap.rst: the kernel copies each frame the socket
filter accepts into the next free slot of a ring shared with user space and flips the slot's status
to TP_STATUS_USER; we read the slots in order and hand each back by writing TP_STATUS_KERNEL. While
frames keep coming the loop reads memory only; poll(2) on the socket wakes it when the slot before
the kernel's position is ours.

TPACKET_V2 rather than V3: V3 hands over whole blocks, and a block is only retired when full or when
its timer (milliseconds) fires, which would add that much latency to every balanced packet at low
rates. V2 wakes per frame. The slot header carries what PACKET_AUXDATA gives on recvmsg (status
with the CSUMNOTREADY and VLAN flags, the VLAN TCI and TPID) plus the sockaddr_ll (packet type).

A frame larger than a slot is copied truncated with TP_STATUS_COPY, and with PACKET_COPY_THRESH set
the whole frame is also queued on the socket's ordinary receive queue, where `read_copy` gets it.
"""

from __future__ import annotations

import mmap
import socket
import struct
from dataclasses import dataclass

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_COPY_THRESH = 7
PACKET_VERSION = 10
TPACKET_V2 = 1

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1 << 0
TP_STATUS_COPY = 1 << 1
TP_STATUS_LOSING = 1 << 2

# struct tpacket2_hdr: status, len, snaplen, mac, net, sec, nsec, vlan_tci, vlan_tpid (+4 padding);
# struct sockaddr_ll follows at TPACKET_ALIGN(32) = 32, its sll_pkttype 10 bytes in.
SLOT_HEADER = struct.Struct("IIIHHIIHH")
PKTTYPE_OFFSET = 32 + 10
_RELEASE = b"\x00\x00\x00\x00"
_TPACKET_REQ = struct.Struct("IIII")  # block_size, block_nr, frame_size, frame_nr
_TPACKET_STATS = struct.Struct("II")  # packets, drops (both reset by reading)

# The frame starts at TPACKET_ALIGN(TPACKET2_HDRLEN + 16) - 14 = 66 bytes into its slot; a 2048-byte
# slot holds frames up to 1982 bytes (a 1500-byte MTU plus a VLAN tag, with room to spare).
SLOT_FRAME_OFFSET = 66
MIN_SLOT = 2048
BLOCK_SIZE = 1 << 16


@dataclass(frozen=True)
class RingGeometry:
    slot_size: int
    slots: int

    @property
    def bytes(self) -> int:
        return self.slot_size * self.slots

    @classmethod
    def for_mtu(cls, mtu: int, ring_bytes: int) -> RingGeometry:
        """Slots that hold a full frame at `mtu` (with a VLAN tag), as many as fit in `ring_bytes`."""
        slot = MIN_SLOT
        while slot - SLOT_FRAME_OFFSET < mtu + 18 and slot < BLOCK_SIZE:
            slot *= 2
        blocks = max(ring_bytes // BLOCK_SIZE, 1)
        return cls(slot, blocks * (BLOCK_SIZE // slot))


class RxRing:
    """The mapped ring of one packet socket; `position` is the next slot to read."""

    def __init__(self, sock: socket.socket, geometry: RingGeometry) -> None:
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        # Frames larger than a slot also go, whole, to the ordinary receive queue (read_copy).
        sock.setsockopt(SOL_PACKET, PACKET_COPY_THRESH, 1)
        request = _TPACKET_REQ.pack(BLOCK_SIZE, geometry.bytes // BLOCK_SIZE, geometry.slot_size,
                                    geometry.slots)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, request)
        self.sock = sock
        self.geometry = geometry
        self.map = mmap.mmap(sock.fileno(), geometry.bytes)
        self.position = 0
        self.drops = 0  # frames the kernel dropped because the ring was full

    def close(self) -> None:
        self.map.close()

    def release(self, offset: int) -> None:
        self.map[offset : offset + 4] = _RELEASE

    def read_copy(self) -> bytes | None:
        """The whole frame of a TP_STATUS_COPY slot, from the socket's receive queue."""
        try:
            return self.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return None

    def collect_drops(self) -> int:
        """Add the kernel's drop count since the last call (PACKET_STATISTICS resets on read)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
        _packets, drops = _TPACKET_STATS.unpack(raw)
        self.drops += drops
        return self.drops
