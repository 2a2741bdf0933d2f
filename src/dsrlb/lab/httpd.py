"""The lab's real HTTP server: answers every GET with its own name, so clients can count per target.

Run inside a target's namespace: `python -m dsrlb.lab.httpd --name target1 --port 80 --port 443`.
Each reply also names the client address the server saw (header X-Dsrlb-Peer), so a NAT lab can
show that the balancer kept the clients' real addresses.
`GET /slow/SECONDS` streams its reply over SECONDS (at most 60): the headers at once (with the full
Content-Length), then SLOW_LINES numbered lines "NAME i" evenly spread, so a test can keep a response
in flight through the balancer while it changes something (disables the target, reloads).
Connections are kept alive (HTTP/1.1), so one TCP connection can carry several requests.
It listens dual-stack on [::] (IPv4-mapped included), which also covers a VIP on lo. It prints
`ready` on stdout once every port listens, and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

READY = "ready"
PEER_HEADER = "X-Dsrlb-Peer"  # the client address as this target saw it (NAT labs prove it is kept)
SLOW_PREFIX = "/slow/"
SLOW_LINES = 10
SLOW_MAX_SECONDS = 60.0


def slow_body(name: str) -> bytes:
    """The whole body of a `/slow/S` reply (what a client must have received at the end)."""
    return "".join(f"{name} {i}\n" for i in range(SLOW_LINES)).encode()


def peer_text(address: str) -> str:
    """The peer as a plain address: an IPv4 client on the dual-stack socket arrives as ::ffff:a.b.c.d."""
    try:
        parsed = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    mapped = parsed.ipv4_mapped if isinstance(parsed, ipaddress.IPv6Address) else None
    return str(mapped or parsed)


class DualStackServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, name: str) -> None:
        self.target_name = name
        super().__init__(("::", port), NameHandler)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class NameHandler(BaseHTTPRequestHandler):
    server: DualStackServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.startswith(SLOW_PREFIX):
            self._slow(self.path[len(SLOW_PREFIX):])
            return
        body = f"{self.server.target_name}\n".encode()
        self._headers(len(body))
        self.wfile.write(body)

    def _headers(self, length: int) -> None:
        """200, the body's length, and who answered whom (the target's name, the client it saw)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(length))
        self.send_header("X-Dsrlb-Target", self.server.target_name)
        self.send_header(PEER_HEADER, peer_text(str(self.client_address[0])))
        self.end_headers()

    def _slow(self, seconds_text: str) -> None:
        try:
            seconds = min(max(float(seconds_text), 0.0), SLOW_MAX_SECONDS)
        except ValueError:
            self.send_error(400, "GET /slow/SECONDS")
            return
        body = slow_body(self.server.target_name)
        lines = body.splitlines(keepends=True)
        self._headers(len(body))
        self.wfile.flush()
        for line in lines:
            time.sleep(seconds / len(lines))
            self.wfile.write(line)
            self.wfile.flush()

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: thousands of requests in a lab run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dsrlb-lab-httpd")
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, action="append", default=[])
    args = parser.parse_args(argv)
    servers = [DualStackServer(port, args.name) for port in (args.port or [80])]
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
               for s in servers]
    for thread in threads:
        thread.start()
    print(READY, flush=True)
    stop.wait()
    for server in servers:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
