"""The control socket: an asyncio unix stream server speaking control/protocol.py.

Safety properties (docs/control.md):
- The socket is 0600 from its first instant: it is bound under umask 0177 at a temporary name in the
  same directory and renamed into place, so there is no window in which it is wider, and a stale socket
  left by a crashed daemon is replaced atomically.
- A socket that still answers a connect belongs to a live daemon: starting refuses (ControlSocketBusy)
  instead of stealing it. A path that is not a socket is never removed.
- Stop removes the socket only if it is still ours (same inode), never one a newer daemon put there.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import socket
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from dsrlb.control.commands import Registry
from dsrlb.control.protocol import (
    DEFAULT_MAX_LINE,
    DEFAULT_MAX_PENDING,
    ErrorCode,
    Event,
    Rejected,
    Request,
    Response,
    ServerConnection,
    encode_event,
)
from dsrlb.paths import instance_paths

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
# A subscriber whose unsent output exceeds this is not reading: its events are dropped (and counted)
# rather than letting one stuck client grow the daemon's memory.
DEFAULT_EVENT_BACKLOG = 1024 * 1024
SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux


class ControlSocketError(Exception):
    """The control socket cannot be set up (path too long, not a socket, no permission)."""


class ControlSocketBusy(ControlSocketError):
    """Another live server answers on the socket (the instance is already running)."""


def probe_socket(path: Path) -> bool:
    """True when a server accepts connections on `path`; False when there is nothing or a stale socket.

    Raises ControlSocketError when `path` exists and is not a socket.
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(mode):
        raise ControlSocketError(f"{path} exists and is not a socket; refusing to replace it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            probe.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except BlockingIOError:
            return True  # the listener exists but its backlog is full: alive
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return True
            raise ControlSocketError(f"cannot probe control socket {path}: {exc.strerror}") from None
    return True


def _bind_private(path: Path) -> tuple[socket.socket, os.stat_result]:
    """A listening socket at `path`, mode 0600, atomically replacing whatever stale socket was there."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # umask is process-wide; keeping it set only around bind() keeps the window tiny, and the rename
        # below publishes the socket only after it already has its final mode.
        old_umask = os.umask(0o177)
        try:
            sock.bind(os.fspath(temp))
        finally:
            os.umask(old_umask)
        try:
            sock.listen(64)
            os.rename(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return sock, path.stat()
    except BaseException:
        sock.close()
        raise


class ControlServer:
    """Serves `registry` on a unix socket; one task per client; pushes events to subscribers."""

    def __init__(
        self,
        registry: Registry,
        path: Path,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        max_pending: int = DEFAULT_MAX_PENDING,
        event_backlog: int = DEFAULT_EVENT_BACKLOG,
    ) -> None:
        self.registry = registry
        self.path = Path(path)
        self.max_line = max_line
        self.max_pending = max_pending
        self.event_backlog = event_backlog
        self.events_dropped = 0
        self._server: asyncio.Server | None = None
        self._identity: tuple[int, int] | None = None
        self._clients: set[asyncio.Task[Any]] = set()
        self._subscribers: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def for_instance(cls, registry: Registry, instance: str = "0", **kwargs: Any) -> ControlServer:
        return cls(registry, instance_paths(instance).control_socket, **kwargs)

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def start(self) -> None:
        if self._server is not None:
            return
        if len(os.fsencode(self.path)) > SUN_PATH_MAX - 10:  # room for the temporary name's suffix
            raise ControlSocketError(f"control socket path {self.path} is too long for a unix socket")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if probe_socket(self.path):
                raise ControlSocketBusy(
                    f"another dsrlb is already serving the control socket {self.path}"
                )
            sock, st = _bind_private(self.path)
        except OSError as exc:
            raise ControlSocketError(f"cannot create control socket {self.path}: {exc.strerror}") from None
        self._identity = (st.st_dev, st.st_ino)
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_unix_server(self._serve_client, sock=sock)
        log.info("control socket listening at %s", self.path)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        await server.wait_closed()
        self._subscribers.clear()
        self._remove_socket()

    def _remove_socket(self) -> None:
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._identity:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        else:
            log.warning("control socket %s was replaced by someone else; leaving it", self.path)

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- events ---------------------------------------------------------------------------------

    def publish(self, data: Mapping[str, Any]) -> int:
        """Send an event to every subscriber (loop thread only); returns how many got it.

        A `time` (unix seconds) is added when the event has none.
        """
        if not self._subscribers:
            return 0
        if "time" not in data:
            data = {**data, "time": time.time()}
        try:
            line = encode_event(Event(data))
        except (TypeError, ValueError):
            log.exception("unencodable control event %r", data)
            self.events_dropped += len(self._subscribers)
            return 0
        delivered = 0
        for writer in list(self._subscribers):
            if writer.is_closing():
                self._subscribers.discard(writer)
            elif writer.transport.get_write_buffer_size() > self.event_backlog:
                self.events_dropped += 1
            else:
                writer.write(line)
                delivered += 1
        return delivered

    def publish_threadsafe(self, data: Mapping[str, Any]) -> None:
        """publish() from another thread (a probe worker)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.publish, dict(data))

    # --- clients --------------------------------------------------------------------------------

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        connection = ServerConnection(self.max_line, self.max_pending)
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                for item in connection.receive_data(data):
                    if isinstance(item, Rejected):
                        writer.write(connection.send_rejection(item))
                        continue
                    response = await self._answer(item, writer)
                    writer.write(connection.send_response(response))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        except asyncio.CancelledError:
            pass  # stop()
        finally:
            self._subscribers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._clients.discard(task)

    async def _answer(self, request: Request, writer: asyncio.StreamWriter) -> Response:
        """Subscriptions live on the connection; every other word goes to the registry."""
        words = tuple(w.lower() for w in request.words)
        if words[0] in ("subscribe", "unsubscribe"):
            if words[1:] not in ((), ("events",)):
                return Response.failure(request.id, ErrorCode.BAD_ARGUMENTS, f"usage: {words[0]} [events]")
            if words[0] == "subscribe":
                self._subscribers.add(writer)
                return Response.success(request.id, {"subscribed": "events"}, None)
            self._subscribers.discard(writer)
            return Response.success(request.id, {"subscribed": None}, None)
        return await self.registry.execute(request)
