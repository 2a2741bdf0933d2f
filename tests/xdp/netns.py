"""A network namespace with the interface indexes the fixtures use, and a way to run inside it.

BPF_PROG_TEST_RUN looks the context's ingress_ifindex up in the caller's network namespace, so the
tests run their test runs from a namespace of their own where ifindex 1 (lo) and 2..N (veth
devices made with those indexes) exist. Entering is per thread (setns), and always undone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import uuid
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class ScratchNamespace:
    """`ip netns add` a namespace with veth devices at ifindex 2..max_ifindex (+1); remove() undoes it."""

    def __init__(self, max_ifindex: int = 8) -> None:
        self.name = f"dsrlbx{uuid.uuid4().hex[:10]}"
        ip("netns", "add", self.name)
        try:
            ip("-n", self.name, "link", "set", "lo", "up")
            # veth pairs (not every kernel has the dummy driver): ifindex 2+3, 4+5, ...
            for index in range(2, max_ifindex + 1, 2):
                ip("-n", self.name, "link", "add", "name", f"v{index}", "index", str(index), "type", "veth",
                   "peer", "name", f"v{index + 1}", "index", str(index + 1))
        except BaseException:
            self.remove()
            raise

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the body with this thread inside the namespace."""
        with open("/proc/thread-self/ns/net") as original, open(self.path) as target:
            _setns(target.fileno())
            try:
                yield
            finally:
                _setns(original.fileno())

    def remove(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
