"""Running code inside a named network namespace without a subprocess.

`setns(2)` with CLONE_NEWNET changes the namespace of the calling *thread* only, so the facade runs
namespace-bound work (opening /proc/sys files, creating sockets) in a short-lived thread that enters
the namespace and leaves again. A socket keeps the namespace it was created in for its whole life,
so a socket made in such a thread can be used from any thread afterwards (AF_PACKET captures and
HTTP clients in labs rely on this). /proc/sys/net resolves against the namespace of the task that
opens the file, which is why sysctls of another namespace are read and written this way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from dsrlb.netlink.errors import NamespaceNotFoundError, NetlinkFacadeError

NETNS_RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

T = TypeVar("T")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def netns_path(name: str) -> Path:
    if not name or "/" in name or name in (".", ".."):
        raise NamespaceNotFoundError(f"bad network namespace name {name!r}")
    return NETNS_RUN_DIR / name


def netns_exists(name: str) -> bool:
    try:
        return netns_path(name).exists()
    except NamespaceNotFoundError:
        return False


def list_netns() -> list[str]:
    if not NETNS_RUN_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_RUN_DIR.iterdir())


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetlinkFacadeError(f"setns into {what} failed: {os.strerror(err)}")


@contextmanager
def entered_netns(name: str) -> Iterator[None]:
    """Move the calling thread into namespace `name`, and back on exit.

    Only for threads the caller owns (see `run_in_netns`); the main thread of a program should not
    wander between namespaces while other code runs in it.
    """
    path = netns_path(name)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NamespaceNotFoundError(f"network namespace {name!r} does not exist") from None
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target, f"namespace {name!r}")
        try:
            yield
        finally:
            _setns(own, "the original namespace")
    finally:
        os.close(target)
        os.close(own)


def run_in_netns(name: str | None, func: Callable[[], T]) -> T:
    """Run `func` in namespace `name` (None: right here, in the current one) and return its result.

    The call runs in a fresh thread that enters the namespace; its exception, if any, is re-raised
    in the caller.
    """
    if name is None:
        return func()
    outcome: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            with entered_netns(name):
                outcome.append(func())
        except BaseException as exc:  # re-raised in the caller's thread below
            failure.append(exc)

    worker = threading.Thread(target=body, name=f"netns-{name}", daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]
