"""Session sync over UDP: the socket and the clocks around one SyncPeer (sync/peer.py).

Which peer and port come from the config (`plan_sync`): the first enabled network with a `syncpeer`;
our side is that network's `real` (or `real6`) address, which the balancer holds as VRRP master and
backup alike; the port is `set sessionsyncport` (default DEFAULT_PORT). `set sessionsync 0` turns it
off; `set sessionautoresync 0` stops sending the whole table to a peer that (re)starts.

Only datagrams from the peer's address are read (others are counted as `drop_stranger`), and with
`set syncsecretfile` only those signed with the shared secret (HMAC-SHA256; `drop_auth`). A session
it installs can only name a service and a target of our own config.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from dsrlb.engine.dataplane import SessionEntry
from dsrlb.model import Config
from dsrlb.secret_file import SecretFileError, secret_from_setting
from dsrlb.sync.peer import Received, SyncPeer

log = logging.getLogger("dsrlb.sync")

IPAddress = IPv4Address | IPv6Address
DEFAULT_PORT = 4400
_BURST = 64


@dataclass(frozen=True)
class SyncPlan:
    local: IPAddress
    peer: IPAddress
    port: int
    autoresync: bool = True
    secret: bytes | None = None  # `set syncsecretfile`


class SyncConfigError(Exception):
    """The sync settings cannot run (an unreadable or empty secret file)."""


def sync_secret(config: Config) -> bytes | None:
    """`set syncsecretfile "/path"` (dsrlb.secret_file: first line, fails closed)."""
    try:
        return secret_from_setting(config, "syncsecretfile")
    except SecretFileError as exc:
        raise SyncConfigError(str(exc)) from None


def plan_sync(config: Config) -> SyncPlan | None:
    """The sync of `config`, or None (no enabled network names a syncpeer, or `set sessionsync 0`)."""
    if config.setting("sessionsync", "1") == "0":
        return None
    for network in config.networks:
        if not (network.registered and network.enabled) or network.syncpeer is None:
            continue
        peer = network.syncpeer
        local = network.real if peer.version == 4 else network.real6
        if local is None:
            continue  # the validator requires it; a network without one cannot sync
        port = int(config.setting("sessionsyncport", str(DEFAULT_PORT)) or DEFAULT_PORT)
        return SyncPlan(local, peer, port, config.setting("sessionautoresync", "1") != "0",
                        sync_secret(config))
    return None


class SyncDriver:
    """Runs a SyncPeer on a UDP socket bound to `plan.local`; `on_received` gets what the peer sent."""

    def __init__(self, plan: SyncPlan, on_received: Callable[[Received], None], *,
                 clock: Callable[[], float] = time.monotonic,
                 clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.plan = plan
        self.peer = SyncPeer(boot=secrets.randbits(32) or 1, secret=plan.secret)
        self._on_received = on_received
        self._clock, self._clock_ns = clock, clock_ns
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.send_errors = 0
        self.strangers = 0

    async def start(self) -> None:
        family = socket.AF_INET if self.plan.local.version == 4 else socket.AF_INET6
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((str(self.plan.local), self.plan.port))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"session sync cannot bind {self.plan.local} port {self.plan.port}: "
                          f"{exc.strerror or exc}") from exc
        self._sock, self._loop = sock, asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self._on_timer()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
        self._sock = None

    def send_sessions(self, entries: Sequence[SessionEntry]) -> None:
        if entries:
            self._send(self.peer.sessions(entries, self._clock_ns()))

    async def send_sessions_paced(self, entries: Sequence[SessionEntry], chunk: int = 2000) -> None:
        """A large table (a refresh, a resync) in slices, yielding to the event loop between them:
        a million sessions take seconds to encode, and health checks must not wait for that."""
        for start in range(0, len(entries), chunk):
            self.send_sessions(entries[start:start + chunk])
            await asyncio.sleep(0)

    def view(self) -> dict[str, object]:
        return {"local": str(self.plan.local), "peer": str(self.plan.peer), "port": self.plan.port,
                "autoresync": self.plan.autoresync, "authenticated": self.plan.secret is not None,
                **self.peer.view(self._clock()),
                "send_errors": self.send_errors, "drop_stranger": self.strangers}

    def _send(self, datagrams: list[bytes]) -> None:
        if self._sock is None:
            return
        for datagram in datagrams:
            try:
                self._sock.sendto(datagram, (str(self.plan.peer), self.plan.port))
            except OSError as exc:  # e.g. the peer's address not resolving on the link yet
                self.send_errors += 1
                if self.send_errors in (1, 10, 100) or self.send_errors % 1000 == 0:
                    log.warning("session sync to %s: %s (%d send errors)", self.plan.peer, exc,
                                self.send_errors)

    def _on_timer(self) -> None:
        self._send(self.peer.timer(self._clock()))
        if self._loop is not None:
            delay = max(0.0, self.peer.next_deadline - self._clock())
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_readable(self) -> None:
        sock = self._sock
        for _ in range(_BURST):
            if sock is None:
                return
            try:
                data, address = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error of an earlier send, reported once
                log.debug("session sync: %s", exc)
                continue
            if ip_address(address[0].split("%", 1)[0]) != self.plan.peer:
                self.strangers += 1
                continue
            received = self.peer.receive(data, self._clock(), self._clock_ns())
            try:
                self._on_received(received)
            except Exception:  # one bad batch must not stop the sync
                log.exception("session sync: installing %d sessions", len(received.sessions))
