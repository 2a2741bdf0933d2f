"""The seed configurations shipped with dsrlb, cut out of the seed documents byte for byte.

The native (BalanceNG dialect) files are the configuration listings of seeds 000, 001 and 003 from
their first `// configuration taken` line to their `// end of configuration` line, each ending with a
newline. Seed 003's listings keep the single leading blank that its web page put before every line
(and the blanks after `}`): they are what a user would paste, and the dialect allows any indentation.
`seed004-lvs.cf` is the Piranha lvs.cf of seed 004 from `serial_no = 5` to the closing `}`; the page
shows it without added indentation (the 5- and 9-blank indents are Piranha's own), so nothing is
removed; the shell prompt line before it is not part of the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Example:
    """One shipped example: file name, the seed document it comes from, its dialect and what it shows."""

    name: str
    seed: str  # seed document number, e.g. "000"
    dialect: str  # "balanceng" (load with dsrlb.config.load) or "lvs.cf" (dsrlb convert)
    description: str

    @property
    def path(self) -> Path:
        return _HERE / self.name

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def native(self) -> bool:
        return self.dialect == "balanceng"


EXAMPLES: tuple[Example, ...] = (
    Example("seed000-node1.conf", "000", "balanceng", "DSR, two single-legged nodes in VRRP HA: node 1"),
    Example("seed000-node2.conf", "000", "balanceng", "DSR, two single-legged nodes in VRRP HA: node 2"),
    Example("seed001-dsr.conf", "001", "balanceng", "single-legged DSR with tcpopen health checks"),
    Example("seed003-lb1.conf", "003", "balanceng", "IPv6 NAT, three legs, VRRP tracking: LB1"),
    Example("seed003-lb2.conf", "003", "balanceng", "IPv6 NAT, three legs, VRRP tracking: LB2"),
    Example("seed004-lvs.cf", "004", "lvs.cf", "Piranha LVS direct routing, firewall mark 80+443"),
)


def list_examples(native_only: bool = False) -> tuple[Example, ...]:
    """The shipped examples in seed order (only the BalanceNG-dialect ones with native_only)."""
    return tuple(e for e in EXAMPLES if e.native or not native_only)


def example(name: str) -> Example:
    """The example called `name` (file name, with or without its suffix); KeyError if there is none."""
    for item in EXAMPLES:
        if name in (item.name, item.path.stem):
            return item
    raise KeyError(f"no example {name!r}; choose from {', '.join(e.name for e in EXAMPLES)}")
