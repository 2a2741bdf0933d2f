"""The HTTP API: the control commands over HTTP/1.1 and Prometheus `/metrics`, on asyncio.

    GET  /api/v1                      -> help: every command (JSON)
    GET  /api/v1/show/targets         -> the same JSON object as the control socket's response
    POST /api/v1/disable/targets/1,2  -> action commands (enable, disable, drain, reload) are POST only
    GET  /metrics                     -> Prometheus text format (control/metrics.py)

It runs on the daemon's event loop, so handlers and the metrics provider see the daemon's state without
locks. Requests are small and one per connection (`Connection: close`); header parsing is the standard
library's (http.client.parse_headers). Bound to 127.0.0.1 by default. Because any web page can make a
browser send requests to localhost, POST requires `Content-Type: application/json` (which a cross-site
form cannot send without a CORS preflight we never answer), and on a loopback bind the Host header
must name the loopback (DNS rebinding). docs/openapi.json describes the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import ipaddress
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from dsrlb.control.commands import CommandError, Registry
from dsrlb.control.metrics import METRICS_CONTENT_TYPE, MetricsSnapshot, exposition
from dsrlb.control.protocol import ErrorCode, JSONValue, Request, Response, encode_line, response_to_json

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
REQUEST_TIMEOUT = 10.0
JSON_TYPE = "application/json"

STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.BAD_ARGUMENTS: 400,
    ErrorCode.LINE_TOO_LONG: 413,
    ErrorCode.UNKNOWN_COMMAND: 404,
    ErrorCode.FAILED: 409,
    ErrorCode.BUSY: 503,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()


class HttpProblem(Exception):
    """A request refused before reaching a command; becomes a JSON error body."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)


def _json_reply(response: Response, headers: Sequence[tuple[str, str]] = ()) -> HttpReply:
    status = 200 if response.ok or response.error is None else STATUS_BY_CODE[response.error.code]
    return HttpReply(status, encode_line(response_to_json(response)), JSON_TYPE, tuple(headers))


def _problem_reply(problem: HttpProblem) -> HttpReply:
    code = ErrorCode.INTERNAL if problem.status >= 500 else ErrorCode.BAD_REQUEST
    error: dict[str, JSONValue] = {"code": code.value, "message": problem.message}
    body: dict[str, JSONValue] = {"id": None, "ok": False, "error": error}
    return HttpReply(problem.status, encode_line(body), JSON_TYPE, problem.headers)


class HttpApi:
    """Serves `registry` and the metrics of `metrics` over HTTP on host:port (port 0: any free port)."""

    def __init__(
        self,
        registry: Registry,
        *,
        host: str = "127.0.0.1",
        port: int = 8439,
        metrics: Callable[[], MetricsSnapshot] | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.metrics = metrics
        self.request_timeout = request_timeout
        self._server: asyncio.Server | None = None
        self._loopback_only = _is_loopback(host)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the real port when started with port 0."""
        if self._server is None or not self._server.sockets:
            return self.host, self.port
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)
            log.info("HTTP API listening on %s:%d", *self.address)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    # --- connection -------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = "GET"
        try:
            try:
                async with asyncio.timeout(self.request_timeout):
                    method, target, headers, body = await self._read_request(reader)
                reply = await self._route(method, target, headers, body)
            except HttpProblem as problem:
                reply = _problem_reply(problem)
            except TimeoutError:
                reply = _problem_reply(HttpProblem(408, "request not received in time"))
            except (ConnectionError, asyncio.IncompleteReadError):
                raise
            except Exception as exc:  # a bug here must cost one request, not the API
                log.exception("HTTP API request failed")
                reply = _problem_reply(HttpProblem(500, f"internal error: {type(exc).__name__}"))
            await self._write(writer, reply, head_only=method == "HEAD")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(
        self, reader: asyncio.StreamReader
    ) -> tuple[str, str, http.client.HTTPMessage, bytes]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise HttpProblem(431, f"request head longer than {MAX_HEAD} bytes") from None
        request_line, _, header_bytes = head.partition(b"\r\n")
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise HttpProblem(400, "malformed request line")
        method, target, _version = parts
        try:
            headers = http.client.parse_headers(io.BytesIO(header_bytes))
        except (http.client.HTTPException, ValueError) as exc:
            raise HttpProblem(400, f"malformed headers: {exc}") from None
        if headers.get("Transfer-Encoding"):
            raise HttpProblem(501, "Transfer-Encoding is not supported; send Content-Length")
        length_text = headers.get("Content-Length", "0").strip()
        if not length_text.isdigit():
            raise HttpProblem(400, "bad Content-Length")
        length = int(length_text)
        if length > MAX_BODY:
            raise HttpProblem(413, f"body longer than {MAX_BODY} bytes")
        body = await reader.readexactly(length) if length else b""
        return method, target, headers, body

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, reply: HttpReply, head_only: bool) -> None:
        reason = http.client.responses.get(reply.status, "")
        lines = [
            f"HTTP/1.1 {reply.status} {reason}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{name}: {value}" for name, value in reply.headers),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(reply.body)
        await writer.drain()

    # --- routing ----------------------------------------------------------------------------------

    async def _route(
        self, method: str, target: str, headers: http.client.HTTPMessage, body: bytes
    ) -> HttpReply:
        if method not in ("GET", "HEAD", "POST"):
            raise HttpProblem(405, f"method {method} is not allowed", [("Allow", "GET, HEAD, POST")])
        self._check_host(headers.get("Host"))
        url = urlsplit(target)
        path = url.path.rstrip("/") or "/"
        if path == "/metrics":
            if method == "POST":
                raise HttpProblem(405, "/metrics is read-only", [("Allow", "GET, HEAD")])
            return self._metrics_reply()
        if path != API_PREFIX and not path.startswith(API_PREFIX + "/"):
            raise HttpProblem(404, f"no such resource {url.path!r}; the API is under {API_PREFIX}/")
        words = [unquote(segment) for segment in path[len(API_PREFIX):].split("/") if segment]
        if not words:
            words = ["help"]
        query = parse_qs(url.query)
        want_json = query.get("json", ["0"])[-1].lower() in ("1", "true", "yes")
        if method == "POST":
            words += self._body_args(headers, body)
        try:
            call = self.registry.resolve(words, want_json)
        except CommandError as exc:
            return _json_reply(Response.failure(None, exc.code, exc.message, exc.suggestions))
        if call.command.action and method != "POST":
            raise HttpProblem(405, f"'{call.command.name}' changes state: use POST", [("Allow", "POST")])
        if not call.command.action and method == "POST":
            raise HttpProblem(405, f"'{call.command.name}' is read-only: use GET", [("Allow", "GET, HEAD")])
        response = await self.registry.execute(Request(None, words[0], tuple(words[1:]), want_json))
        return _json_reply(response)

    def _check_host(self, host: str | None) -> None:
        if not self._loopback_only or host is None:
            return
        name = host.strip().lower()
        if name.startswith("["):
            name = name[1:].partition("]")[0]
        elif name.count(":") == 1:
            name = name.partition(":")[0]
        if name != "localhost" and not _is_loopback(name):
            raise HttpProblem(403, f"Host {host!r} is not a loopback name (DNS rebinding protection)")

    @staticmethod
    def _body_args(headers: http.client.HTTPMessage, body: bytes) -> list[str]:
        content_type = headers.get_content_type() if headers.get("Content-Type") else ""
        if content_type != JSON_TYPE:
            raise HttpProblem(415, f"POST needs Content-Type: {JSON_TYPE} (a body is optional)")
        if not body.strip():
            return []
        try:
            obj: Any = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise HttpProblem(400, "body is not JSON") from None
        args = obj.get("args", []) if isinstance(obj, dict) else None
        if not isinstance(args, list) or not all(isinstance(a, str | int) and a is not True and a is not False
                                                 for a in args):
            raise HttpProblem(400, 'body must be {"args": [words...]}')
        return [str(a) for a in args]

    def _metrics_reply(self) -> HttpReply:
        if self.metrics is None:
            raise HttpProblem(404, "metrics are not enabled")
        try:
            body = exposition(self.metrics)
        except Exception as exc:
            log.exception("metrics provider failed")
            raise HttpProblem(500, f"metrics unavailable: {type(exc).__name__}: {exc}") from None
        return HttpReply(200, body, METRICS_CONTENT_TYPE)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
