"""A lab target's own load figure for `dsrlb agent --script`: its established service connections.

Every namespace of a lab shares one kernel, so the 1-minute load average that `dsrlb agent` reports
by default is the same machine-wide number on every target. Two agents sampling it a moment apart
can differ by a percent, and `method agent` (lowest load wins) then sends every new session to one
of them. A real target has a load of its own; in a lab the nearest per-target figure is the number
of connections its HTTP server is serving, which /proc/net/tcp{,6} of the target's namespace give.

    python -m dsrlb.lab.connload --port 80 --port 443     # prints one number, e.g. "2"
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

TCP_ESTABLISHED = "01"  # include/net/tcp_states.h
PROC_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


def established_on(ports: Iterable[int], tables: Iterable[Path] = PROC_TABLES) -> int:
    """Established TCP connections whose local port is one of `ports`, in this namespace."""
    wanted = {f"{port:04X}" for port in ports}
    count = 0
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue  # no IPv6 in this namespace: nothing to count there
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st ...; local_address is HEXADDR:HEXPORT
            if len(fields) > 3 and fields[3] == TCP_ESTABLISHED and fields[1].rpartition(":")[2] in wanted:
                count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsrlb.lab.connload", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, action="append", required=True, help="a service port (repeat)")
    args = parser.parse_args(argv)
    print(established_on(args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
