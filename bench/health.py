"""CPU cost of health checking: 10,000 targets with `tcpopen` at a 1 s interval.

    sudo .venv/bin/python bench/health.py [--targets 10000] [--duration 10]

Makes a namespace with an accept-and-close TCP server on 100 ports of its loopback (a separate
process, so its own CPU is not counted; but on loopback the kernel runs the server side of every
handshake inside the prober's connect(), so that work is counted), and measures in it, in the same
run and over the same `duration` (after a 3 s warm-up):

- loaded: a process running `HealthScheduler` with N tcpopen targets (interval 1 s, window 2 s);
- idle: at the same time, the same worker code on the same event loop with a scheduler that has no
  targets: an idle daemon-like process;
- floor: afterwards, a bare loop that makes the same number of connections per second the loaded
  process made (socket, SO_LINGER 0, connect, epoll, close; 1/256 s batches like the scheduler's): the
  system-call cost that any prober pays here.

CPU is each process's own user + system time from CLOCK_PROCESS_CPUTIME_ID (nanoseconds, not clock
ticks). The last line of output is a JSON object:

- cpu_ratio = loaded CPU s/s ÷ idle CPU s/s (idle floored at 1 µs/s so it is never a division by 0);
- cpu_s_per_s, idle_cpu_s_per_s: the two rates; probes_per_s: completed probes per second;
- floor_ratio = loaded CPU per probe ÷ floor CPU per probe: dsrlb's overhead over the system calls;
- sustained: every target probed once a second (≥ 97 % of N probes/s), no failed probe, all up;
- host_busy_cpus: how many of the machine's host_cpus were busy (all processes, ours included)
  during the loaded window: on a shared machine, what the other jobs left.

Everything it makes is removed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import selectors
import socket
import struct
import subprocess
import sys
import time
import uuid
from ipaddress import IPv4Address

PORTS = 100
BASE_PORT = 20000
WARM_UP = 3.0
GRID = 256  # the scheduler's spread grid: probes start in 1/256 s batches
LINGER_RST = struct.pack("ii", 1, 0)
TICK = os.sysconf("SC_CLK_TCK")


def host_busy_seconds() -> float:
    """CPU seconds the whole machine (every process, every CPU) has been busy: /proc/stat, not idle
    or iowait. Over the loaded window it shows how much the others left us on a shared machine."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK  # user..steal minus idle, iowait


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
                except OSError:  # BlockingIOError: drained; ECONNABORTED: reset before accept
                    break
                conn.close()


async def work(targets: int, duration: float) -> dict[str, float]:
    """One scheduler process: N targets (0: the idle baseline)."""
    from dsrlb.health.scheduler import HealthScheduler
    from dsrlb.model import Config, Target, TcpOpenCheck

    cfg = Config(targets=tuple(
        Target(i, IPv4Address("127.0.0.1"), checks=(TcpOpenCheck(BASE_PORT + i % PORTS, 1, 2),),
               registered=True, enabled=True)
        for i in range(1, targets + 1)))
    sched = HealthScheduler(cfg)
    loop = asyncio.get_running_loop()
    await sched.start()
    await asyncio.sleep(WARM_UP)  # first probes are spread over the first second
    before, cpu0, wall0, host0 = dict(sched.counters()), time.process_time(), loop.time(), host_busy_seconds()
    await asyncio.sleep(duration)
    after, cpu1, wall1, host1 = dict(sched.counters()), time.process_time(), loop.time(), host_busy_seconds()
    up = sum(1 for v in sched.snapshot() if v.state.value == "up")
    await sched.stop()
    ok = after["probes_ok"] - before["probes_ok"]
    failed = after["probes_failed"] - before["probes_failed"]
    return {"targets": targets, "wall_s": round(wall1 - wall0, 3), "cpu_s": round(cpu1 - cpu0, 6),
            "probes": ok + failed, "ok": ok, "failed": failed, "up": up,
            "host_busy_cpus": round((host1 - host0) / (wall1 - wall0), 2)}


def floor(rate: float, duration: float) -> dict[str, float]:
    """The bare system calls of `rate` tcpopen probes per second, in the scheduler's batches."""
    epoll = select.epoll()
    batch = max(1, round(rate / GRID))
    period = batch / rate if rate > 0 else 1.0
    probes, port = 0, 0
    cpu0, wall0 = time.process_time(), time.monotonic()
    next_batch = wall0
    while time.monotonic() - wall0 < duration and rate > 0:
        open_socks: dict[int, socket.socket] = {}
        for _ in range(batch):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            sock.connect_ex(("127.0.0.1", BASE_PORT + port))
            port = (port + 1) % PORTS
            epoll.register(sock.fileno(), select.EPOLLOUT)
            open_socks[sock.fileno()] = sock
        deadline = time.monotonic() + 2.0
        while open_socks and time.monotonic() < deadline:
            for fd, _mask in epoll.poll(0.1, batch):
                open_socks.pop(fd).close()
                probes += 1
        for sock in open_socks.values():
            sock.close()
        next_batch += period
        pause = next_batch - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    epoll.close()
    return {"rate": rate, "wall_s": round(time.monotonic() - wall0, 3),
            "cpu_s": round(time.process_time() - cpu0, 6), "probes": probes}


def in_namespace(ns: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, __file__, *args],
                            stdout=subprocess.PIPE, text=True)


def result_of(proc: subprocess.Popen[str]) -> dict[str, float]:
    out, _err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"a bench worker failed with exit status {proc.returncode}")
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=10000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0
    if args.worker:
        print(json.dumps(asyncio.run(work(args.targets, args.duration))))
        return 0
    if args.floor is not None:
        print(json.dumps(floor(args.floor, args.duration)))
        return 0
    if os.geteuid() != 0:
        print("bench/health.py needs root (it makes a network namespace)", file=sys.stderr)
        return 2
    ns = f"dsrlbbench-{uuid.uuid4().hex[:8]}"
    server: subprocess.Popen[str] | None = None
    workers: list[subprocess.Popen[str]] = []
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        server = in_namespace(ns, "--serve")
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the TCP server did not start")
        duration = str(args.duration)
        workers = [in_namespace(ns, "--worker", "--targets", "0", "--duration", duration),
                   in_namespace(ns, "--worker", "--targets", str(args.targets), "--duration", duration)]
        idle, loaded = (result_of(w) for w in workers)
        rate = loaded["probes"] / loaded["wall_s"]
        workers.append(in_namespace(ns, "--floor", str(rate), "--duration", duration))
        bare = result_of(workers[-1])
    finally:
        for proc in [*workers, *([server] if server is not None else [])]:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    idle_rate = max(idle["cpu_s"], 1e-6 * idle["wall_s"]) / idle["wall_s"]
    loaded_rate = loaded["cpu_s"] / loaded["wall_s"]
    per_probe = loaded["cpu_s"] / max(loaded["probes"], 1)
    floor_per_probe = bare["cpu_s"] / max(bare["probes"], 1)
    print(json.dumps({
        "targets": args.targets, "interval_s": 1, "cpu_ratio": round(loaded_rate / idle_rate, 1),
        "cpu_s_per_s": round(loaded_rate, 3), "idle_cpu_s_per_s": round(idle_rate, 6),
        "probes_per_s": round(rate, 1), "failed": loaded["failed"], "targets_up": loaded["up"],
        "cpu_us_per_probe": round(per_probe * 1e6, 1), "floor_us_per_probe": round(floor_per_probe * 1e6, 1),
        "floor_ratio": round(per_probe / floor_per_probe, 2) if floor_per_probe > 0 else None,
        "sustained": rate >= 0.97 * args.targets and loaded["failed"] == 0 and loaded["up"] == args.targets,
        "host_busy_cpus": loaded["host_busy_cpus"], "host_cpus": os.cpu_count(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
