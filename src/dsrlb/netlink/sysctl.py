"""Kernel parameters through /proc/sys files, in the current or a named namespace, with undo.

The DSR sysctls (arp_ignore, arp_announce) and the forwarding/filter ones (ip_forward, rp_filter,
accept_local) live under /proc/sys/net, which is per network namespace: a file opened by a thread
inside namespace N shows N's value (see namespace.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dsrlb.netlink.errors import NetlinkFacadeError
from dsrlb.netlink.namespace import run_in_netns

PROC_SYS = Path("/proc/sys")


class SysctlError(NetlinkFacadeError):
    """A kernel parameter does not exist or cannot be read or written."""


@dataclass(frozen=True, order=True)
class Sysctl:
    """A kernel parameter as its path under /proc/sys (components, so interface names may hold dots)."""

    parts: tuple[str, ...]

    @classmethod
    def ipv4_conf(cls, interface: str, name: str) -> Sysctl:
        """net.ipv4.conf.IF.NAME; IF is an interface name, `all` or `default`."""
        return cls(("net", "ipv4", "conf", interface, name))

    @classmethod
    def ipv6_conf(cls, interface: str, name: str) -> Sysctl:
        return cls(("net", "ipv6", "conf", interface, name))

    @classmethod
    def ipv4(cls, name: str) -> Sysctl:
        return cls(("net", "ipv4", name))

    @classmethod
    def parse(cls, dotted: str) -> Sysctl:
        """`net.ipv4.conf.eth0/100.arp_ignore` (sysctl(8) writes dots inside names as slashes)."""
        parts = tuple(p.replace("/", ".") for p in dotted.strip().split("."))
        if len(parts) < 2 or any(not p or p in ("..",) for p in parts):
            raise SysctlError(f"bad sysctl name {dotted!r}")
        return cls(parts)

    @property
    def path(self) -> Path:
        return PROC_SYS.joinpath(*self.parts)

    @property
    def dotted(self) -> str:
        return ".".join(p.replace(".", "/") for p in self.parts)

    def __str__(self) -> str:
        return self.dotted


def _read(key: Sysctl) -> str:
    try:
        return key.path.read_text().strip()
    except FileNotFoundError:
        raise SysctlError(f"no such kernel parameter {key} (is the interface there?)") from None
    except OSError as exc:
        raise SysctlError(f"cannot read {key}: {exc.strerror}") from exc


def _write(key: Sysctl, value: str) -> None:
    try:
        key.path.write_text(f"{value}\n")
    except FileNotFoundError:
        raise SysctlError(f"no such kernel parameter {key} (is the interface there?)") from None
    except OSError as exc:
        raise SysctlError(f"cannot set {key} = {value}: {exc.strerror}") from exc


def read_sysctl(key: Sysctl, netns: str | None = None) -> str:
    return run_in_netns(netns, lambda: _read(key))


def write_sysctl(key: Sysctl, value: str | int, netns: str | None = None) -> None:
    run_in_netns(netns, lambda: _write(key, str(value)))


def sysctl_exists(key: Sysctl, netns: str | None = None) -> bool:
    return run_in_netns(netns, key.path.exists)


class SysctlKeeper:
    """Sets kernel parameters and remembers the value each had before its first change.

    restore() puts back exactly those parameters, newest change first, and forgets them. A
    parameter that already had the wanted value is not recorded, so restore() leaves it alone.
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._old: dict[Sysctl, str] = {}

    @property
    def changed(self) -> dict[Sysctl, str]:
        """Each parameter this keeper changed, with the value it had before."""
        return dict(self._old)

    def set(self, key: Sysctl, value: str | int) -> bool:
        """Set `key`; True when that changed it."""
        wanted = str(value)
        current = read_sysctl(key, self.netns)
        if current == wanted:
            return False
        write_sysctl(key, wanted, self.netns)
        self._old.setdefault(key, current)
        return True

    def restore(self) -> list[Sysctl]:
        restored: list[Sysctl] = []
        for key, old in reversed(list(self._old.items())):
            try:
                write_sysctl(key, old, self.netns)
            except SysctlError:
                continue  # the interface went away, and its parameters with it
            restored.append(key)
        self._old.clear()
        return restored
