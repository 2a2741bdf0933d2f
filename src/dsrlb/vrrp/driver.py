"""The VRRP network driver: one `VrrpRouter` on one interface, over raw IP sockets, on an asyncio loop.

The router (`machine.py`) decides; the driver owns the socket and the clock. It reads advertisements
with `loop.add_reader`, calls `router.timer` when `next_deadline` comes, sends what the router returns
with TTL / hop limit 255 (RFC 5798 §5.1.1.3, §5.1.2.3) and hands every event to `on_event`.

Clock: every `now` given to the router is `clock()` (default `time.monotonic`). The loop's clock is
used only to schedule: a deadline D is armed `D - clock()` seconds from now with `loop.call_later`,
so the loop's own time base never leaks into the router. With the default clock the two are the same
(asyncio's `loop.time()` is `time.monotonic()`); a timer that the loop runs a hair early finds the
router not yet due and is simply re-armed.

Sockets, opened in the calling thread's network namespace (a socket keeps it for life):

- IPv4: `SOCK_RAW` protocol 112 bound to the device, joined to 224.0.0.18. Received datagrams carry
  their IP header (TTL, source, destination). The socket is *not* bound to the primary address: a raw
  IPv4 socket bound to an address only receives datagrams addressed to it, never the group. The
  source is set per datagram with `IP_PKTINFO` instead.
- IPv6: `SOCK_RAW` protocol 112 bound to the device, joined to ff02::12. There is no IP header: the
  hop limit and destination arrive as `IPV6_HOPLIMIT` / `IPV6_PKTINFO` ancillary data and the source
  as the peer address. The source of sent datagrams is set per datagram with `IPV6_PKTINFO` too, so
  `start` does not fail while the link-local address is still tentative (DAD): the first sends do,
  counted, and later ones succeed. `IPV6_CHECKSUM` is left off: the codec computes the VRRPv3
  checksum with the pseudo-header (RFC 5798 §5.2.8) and the kernel must not touch it.

What the driver does not do: add or remove the virtual addresses and announce them (gratuitous ARP /
unsolicited NA, `announce.py`). That is the `on_event` consumer's job on `StateChanged`, after it has
added the addresses, so that the announcement never precedes the address (RFC 5798 §6.4.1).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from dsrlb.vrrp.codec import IPPROTO_VRRP, VRRP_TTL, IPAddress, group_address, readdress
from dsrlb.vrrp.machine import Event, Output, VrrpRouter

log = logging.getLogger("dsrlb.vrrp")

_RECV_SIZE = 65535
_BURST = 64  # datagrams read per readiness callback, so that a flooded link cannot starve the loop
_ANCILLARY = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(20)  # hop limit (int) + in6_pktinfo
IP_PKTINFO = 8  # linux/in.h; the socket module has it only from Python 3.14


class VrrpDriver:
    """Runs `router` on interface `ifname`; see the module docstring. Use from one event loop only."""

    def __init__(
        self, router: VrrpRouter, ifname: str, on_event: Callable[[Event], None], *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._router = router
        self._ifname = ifname
        self._on_event = on_event
        self._clock = clock
        self._family = router.config.family
        self._primary = router.config.primary_address
        self._group = group_address(self._family)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._ifindex = 0
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False
        self._send_errors = 0
        self._handler_errors = 0

    @property
    def router(self) -> VrrpRouter:
        return self._router

    @property
    def counters(self) -> dict[str, int]:
        """The router's counters plus `send_errors` and `handler_errors` (exceptions while handling a
        datagram or a timer, in `on_event`, or reading the socket): a copy."""
        return {**self._router.counters, "send_errors": self._send_errors,
                "handler_errors": self._handler_errors}

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the socket (in this thread's namespace), start the router and send what it says.

        Raises OSError when the interface is missing or the socket cannot be set up; nothing is left
        open then. A driver starts once.
        """
        if self._sock is not None or self._stopped:
            raise RuntimeError("a VrrpDriver starts once")
        loop = asyncio.get_running_loop()
        try:
            self._ifindex = socket.if_nametoindex(self._ifname)
            sock = self._open_v4() if self._family == 4 else self._open_v6()
        except OSError as exc:
            message = f"cannot open the VRRP socket on {self._ifname}: {exc.strerror or exc}"
            raise (OSError(message) if exc.errno is None else OSError(exc.errno, message)) from exc
        self._loop, self._sock = loop, sock
        # The reader first: whatever arrives from here on reaches the started router, since this
        # coroutine does not yield before `router.start`.
        loop.add_reader(sock.fileno(), self._on_readable)
        self._apply(self._router.start(self._clock()))
        self._rearm()

    async def stop(self) -> None:
        """Shut the router down (a master resigns with priority 0, RFC 5798 §6.4.3), send that, and
        close everything. Idempotent; a driver never started just becomes unusable."""
        if self._stopped:
            return
        self._stopped = True
        if self._sock is None:
            return
        try:
            self._apply(self._router.shutdown(self._clock()))
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()

    def set_priority(self, priority: int) -> None:
        """Change the effective priority (tracking); ValueError outside 1-255."""
        self._apply(self._router.set_priority(priority, self._clock()))
        self._rearm()

    # --- sockets --------------------------------------------------------------------------------

    def _open_v4(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self._ifname.encode())
            # struct ip_mreqn {group, local address, ifindex}: the index names the link unambiguously
            any_address = bytes(4)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                            struct.pack("=4s4si", self._group.packed, any_address, self._ifindex))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                            struct.pack("=4s4si", any_address, any_address, self._ifindex))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, VRRP_TTL)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, VRRP_TTL)  # unicast peers
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _open_v6(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_VRRP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self._ifname.encode())
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                            struct.pack("=16sI", self._group.packed, self._ifindex))
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self._ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, VRRP_TTL)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, VRRP_TTL)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _send(self, packet: bytes) -> None:
        sock = self._sock
        if sock is None:
            return
        peers = self._router.config.unicast_peers
        for dst in peers or (self._group,):
            # unicast: the router's packet is addressed to the group; a v3 checksum must be redone
            data = readdress(packet, src=self._primary, dst=dst) if peers else packet
            try:
                if self._family == 4:
                    # struct in_pktinfo {ifindex, spec_dst (our source), addr (unused on send)}
                    info = struct.pack("=i4s4s", self._ifindex, self._primary.packed, bytes(4))
                    sock.sendmsg([data], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, (str(dst), 0))
                else:
                    info = struct.pack("=16si", self._primary.packed, self._ifindex)  # struct in6_pktinfo
                    sock.sendmsg([data], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)], 0,
                                 (str(dst), 0, 0, self._ifindex))
            except OSError as exc:
                self._send_errors += 1
                log.warning("VRRP vrid %d: sending to %s on %s failed: %s (send errors: %d)",
                            self._router.config.vrid, dst, self._ifname, exc, self._send_errors)

    # --- the loop's callbacks -----------------------------------------------------------------

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(_BURST):
            try:
                if self._family == 4:
                    data, _address = sock.recvfrom(_RECV_SIZE)
                    ancillary: list[tuple[int, int, bytes]] = []
                else:
                    data, ancillary, _flags, _address = sock.recvmsg(_RECV_SIZE, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. a pending ICMP error; reported once by the kernel
                self._handler_errors += 1
                log.warning("VRRP vrid %d: reading on %s failed: %s", self._router.config.vrid,
                            self._ifname, exc)
                break
            try:
                src: IPAddress
                dst: IPAddress | None
                if self._family == 4:
                    payload, src, dst, ttl = _parse_ipv4(data)
                else:
                    payload, src = data, _peer_v6(_address)
                    dst, ttl = _ancillary_v6(ancillary)
                if dst == self._group:
                    dst = None  # the router's default: the group (its v3 checksum pseudo-header)
                self._apply(self._router.receive(payload, src, ttl, self._clock(), dst=dst))
            except Exception:  # one bad datagram (or driver bug) must not kill the driver
                self._handler_errors += 1
                log.exception("VRRP vrid %d: handling a datagram on %s failed", self._router.config.vrid,
                              self._ifname)
        self._rearm()

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self._apply(self._router.timer(self._clock()))
        except Exception:
            self._handler_errors += 1
            log.exception("VRRP vrid %d: the timer failed", self._router.config.vrid)
        finally:
            self._rearm()

    def _apply(self, output: Output) -> None:
        # packets first: on becoming master, RFC 5798 §6.4.1 sends the advertisement before the
        # announcements, which the event's consumer makes
        for packet in output.packets:
            self._send(packet)
        for event in output.events:
            try:
                self._on_event(event)
            except Exception:
                self._handler_errors += 1
                log.exception("VRRP vrid %d: the event handler failed on %r", self._router.config.vrid, event)

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._router.next_deadline
        if deadline is None or self._loop is None or self._stopped:
            return
        self._timer = self._loop.call_later(max(0.0, deadline - self._clock()), self._on_timer)


def _parse_ipv4(data: bytes) -> tuple[bytes, IPv4Address, IPv4Address | None, int]:
    """(payload, source, destination, TTL) of a raw IPv4 datagram, header included (RFC 791 §3.1)."""
    ihl = (data[0] & 0x0F) * 4 if data else 0
    if len(data) < 20 or ihl < 20 or len(data) < ihl or data[9] != IPPROTO_VRRP:
        raise ValueError(f"not an IPv4 VRRP datagram ({len(data)} bytes)")
    total = int.from_bytes(data[2:4], "big")
    end = total if ihl <= total <= len(data) else len(data)
    return data[ihl:end], IPv4Address(data[12:16]), IPv4Address(data[16:20]), data[8]


def _peer_v6(address: tuple[str, int, int, int]) -> IPv6Address:
    # Python renders a link-local peer as "fe80::1%eth0"; the scope is our interface anyway, and an
    # address with a scope never equals one without (the router compares with the primary address)
    return IPv6Address(address[0].split("%", 1)[0])


def _ancillary_v6(ancillary: list[tuple[int, int, bytes]]) -> tuple[IPv6Address | None, int]:
    """(destination, hop limit) from recvmsg's IPV6_PKTINFO / IPV6_HOPLIMIT (RFC 3542 §6)."""
    dst: IPv6Address | None = None
    hop_limit = 0  # missing: the router drops it as "ttl" rather than trust it
    for level, kind, value in ancillary:
        if level != socket.IPPROTO_IPV6:
            continue
        if kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
            hop_limit = struct.unpack("=i", value[:4])[0]
        elif kind == socket.IPV6_PKTINFO and len(value) >= 16:
            dst = IPv6Address(value[:16])
    return dst, hop_limit

