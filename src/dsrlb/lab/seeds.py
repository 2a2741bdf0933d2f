"""The seeds' configurations, remapped into the lab's documentation-range addresses.

Texts come from the package's shipped examples (`dsrlb/examples/seed000-node1.conf`, ...). While a
checkout lacks them, they are cut out of the seed documents themselves (DSRLB_SEEDS_DIR, or
`shared/seeds` beside the repository). Remapping is plain text rewriting: every IPv4 literal inside
a mapped seed network is moved into the lab network keeping its host part, some literal strings are
replaced (a /8 mask becomes /24; seed 000's mon script becomes a curl check), and the resulting
address map is returned so a reader can follow which lab address stands for which seed address.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

# shipped example name -> (seed document number, which occurrence, start marker, end marker)
_CUTS: dict[str, tuple[str, int, str, str]] = {
    "seed000-node1.conf": ("000", 0, "//        configuration taken", "//        end of configuration"),
    "seed000-node2.conf": ("000", 1, "//        configuration taken", "//        end of configuration"),
    "seed001-dsr.conf": ("001", 0, "//        configuration taken", "//        end of configuration"),
    "seed003-lb1.conf": ("003", 0, " // configuration taken", " // end of configuration"),
    "seed003-lb2.conf": ("003", 1, " // configuration taken", " // end of configuration"),
    "seed004-lvs.cf": ("004", 0, "serial_no = ", "\n}\n"),
}


class SeedConfigError(LookupError):
    """The seed configuration is neither shipped in the package nor found in a seeds directory."""


def _seeds_dirs() -> list[Path]:
    dirs = []
    if "DSRLB_SEEDS_DIR" in os.environ:
        dirs.append(Path(os.environ["DSRLB_SEEDS_DIR"]))
    repo = Path(__file__).resolve().parents[3]
    dirs += [repo.parent / "shared" / "seeds", Path("/work/shared/seeds")]
    return dirs


def _cut(text: str, occurrence: int, start: str, end: str) -> str | None:
    position = 0
    for _ in range(occurrence + 1):
        begin = text.find(start, position)
        if begin < 0:
            return None
        # A marker may sit mid-line (" // configuration taken"); start at its line's beginning.
        line_start = text.rfind("\n", 0, begin) + 1
        stop = text.find(end, begin)
        if stop < 0:
            return None
        position = stop + len(end)
        found = text[line_start:position]
    lines = found.splitlines()
    if start.startswith(" "):
        lines = [line[1:] if line.startswith(" ") else line for line in lines]  # the web page's indent
    return "\n".join(line.rstrip() for line in lines).rstrip("\n") + "\n"


def seed_config_text(name: str) -> str:
    """The seed configuration `name` (e.g. "seed001-dsr.conf") as shipped, or as cut from the seed."""
    try:
        shipped = resources.files("dsrlb.examples").joinpath(name)
        if shipped.is_file():
            return shipped.read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    if name not in _CUTS:
        raise SeedConfigError(f"unknown seed configuration {name!r}")
    number, occurrence, start, end = _CUTS[name]
    for directory in _seeds_dirs():
        for document in sorted(directory.glob(f"{number}_*.txt")) if directory.is_dir() else []:
            text = _cut(document.read_text(), occurrence, start, end)
            if text is not None:
                return text
    raise SeedConfigError(f"{name} is not shipped in dsrlb/examples and no seed document {number} was found")


@dataclass(frozen=True)
class Remap:
    """How a seed's addresses move into the lab."""

    networks: tuple[tuple[IPv4Network, IPv4Network], ...] = ()  # seed network -> lab network
    literals: tuple[tuple[str, str], ...] = ()  # exact text replacements, applied first

    def address(self, text: str) -> str:
        addr = IPv4Address(text)
        for seed_net, lab_net in self.networks:
            if addr in seed_net:
                host = int(addr) - int(seed_net.network_address)
                return str(lab_net.network_address + (host % lab_net.num_addresses))
        return text


_IPV4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])")


def remap_text(text: str, remap: Remap) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Rewrite `text`; returns the new text and the map of every rewritten literal (seed -> lab)."""
    seen: dict[str, str] = {}
    for old, new in remap.literals:
        if old in text:
            text = text.replace(old, new)
            seen[old] = new

    def replace(match: re.Match[str]) -> str:
        original = match.group(1)
        try:
            new = remap.address(original)
        except ValueError:
            return original
        if new != original:
            seen[original] = new
        return new

    return _IPV4.sub(replace, text), tuple(seen.items())
