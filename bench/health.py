"""CPU cost of health checking: 10,000 targets with `tcpopen` at a 1 s interval.

    sudo .venv/bin/python bench/health.py [--targets 10000] [--duration 10]

Makes a namespace with an accept-and-close TCP server on 100 ports of its loopback (a separate
process, so its CPU is not counted), then runs two scheduler processes in it one after the other: an
idle one with no targets and a loaded one with N targets. Each measures its own process CPU time
(utime + stime from /proc/self/stat) over `duration` seconds after a 2 s warm-up. Prints one line per
worker and, last, the JSON summary {"targets", "interval_s", "cpu_ratio", ...}, where cpu_ratio is the
loaded CPU over the idle CPU of the same run (the idle figure is floored at one clock tick).
Everything it makes is removed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import selectors
import socket
import subprocess
import sys
import uuid
from ipaddress import IPv4Address

PORTS = 100
BASE_PORT = 20000
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    """Process CPU seconds (user + system) from /proc/self/stat, fields 14 and 15."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def serve() -> None:
    """Accept and close connections on PORTS loopback ports until killed."""
    sel = selectors.DefaultSelector()
    for port in range(BASE_PORT, BASE_PORT + PORTS):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(4096)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            for _ in range(64):
                try:
                    conn, _addr = sock.accept()
                except BlockingIOError:
                    break
                conn.close()


async def work(targets: int, duration: float) -> dict[str, float]:
    from dsrlb.health.scheduler import HealthScheduler
    from dsrlb.model import Config, Target, TcpOpenCheck

    cfg = Config(targets=tuple(
        Target(i, IPv4Address("127.0.0.1"), checks=(TcpOpenCheck(BASE_PORT + i % PORTS, 1, 2),),
               registered=True, enabled=True)
        for i in range(1, targets + 1)))
    sched = HealthScheduler(cfg)
    await sched.start()
    await asyncio.sleep(2.0)  # warm-up: first probes spread over the first second
    before, cpu0, wall0 = dict(sched.counters()), cpu_seconds(), asyncio.get_running_loop().time()
    await asyncio.sleep(duration)
    after, cpu1, wall1 = dict(sched.counters()), cpu_seconds(), asyncio.get_running_loop().time()
    up = sum(1 for v in sched.snapshot() if v.state.value == "up")
    await sched.stop()
    wall = wall1 - wall0
    ok = after["probes_ok"] - before["probes_ok"]
    failed = after["probes_failed"] - before["probes_failed"]
    return {"targets": targets, "wall_s": round(wall, 3), "cpu_s": round(cpu1 - cpu0, 3),
            "probes_per_s": round((ok + failed) / wall, 1), "ok": ok, "failed": failed, "up": up}


def run_worker(ns: str, targets: int, duration: float) -> dict[str, float]:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, __file__, "--worker", "--targets", str(targets),
         "--duration", str(duration)], check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=10000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0
    if args.worker:
        print(json.dumps(asyncio.run(work(args.targets, args.duration))))
        return 0
    ns = f"dsrlbbench-{uuid.uuid4().hex[:8]}"
    server: subprocess.Popen[str] | None = None
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, __file__, "--serve"],
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the TCP server did not start")
        idle = run_worker(ns, 0, args.duration)
        loaded = run_worker(ns, args.targets, args.duration)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    idle_rate = max(idle["cpu_s"], 1 / TICK) / idle["wall_s"]
    loaded_rate = loaded["cpu_s"] / loaded["wall_s"]
    print(json.dumps({
        "targets": args.targets, "interval_s": 1, "cpu_ratio": round(loaded_rate / idle_rate, 1),
        "cpu_s_per_s": round(loaded_rate, 3), "idle_cpu_s_per_s": round(idle_rate, 4),
        "probes_per_s": loaded["probes_per_s"], "targets_up": loaded["up"],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
