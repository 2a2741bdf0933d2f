"""A synchronous control-socket client, for the CLI (`dsrlb control`, `dsrlb show`, `dsrlb reload`).

Blocking sockets with a timeout: the CLI has nothing else to do while it waits. Events that arrive
while waiting for a response are kept for `events()`.
"""

from __future__ import annotations

import collections
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from dsrlb.control.protocol import ClientConnection, ErrorCode, Event, ProtocolViolation, Response
from dsrlb.paths import instance_paths

DEFAULT_TIMEOUT = 30.0


class ControlClientError(Exception):
    """Talking to the daemon failed (exit code 2 in the CLI)."""


class NotRunningError(ControlClientError):
    """No daemon answers for the instance."""


class CommandRejected(Exception):
    """The daemon answered with an error (exit code 1 in the CLI)."""

    def __init__(self, code: ErrorCode, message: str, suggestions: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.suggestions = tuple(suggestions)


@dataclass(frozen=True)
class CallResult:
    data: Any
    text: str | None


class ControlClient:
    """One connection to a daemon's control socket."""

    def __init__(self, path: Path, *, instance: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = Path(path)
        self.instance = instance
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._connection = ClientConnection()
        self._responses: dict[int | str | None, Response] = {}
        self._events: collections.deque[Mapping[str, Any]] = collections.deque()

    @classmethod
    def for_instance(cls, instance: str = "0", *, timeout: float = DEFAULT_TIMEOUT) -> ControlClient:
        return cls(instance_paths(instance).control_socket, instance=instance, timeout=timeout)

    @property
    def _who(self) -> str:
        return f"dsrlb instance {self.instance}" if self.instance is not None else "dsrlb"

    def connect(self) -> ControlClient:
        if self._sock is not None:
            return self
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(os.fspath(self.path))
        except FileNotFoundError:
            sock.close()
            raise NotRunningError(f"{self._who} is not running (no control socket at {self.path})") from None
        except ConnectionRefusedError:
            sock.close()
            raise NotRunningError(
                f"{self._who} is not running (stale control socket at {self.path})"
            ) from None
        except PermissionError:
            sock.close()
            raise ControlClientError(
                f"permission denied on the control socket {self.path} (it is 0600: run as its owner)"
            ) from None
        except OSError as exc:
            sock.close()
            raise ControlClientError(f"cannot connect to {self.path}: {exc.strerror or exc}") from None
        self._sock = sock
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ControlClient:
        return self.connect()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- calls ----------------------------------------------------------------------------------

    def request(self, cmd: str, args: Sequence[str] = (), *, want_json: bool = False) -> Response:
        """Send one request and wait for its response (error responses are returned, not raised)."""
        sock = self.connect()._require()
        request_id, data = self._connection.send_request(cmd, args, want_json)
        try:
            sock.sendall(data)
        except OSError as exc:
            self.close()
            raise ControlClientError(f"{self._who} closed the control connection ({exc})") from None
        # One request is outstanding at a time, so an id-less answer (the server could not read our
        # request's id: an overlong line) is the answer to it.
        while request_id not in self._responses and None not in self._responses:
            self._receive()
        return self._responses.pop(request_id, None) or self._responses.pop(None)

    def call(self, cmd: str, args: Sequence[str] = (), *, want_json: bool = False) -> CallResult:
        """The result of a command; raises CommandRejected when the daemon refuses it."""
        response = self.request(cmd, args, want_json=want_json)
        if not response.ok:
            error = response.error
            if error is None:
                raise CommandRejected(ErrorCode.INTERNAL, "error without details")
            raise CommandRejected(error.code, error.message, error.suggestions)
        return CallResult(response.result, response.text)

    def call_words(self, words: Sequence[str], *, want_json: bool = False) -> CallResult:
        if not words:
            raise CommandRejected(ErrorCode.UNKNOWN_COMMAND, "empty command; try 'help'")
        return self.call(words[0], words[1:], want_json=want_json)

    def subscribe(self) -> Iterator[Mapping[str, Any]]:
        """Subscribe now; the iterator yields events until the daemon closes the connection."""
        self.call("subscribe", ["events"])
        return self._event_stream()

    def _event_stream(self) -> Iterator[Mapping[str, Any]]:
        while True:
            while self._events:
                yield self._events.popleft()
            try:
                self._receive(wait_forever=True)
            except ControlClientError:
                return

    def _require(self) -> socket.socket:
        if self._sock is None:
            raise ControlClientError("not connected")
        return self._sock

    def _receive(self, wait_forever: bool = False) -> None:
        sock = self._require()
        sock.settimeout(None if wait_forever else self.timeout)
        try:
            data = sock.recv(256 * 1024)
        except TimeoutError:
            raise ControlClientError(f"no answer from {self._who} within {self.timeout:g} s") from None
        except OSError as exc:
            self.close()
            raise ControlClientError(f"{self._who} closed the control connection ({exc})") from None
        if not data:
            self.close()
            raise ControlClientError(f"{self._who} closed the control connection")
        for item in self._connection.receive_data(data):
            if isinstance(item, ProtocolViolation):
                self.close()
                raise ControlClientError(f"protocol error from {self._who}: {item.message}")
            if isinstance(item, Event):
                self._events.append(item.data)
            else:
                self._responses[item.id] = item
