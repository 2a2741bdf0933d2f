"""Real HTTP clients inside a lab namespace, bounded in count and time, counting replies per target.

The client sockets are made by a thread that entered the client's namespace (see
dsrlb.netlink.namespace), so no subprocess per request is needed. Each request is a new TCP
connection from the next of the client's source addresses, so a balancer persisting on the client
address (BalanceNG's default `sessionid src`) still spreads the load.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dsrlb.lab.httpd import PEER_HEADER
from dsrlb.lab.topology import IPAddress
from dsrlb.netlink import run_in_netns

MAX_REQUESTS = 100_000
MAX_DURATION = 600.0


@dataclass(frozen=True)
class TrafficReport:
    sent: int
    replies: dict[str, int] = field(default_factory=dict)  # target name (the body) -> count
    errors: dict[str, int] = field(default_factory=dict)  # error kind -> count
    elapsed: float = 0.0
    peers: dict[str, int] = field(default_factory=dict)  # client address as the targets saw it -> count

    @property
    def answered(self) -> int:
        return sum(self.replies.values())


class HttpProbeError(Exception):
    pass


def http_exchange(host: str, port: int, path: str = "/", timeout: float = 2.0,
                  source: str | None = None) -> tuple[str, str | None]:
    """One GET (new connection): the body stripped, and the client address the server saw (if it
    says). `host` may be a scoped link-local `fe80::1%eth2`."""
    source_address = (source, 0) if source else None
    conn = http.client.HTTPConnection(host, port, timeout=timeout, source_address=source_address)
    try:
        conn.request("GET", path, headers={"Connection": "close", "Host": "dsrlb-lab"})
        response = conn.getresponse()
        body = response.read().decode(errors="replace").strip()
        if response.status != 200:
            raise HttpProbeError(f"HTTP {response.status} from {host}:{port}")
        return body, response.getheader(PEER_HEADER)
    except (OSError, http.client.HTTPException) as exc:
        raise HttpProbeError(f"{host}:{port}: {exc}") from exc
    finally:
        conn.close()


def http_get(host: str, port: int, path: str = "/", timeout: float = 2.0,
             source: str | None = None) -> str:
    """One GET (new connection); the body stripped. `host` may be a scoped link-local `fe80::1%eth2`."""
    return http_exchange(host, port, path, timeout, source)[0]


def http_get_in(netns: str, host: str, port: int, timeout: float = 2.0) -> str:
    return run_in_netns(netns, lambda: http_get(host, port, timeout=timeout))


def _error_kind(exc: HttpProbeError) -> str:
    cause = exc.__cause__
    if isinstance(cause, socket.timeout | TimeoutError):
        return "timeout"
    if isinstance(cause, ConnectionRefusedError):
        return "refused"
    if isinstance(cause, ConnectionResetError):
        return "reset"
    if isinstance(cause, OSError):
        return cause.strerror or type(cause).__name__
    return type(cause).__name__ if cause else "http"


def drive_http(
    netns: str,
    host: IPAddress | str,
    ports: Sequence[int],
    sources: Sequence[IPAddress] = (),
    requests: int = 100,
    duration: float = 10.0,
    timeout: float = 2.0,
    on_progress: Callable[[TrafficReport], None] | None = None,
) -> TrafficReport:
    """Send up to `requests` GETs to host over `ports` (round robin) for at most `duration` seconds."""
    requests = max(0, min(requests, MAX_REQUESTS))
    duration = max(0.0, min(duration, MAX_DURATION))

    def body() -> TrafficReport:
        replies: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        peers: Counter[str] = Counter()
        start = time.monotonic()
        sent = 0
        while sent < requests and time.monotonic() - start < duration:
            port = ports[sent % len(ports)]
            source = str(sources[sent % len(sources)]) if sources else None
            sent += 1
            try:
                name, peer = http_exchange(str(host), port, timeout=timeout, source=source)
                replies[name] += 1
                if peer is not None:
                    peers[peer] += 1
            except HttpProbeError as exc:
                errors[_error_kind(exc)] += 1
            if on_progress is not None:
                on_progress(TrafficReport(sent, dict(replies), dict(errors), time.monotonic() - start,
                                          dict(peers)))
        return TrafficReport(sent, dict(replies), dict(errors), time.monotonic() - start, dict(peers))

    return run_in_netns(netns, body)
