"""Native XDP on the lab's veth links: the far end of each balancer link is made to behave like a wire.

Two things differ between a veth and a real NIC on a wire, and both break native XDP (generic mode
is not affected: it works on the skb, which keeps its metadata).

**Delivery.** A frame that the balancer's XDP program sends with XDP_TX (or XDP_REDIRECT to another veth)
does not go through the stack: the veth driver (drivers/net/veth.c) puts the xdp_frame straight into
a ring of the *peer* device's receive queue, which only the peer's NAPI instance drains. Two rules of
the driver decide whether that happens (Linux 6.x):

1. `veth_xdp_xmit` refuses the frames (counted `rx_queue_N_xdp_tx_errors` by `ethtool -S` on the
   balancer's side, and `dropped` on the peer) unless the peer's queue has NAPI enabled. NAPI is
   enabled by an XDP program on the peer, by GRO (`ethtool -K PEER gro on`) or by threaded NAPI.
2. After XDP_TX, `veth_xdp_flush` kicks the peer's NAPI only when the peer's queue has an XDP
   program (`if (!rcu_access_pointer(rcv_rq->xdp_prog)) goto out`). With GRO alone the frames are
   accepted (`xdp_tx` counts them, no error) but sit in the ring: nothing schedules the peer's NAPI
   (the balancer's own skbs bypass that ring, since TSO makes them ineligible for GRO).

So GRO on the peer turns the errors into silent loss; an XDP program on the peer makes the driver
both accept and deliver the frames. The program here returns XDP_PASS: the peer builds an skb from
each frame and hands it to its stack (the bridge port of the lab's switch), as for any frame.

The program is two instructions loaded with `bpf_prog_load` (no object file, no compiler), attached
in native mode; it lives as long as the interface (the lab deletes it with its namespace).

**Checksums.** A local sender on a veth leaves the TCP/UDP checksum to "the hardware"
(CHECKSUM_PARTIAL: the field holds only the pseudo-header sum, the skb says where to finish it), and
the veth never finishes it: the receiver trusts the skb's flag instead. Native XDP sees bytes, not
the skb, so the frame it sends with XDP_TX/REDIRECT arrives as a new skb with an unfinished checksum
and the target drops it (tcpdump on the target: `cksum 0xfe43 (incorrect -> 0xfb4d)`), DSR frames as
much as NAT-rewritten ones (whose incremental update also assumes a finished checksum, RFC 1624).
On a wire every checksum is finished. So the peer's transmit checksum offload is turned off (what
`ethtool -K PEER tx off` does): a bridge forwarding a partial frame out of that port finishes the
checksum in software (validate_xmit_skb -> skb_checksum_help), and the balancer receives wire frames.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

from dsrlb.netlink import run_in_netns

BPF_PROG_TYPE_XDP = 6
XDP_FLAGS_DRV_MODE = 1 << 2
# struct bpf_insn[2]: r0 = XDP_PASS (BPF_ALU64 | BPF_MOV | BPF_K, imm 2); exit (BPF_JMP | BPF_EXIT).
XDP_PASS_PROGRAM = bytes.fromhex("b700000002000000" "9500000000000000")
PROGRAM_NAME = b"dsrlb_lab_pass"  # at most 15 characters (BPF_OBJ_NAME_LEN - 1)
SIOCETHTOOL = 0x8946
ETHTOOL_GTXCSUM = 0x16  # legacy ethtool commands, still mapped to the NETIF_F_CSUM_MASK features
ETHTOOL_STXCSUM = 0x17

_PROG_LOAD = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p,
                              ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, use_errno=True)
_XDP_ATTACH = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p,
                               use_errno=True)


class XdpPeerError(RuntimeError):
    """The XDP_PASS program could not be loaded or attached, or the checksum offload not changed."""


def _libbpf() -> ctypes.CDLL:
    try:
        from dsrlb.xdp.libbpf import library
    except ImportError as exc:  # pragma: no cover - the package always ships the binding
        raise XdpPeerError(f"no libbpf binding: {exc}") from exc
    try:
        return library().lib
    except Exception as exc:
        raise XdpPeerError(f"libbpf is not available: {exc}") from exc


def load_pass_program() -> int:
    """A new XDP_PASS program; returns its fd (the caller closes it)."""
    lib = _libbpf()
    prog_load = _PROG_LOAD(("bpf_prog_load", lib))
    insns = ctypes.create_string_buffer(XDP_PASS_PROGRAM, len(XDP_PASS_PROGRAM))
    fd = prog_load(BPF_PROG_TYPE_XDP, PROGRAM_NAME, b"GPL", ctypes.cast(insns, ctypes.c_void_p),
                   len(XDP_PASS_PROGRAM) // 8, None)
    if fd < 0:
        raise XdpPeerError(f"load the XDP_PASS program: {os.strerror(-fd)}")
    return int(fd)


def attach_pass_program(netns: str | None, ifname: str) -> None:
    """Attach an XDP_PASS program in native mode to `ifname` in `netns` (see the module docstring)."""
    lib = _libbpf()
    xdp_attach = _XDP_ATTACH(("bpf_xdp_attach", lib))
    fd = load_pass_program()
    try:
        def attach() -> int:
            index = _ifindex(ifname)
            return int(xdp_attach(index, fd, XDP_FLAGS_DRV_MODE, None))

        result = run_in_netns(netns, attach)
        if result < 0:
            raise XdpPeerError(f"attach XDP_PASS to {ifname} in {netns}: {os.strerror(-result)}")
    finally:
        os.close(fd)  # the attachment holds the program from now on


def _ifindex(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)  # in the calling thread's namespace
    except OSError as exc:
        raise XdpPeerError(f"no interface {ifname}: {exc}") from exc


def _ethtool_value(ifname: str, command: int, data: int = 0) -> int:
    """One SIOCETHTOOL call with a struct ethtool_value {u32 cmd; u32 data}; returns data."""
    value = ctypes.create_string_buffer(struct.pack("II", command, data), 8)
    request = struct.pack("16sP", ifname.encode(), ctypes.addressof(value))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, request)
    return int(struct.unpack("II", value.raw)[1])


def set_tx_checksum(netns: str | None, ifname: str, enabled: bool) -> None:
    """`ethtool -K IFNAME tx on|off` in `netns` (see the module docstring, Checksums)."""
    def change() -> None:
        _ethtool_value(ifname, ETHTOOL_STXCSUM, int(enabled))

    try:
        run_in_netns(netns, change)
    except OSError as exc:
        raise XdpPeerError(f"tx checksum offload of {ifname} in {netns}: {exc}") from exc


def tx_checksum(netns: str | None, ifname: str) -> bool:
    try:
        return bool(run_in_netns(netns, lambda: _ethtool_value(ifname, ETHTOOL_GTXCSUM)))
    except OSError as exc:
        raise XdpPeerError(f"tx checksum offload of {ifname} in {netns}: {exc}") from exc


def prepare_peer(netns: str, ifname: str) -> None:
    """Make the far end of a balancer's veth link fit for native XDP: delivery and checksums."""
    attach_pass_program(netns, ifname)
    set_tx_checksum(netns, ifname, False)
