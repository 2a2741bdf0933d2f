"""What the lvs.cf and keepalived.conf importers share: results, warnings, numbers, schedulers, networks.

Both importers read a foreign file, check it with that program's own grammar, and build a complete
`dsrlb.model.Config`. Anything the source says that dsrlb cannot express exactly becomes a
`ConversionWarning` naming the file, the line and the setting; anything the source program itself
would reject becomes a positioned `ConfigError` (raised as `ConfigErrors`).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from dsrlb.config.errors import END_OF_FILE, ConfigError, ConfigErrors, Position
from dsrlb.model import Config, Method, PortRange


@dataclass(frozen=True)
class ConversionWarning:
    """A source setting that has no exact dsrlb equivalent, and what the importer did with it."""

    file: str
    line: int
    setting: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: warning: {self.setting}: {self.message}"

    def as_dict(self) -> dict[str, str | int]:
        return {"file": self.file, "line": self.line, "setting": self.setting, "message": self.message}


@dataclass(frozen=True)
class ImportResult:
    """The converted configuration and every warning met on the way, in file order."""

    config: Config
    warnings: tuple[ConversionWarning, ...]


def fail(where: Position, message: str, expected: str | None = None) -> ConfigErrors:
    """A one-error `ConfigErrors`, to be raised by the caller (`raise fail(...)`)."""
    return ConfigErrors([ConfigError.at(where, message, expected)])


def end_of_file(text: str, filename: str) -> Position:
    """Where a file ends: just after the last character of its last line."""
    lines = text.splitlines() or [""]
    return Position(filename, len(lines), len(lines[-1]) + 1, END_OF_FILE)


# --- numbers --------------------------------------------------------------------------------------

# strtol(tok, &end, 0) accepting the whole token: decimal, 0x hex, leading-0 octal (lvsconfig.c getNum).
_C_INTEGER = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def parse_c_integer(text: str) -> int | None:
    """The value of a C integer literal as strtol(base 0) reads it, or None if it is not one."""
    if not _C_INTEGER.fullmatch(text):
        return None
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if digits[:2] in ("0x", "0X"):
        return sign * int(digits[2:], 16)
    if len(digits) > 1 and digits.startswith("0"):
        return sign * int(digits[1:], 8)
    return sign * int(digits, 10)


def decode_c_escapes(text: str) -> str:
    """Piranha nanny's convert_str(): backslash followed by one of \\ r n t ' " becomes that character;
    any other backslash stays as written."""
    out: list[str] = []
    i = 0
    table = {"\\": "\\", "r": "\r", "n": "\n", "t": "\t", "'": "'", '"': '"'}
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in table:
            out.append(table[text[i + 1]])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


# --- schedulers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchedulerMapping:
    method: Method
    note: str | None  # None: exact; otherwise why it is only the closest method


# IPVS schedulers (ip_vs_*.c) and the dsrlb method that behaves closest. Documented in docs/importers.md.
IPVS_SCHEDULERS: dict[str, SchedulerMapping] = {
    "rr": SchedulerMapping(Method.RR, None),
    "wrr": SchedulerMapping(Method.WRR, None),
    "lc": SchedulerMapping(Method.SESSION, None),
    "sh": SchedulerMapping(Method.HASH, None),
    "mh": SchedulerMapping(Method.MAGLEV, None),
    "wlc": SchedulerMapping(
        Method.SESSION,
        "weighted least-connection becomes method session (fewest sessions); the weights stay on the "
        "targets but do not scale the choice (exact when all weights are equal)",
    ),
    "sed": SchedulerMapping(
        Method.SESSION,
        "shortest expected delay becomes method session (fewest sessions); weights do not scale the choice",
    ),
    "nq": SchedulerMapping(
        Method.SESSION,
        "never-queue becomes method session (fewest sessions, so an idle target is chosen first)",
    ),
    "lblc": SchedulerMapping(
        Method.SESSION,
        "locality-based least-connection (by destination address) becomes method session; dsrlb does not "
        "select by destination",
    ),
    "lblcr": SchedulerMapping(
        Method.SESSION,
        "locality-based least-connection with replication becomes method session; dsrlb does not select "
        "by destination",
    ),
    "dh": SchedulerMapping(
        Method.HASH,
        "destination hashing becomes method hash, which hashes the client (source) address instead",
    ),
    "fo": SchedulerMapping(
        Method.FIRST,
        "weighted failover becomes method first; targets are listed by falling weight so the heaviest "
        "operational target is used",
    ),
    "ovf": SchedulerMapping(
        Method.FIRST,
        "weighted overflow becomes method first (targets by falling weight); connection limits are not "
        "converted",
    ),
}


# --- VRRP -----------------------------------------------------------------------------------------


def derive_vrid(addresses: Iterable[object]) -> int:
    """A stable VRRP router id (1..255) from the addresses a pair of balancers shares."""
    key = ",".join(sorted(str(a) for a in addresses)).encode()
    return 1 + zlib.crc32(key) % 255


def master_down_interval(advert_interval: float, priority: int) -> float:
    """RFC 3768 §6.1: Master_Down_Interval = 3 * Advertisement_Interval + Skew_Time,
    Skew_Time = (256 - Priority) / 256 seconds."""
    return 3 * advert_interval + (256 - priority) / 256


# --- networks -------------------------------------------------------------------------------------


def covering_network(
    anchor: IPv4Address, members: Sequence[IPv4Address], prefix_hints: Sequence[int] = ()
) -> IPv4Network:
    """The network the balancer shares with `members`: the first hinted prefix (from a netmask in the
    source) around `anchor` that holds every member, else the /24 around `anchor`."""
    for prefix in prefix_hints:
        candidate = IPv4Network(f"{anchor}/{prefix}", strict=False)
        if all(m in candidate for m in members):
            return candidate
    return IPv4Network(f"{anchor}/24", strict=False)


def base_device(device: str) -> str:
    """The link an address alias lives on: `eth0:1` -> `eth0` (ifconfig alias labels)."""
    return device.split(":", 1)[0]


def netmask_prefix(mask: IPv4Address) -> int | None:
    """The prefix length of a contiguous netmask, or None if the mask is not contiguous."""
    try:
        return IPv4Network(f"0.0.0.0/{mask}").prefixlen
    except ValueError:
        return None


# --- firewall marks -------------------------------------------------------------------------------


class FwmarkOptionError(ValueError):
    """A `--fwmark MARK=PORTS` option that cannot be read."""


def parse_fwmark_option(text: str) -> tuple[int, tuple[PortRange, ...]]:
    """`80=80,443` or `5=1000-1999,2000` -> (80, port ranges). Marks and ports as in iptables."""
    mark_text, sep, ports_text = text.partition("=")
    mark = parse_c_integer(mark_text.strip())
    if not sep or mark is None or not 0 < mark < 2**32:
        raise FwmarkOptionError(f"bad --fwmark {text!r}: expected MARK=PORTS, e.g. 80=80,443")
    ranges: list[PortRange] = []
    for part in ports_text.split(","):
        first_text, dash, last_text = part.strip().partition("-")
        if not first_text.isdigit() or (dash and not last_text.isdigit()):
            raise FwmarkOptionError(f"bad port list in --fwmark {text!r}: {part.strip()!r}")
        first = int(first_text)
        last = int(last_text) if dash else first
        if not 1 <= first <= last <= 65535:
            raise FwmarkOptionError(f"bad port range in --fwmark {text!r}: {part.strip()!r}")
        ranges.append(PortRange(first, last))
    return mark, tuple(sorted(set(ranges)))


def parse_fwmark_options(options: Iterable[str]) -> dict[int, tuple[PortRange, ...]]:
    marks: dict[int, tuple[PortRange, ...]] = {}
    for option in options:
        mark, ports = parse_fwmark_option(option)
        marks[mark] = ports
    return marks


def ceil_seconds(value: float) -> int:
    """Whole seconds, rounded up (check intervals and timeouts are integers in the model)."""
    whole = int(value)
    return whole if whole >= value else whole + 1
