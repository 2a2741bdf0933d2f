"""dsrlb.target: the DSR target side. VIPs on lo, ARP sysctls, persistent files, vipaddrs (seed 002).

`plan.py` is pure (request + system snapshot -> actions), `apply.py` reads the snapshot and runs
the actions, `persist.py` renders the per-OS files, `vipaddrs.py` expands the seed's vipaddrs format.
"""

from dsrlb.target.apply import execute, plan, read_state
from dsrlb.target.persist import PersistTarget, persistent_output
from dsrlb.target.plan import PlanError, SetupRecord, SetupRequest, plan_setup, plan_undo, vip_interface
from dsrlb.target.vipaddrs import VipAddrsError, expand_vipaddrs, parse_vipaddrs

__all__ = [
    "PersistTarget",
    "PlanError",
    "SetupRecord",
    "SetupRequest",
    "VipAddrsError",
    "execute",
    "expand_vipaddrs",
    "parse_vipaddrs",
    "persistent_output",
    "plan",
    "plan_setup",
    "plan_undo",
    "read_state",
    "vip_interface",
]
