"""Link up/down events (for VRRP interface tracking): a pure tracker and a socket driver.

`LinkTracker` is the sans-I/O core: link events in, state changes out. `LinkWatcher` owns an
AF_NETLINK socket subscribed to RTMGRP_LINK in the current or a named namespace, and decodes what
arrives with pyroute2's message classes. It never blocks longer than the caller's timeout.
"""

from __future__ import annotations

import select
import socket
import struct
from dataclasses import dataclass
from types import TracebackType

from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from dsrlb.netlink.namespace import run_in_netns
from dsrlb.netlink.types import LinkEvent, LinkInfo, link_event_from_msg

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
NLMSG_HDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
NLMSG_ALIGN = 4


@dataclass(frozen=True)
class LinkChange:
    """A tracked link went up or down (or disappeared: up False, removed True)."""

    name: str
    up: bool
    removed: bool = False


class LinkTracker:
    """Remembers whether each watched link is up and reports only real transitions.

    The kernel sends RTM_NEWLINK for many reasons (MTU, statistics, promiscuity); a VRRP tracker
    wants "eth2 went down" once, so repeated events with the same up/down state are swallowed.
    """

    def __init__(self, names: tuple[str, ...] = (), initial: dict[str, bool] | None = None) -> None:
        self.names = names  # empty: track every link
        self._up: dict[str, bool] = dict(initial or {})

    def seed(self, links: list[LinkInfo]) -> None:
        for link in links:
            if self._watched(link.name):
                self._up[link.name] = link.up

    def _watched(self, name: str) -> bool:
        return not self.names or name in self.names

    def is_up(self, name: str) -> bool:
        return self._up.get(name, False)

    def feed(self, event: LinkEvent) -> LinkChange | None:
        if not self._watched(event.name):
            return None
        before = self._up.get(event.name)
        self._up[event.name] = event.up
        if before is None or before != event.up:
            if before is None and not event.up and not event.removed:
                return None  # a link we first hear of, already down: nothing changed for us
            return LinkChange(event.name, event.up, event.removed)
        return None


def decode_link_events(datagram: bytes) -> list[LinkEvent]:
    """All link events in one netlink datagram; anything else or anything malformed is skipped."""
    events: list[LinkEvent] = []
    offset = 0
    while offset + NLMSG_HDR.size <= len(datagram):
        length, msg_type, _flags, _seq, _pid = NLMSG_HDR.unpack_from(datagram, offset)
        if length < NLMSG_HDR.size or offset + length > len(datagram):
            break
        chunk = datagram[offset:offset + length]
        offset += (length + NLMSG_ALIGN - 1) & ~(NLMSG_ALIGN - 1)
        if msg_type not in (16, 17):
            continue
        try:
            msg = ifinfmsg(chunk)
            msg.decode()
        except Exception:  # a message pyroute2 cannot decode is dropped, not fatal
            continue
        event = link_event_from_msg(msg_type, msg)
        if event is not None:
            events.append(event)
    return events


class LinkWatcher:
    """Receives link events of a namespace. poll(timeout) returns what arrived, possibly nothing."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

        def make() -> socket.socket:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
            sock.bind((0, RTMGRP_LINK))
            sock.setblocking(False)
            return sock

        # The socket belongs to the namespace it was created in, whichever thread reads it later.
        self._sock = run_in_netns(netns, make)

    def fileno(self) -> int:
        return self._sock.fileno()

    def poll(self, timeout: float = 0.0) -> list[LinkEvent]:
        ready, _, _ = select.select([self._sock], [], [], max(timeout, 0.0))
        if not ready:
            return []
        events: list[LinkEvent] = []
        while True:
            try:
                datagram = self._sock.recv(65536)
            except BlockingIOError:
                return events
            except OSError:
                # ENOBUFS: the kernel dropped events because we were slow; callers re-read state.
                return events
            events.extend(decode_link_events(datagram))

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> LinkWatcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
