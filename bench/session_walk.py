"""How long reading the XDP session table takes (what session sync's refresh and resync do, and
`show sessions`): BPF_MAP_LOOKUP_BATCH against a key-by-key walk, measured in the same run.

Run as root:  .venv/bin/python bench/session_walk.py [--sessions 200000]
The last line is JSON: `batch_vs_keywalk` (time ratio, lower is better), `us_per_session` for both
and for XdpDataplane.sessions() (the batch read plus decoding into SessionEntry).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from xdp_cost import fill_sessions, load  # the same set-up as the cost bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200_000)
    args = parser.parse_args(argv)
    if not 1_000 <= args.sessions <= 2_000_000:
        parser.error("--sessions: 1000-2000000")
    dataplane = load(sessions=args.sessions + 65536)
    try:
        fill_sessions(dataplane, args.sessions)
        sessions = dataplane.maps["sessions"]
        timings: dict[str, float] = {}
        start = time.perf_counter()
        batched = sum(1 for _ in sessions.items())
        timings["batch"] = time.perf_counter() - start
        start = time.perf_counter()
        walked = sum(1 for key in list(sessions.keys()) if sessions.lookup(key) is not None)
        timings["keywalk"] = time.perf_counter() - start
        start = time.perf_counter()
        entries = len(dataplane.sessions())
        timings["sessions"] = time.perf_counter() - start
    finally:
        dataplane.close()
    if not batched == walked == entries:
        raise SystemExit(f"the walks disagree: batch {batched}, key walk {walked}, sessions() {entries}")
    per = {name: round(seconds / entries * 1e6, 3) for name, seconds in timings.items()}
    print(f"{entries} sessions: batch {timings['batch']:.2f} s, key walk {timings['keywalk']:.2f} s, "
          f"sessions() {timings['sessions']:.2f} s")
    ratio = round(timings["batch"] / timings["keywalk"], 3)
    print(json.dumps({"sessions": entries, "batch_vs_keywalk": ratio, "us_per_session": per}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
