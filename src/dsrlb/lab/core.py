"""`Lab`: network namespaces, veth pairs, bridges, addresses, routes, sysctls and processes, all undone.

A lab is made of namespaces only: nothing is created in the namespace the program runs in, no
interface of the host is touched, and no veth leads out, so traffic inside can never leave. Every
address and route must lie in the documentation ranges (RFC 5737: 192.0.2.0/24, 198.51.100.0/24,
203.0.113.0/24; RFC 3849: 2001:db8::/32).

Names are unique per run: `<prefix><6 hex>-<role>` (at most 15 characters, the kernel's IFNAMSIZ
limit, so they also fit anywhere an interface name would). Cleanup runs on `with` exit (also on an
exception or Ctrl-C), on SIGTERM/SIGHUP (turned into SystemExit while the lab is open), and from
atexit; a registry file per lab lets `cleanup_stale_labs()` finish the job after a SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_interface, ip_network
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from pyroute2 import netns as pyroute2_netns

from dsrlb.netlink import Netlink, Sysctl, netns_exists, write_sysctl
from dsrlb.netlink.errors import NetlinkFacadeError

DOCUMENTATION_NETWORKS: tuple[IPv4Network | IPv6Network, ...] = (
    ip_network("192.0.2.0/24"),
    ip_network("198.51.100.0/24"),
    ip_network("203.0.113.0/24"),
    ip_network("2001:db8::/32"),
)
DEFAULT_ROUTES = (ip_network("0.0.0.0/0"), ip_network("::/0"))
MAX_NAME = 15
REGISTRY_DIR = Path(os.environ.get("DSRLB_LAB_REGISTRY", "/run/dsrlb/labs"))


class LabError(Exception):
    """The lab cannot be built as asked (bad address, name clash, a kernel refusal)."""


def in_documentation_range(text: str) -> bool:
    addr = ip_interface(text).ip if "/" in text else ip_address(text)
    return any(addr in net for net in DOCUMENTATION_NETWORKS)


def _check_documentation_network(text: str) -> None:
    net = ip_network(text, strict=False)
    if not any(net.subnet_of(doc) for doc in DOCUMENTATION_NETWORKS if doc.version == net.version):  # type: ignore[arg-type]
        raise LabError(f"{text} is outside the documentation ranges a lab may use")


@dataclass(frozen=True)
class LabProcess:
    """A process the lab started inside one of its namespaces."""

    name: str
    role: str
    netns: str
    pid: int
    argv: tuple[str, ...]
    log: Path


_open_labs: set[Lab] = set()
_open_labs_lock = threading.Lock()


def _close_open_labs() -> None:
    with _open_labs_lock:
        labs = list(_open_labs)
    for lab in labs:
        # A forked child (pyroute2 forks to create namespaces) inherits atexit handlers: it must
        # never tear down its parent's lab when it exits.
        if lab.owner_pid == os.getpid():
            lab.close()


atexit.register(_close_open_labs)


class Lab:
    """A set of namespaces wired together; use it as a context manager."""

    def __init__(self, prefix: str = "dl") -> None:
        if not prefix.isalnum() or len(prefix) > 4:
            raise LabError("lab prefix: 1-4 letters or digits")
        self.id = f"{prefix}{secrets.token_hex(3)}"
        self.owner_pid = os.getpid()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"dsrlb-lab-{self.id}-"))
        self._roles: dict[str, str] = {}  # role -> namespace name, in creation order
        self._handles: dict[str, Netlink] = {}
        self._peers: dict[tuple[str, str], tuple[str, str]] = {}  # (role, ifname) -> far end of its veth
        self._processes: list[tuple[LabProcess, subprocess.Popen[bytes]]] = []
        self._previous_handlers: dict[int, Any] = {}
        self._closed = False
        with _open_labs_lock:
            _open_labs.add(self)
        self._write_registry()

    # --- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGHUP):
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.owner_pid:
            os._exit(128 + signum)  # a forked child got the signal: just go
        # Unwind through `with` blocks so every layer cleans up; 128 + signal is the shell's code.
        raise SystemExit(128 + signum)

    def close(self) -> None:
        """Stop the lab's processes, delete its namespaces and work directory. Safe to call twice."""
        if self._closed or os.getpid() != self.owner_pid:
            return
        self._closed = True
        for proc, popen in reversed(self._processes):
            self._stop(proc, popen)
        self._processes.clear()
        for handle in self._handles.values():
            with contextlib.suppress(Exception):  # a handle that fails to close must not stop the cleanup
                handle.close()
        self._handles.clear()
        for name in reversed(list(self._roles.values())):
            if netns_exists(name):
                with contextlib.suppress(OSError):
                    pyroute2_netns.remove(name)
        self._roles.clear()
        for signum, handler in self._previous_handlers.items():
            if threading.current_thread() is threading.main_thread():
                signal.signal(signum, handler)
        self._previous_handlers.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)
        (REGISTRY_DIR / f"{self.id}.json").unlink(missing_ok=True)
        with _open_labs_lock:
            _open_labs.discard(self)

    def _write_registry(self) -> None:
        try:
            REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
            record = {"owner_pid": os.getpid(), "namespaces": list(self._roles.values()),
                      "pids": [p.pid for p, _ in self._processes], "workdir": str(self.workdir)}
            (REGISTRY_DIR / f"{self.id}.json").write_text(json.dumps(record))
        except OSError:
            pass  # the registry only helps after a SIGKILL; the lab works without it

    # --- namespaces ------------------------------------------------------------------------------

    @property
    def roles(self) -> dict[str, str]:
        return dict(self._roles)

    def ns(self, role: str) -> str:
        try:
            return self._roles[role]
        except KeyError:
            raise LabError(f"the lab has no node {role!r}") from None

    def add_node(self, role: str) -> str:
        """Create the namespace for `role`, with lo up and IPv6 DAD off (addresses usable at once)."""
        name = f"{self.id}-{role}"
        if role in self._roles or len(name) > MAX_NAME or not role.replace("_", "").isalnum():
            limit = MAX_NAME - len(self.id) - 1
            raise LabError(f"bad or duplicate node name {role!r} (at most {limit} chars)")
        if netns_exists(name):
            raise LabError(f"network namespace {name} exists already")
        pyroute2_netns.create(name)
        self._roles[role] = name
        self._write_registry()
        for key in ("all", "default"):
            write_sysctl(Sysctl.ipv6_conf(key, "accept_dad"), 0, name)
        self.netlink(role).set_link_up("lo")
        return name

    def netlink(self, role: str) -> Netlink:
        handle = self._handles.get(role)
        if handle is None:
            handle = self._handles[role] = Netlink(self.ns(role))
        return handle

    # --- wiring ----------------------------------------------------------------------------------

    def veth(self, role_a: str, ifname_a: str, role_b: str, ifname_b: str) -> None:
        """A veth pair from `role_a`'s ifname_a to `role_b`'s ifname_b, made inside the namespaces."""
        for ifname in (ifname_a, ifname_b):
            if not 0 < len(ifname) <= MAX_NAME:
                raise LabError(f"bad interface name {ifname!r}")
        nl_a = self.netlink(role_a)
        try:
            nl_a.add_veth(ifname_a, ifname_b, self.ns(role_b))
        except NetlinkFacadeError as exc:
            raise LabError(f"veth {role_a}:{ifname_a} <-> {role_b}:{ifname_b}: {exc}") from exc
        nl_a.set_link_up(ifname_a)
        self.netlink(role_b).set_link_up(ifname_b)
        self._peers[(role_a, ifname_a)] = (role_b, ifname_b)
        self._peers[(role_b, ifname_b)] = (role_a, ifname_a)

    def peer(self, role: str, ifname: str) -> tuple[str, str]:
        """(role, ifname) of the far end of `role`'s veth `ifname` (a switch port for `plug`)."""
        try:
            return self._peers[(role, ifname)]
        except KeyError:
            raise LabError(f"{role}:{ifname} is not a veth of this lab") from None

    def bridge(self, switch_role: str, name: str = "br0") -> None:
        """A bridge in the switch namespace (STP and multicast snooping off: see Netlink.add_bridge)."""
        nl = self.netlink(switch_role)
        try:
            nl.add_bridge(name)
        except NetlinkFacadeError as exc:
            raise LabError(f"bridge {switch_role}:{name}: {exc}") from exc
        nl.set_link_up(name)

    def plug(self, role: str, ifname: str, switch_role: str, bridge: str = "br0") -> None:
        """Connect `role`'s interface `ifname` to the bridge in `switch_role`."""
        port = f"{role}-{ifname}"[:MAX_NAME]
        self.veth(role, ifname, switch_role, port)
        nl = self.netlink(switch_role)
        try:
            nl.set_master(port, bridge)
        except NetlinkFacadeError as exc:
            raise LabError(f"enslave {port} to {bridge}: {exc}") from exc

    def address(self, role: str, ifname: str, interface: str) -> None:
        if not in_documentation_range(interface):
            raise LabError(f"{interface} is outside the documentation ranges a lab may use")
        self.netlink(role).add_address(ifname, ip_interface(interface), nodad=True)

    def route(self, role: str, prefix: str, gateway: str) -> None:
        """A route inside the lab; the gateway must be a lab (documentation-range) address."""
        net = ip_network(prefix, strict=False)
        if net not in DEFAULT_ROUTES:
            _check_documentation_network(prefix)
        if not in_documentation_range(gateway):
            raise LabError(f"gateway {gateway} is outside the documentation ranges")
        try:
            self.netlink(role).add_route(net, gateway)
        except NetlinkFacadeError as exc:
            raise LabError(str(exc)) from exc

    def sysctl(self, role: str, key: Sysctl, value: str | int) -> None:
        write_sysctl(key, value, self.ns(role))

    # --- processes -------------------------------------------------------------------------------

    @property
    def processes(self) -> tuple[LabProcess, ...]:
        return tuple(p for p, _ in self._processes)

    def spawn(self, role: str, name: str, argv: list[str], ready_line: str | None = None,
              ready_timeout: float = 10.0) -> LabProcess:
        """Start `argv` inside `role`'s namespace (`ip netns exec`, which execs: the PID is argv's).

        With `ready_line`, wait until the process prints a stdout line starting with it (bounded),
        so a server is known to listen before the caller goes on.
        """
        netns = self.ns(role)
        log = self.workdir / f"{role}-{name}.log"
        full = ["ip", "netns", "exec", netns, *argv]
        with log.open("wb") as log_file:
            popen = subprocess.Popen(full, stdin=subprocess.DEVNULL, stderr=log_file,
                                     stdout=subprocess.PIPE if ready_line else log_file,
                                     start_new_session=True)
        proc = LabProcess(name, role, netns, popen.pid, tuple(argv), log)
        self._processes.append((proc, popen))
        self._write_registry()
        if ready_line is not None:
            self._wait_ready(proc, popen, ready_line, ready_timeout)
        return proc

    def _wait_ready(self, proc: LabProcess, popen: subprocess.Popen[bytes], ready_line: str,
                    timeout: float) -> None:
        assert popen.stdout is not None
        deadline = time.monotonic() + timeout
        buffered = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([popen.stdout], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                break
            chunk = os.read(popen.stdout.fileno(), 4096)
            if not chunk:
                break
            buffered += chunk
            if any(line.startswith(ready_line.encode()) for line in buffered.splitlines()):
                return
        detail = proc.log.read_text(errors="replace").strip()[-500:]
        raise LabError(f"{proc.name} in {proc.role} did not get ready within {timeout:.0f} s: {detail}")

    def stop(self, proc: LabProcess) -> None:
        for i, (known, popen) in enumerate(self._processes):
            if known.pid == proc.pid:
                self._stop(known, popen)
                del self._processes[i]
                self._write_registry()
                return

    @staticmethod
    def _stop(proc: LabProcess, popen: subprocess.Popen[bytes], grace: float = 2.0) -> None:
        # Only the PID we started; Popen knows whether it has been reaped, so no PID reuse risk.
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(grace)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(grace)
        if popen.stdout is not None:
            popen.stdout.close()


def _netns_inode(name: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return None


def cleanup_stale_labs() -> list[str]:
    """Remove what labs of dead owners (SIGKILLed programs) left: their processes and namespaces.

    Only namespaces recorded in a registry file whose owner PID is gone are touched; processes are
    stopped only when they run inside one of those namespaces (matched by namespace inode).
    """
    removed: list[str] = []
    if not REGISTRY_DIR.is_dir():
        return removed
    for record_file in REGISTRY_DIR.glob("*.json"):
        try:
            record = json.loads(record_file.read_text())
            owner = int(record["owner_pid"])
            namespaces = [str(n) for n in record["namespaces"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if Path(f"/proc/{owner}").exists():
            continue
        inodes = {i for i in (_netns_inode(n) for n in namespaces) if i is not None}
        for pid in [int(p) for p in record.get("pids", [])]:
            try:
                if os.stat(f"/proc/{pid}/ns/net").st_ino in inodes:
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
        for name in namespaces:
            if netns_exists(name):
                pyroute2_netns.remove(name)
                removed.append(name)
        shutil.rmtree(str(record.get("workdir", "")), ignore_errors=True) if record.get("workdir") else None
        record_file.unlink(missing_ok=True)
    return removed
