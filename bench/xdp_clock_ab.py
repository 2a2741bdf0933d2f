"""A/B of the XDP program's clock: the calibrated jiffies clock against the coarse-clock helper.

Two copies of the same object are loaded; one has its `clock_base` set to COARSE, so it calls
bpf_ktime_get_coarse_ns() (and pays one extra inlined array lookup, ~2 ns, a small bias against it).
Each path of bench/xdp_cost.py is measured on both, interleaved with the swap-MAC floor, as a ratio.

Run as root:  .venv/bin/python bench/xdp_clock_ab.py [ROUNDS]   (last line: JSON of the ratios)
"""

from __future__ import annotations

import json
import sys

import xdp_cost as xc
from dsrlb.xdp import build
from dsrlb.xdp.clock import COARSE
from dsrlb.xdp.libbpf import BpfObject


def main() -> None:
    floor_obj = BpfObject(build.ensure_object(build.FLOOR_PROGRAM))
    floor_obj.load()
    floor = floor_obj.program("xdp_floor")
    jif, coarse = xc.load(), xc.load()
    coarse.maps["clock_base"].update(bytes(4), COARSE.to_bytes())
    print("clock", jif.clock)
    measures = {"floor": xc.timer(floor, xc.FRAMES["established"])}
    for name in ("established", "established_tx", "nat_forward", "nat_return", "new_session"):
        for label, dp in (("jiffies", jif), ("coarse", coarse)):
            drain = dp.drain_session_events if name == "new_session" else None
            measures[f"{name}/{label}"] = xc.timer(dp.program, xc.FRAMES[name], drain)
    res = xc.interleaved(measures, "floor", int(sys.argv[1]) if len(sys.argv) > 1 else 20)
    for k, v in sorted(res.items()):
        print(f"{k:>26}: {v:5.2f}")
    print(json.dumps({k: round(v, 3) for k, v in res.items()}))
    for dataplane in (jif, coarse):
        dataplane.close()
    floor_obj.close()


if __name__ == "__main__":
    main()
