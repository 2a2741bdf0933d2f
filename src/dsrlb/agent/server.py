"""The load agent that runs on each target (`dsrlb agent PORT`): answers the balancer's queries.

The load it reports is refreshed in the background once a second, never while a query waits: by
default the 1-minute load average as a percentage of the CPUs (100 = every CPU busy), or the number
on the last line printed by `--script CMD`. A script that fails, hangs (killed after 2 s with its process
group) or prints no number makes the load "unavailable", which the balancer counts as a failed
probe; so does a value older than `STALE_AFTER` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from dataclasses import dataclass

from dsrlb.agent.protocol import QueryResponder

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0
SCRIPT_TIMEOUT = 2.0
STALE_AFTER = 5.0
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def loadavg_percent() -> float:
    """The 1-minute load average in percent of the CPUs, rounded to a whole percent."""
    return float(round(os.getloadavg()[0] / (os.cpu_count() or 1) * 100))


def parse_load(output: str) -> float | None:
    """The first number in a script's output, if it is a sane load (0 .. 1e9)."""
    m = _NUMBER.search(output)
    if m is None:
        return None
    value = float(m.group(0))
    return value if 0 <= value <= 1e9 else None


async def script_load(command: str, timeout: float = SCRIPT_TIMEOUT) -> float | None:
    from dsrlb.health.probes import ProbeError, run_script  # same no-shell, kill-the-group runner

    try:
        detail = await run_script(command, timeout)
    except ProbeError as exc:
        log.warning("load script: %s", exc)
        return None
    return parse_load(detail.removeprefix("exit 0").lstrip(": "))


@dataclass
class _Cached:
    value: float | None = None
    at: float = float("-inf")


class AgentServer:
    """UDP server around `QueryResponder`; `await serve()` until `stop()`."""

    def __init__(
        self, port: int, *, bind: str | None = None, ipv6: bool = False, secret: bytes | None = None,
        script: str | None = None,
    ) -> None:
        self.port = port
        self.bind = bind if bind is not None else ("::" if ipv6 else "0.0.0.0")
        self.script = script
        self._cached = _Cached()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.responder = QueryResponder(self._current_load, secret)
        self._stopped = asyncio.Event()

    def _current_load(self) -> float | None:
        if self._loop is None or self._loop.time() - self._cached.at > STALE_AFTER:
            return None
        return self._cached.value

    async def _refresh(self) -> None:
        assert self._loop is not None
        while True:
            if self.script is not None:
                value = await script_load(self.script)
            else:
                try:
                    value = loadavg_percent()
                except OSError:
                    value = None
            self._cached = _Cached(value, self._loop.time())
            await asyncio.sleep(REFRESH_SECONDS)

    async def serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((self.bind, self.port))
        self.port = sock.getsockname()[1]
        sock.setblocking(False)
        loop = self._loop
        loop.add_reader(sock.fileno(), self._readable, sock)
        refresher = loop.create_task(self._refresh())
        log.info("answering on %s port %d", self.bind, self.port)
        try:
            await self._stopped.wait()
        finally:
            loop.remove_reader(sock.fileno())
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)
            sock.close()

    def _readable(self, sock: socket.socket) -> None:
        assert self._loop is not None
        for _ in range(64):  # bounded: a flood cannot starve the load refresher
            try:
                data, peer = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors reported on the socket: not fatal
                log.debug("recvfrom: %s", exc)
                return
            reply = self.responder.handle(data, self._loop.time())
            if reply is not None:
                try:
                    sock.sendto(reply, peer)
                except OSError as exc:
                    log.debug("sendto %s: %s", peer, exc)

    def stop(self) -> None:
        self._stopped.set()
