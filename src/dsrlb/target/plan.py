"""Planning `dsrlb target setup` and its undo: request + a snapshot of the system in, actions out.

Pure: the snapshot (`SystemState`) is read by the executor beforehand, so the same plan is what a
dry run prints and what a real run does. Every action that changes something is recorded in a
`SetupRecord`, which `--undo` turns back into the inverse actions: it removes exactly what setup
added, restores exactly the values setup replaced, and leaves alone anything changed since.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface, ip_interface
from pathlib import Path, PurePosixPath

from dsrlb.netlink.sysctl import Sysctl
from dsrlb.target.persist import ARP_SETTINGS, PersistTarget, persistent_output

IPAddress = IPv4Address | IPv4Interface | IPv6Interface
LOOPBACK = "lo"


class PlanError(ValueError):
    """The request cannot be carried out on this system (e.g. an interface that does not exist)."""


@dataclass(frozen=True)
class SetupRequest:
    vips: tuple[IPv4Interface | IPv6Interface, ...]  # each a /32 or /128
    interfaces: tuple[str, ...] = ()
    persist: PersistTarget | None = None
    root: Path = Path("/")
    vipaddrs_text: str | None = None  # the --vipaddrs file as read (rhel writes it as is)
    state_file: Path = Path("/var/lib/dsrlb/0/target-setup.json")

    @property
    def live(self) -> bool:
        """Change this machine? Not when only writing files for FreeBSD or Solaris."""
        return self.persist is None or self.persist.linux

    @property
    def sysctl_keys(self) -> tuple[Sysctl, ...]:
        if not any(v.version == 4 for v in self.vips):
            return ()  # IPv6 has no ARP: a /128 on lo is not answered by NDP on other links anyway
        return tuple(Sysctl.ipv4_conf(scope, name) for scope in ("all", *self.interfaces)
                     for name, _ in ARP_SETTINGS)

    def rooted(self, path: PurePosixPath | Path) -> Path:
        return self.root / str(path).lstrip("/")


def vip_interface(text: str) -> IPv4Interface | IPv6Interface:
    """A VIP as a host interface: `192.0.2.10` -> 192.0.2.10/32; an explicit other prefix is refused."""
    iface = ip_interface(text.strip())
    if iface.network.prefixlen != iface.max_prefixlen:
        raise PlanError(f"VIP {text}: a VIP on lo is a single address (/{iface.max_prefixlen})")
    return iface


@dataclass(frozen=True)
class SystemState:
    """What the executor read before planning."""

    lo_addresses: frozenset[IPv4Interface | IPv6Interface] = frozenset()
    sysctls: Mapping[Sysctl, str | None] = field(default_factory=dict)  # None: no such parameter
    files: Mapping[Path, str | None] = field(default_factory=dict)  # rooted path -> content or None
    record: SetupRecord | None = None


@dataclass(frozen=True)
class SetupRecord:
    """What setup changed, kept in the state file for --undo."""

    addresses: tuple[str, ...] = ()  # "192.0.2.10/32" added to lo
    sysctls: tuple[tuple[str, str, str], ...] = ()  # (dotted key, old value, value set)
    files: tuple[tuple[str, str | None, str], ...] = ()  # (rooted path, old content or None, written)

    def merged(self, later: SetupRecord) -> SetupRecord:
        """This record plus what a later setup run changed; the oldest 'before' value wins."""
        addresses = self.addresses + tuple(a for a in later.addresses if a not in self.addresses)
        keys = {k for k, _, _ in self.sysctls}
        sysctls = self.sysctls + tuple(s for s in later.sysctls if s[0] not in keys)
        paths = {p for p, _, _ in self.files}
        files = tuple((p, old, next((w for lp, _, w in later.files if lp == p), new))
                      for p, old, new in self.files)
        files += tuple(f for f in later.files if f[0] not in paths)
        return SetupRecord(addresses, sysctls, files)

    def to_json(self) -> str:
        return json.dumps({"addresses": self.addresses, "sysctls": self.sysctls, "files": self.files},
                          indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SetupRecord:
        try:
            data = json.loads(text)
            return cls(
                tuple(str(a) for a in data.get("addresses", [])),
                tuple((str(k), str(o), str(n)) for k, o, n in data.get("sysctls", [])),
                tuple((str(p), None if o is None else str(o), str(n)) for p, o, n in data.get("files", [])),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise PlanError(f"unreadable setup record: {exc}") from exc

    @property
    def empty(self) -> bool:
        return not (self.addresses or self.sysctls or self.files)


# --- actions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddAddress:
    interface: IPv4Interface | IPv6Interface
    ifname: str = LOOPBACK

    def command(self) -> str:
        return f"ip address add {self.interface} dev {self.ifname}"


@dataclass(frozen=True)
class RemoveAddress:
    interface: IPv4Interface | IPv6Interface
    ifname: str = LOOPBACK

    def command(self) -> str:
        return f"ip address delete {self.interface} dev {self.ifname}"


@dataclass(frozen=True)
class SetSysctl:
    key: Sysctl
    value: str

    def command(self) -> str:
        return f"sysctl -w {self.key}={self.value}"


@dataclass(frozen=True)
class WriteFile:
    path: Path
    content: str
    mode: int = 0o644

    def command(self) -> str:
        body = self.content if self.content.endswith("\n") else self.content + "\n"
        path = shlex.quote(str(self.path))
        return f"cat > {path} <<'EOF'\n{body}EOF\nchmod {self.mode:o} {path}"


@dataclass(frozen=True)
class RemoveFile:
    path: Path

    def command(self) -> str:
        return f"rm -f {shlex.quote(str(self.path))}"


@dataclass(frozen=True)
class Note:
    """Nothing to do; told to the operator (already present, left alone, text to copy by hand)."""

    text: str

    def command(self) -> str:
        return "\n".join(f"# {line}" if line and not line.startswith("#") else line
                         for line in self.text.splitlines())


@dataclass(frozen=True)
class SaveRecord:
    path: Path
    record: SetupRecord

    def command(self) -> str:
        return f"# record what was changed in {self.path} (for --undo)"


@dataclass(frozen=True)
class DropRecord:
    path: Path

    def command(self) -> str:
        return f"rm -f {shlex.quote(str(self.path))}"


Action = AddAddress | RemoveAddress | SetSysctl | WriteFile | RemoveFile | Note | SaveRecord | DropRecord


def persistent_files(request: SetupRequest) -> tuple[list[WriteFile], str, tuple[str, ...]]:
    output = persistent_output(request.persist, tuple(v.ip for v in request.vips), request.interfaces,
                               request.vipaddrs_text) if request.persist else None
    if output is None:
        return [], "", ()
    files = [WriteFile(request.rooted(f.path), f.content, f.mode) for f in output.files]
    return files, output.printed, output.warnings


def plan_setup(request: SetupRequest, state: SystemState) -> list[Action]:
    if not request.vips:
        raise PlanError("no VIP given (use --vip ADDR or --vipaddrs FILE)")
    actions: list[Action] = []
    record = SetupRecord()
    if request.live:
        for vip in dict.fromkeys(request.vips):
            if vip in state.lo_addresses:
                actions.append(Note(f"{vip} is already on lo"))
            else:
                actions.append(AddAddress(vip))
                record = record.merged(SetupRecord(addresses=(str(vip),)))
        for key in request.sysctl_keys:
            wanted = dict(ARP_SETTINGS)[key.parts[-1]]
            current = state.sysctls.get(key)
            if current is None:
                raise PlanError(f"no kernel parameter {key}: is there an interface {key.parts[3]!r}?")
            if current == wanted:
                actions.append(Note(f"{key} is already {wanted}"))
            else:
                actions.append(SetSysctl(key, wanted))
                record = record.merged(SetupRecord(sysctls=((key.dotted, current, wanted),)))
    else:
        actions.append(Note(f"files for {request.persist}: nothing is changed on this machine"))
    files, printed, warnings = persistent_files(request)
    for spec in files:
        old = state.files.get(spec.path)
        if old == spec.content:
            actions.append(Note(f"{spec.path} is already as wanted"))
            continue
        actions.append(spec)
        record = record.merged(SetupRecord(files=((str(spec.path), old, spec.content),)))
    actions.extend(Note(w) for w in warnings)
    if printed:
        actions.append(Note(printed))
    if not record.empty:
        total = state.record.merged(record) if state.record is not None else record
        actions.append(SaveRecord(request.state_file, total))
    return actions


def plan_undo(request: SetupRequest, state: SystemState) -> list[Action]:
    """Take back what the recorded setup runs changed; leave anything changed since."""
    record = state.record
    if record is None or record.empty:
        return [Note(f"nothing to undo: no setup record in {request.state_file}")]
    actions: list[Action] = []
    for path, old, written in reversed(record.files):
        current = state.files.get(Path(path))
        if current != written:
            actions.append(Note(f"{path} changed since setup wrote it: left alone"))
        elif old is None:
            actions.append(RemoveFile(Path(path)))
        else:
            actions.append(WriteFile(Path(path), old))
    for dotted, old, value in reversed(record.sysctls):
        key = Sysctl.parse(dotted)
        current = state.sysctls.get(key)
        if current is None:
            actions.append(Note(f"{dotted} no longer exists: nothing to restore"))
        elif current != value:
            actions.append(Note(f"{dotted} is {current} now (setup set {value}): left alone"))
        else:
            actions.append(SetSysctl(key, old))
    for text in reversed(record.addresses):
        vip = ip_interface(text)
        if vip in state.lo_addresses:
            actions.append(RemoveAddress(vip))
        else:
            actions.append(Note(f"{vip} is no longer on lo"))
    actions.append(DropRecord(request.state_file))
    return actions


def undo_state_needs(record: SetupRecord) -> tuple[tuple[Sysctl, ...], tuple[Path, ...]]:
    """Which sysctls and files the executor must read before planning an undo of `record`."""
    return tuple(Sysctl.parse(k) for k, _, _ in record.sysctls), tuple(Path(p) for p, _, _ in record.files)
