"""CPU cost of health checking: the real daemon with 10,000 `tcpopen` targets at a 1 s interval.

    sudo .venv/bin/python bench/health.py [--targets 10000] [--duration 10] [--engine xdp|afpacket]
                                          [--check-timeout 3] [--with-worker]

Runs two real daemons (`python -m dsrlb.cli.main start --foreground`) side by side, each in its own
network namespace, and measures both over the same `duration` window:

- loaded: a generated config of one interface, one network, one server and N targets
  2001:db8:1::1 .. ::N (NAT, port 80), each with `tcpopen 20000,1,T` (interval 1 s; timeout
  T = `--check-timeout`, default 3: docs/configuration.md §8.1 wants 1 <= I <= T, and a window of
  three intervals lets one late probe pass without taking a target down);
- idle: the same daemon binary, engine and config shape (one network, one server, N targets at the
  same addresses) whose targets have NO checks (a target without checks is up at once), so it runs
  everything the loaded one does except health checking: event loop, control socket, data path
  engine, the per-second tick and the next-hop refresh of its N targets.

Topology: the targets are one accept-and-close listener on [::]:20000 in a third namespace, where
`ip -6 route add local 2001:db8:1::/112 dev lo` makes every target address local. Each balancer
namespace reaches them through a veth (the daemon's `interface 1`, XDP generic mode on a veth) and a
route `2001:db8:1::/112 via` the listener namespace, so the daemon resolves one next hop (the gateway)
for all targets instead of 10,000 neighbours. The listener is its own process (its CPU is not
counted); the kernel's receive path of each handshake runs partly in the prober's connect(), as on any
host. Only documentation addresses, no route out; namespaces, processes, files and BPF pins are
removed on exit, also on error or Ctrl-C.

The bench waits (bounded by `--ready-timeout`) until the loaded daemon reports all N targets up and
then `--warm-up` seconds. CPU is each daemon process's user + system time (all its threads) from
its CLOCK_PROCESS_CPUTIME_ID (clock_getcpuclockid, nanoseconds); the main thread's share (the event
loop: health checks, republish, control) comes from /proc/PID/task/PID/stat in clock ticks. The last
output line is a JSON object:

- cpu_ratio = loaded daemon CPU s/s ÷ idle daemon CPU s/s (the issue's figure);
- cpu_s_per_s, idle_cpu_s_per_s; main_thread_cpu_s_per_s, idle_main_thread_cpu_s_per_s and
  main_thread_cpu_ratio: the same for the event-loop thread alone (the rest is the daemon's netlink
  thread and, with afpacket, the engine thread); main_thread_us_per_probe = (loaded - idle main
  thread CPU) ÷ probes_per_s. Read the whole-process ratio with docs/health.md "Benchmark": at
  10,000 targets both daemons' netlink threads refresh next hops back to back and take whatever CPU
  the event loop leaves, so health checking displaces that work more than it adds to the total;
- probes_per_s: probes completed per second from the loaded daemon's `show stats` counters
  (health_probes_ok + health_probes_failed) over the window; failed: failed probes in the window;
  listener_accepts_per_s: connections the listener accepted over the same window (a cross-check);
- targets_up (after the window), all_up_s (seconds from start until all N were up, null if never);
- sustained: ≥ 97 % of N probes/s, no failed probe and all N up;
- host_busy_cpus of host_cpus: how busy the whole machine was during the window (shared machine).

`--with-worker` adds the old figures afterwards (≈ 25 s): a bare `HealthScheduler` worker process
with N tcpopen targets on loopback against an idle worker (same code, no targets), and a bare loop of
the same system calls, as keys worker_cpu_ratio, worker_cpu_s_per_s, worker_probes_per_s,
worker_floor_ratio, worker_us_per_probe, worker_floor_us_per_probe.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import ctypes
import ctypes.util
import json
import os
import select
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

PORT = 20000  # the daemon-mode listener
TARGET_PREFIX = "2001:db8:1::"  # targets are TARGET_PREFIX + hex(i), i = 1..N, inside a /112
NETS = {"loaded": "2001:db8:ff", "idle": "2001:db8:fe"}  # each balancer's /64 towards the listener
PORTS = 100  # worker mode: loopback ports of its server
BASE_PORT = 20000
GRID = 256  # the scheduler's spread grid: probes start in 1/256 s batches
LINGER_RST = struct.pack("ii", 1, 0)
TICK = os.sysconf("SC_CLK_TCK")
STOP_WAIT = 15.0  # SIGTERM, then SIGKILL: a daemon finishes its running tick before it stops


class BenchError(RuntimeError):
    pass


# --- measuring ----------------------------------------------------------------------------------

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process `pid`, all threads: its CLOCK_PROCESS_CPUTIME_ID."""
    clock = ctypes.c_int()
    if _libc.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        raise BenchError(f"clock_getcpuclockid({pid}) failed")
    return time.clock_gettime(clock.value)


def thread_cpu(pid: int, tid: int) -> float:
    """User + system CPU seconds of one thread, from /proc (clock ticks)."""
    with open(f"/proc/{pid}/task/{tid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def accept_and_close(listener: socket.socket, batch: int) -> int:
    """Accept and close up to `batch` pending connections of a non-blocking listener; how many."""
    for done in range(batch):
        try:
            conn, _addr = listener.accept()
        except OSError:  # BlockingIOError: drained; ECONNABORTED: reset before accept
            return done
        conn.close()
    return batch


def host_busy_seconds() -> float:
    """CPU seconds the whole machine (every process, every CPU) has been busy: /proc/stat, not idle
    or iowait. Over the window it shows how much the others left us on a shared machine."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK  # user..steal minus idle, iowait


# --- the daemon-mode topology -------------------------------------------------------------------


def sh(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: {done.stderr.strip()}")


def make_topology(names: dict[str, str]) -> None:
    """Namespaces loaded, idle (a balancer each, interface eth0) and targets (the listener)."""
    for ns in names.values():
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
           "net.ipv6.conf.default.accept_dad=0")
    tns = names["targets"]
    for role, peer in (("loaded", "l0"), ("idle", "i0")):
        ns, net = names[role], NETS[role]
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", tns)
        sh("ip", "-n", tns, "addr", "add", f"{net}::2/64", "dev", peer, "nodad")
        sh("ip", "-n", tns, "link", "set", peer, "up")
        sh("ip", "-n", ns, "addr", "add", f"{net}::100/64", "dev", "eth0", "nodad")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "-6", "route", "add", f"{TARGET_PREFIX}/112", "via", f"{net}::2", "dev", "eth0")
    sh("ip", "-n", tns, "-6", "route", "add", "local", f"{TARGET_PREFIX}/112", "dev", "lo")


def config_text(targets: int, net: str, check: str | None) -> str:
    """One interface, one network, one server and `targets` NAT targets (with `check`, or none)."""
    parts = [
        "interface 1 {\n  name eth0\n}\nregister interface 1\nenable interface 1",
        f"network 1 {{\n  addr6 {net}::\n  mask6 64\n  real6 {net}::1\n  interface 1\n}}\n"
        "register network 1\nenable network 1",
        f"server 1 {{\n  ipaddr6 {net}::10\n  port 80\n  protocol tcp\n  targets 1-{targets}\n}}\n"
        "register server 1\nenable server 1",
    ]
    line = f"  {check}\n" if check else ""
    parts += [f"target {i} {{\n  ipaddr6 {TARGET_PREFIX}{i:x}\n  port 80\n  protocol tcp\n{line}}}"
              for i in range(1, targets + 1)]
    parts.append(f"register targets 1-{targets}\nenable targets 1-{targets}")
    return "\n".join(parts) + "\n"


def listen() -> None:
    """Accept and close on [::]:PORT until killed; a line on stdin asks for the accept count."""
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::", PORT))
    srv.listen(4096)
    srv.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ)
    sel.register(sys.stdin, selectors.EVENT_READ)
    accepted = 0
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.fileobj is sys.stdin:
                if not sys.stdin.readline():
                    return  # the bench went away
                print(accepted, flush=True)
                continue
            accepted += accept_and_close(srv, 256)


def listener_count(proc: subprocess.Popen[str]) -> int:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("count\n")
    proc.stdin.flush()
    return int(proc.stdout.readline())


def control(instance: str, *args: str, timeout: float = 30.0) -> Any:
    from dsrlb.control.client import ControlClient

    with ControlClient.for_instance(instance, timeout=timeout) as client:
        return client.call("show", list(args)).data


def up_count(instance: str) -> int:
    return sum(1 for row in control(instance, "targets")["targets"] if row["state"] == "up")


def probe_counters(instance: str) -> dict[str, int]:
    counters = control(instance, "stats")["stats"]["counters"]
    return {k: int(counters.get(f"health_{k}", 0)) for k in ("probes_ok", "probes_failed")}


def alive(proc: subprocess.Popen[Any], what: str, log: Path) -> None:
    if proc.poll() is not None:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        raise BenchError(f"the {what} daemon exited ({proc.returncode}): " + " | ".join(tail))


def wait_all_up(instance: str, proc: subprocess.Popen[Any], what: str, log: Path, targets: int,
                deadline: float) -> int:
    """Poll `show targets` (every 2 s: it costs the daemon a 10,000-row answer) until all are up or
    the deadline passes; the number up."""
    up = 0
    while time.monotonic() < deadline:
        alive(proc, what, log)
        with contextlib.suppress(Exception):  # not listening yet, or busy
            up = up_count(instance)
            if up >= targets:
                return up
        time.sleep(2.0)
    return up


def stop(procs: list[subprocess.Popen[Any]]) -> None:
    """SIGTERM every process we started, wait (bounded), SIGKILL what is left; by PID only."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
        if proc.poll() is None:
            print(f"pid {proc.pid} still running {STOP_WAIT:g} s after SIGTERM: SIGKILL", file=sys.stderr)
            proc.kill()
            proc.wait()


def daemon_bench(args: argparse.Namespace) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    names = {role: f"dsrlbh-{role[0]}-{tag}" for role in ("loaded", "idle", "targets")}
    instances = {"loaded": f"hbench-l-{tag}", "idle": f"hbench-i-{tag}"}
    workdir = Path(tempfile.mkdtemp(prefix=f"dsrlb-health-{tag}-"))
    bpf_dir = Path(f"/sys/fs/bpf/dsrlb-health-{tag}")
    env = {**os.environ, "DSRLB_RUN_DIR": str(workdir / "run"), "DSRLB_STATE_DIR": str(workdir / "state"),
           "DSRLB_BPF_DIR": str(bpf_dir)}
    os.environ.update({k: env[k] for k in ("DSRLB_RUN_DIR", "DSRLB_STATE_DIR", "DSRLB_BPF_DIR")})
    procs: list[subprocess.Popen[Any]] = []
    made: list[str] = []

    def cleanup() -> None:
        stop(procs)
        procs.clear()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        made.clear()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(bpf_dir, ignore_errors=True)

    atexit.register(cleanup)
    try:
        made.extend(names.values())  # deleted even if only some were made
        make_topology(names)
        checks = f"tcpopen {PORT},1,{args.check_timeout}"
        configs = {role: workdir / f"{role}.conf" for role in instances}
        configs["loaded"].write_text(config_text(args.targets, NETS["loaded"], checks))
        configs["idle"].write_text(config_text(args.targets, NETS["idle"], None))
        listener = subprocess.Popen(["ip", "netns", "exec", names["targets"], sys.executable, __file__,
                                     "--listen"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(listener)
        assert listener.stdout is not None
        if listener.stdout.readline().strip() != "ready":
            raise BenchError("the listener did not start")
        logs = {role: workdir / f"{role}.log" for role in instances}
        daemons: dict[str, subprocess.Popen[bytes]] = {}
        started = time.monotonic()
        for role, instance in instances.items():
            argv = ["ip", "netns", "exec", names[role], sys.executable, "-m", "dsrlb.cli.main", "-i",
                    instance, "start", "--foreground", "-c", str(configs[role]), "--engine", args.engine,
                    "--xdp-mode", args.xdp_mode]
            with logs[role].open("wb") as log:
                daemons[role] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                                 env=env, start_new_session=True)
            procs.insert(0, daemons[role])
        deadline = started + args.ready_timeout
        print(f"waiting for {args.targets} targets up (at most {args.ready_timeout:.0f} s)", flush=True)
        up = wait_all_up(instances["loaded"], daemons["loaded"], "loaded", logs["loaded"], args.targets,
                         deadline)
        all_up_s = round(time.monotonic() - started, 1) if up >= args.targets else None
        if wait_all_up(instances["idle"], daemons["idle"], "idle", logs["idle"], args.targets,
                       max(deadline, time.monotonic() + 10)) < args.targets:
            raise BenchError("the idle daemon did not report its targets up")
        print(f"loaded daemon: {up} of {args.targets} up after {time.monotonic() - started:.1f} s; "
              f"warm-up {args.warm_up:g} s, then {args.duration:g} s measured", flush=True)
        time.sleep(args.warm_up)
        pids = {role: proc.pid for role, proc in daemons.items()}

        def sample() -> dict[str, Any]:
            return {"cpu": {r: process_cpu(p) for r, p in pids.items()},
                    "main": {r: thread_cpu(p, p) for r, p in pids.items()},
                    "probes": probe_counters(instances["loaded"]), "accepts": listener_count(listener),
                    "host": host_busy_seconds(), "wall": time.monotonic()}

        before = sample()
        time.sleep(args.duration)
        after = sample()
        for role, proc in daemons.items():
            alive(proc, role, logs[role])
        targets_up = up_count(instances["loaded"])
    finally:
        cleanup()
        atexit.unregister(cleanup)
    wall = after["wall"] - before["wall"]

    def rate(kind: str, role: str) -> float:
        return float(after[kind][role] - before[kind][role]) / wall

    loaded, idle = rate("cpu", "loaded"), rate("cpu", "idle")
    main, idle_main = rate("main", "loaded"), rate("main", "idle")
    ok = after["probes"]["probes_ok"] - before["probes"]["probes_ok"]
    failed = after["probes"]["probes_failed"] - before["probes"]["probes_failed"]
    probes_per_s = (ok + failed) / wall
    floor = 1e-6  # CPU s/s: never a division by zero
    return {
        "targets": args.targets, "interval_s": 1, "cpu_ratio": round(loaded / max(idle, floor), 2),
        "engine": args.engine, "check": checks, "window_s": round(wall, 2),
        "cpu_s_per_s": round(loaded, 3), "idle_cpu_s_per_s": round(idle, 3),
        "main_thread_cpu_s_per_s": round(main, 3), "idle_main_thread_cpu_s_per_s": round(idle_main, 3),
        "main_thread_cpu_ratio": round(main / max(idle_main, floor), 2),
        "main_thread_us_per_probe": (round((main - idle_main) / probes_per_s * 1e6, 1)
                                     if probes_per_s else None),
        "probes_per_s": round(probes_per_s, 1), "failed": failed,
        "listener_accepts_per_s": round((after["accepts"] - before["accepts"]) / wall, 1),
        "targets_up": targets_up, "all_up_s": all_up_s,
        "sustained": probes_per_s >= 0.97 * args.targets and failed == 0 and targets_up == args.targets,
        "host_busy_cpus": round((after["host"] - before["host"]) / wall, 2), "host_cpus": os.cpu_count(),
    }


# --- worker mode (--with-worker): a bare HealthScheduler process on loopback --------------------


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
            accept_and_close(sock, 64)


async def work(targets: int, duration: float, warm_up: float) -> dict[str, float]:
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
    await asyncio.sleep(warm_up)  # first probes are spread over the first second
    before, cpu0, wall0 = dict(sched.counters()), time.process_time(), loop.time()
    await asyncio.sleep(duration)
    after, cpu1, wall1 = dict(sched.counters()), time.process_time(), loop.time()
    up = sum(1 for v in sched.snapshot() if v.state.value == "up")
    await sched.stop()
    ok = after["probes_ok"] - before["probes_ok"]
    failed = after["probes_failed"] - before["probes_failed"]
    return {"targets": targets, "wall_s": round(wall1 - wall0, 3), "cpu_s": round(cpu1 - cpu0, 6),
            "probes": ok + failed, "ok": ok, "failed": failed, "up": up}


def floor_loop(rate: float, duration: float) -> dict[str, float]:
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


def worker_bench(args: argparse.Namespace) -> dict[str, Any]:
    """The bare scheduler (N targets) against an idle worker, then the system-call floor."""
    ns = f"dsrlbh-w-{uuid.uuid4().hex[:8]}"
    procs: list[subprocess.Popen[str]] = []

    def in_namespace(*extra: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, __file__, *extra],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    def result_of(proc: subprocess.Popen[str]) -> dict[str, float]:
        out, _err = proc.communicate()
        if proc.returncode != 0:
            raise BenchError(f"a bench worker failed with exit status {proc.returncode}")
        result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(result), flush=True)
        return result

    def cleanup() -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        procs.clear()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    atexit.register(cleanup)
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        server = in_namespace("--serve")
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise BenchError("the TCP server did not start")
        common = ("--duration", str(args.duration), "--warm-up", str(args.warm_up))
        idle_w, loaded_w = in_namespace("--worker", "--targets", "0", *common), \
            in_namespace("--worker", "--targets", str(args.targets), *common)
        idle, loaded = result_of(idle_w), result_of(loaded_w)
        rate = loaded["probes"] / loaded["wall_s"]
        bare = result_of(in_namespace("--floor", str(rate), "--duration", str(args.duration)))
    finally:
        cleanup()
        atexit.unregister(cleanup)
    idle_rate = max(idle["cpu_s"], 1e-6 * idle["wall_s"]) / idle["wall_s"]
    loaded_rate = loaded["cpu_s"] / loaded["wall_s"]
    per_probe = loaded["cpu_s"] / max(loaded["probes"], 1)
    floor_per_probe = bare["cpu_s"] / max(bare["probes"], 1)
    return {
        "worker_cpu_ratio": round(loaded_rate / idle_rate, 1), "worker_cpu_s_per_s": round(loaded_rate, 3),
        "worker_probes_per_s": round(rate, 1), "worker_failed": loaded["failed"], "worker_up": loaded["up"],
        "worker_us_per_probe": round(per_probe * 1e6, 1),
        "worker_floor_us_per_probe": round(floor_per_probe * 1e6, 1),
        "worker_floor_ratio": round(per_probe / floor_per_probe, 2) if floor_per_probe > 0 else None,
    }


def interrupted(_signum: int, _frame: Any) -> None:
    sys.exit(130)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=10000, help="1-65535 (default 10000)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured window, seconds")
    parser.add_argument("--warm-up", type=float, default=3.0, help="seconds after all targets are up")
    parser.add_argument("--check-timeout", type=int, default=3, help="T of `tcpopen 20000,1,T` (>= 1)")
    parser.add_argument("--engine", choices=("xdp", "afpacket"), default="xdp")
    parser.add_argument("--xdp-mode", choices=("native", "generic", "auto"), default="generic")
    parser.add_argument("--ready-timeout", type=float, default=60.0,
                        help="at most this long for the loaded daemon's targets to come up")
    parser.add_argument("--with-worker", action="store_true",
                        help="also measure a bare HealthScheduler worker (old figures, ≈ 25 s more)")
    parser.add_argument("--listen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.listen:
        listen()
        return 0
    if args.serve:
        serve()
        return 0
    if args.worker:
        print(json.dumps(asyncio.run(work(args.targets, args.duration, args.warm_up))))
        return 0
    if args.floor is not None:
        print(json.dumps(floor_loop(args.floor, args.duration)))
        return 0
    if os.geteuid() != 0:
        print("bench/health.py needs root (it makes network namespaces)", file=sys.stderr)
        return 2
    if not 1 <= args.targets <= 0xFFFF or args.check_timeout < 1:
        parser.error("--targets must be 1-65535 (a /112 of addresses) and --check-timeout >= 1")
    signal.signal(signal.SIGTERM, interrupted)  # so the finally blocks clean up
    result = daemon_bench(args)
    if args.with_worker:
        print(json.dumps(result), flush=True)
        result.update(worker_bench(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
