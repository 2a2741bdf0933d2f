"""A classic-BPF socket filter (SO_ATTACH_FILTER) that lets up only the frames the data path acts on.

Every frame the data path would PASS is the kernel's anyway (packet taps get a copy, the stack keeps
the original), so the AF_PACKET engine need not see it. What it must see (docs/datapath.md):

- IPv4/IPv6 to a VIP, any protocol: balanced traffic, and fragments or malformed packets to a VIP,
  which the data path drops;
- IPv4/IPv6 from a NAT target's address: NAT return traffic (the return table is keyed on it);
- ICMP, and IPv6 whose first next-header is neither TCP nor UDP: ICMP errors about balanced flows
  (§5) are found by their quoted packet, and ICMPv6 may sit behind extension headers a classic filter
  cannot walk. Such traffic is rare, so letting all of it up costs nothing measurable.

One 802.1Q/802.1ad tag left in the frame is skipped (a tag the driver stripped into metadata is not
in the data the filter sees). The program keeps every conditional jump short (classic BPF jumps are
8-bit) by putting a local `ret` after each compare; the long ones are `ja` with a 32-bit offset.
Until the engine knows the balanced addresses (`BalancedAddresses.known`), or when the sets are too
large for one program (BPF_MAXINSNS, or the kernel's option memory: `install`), the filter lets up
all IPv4 and IPv6: wider, never wrong.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from dsrlb.engine.dataplane import (
    Change,
    IPAddress,
    RemoveService,
    RemoveTarget,
    UpsertService,
    UpsertTarget,
)

SO_ATTACH_FILTER = 26
BPF_MAXINSNS = 4096
ACCEPT = 0xFFFFFFFF  # the whole frame (the ring's slot size caps what is copied)
REJECT = 0

# Opcodes (linux/filter.h, linux/bpf_common.h).
LDH_ABS = 0x28  # A = u16 at k
LD_IND = 0x40  # A = u32 at X + k
LDB_IND = 0x50  # A = u8 at X + k
LDX_IMM = 0x01  # X = k
JA = 0x05  # pc += k
JEQ_K = 0x15  # pc += (A == k) ? jt : jf
RET_K = 0x06

ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD = 0x0800, 0x86DD, 0x8100, 0x88A8
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP = 1, 6, 17

_INSN = struct.Struct("HBBI")  # struct sock_filter


@dataclass(frozen=True)
class Insn:
    code: int
    jt: int = 0
    jf: int = 0
    k: int = 0

    def pack(self) -> bytes:
        return _INSN.pack(self.code, self.jt, self.jf, self.k)


class FilterTooLarge(ValueError):
    pass


def _words(address: IPAddress) -> tuple[int, ...]:
    packed = address.packed
    return tuple(int.from_bytes(packed[i : i + 4], "big") for i in range(0, len(packed), 4))


def _match_any(offset: int, addresses: Iterable[IPAddress]) -> list[Insn]:
    """`ret ACCEPT` when the address at X+offset is one of `addresses` (all of one family).

    One block per address: a load/compare pair per 32-bit word, then `ret ACCEPT`. A mismatch skips
    to the next block; a match falls through to the next word, and after the last to the `ret`.
    """
    out: list[Insn] = []
    for address in sorted(addresses, key=lambda a: a.packed):
        words = _words(address)
        for i, word in enumerate(words):
            out.append(Insn(LD_IND, k=offset + 4 * i))
            out.append(Insn(JEQ_K, 0, 2 * (len(words) - 1 - i) + 1, word))
        out.append(Insn(RET_K, k=ACCEPT))
    return out


def build_program(vips: Iterable[IPAddress] | None, nat_sources: Iterable[IPAddress] = ()) -> list[Insn]:
    """The filter program; `vips` None (not known yet) lets up all IPv4 and IPv6.

    A jump goes to pc + 1 + offset. Layout: head (ethertype into A, L3 offset into X), dispatch,
    then the IPv4 part and the IPv6 part, each ending in its own returns.
    """
    head = [
        Insn(LDH_ABS, k=12),  # 0
        Insn(JEQ_K, 3, 0, ETH_P_8021Q),  # 1: -> 5
        Insn(JEQ_K, 2, 0, ETH_P_8021AD),  # 2: -> 5
        Insn(LDX_IMM, k=14),  # 3
        Insn(JA, k=2),  # 4: -> 7
        Insn(LDH_ABS, k=16),  # 5: tagged: the inner ethertype, L3 four bytes further
        Insn(LDX_IMM, k=18),  # 6
    ]
    if vips is None:
        return [*head,
                Insn(JEQ_K, 2, 0, ETH_P_IP),  # 7: -> 10
                Insn(JEQ_K, 1, 0, ETH_P_IPV6),  # 8: -> 10
                Insn(RET_K, k=REJECT),  # 9
                Insn(RET_K, k=ACCEPT)]  # 10
    vip_set, source_set = set(vips), set(nat_sources)
    v4 = [
        *_match_any(16, (a for a in vip_set if isinstance(a, IPv4Address))),  # destination
        *_match_any(12, (a for a in source_set if isinstance(a, IPv4Address))),  # source
        Insn(LDB_IND, k=9),  # protocol
        Insn(JEQ_K, 0, 1, IPPROTO_ICMP),
        Insn(RET_K, k=ACCEPT),
        Insn(RET_K, k=REJECT),
    ]
    v6 = [
        Insn(LDB_IND, k=6),  # first next header
        Insn(JEQ_K, 2, 0, IPPROTO_TCP),
        Insn(JEQ_K, 1, 0, IPPROTO_UDP),
        Insn(RET_K, k=ACCEPT),  # ICMPv6, extension headers, anything else: rare, let it up
        *_match_any(24, (a for a in vip_set if isinstance(a, IPv6Address))),
        *_match_any(8, (a for a in source_set if isinstance(a, IPv6Address))),
        Insn(RET_K, k=REJECT),
    ]
    dispatch = [
        Insn(JEQ_K, 0, 1, ETH_P_IP),  # 7: -> 8, else -> 9
        Insn(JA, k=3),  # 8: -> 12, the IPv4 part
        Insn(JEQ_K, 1, 0, ETH_P_IPV6),  # 9: -> 11, else -> 10
        Insn(RET_K, k=REJECT),  # 10
        Insn(JA, k=len(v4)),  # 11: -> the IPv6 part
    ]
    program = [*head, *dispatch, *v4, *v6]
    if len(program) > BPF_MAXINSNS:
        raise FilterTooLarge(f"{len(program)} instructions (the kernel allows {BPF_MAXINSNS})")
    return program


def attach(sock: socket.socket, program: Sequence[Insn]) -> None:
    """Attach (or atomically replace) the socket's classic-BPF filter."""
    code = b"".join(insn.pack() for insn in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def install(sock: socket.socket, program: Sequence[Insn]) -> bool:
    """Attach `program`, or the all-IP program when the kernel refuses it; True when `program` is on.

    The kernel charges a filter (after its conversion to eBPF) to the socket's option memory
    (net.core.optmem_max), so a program within BPF_MAXINSNS may still be refused with ENOMEM.
    """
    try:
        attach(sock, program)
        return True
    except OSError:
        attach(sock, build_program(None))
        return False


@dataclass
class BalancedAddresses:
    """VIPs and NAT target addresses, followed from the same `Change`s the data path applies."""

    known: bool = False
    _service_vips: dict[int, frozenset[IPAddress]] = field(default_factory=dict)
    _nat_targets: dict[int, IPAddress] = field(default_factory=dict)

    def apply(self, changes: Sequence[Change]) -> bool:
        """Follow `changes`; True when the address sets (and so the filter) changed."""
        before = (self.known, self.vips, self.nat_sources)
        for change in changes:
            if isinstance(change, UpsertService):
                self._service_vips[change.spec.id] = frozenset(k.address for k in change.spec.keys)
            elif isinstance(change, RemoveService):
                self._service_vips.pop(change.service_id, None)
            elif isinstance(change, UpsertTarget):
                if change.spec.dsr:  # a DSR target answers the client itself: no return traffic
                    self._nat_targets.pop(change.spec.id, None)
                else:
                    self._nat_targets[change.spec.id] = change.spec.address
            elif isinstance(change, RemoveTarget):
                self._nat_targets.pop(change.target_id, None)
        self.known = True
        return before != (self.known, self.vips, self.nat_sources)

    @property
    def vips(self) -> frozenset[IPAddress]:
        return frozenset(a for group in self._service_vips.values() for a in group)

    @property
    def nat_sources(self) -> frozenset[IPAddress]:
        return frozenset(self._nat_targets.values())

    def program(self) -> list[Insn]:
        """The narrowest program that fits: by address when known and small enough, else all IP."""
        if not self.known:
            return build_program(None)
        try:
            return build_program(self.vips, self.nat_sources)
        except FilterTooLarge:
            return build_program(None)
