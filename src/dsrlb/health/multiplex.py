"""Multiplexed probes: thousands of tcpopen connects and ICMP echoes in flight without a task each.

At 10,000 targets checked every second, an asyncio Task, a Future and a timeout timer per probe cost
more CPU than the probe's own system calls (bench/health.py measured ≈ 0.29 ms per tcpopen probe with
a task each). Here a probe is a tuple in a dict:

- `TcpConnectProber`: non-blocking connects on one epoll set of its own, whose file descriptor is
  registered with the event loop once. When any socket is ready the loop calls us once and we take
  every ready socket in one `epoll_wait` (a batch). Closing a socket takes it out of the epoll set
  (the kernel drops the registration when the file is released), so there is no EPOLL_CTL_DEL.
  Sockets are closed with RST (SO_LINGER 0): no TIME_WAIT left behind at 10k probes per second.
- `EchoProber`: one ICMP socket per (family, source); replies matched by (address, sequence) and,
  on raw sockets, our identifier.
- Timeouts: probes of the same timeout start in time order, so their deadlines are in order too; one
  FIFO per timeout value and a single loop timer for the earliest head replace a heap or a timer per
  probe. The FIFOs hold the probes' own entry tuples (nothing else is allocated per probe: objects
  that live for a second are what makes the garbage collector scan); finished probes are dropped
  from the FIFO heads lazily.

A result goes to `deliver(token, ok, latency, detail)`, given per probe (the scheduler passes one
bound method for all its probes, `ProbeKit.run` a future-settling function). It is never called from
inside `start()`: results known at once (connect refused synchronously, unreachable network) are
delivered from a `call_soon` batch, so a driver that starts probes while walking its own schedule is
never re-entered.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import random
import select
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Collection, Hashable
from typing import Any, Generic, TypeAlias, TypeVar

from dsrlb.health.packets import build_echo_request, parse_echo_reply

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
# deliver(token, ok, latency, detail): latency in seconds for a success, None for a failure
Deliver: TypeAlias = Callable[[Any, bool, float | None, str], None]
# a probe in flight: (deliver, token, started, socket to close or None, its key in `pending`)
_Entry: TypeAlias = tuple[Deliver, Any, float, socket.socket | None, Any]

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h: pick the source port at connect(), not at bind()
LINGER_RST = struct.pack("ii", 1, 0)
MAX_EVENTS = 4096  # per epoll_wait; more ready sockets are taken on the next loop iteration
MAX_REPLIES = 4096  # ICMP datagrams read per wake-up, so one busy socket cannot starve the loop
ECHO_PAYLOAD = b"dsrlb-health"
_ERROR_EVENTS = select.EPOLLERR | select.EPOLLHUP
CLOSED = "probe cancelled: the prober closed"
# asyncio runs a timer when its time is within the clock resolution; so do we, or a deadline that
# is a nanosecond in the future would need a second wake-up.
_RESOLUTION = time.get_clock_info("monotonic").resolution


def strerror(code: int) -> str:
    return os.strerror(code) if code else "unknown error"


def why(exc: OSError) -> str:
    """The detail of a failed probe: what errno says (asyncio's texts wrap it in noise)."""
    return os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))


def _close(sock: socket.socket) -> None:
    """Close a probe's socket; an error closing it must not cost the probe its result."""
    try:  # noqa: SIM105 (not contextlib.suppress: this runs for every probe, and a try costs nothing)
        sock.close()
    except OSError:
        pass


def canonical_address(family: socket.AddressFamily, text: str) -> str:
    """The address as recvfrom() spells it (inet_ntop), so replies match by plain string equality."""
    return socket.inet_ntop(family, socket.inet_pton(family, text.split("%")[0]))


class _Multiplexer(Generic[K]):
    """Probes in flight keyed by K, their deadlines, and batched delivery of results."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: dict[K, _Entry] = {}
        self._fifos: dict[float, tuple[deque[_Entry], str]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._soon: list[tuple[Deliver, Any, bool, float | None, str]] = []
        self.closed = False

    @property
    def in_flight(self) -> int:
        return len(self.pending)

    def _expect(self, entry: _Entry, timeout: float) -> None:
        """Track a probe until its answer comes or `timeout` seconds pass."""
        self.pending[entry[4]] = entry
        slot = self._fifos.get(timeout)
        if slot is None:
            slot = self._fifos[timeout] = (deque(), f"no answer within {timeout:g} s")
        slot[0].append(entry)
        deadline = entry[2] + timeout
        if deadline < self._timer_at:
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = self.loop.time() + _RESOLUTION
        pending = self.pending
        earliest = math.inf
        for timeout, (fifo, detail) in list(self._fifos.items()):  # delivering may add one
            while fifo:
                entry = fifo[0]
                key = entry[4]
                if pending.get(key) is not entry:  # answered already: drop the record
                    fifo.popleft()
                    continue
                deadline = entry[2] + timeout
                if deadline > now:
                    earliest = min(earliest, deadline)
                    break
                fifo.popleft()
                del pending[key]
                deliver, token, _started, sock, _key = entry
                if sock is not None:
                    _close(sock)
                self._deliver(deliver, token, False, None, detail)
        if earliest < math.inf and not self.closed:
            self._arm(earliest)

    def expire(self, tokens: Collection[Hashable]) -> set[Hashable]:
        """Time out the probes of `tokens` now, as their own timeout would (a driver's watchdog: see
        HealthScheduler); returns the tokens this prober still held, in flight or with a result
        about to be delivered. A token not returned is not ours: its probe was lost."""
        wanted = set(tokens)
        held: set[Hashable] = {item[1] for item in self._soon if item[1] in wanted}
        overdue = [entry for entry in self.pending.values() if entry[1] in wanted]
        now = self.loop.time()
        for entry in overdue:
            del self.pending[entry[4]]  # its FIFO record goes at the next trim
            if entry[3] is not None:
                _close(entry[3])
            held.add(entry[1])
        for deliver, token, started, _sock, _key in overdue:
            self._deliver(deliver, token, False, None, f"no answer within {now - started:.3g} s")
        return held

    def _refuse(self, deliver: Deliver, token: Any) -> None:
        """start() on a closed prober (a stale reference, or a result handler that starts the next probe
        from inside close()): the probe fails at once instead of entering a dict nobody reads again."""
        if self.loop.is_closed():
            self._deliver(deliver, token, False, None, CLOSED)
        else:
            self._later(deliver, token, False, None, CLOSED)

    def _trim(self) -> None:
        """Drop answered probes from the FIFO heads now, not at the next expiry: answers come
        mostly in start order, and an entry (with its socket) kept for a second is what the
        garbage collector would otherwise promote and scan."""
        pending = self.pending
        for fifo, _detail in self._fifos.values():
            while fifo and pending.get(fifo[0][4]) is not fifo[0]:
                fifo.popleft()

    def _later(self, deliver: Deliver, token: Any, ok: bool, latency: float | None, detail: str) -> None:
        """A result known inside start(): delivered from the next loop iteration, with others."""
        if not self._soon:
            self.loop.call_soon(self._flush)
        self._soon.append((deliver, token, ok, latency, detail))

    def _flush(self) -> None:
        batch, self._soon = self._soon, []
        for deliver, token, ok, latency, detail in batch:
            self._deliver(deliver, token, ok, latency, detail)

    @staticmethod
    def _deliver(deliver: Deliver, token: Any, ok: bool, latency: float | None, detail: str) -> None:
        try:
            deliver(token, ok, latency, detail)
        except Exception:  # a broken receiver must not lose the other results of the batch
            log.exception("health probe result handler failed")

    def close(self, detail: str = CLOSED) -> None:
        """Stop: close every socket and fail every probe in flight (nobody waits forever)."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, math.inf
        entries = list(self.pending.values())
        self.pending.clear()
        self._fifos.clear()
        for deliver, token, _started, sock, _key in entries:
            if sock is not None:
                sock.close()
            self._deliver(deliver, token, False, None, detail)
        self._flush()


class TcpConnectProber(_Multiplexer[int]):
    """tcpopen: does a TCP connection open? Success is the connect completing, then RST."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._epoll = select.epoll()
        loop.add_reader(self._epoll.fileno(), self._ready)

    def start(
        self, deliver: Deliver, token: Any, family: socket.AddressFamily, address: tuple[Any, ...],
        timeout: float, bind_to: tuple[Any, ...] | None = None,
    ) -> None:
        """Connect to `address` (a sockaddr tuple of `family`), from `bind_to` when given."""
        if self.closed:
            self._refuse(deliver, token)
            return
        started = self.loop.time()
        try:
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as exc:  # EMFILE: out of descriptors
            self._later(deliver, token, False, None, why(exc))
            return
        fd = sock.fileno()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            if bind_to is not None:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind(bind_to)
            code = sock.connect_ex(address)  # an errno, not an exception: cheaper on the hot path
            if code == errno.EINPROGRESS:
                self._epoll.register(fd, select.EPOLLOUT)
                self._expect((deliver, token, started, sock, fd), timeout)
                return
        except Exception as exc:  # a source address we do not have, epoll out of memory, a bad address:
            # the probe fails here, it is never left half started (a socket that nobody watches)
            self.pending.pop(fd, None)
            _close(sock)
            detail = why(exc) if isinstance(exc, OSError) else f"probe error: {exc}"
            self._later(deliver, token, False, None, detail)
            return
        sock.close()
        if code == 0:  # connected at once (possible on loopback)
            self._later(deliver, token, True, self.loop.time() - started, "connected")
        else:
            self._later(deliver, token, False, None, strerror(code))

    def _ready(self) -> None:
        try:
            events = self._epoll.poll(0, MAX_EVENTS)
        except OSError:
            return
        now = self.loop.time()
        pending = self.pending
        for fd, mask in events:
            entry = pending.pop(fd, None)
            if entry is None:  # cannot happen (closing a socket unregisters it); be safe anyway
                continue
            deliver, token, started, sock, _fd = entry
            assert sock is not None
            # EPOLLOUT alone: connected. With ERR/HUP the connect failed; SO_ERROR says why.
            try:
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if mask & _ERROR_EVENTS else 0
            except OSError as exc:  # popped from `pending`: this probe's result is ours to give
                code = exc.errno or errno.EIO
            try:  # noqa: SIM105 (inline: the hot path)
                sock.close()
            except OSError:
                pass
            if code:
                self._deliver(deliver, token, False, None, strerror(code))
            else:
                self._deliver(deliver, token, True, now - started, "connected")
        self._trim()

    def close(self, detail: str = CLOSED) -> None:
        if self.closed:
            return
        if not self.loop.is_closed():
            self.loop.remove_reader(self._epoll.fileno())
        super().close(detail)
        self._epoll.close()


class EchoProber(_Multiplexer[tuple[str, int]]):
    """ping / ping6: one ICMP socket shared by every echo of a family and source address."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ipv6: bool, source: str | None) -> None:
        super().__init__(loop)
        self.family = socket.AF_INET6 if ipv6 else socket.AF_INET
        proto = socket.IPPROTO_ICMPV6 if ipv6 else socket.IPPROTO_ICMP
        try:
            self.sock = socket.socket(self.family, socket.SOCK_RAW, proto)
            self.ip_header = not ipv6  # raw IPv4 sockets deliver the IP header, IPv6 ones do not
        except PermissionError:
            self.sock = socket.socket(self.family, socket.SOCK_DGRAM, proto)  # net.ipv4.ping_group_range
            self.ip_header = False
        self.raw = self.sock.type == socket.SOCK_RAW
        self.sock.setblocking(False)
        if source is not None:
            self.sock.bind((source, 0))
        self.ipv6 = ipv6
        self.ident = random.getrandbits(16)
        self.seq = random.getrandbits(16)
        loop.add_reader(self.sock.fileno(), self._readable)

    def start(self, deliver: Deliver, token: Any, address: str, timeout: float) -> None:
        """Send an echo request to `address` (as `canonical_address` spells it)."""
        if self.closed:
            self._refuse(deliver, token)
            return
        started = self.loop.time()
        for _ in range(16):  # a sequence number still in flight to this address is skipped
            self.seq = (self.seq + 1) & 0xFFFF
            key = (address, self.seq)
            if key not in self.pending:
                break
        else:
            self._later(deliver, token, False, None, "too many echo requests in flight")
            return
        packet = build_echo_request(self.ident, self.seq, ECHO_PAYLOAD, ipv6=self.ipv6)
        try:
            self.sock.sendto(packet, (address, 0))
        except OSError as exc:
            self._later(deliver, token, False, None, why(exc))
            return
        self._expect((deliver, token, started, None, key), timeout)

    def _readable(self) -> None:
        now = self.loop.time()
        for _ in range(MAX_REPLIES):
            try:
                data, peer = self.sock.recvfrom(2048)
            except OSError:  # BlockingIOError: drained
                break
            parsed = parse_echo_reply(data, ipv6=self.ipv6, ip_header=self.ip_header)
            if parsed is None or (self.raw and parsed[0] != self.ident):
                continue  # not ours: other pings, other ICMP
            sender = str(peer[0])
            entry = self.pending.pop((sender.split("%")[0] if "%" in sender else sender, parsed[1]), None)
            if entry is not None:
                self._deliver(entry[0], entry[1], True, now - entry[2], "echo reply")
        self._trim()

    def close(self, detail: str = CLOSED) -> None:
        if self.closed:
            return
        if not self.loop.is_closed():
            self.loop.remove_reader(self.sock.fileno())
        super().close(detail)
        self.sock.close()
