"""The `vipaddrs` file of seed 002 (CommuniGate Pro's /etc/sysconfig/vipaddrs) and its expansion.

Semantics are those of the seed's `ifvip-utils` / `ifup-lo` scripts:

- a line starting with `#` is ignored (`grep -v '^#'`); blank lines are ignored;
- every whitespace-separated word of the other lines is one entry (the script loops over the words);
- an entry without `/` means `/32`; a mask below 24 is the error `Incorrect mask: A/M`, and one bad
  entry rejects the whole file before anything is applied (the script exits 1 first);
- `A.B.C.D/M` expands to 2^(32-M) addresses counting up from D in the last octet, exactly as
  `$xIP0.$((xIP1 + index))` does: the start is the address as written, not rounded down to the
  network (so `/24` written as `x.y.z.0/24` gives .0 to .255, network and broadcast included).

Where the script would misbehave, this module gives a clear error instead: a word that is not a
dotted-quad IPv4 address, a mask that is not a number or above 32, or a range running past .255
(the script would try to add `x.y.z.256`). A word starting with `#` after an address starts a
comment (the script would choke on it). Duplicates are dropped, first occurrence kept (the script
skips addresses already on lo).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address

MIN_MASK = 24  # "subnetwork masks must be 24 bits or longer" (seed 002)
_DOTTED_QUAD = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")


class VipAddrsError(ValueError):
    """A vipaddrs file is wrong; the message names the source, the line and the entry."""


@dataclass(frozen=True)
class VipEntry:
    """One entry as written: a start address and a mask (32 for a single address)."""

    text: str
    line: int
    start: IPv4Address
    mask: int

    @property
    def count(self) -> int:
        return 1 << (32 - self.mask)

    def expand(self) -> list[IPv4Address]:
        octets = str(self.start).split(".")
        last = int(octets[3])
        if last + self.count - 1 > 255:
            raise VipAddrsError(
                f"line {self.line}: {self.text} runs past .255 (it would need {self.count} addresses "
                f"from .{last}); write the subnet from its first address"
            )
        base = ".".join(octets[:3])
        return [IPv4Address(f"{base}.{last + i}") for i in range(self.count)]


def _parse_word(word: str, line: int, source: str) -> VipEntry:
    address, _, mask_text = word.partition("/")
    if not mask_text:
        mask_text = "32"
    match = _DOTTED_QUAD.match(address)
    if match is None or any(int(o) > 255 for o in match.groups()):
        raise VipAddrsError(f"{source}:{line}: not an IPv4 address: {word}")
    if not mask_text.isdigit():
        raise VipAddrsError(f"{source}:{line}: bad mask: {word}")
    mask = int(mask_text)
    if mask < MIN_MASK:
        # The seed's message, word for word (its `echo ... >2` meant stderr).
        raise VipAddrsError(f"{source}:{line}: Incorrect mask: {address}/{mask_text}")
    if mask > 32:
        raise VipAddrsError(f"{source}:{line}: bad mask (more than 32 bits): {word}")
    return VipEntry(word, line, IPv4Address(address), mask)


def parse_vipaddrs(text: str, source: str = "vipaddrs") -> list[VipEntry]:
    entries: list[VipEntry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.startswith("#"):
            continue
        for word in raw.split():
            if word.startswith("#"):
                break
            entries.append(_parse_word(word, number, source))
    return entries


def expand_vipaddrs(text: str, source: str = "vipaddrs") -> list[IPv4Address]:
    """Every address the file stands for, in file order, without duplicates."""
    seen: dict[IPv4Address, None] = {}
    for entry in parse_vipaddrs(text, source):
        try:
            addresses = entry.expand()
        except VipAddrsError as exc:
            raise VipAddrsError(f"{source}:{exc}") from None
        for address in addresses:
            seen.setdefault(address, None)
    return list(seen)
