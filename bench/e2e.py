"""End to end: HTTP through the VIP versus straight to a target, and packets/s through each engine.

One run builds the `dsr` lab (seed 001: client - router - LAN bridge with the balancer and two DSR
targets) and, for each engine in turn (start the daemon, measure, stop it, start the next):

- HTTP requests/s with `wrk` from the client namespace, to the VIP and straight to the target the
  VIP sends this client to (same client, same wrk options, same duration), interleaved over rounds
  with the order alternating, so drift of a shared machine hits both sides alike. The figure is the
  median over rounds of vip/direct. wrk keeps its connections open (HTTP/1.1 keep-alive) and uses
  one source address, so with the seed's `sessionid src` every VIP request goes to one target.
- packets/s: a small C generator (compiled here with gcc) sends TCP ACK frames from the client's
  source addresses to VIP:80 on an AF_PACKET socket (sendmmsg, qdisc bypass), bounded in count and
  time, in steps at paced rates and one free-running (on a 2-CPU machine a free-running generator
  takes a CPU the balancer would use). Each target counts and drops them in an nftables rule (raw
  prerouting, source ports 1000-1999, which no kernel picks as ephemeral), so the figure is frames
  that went through the balancer and arrived, counted in the kernel at no cost to the measurement;
  `<engine>_kpps` is the best step. The balancer's own counters (`show stats`) and the daemon's CPU
  time per frame are reported beside it. Sessions are keyed by source address, so after the first
  frames every frame takes the established DSR path.
- The targets serve HTTP with a small C server (see HTTPD_C) instead of the lab's Python one.
- The floor (`--engines` `floor`): no daemon; the balancer holds the VIP and runs bench/dsr_floor.bpf.c
  in native mode, which sends every frame to the VIP to one fixed target by MAC (XDP_TX) and does
  nothing else. `floor_vs_direct` is what the lab's topology allows any DSR balancer (the extra hop
  through the balancer's link), and `xdp_vs_floor` how much of it dsrlb's XDP engine keeps. HTTP only.

Run as root:  .venv/bin/python bench/e2e.py [--rounds 5] [--duration 4] [--flood-rates 25000,50000,0]
Needs wrk (apt-get install wrk), gcc, clang and nft. The last output line is JSON with `xdp_vs_direct`,
`afpacket_vs_direct` (requests/s ratios), `xdp_kpps`, `afpacket_kpps`, `floor_vs_direct`,
`xdp_vs_floor` and the raw figures.
Everything (namespaces, processes, the daemon) is removed on exit, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dsrlb.control.client import ControlClient
from dsrlb.lab import BUILDERS, Lab, LabError, http_get_in
from dsrlb.lab.core import LabProcess
from dsrlb.lab.runner import prepare_native_xdp, run_balancer
from dsrlb.lab.topology import LabTopology
from dsrlb.xdp.build import compile_command

ENGINES = ("xdp", "afpacket", "floor")  # floor: bench/dsr_floor.bpf.c instead of the daemon
FLOOR_SOURCE = Path(__file__).with_name("dsr_floor.bpf.c")
FLOOD_SPORTS = (1000, 1999)  # below every kernel's ephemeral range: only the generator uses them
MAX_FLOOD_FRAMES = 50_000_000
MAX_FLOOD_SECONDS = 60.0
BENCH_TABLE = "dsrlb_bench"

# The packet generator: one AF_PACKET socket, sendmmsg in batches of 64 pre-built frames, qdisc
# bypassed (packet(7) PACKET_QDISC_BYPASS); stops after COUNT frames or SECONDS, whichever is first;
# RATE > 0 paces it (frames per second). Prints "sent N seconds S".
FLOOD_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define FRAME 60
#define SPORTS 64

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint16_t csum(const uint8_t *data, size_t len, uint32_t sum) {
    for (size_t i = 0; i + 1 < len; i += 2) sum += (uint32_t)(data[i] << 8 | data[i + 1]);
    if (len & 1) sum += (uint32_t)data[len - 1] << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static int parse_mac(const char *text, uint8_t *mac) {
    return sscanf(text, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4],
                  &mac[5]) == 6 ? 0 : -1;
}

static void build(uint8_t *f, const uint8_t *src_mac, const uint8_t *dst_mac, uint32_t saddr,
                  uint32_t daddr, uint16_t sport, uint16_t dport, uint32_t seq) {
    memset(f, 0, FRAME);
    memcpy(f, dst_mac, 6);
    memcpy(f + 6, src_mac, 6);
    f[12] = 0x08; f[13] = 0x00;
    uint8_t *ip = f + 14, *tcp = f + 34;
    ip[0] = 0x45; ip[3] = 40; ip[6] = 0x40; ip[8] = 64; ip[9] = 6;
    memcpy(ip + 12, &saddr, 4);
    memcpy(ip + 16, &daddr, 4);
    uint16_t c = htons(csum(ip, 20, 0));
    memcpy(ip + 10, &c, 2);
    uint16_t sp = htons(sport), dp = htons(dport);
    uint32_t sq = htonl(seq), ack = htonl(seq ^ 0x5a5a5a5a);
    memcpy(tcp, &sp, 2); memcpy(tcp + 2, &dp, 2); memcpy(tcp + 4, &sq, 4); memcpy(tcp + 8, &ack, 4);
    tcp[12] = 5 << 4; tcp[13] = 0x10; tcp[14] = 0x20;  /* ACK, window 8192 */
    uint8_t pseudo[12];
    memcpy(pseudo, ip + 12, 8);
    pseudo[8] = 0; pseudo[9] = 6; pseudo[10] = 0; pseudo[11] = 20;
    uint32_t sum = 0;
    for (int i = 0; i < 12; i += 2) sum += (uint32_t)(pseudo[i] << 8 | pseudo[i + 1]);
    c = htons(csum(tcp, 20, sum));
    memcpy(tcp + 16, &c, 2);
}

int main(int argc, char **argv) {
    if (argc < 10) {
        fprintf(stderr, "usage: flood IF SRCMAC DSTMAC DSTIP DPORT COUNT SECONDS RATE SRCIP...\n");
        return 2;
    }
    uint8_t src_mac[6], dst_mac[6];
    struct in_addr daddr;
    if (parse_mac(argv[2], src_mac) || parse_mac(argv[3], dst_mac) || !inet_aton(argv[4], &daddr)) {
        fprintf(stderr, "bad MAC or address\n");
        return 2;
    }
    int dport = atoi(argv[5]), sport_base = 1000;
    long long count = atoll(argv[6]);
    double seconds = atof(argv[7]), rate = atof(argv[8]);
    int nsrc = argc - 9, nframes = nsrc * SPORTS;
    uint8_t *frames = calloc((size_t)nframes, FRAME);
    if (!frames) return 2;
    for (int s = 0; s < nsrc; s++) {
        struct in_addr saddr;
        if (!inet_aton(argv[9 + s], &saddr)) { fprintf(stderr, "bad source %s\n", argv[9 + s]); return 2; }
        for (int p = 0; p < SPORTS; p++)
            build(frames + (size_t)(s * SPORTS + p) * FRAME, src_mac, dst_mac, saddr.s_addr, daddr.s_addr,
                  (uint16_t)(sport_base + p), (uint16_t)dport, (uint32_t)(s * 7919 + p * 104729));
    }
    int fd = socket(AF_PACKET, SOCK_RAW, 0);  /* protocol 0: send only, receive nothing */
    if (fd < 0) { perror("socket"); return 2; }
    int one = 1;
    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
    struct sockaddr_ll sll = {0};
    sll.sll_family = AF_PACKET;
    sll.sll_ifindex = (int)if_nametoindex(argv[1]);
    sll.sll_protocol = 0;
    if (!sll.sll_ifindex || bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) { perror("bind"); return 2; }
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    long long sent = 0, errors = 0;
    int next = 0;
    double start = now(), elapsed = 0;
    while (sent < count) {
        elapsed = now() - start;
        if (elapsed >= seconds) break;
        if (rate > 0 && sent > rate * elapsed) {
            double ahead = sent / rate - elapsed;
            struct timespec ts = {(time_t)ahead, (long)((ahead - (time_t)ahead) * 1e9)};
            nanosleep(&ts, NULL);
            continue;
        }
        int batch = count - sent < BATCH ? (int)(count - sent) : BATCH;
        memset(msgs, 0, sizeof msgs);
        for (int i = 0; i < batch; i++) {
            iov[i].iov_base = frames + (size_t)next * FRAME;
            iov[i].iov_len = FRAME;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            next = (next + 1) % nframes;
        }
        int done = sendmmsg(fd, msgs, (unsigned)batch, 0);
        if (done < 0) { errors++; continue; }
        sent += done;
    }
    elapsed = now() - start;
    printf("sent %lld seconds %.6f errors %lld\n", sent, elapsed, errors);
    return 0;
}
"""


# The HTTP server on the targets for the bench: the lab's Python server (dsrlb.lab.httpd) writes
# headers and body in two sends, so with Nagle and the client's delayed ACK each keep-alive request
# waits ~40 ms and the figure would measure that timer, not the balancer. This one answers like it
# (body and X-Dsrlb-Target: the target's name) in one write per request, with epoll, on [::]:PORT.
HTTPD_C = r"""
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXEV 256
#define BUF 8192

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: httpd PORT NAME\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);
    char reply[512];
    int body = (int)strlen(argv[2]) + 1;
    int reply_len = snprintf(reply, sizeof reply, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             "Content-Length: %d\r\nX-Dsrlb-Target: %s\r\n\r\n%s\n", body, argv[2], argv[2]);
    int lfd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0), zero = 0, one = 1;
    setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in6 addr = {0};
    addr.sin6_family = AF_INET6;
    addr.sin6_port = htons((uint16_t)atoi(argv[1]));
    addr.sin6_addr = in6addr_any;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 1024) < 0) {
        perror("listen");
        return 2;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd}, events[MAXEV];
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    printf("ready\n");
    fflush(stdout);
    char buf[BUF], out[BUF * 2];
    for (;;) {
        int n = epoll_wait(ep, events, MAXEV, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t got = read(fd, buf, sizeof buf);
            if (got <= 0) { close(fd); continue; }
            /* One answer per request head; wrk sends a request only after the previous answer. */
            int requests = 0, used = 0;
            for (ssize_t j = 3; j < got; j++)
                if (!memcmp(buf + j - 3, "\r\n\r\n", 4)) requests++;
            for (int r = 0; r < requests && used + reply_len <= (int)sizeof out; r++) {
                memcpy(out + used, reply, (size_t)reply_len);
                used += reply_len;
            }
            if (used && write(fd, out, (size_t)used) < 0) close(fd);
        }
    }
}
"""

class BenchError(Exception):
    pass


@dataclass
class HttpRound:
    direct: float
    vip: float


@dataclass(frozen=True)
class FloodResult:
    offered_kpps: float
    delivered_kpps: float
    sent: int
    counters: dict[str, int]  # the balancer's counters over the window (deltas)
    daemon_cpu_us_per_frame: float  # the daemon's CPU time over the window per frame delivered


@dataclass
class EngineFigures:
    engine: str
    http_rounds: list[HttpRound] = field(default_factory=list)
    flood_steps: list[FloodResult] = field(default_factory=list)

    @property
    def best_flood(self) -> FloodResult | None:
        return max(self.flood_steps, key=lambda step: step.delivered_kpps, default=None)

    @property
    def vs_direct(self) -> float:
        return statistics.median(r.vip / r.direct for r in self.http_rounds) if self.http_rounds else 0.0


# --- tools -----------------------------------------------------------------------------------------


def require_tools() -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: the bench builds network namespaces")
    missing = [tool for tool in ("wrk", "gcc", "nft", "ip") if shutil.which(tool) is None]
    if missing:
        raise BenchError(f"missing tools: {', '.join(missing)} (apt-get install wrk gcc nftables iproute2)")


def compile_c(workdir: Path, name: str, code: str) -> Path:
    source, binary = workdir / f"{name}.c", workdir / name
    source.write_text(code)
    done = subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(source)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise BenchError(f"gcc failed on {name}.c: {done.stderr.strip()}")
    return binary


def serve_with_c_httpd(lab: Lab, topology: LabTopology, binary: Path) -> None:
    """Replace each target's lab HTTP server by the C one, on the same ports, under the same name."""
    for target in topology.targets:
        for proc in lab.processes:
            if proc.role == target.role and proc.name == "httpd":
                lab.stop(proc)
        for port in target.ports:
            lab.spawn(target.role, f"bench-httpd-{port}", [str(binary), str(port), target.name],
                      ready_line="ready")


def in_netns(netns: str, argv: list[str], timeout: float = 30.0, stdin: str | None = None) -> str:
    done = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True,
                          timeout=timeout, input=stdin)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} in {netns}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


# --- HTTP ------------------------------------------------------------------------------------------


def wrk(netns: str, url: str, seconds: int, connections: int, threads: int) -> float:
    """Requests/s wrk reaches on `url`; any socket error or non-2xx answer fails the bench."""
    out = in_netns(netns, ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                           "--timeout", "2s", url], timeout=seconds + 30)
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise BenchError(f"wrk printed no rate:\n{out}")
    if "Non-2xx" in out or "Socket errors" in out:
        raise BenchError(f"wrk saw errors on {url}:\n{out}")
    return float(match.group(1))


def http_rounds(topology: LabTopology, rounds: int, seconds: int, connections: int,
                threads: int) -> list[HttpRound]:
    vip_url = f"http://{topology.vip}:{topology.ports[0]}/"
    # The target the VIP gives this client (wrk's single source address): compare like with like.
    name = http_get_in(topology.client_netns, str(topology.vip), topology.ports[0])
    target = next((t for t in topology.targets if t.name == name), None)
    if target is None:
        raise BenchError(f"the VIP answered as {name!r}, which is no target of the lab")
    direct_url = f"http://{target.address}:{topology.ports[0]}/"
    results = []
    for index in range(rounds):
        order = ("direct", "vip") if index % 2 == 0 else ("vip", "direct")
        rate = {kind: wrk(topology.client_netns, direct_url if kind == "direct" else vip_url, seconds,
                          connections, threads) for kind in order}
        results.append(HttpRound(rate["direct"], rate["vip"]))
        print(f"  round {index + 1}: direct {rate['direct']:.0f} req/s, vip {rate['vip']:.0f} req/s "
              f"({rate['vip'] / rate['direct']:.3f})", flush=True)
    return results


# --- packets/s -------------------------------------------------------------------------------------


def install_target_counters(topology: LabTopology) -> None:
    low, high = FLOOD_SPORTS
    script = (f"table inet {BENCH_TABLE} {{\n  chain prerouting {{\n"
              f"    type filter hook prerouting priority raw; policy accept;\n"
              f"    tcp sport {low}-{high} counter drop\n  }}\n}}\n")
    for target in topology.targets:
        in_netns(target.netns, ["nft", "-f", "-"], stdin=script)


def target_frames(topology: LabTopology) -> int:
    total = 0
    for target in topology.targets:
        listing = json.loads(in_netns(target.netns, ["nft", "-j", "list", "table", "inet", BENCH_TABLE]))
        for item in listing.get("nftables", []):
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    total += int(expr["counter"]["packets"])
    return total


def balancer_counters(client: ControlClient) -> dict[str, int]:
    stats = client.call("show", ["stats"]).data["stats"]
    return {str(k): int(v) for k, v in stats["counters"].items()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flood(lab: Lab, topology: LabTopology, binary: Path, client: ControlClient, daemon_pid: int,
          seconds: float, count: int, rate: float, warmup: float = 1.0) -> FloodResult:
    """Run the generator; measure frames arriving at the targets over its middle part."""
    rt_mac = lab.netlink("rt").link("eth1").mac or ""
    cl_mac = lab.netlink("cl").link("eth0").mac or ""
    argv = ["ip", "netns", "exec", topology.client_netns, str(binary), "eth0", cl_mac, rt_mac,
            str(topology.vip), str(topology.ports[0]), str(min(count, MAX_FLOOD_FRAMES)),
            str(min(seconds, MAX_FLOOD_SECONDS)), str(rate), *map(str, topology.client_sources)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            time.sleep(warmup)
            frames0, counters0, t0 = target_frames(topology), balancer_counters(client), time.monotonic()
            cpu0 = cpu_seconds(daemon_pid)
            time.sleep(max(seconds - 2 * warmup, 0.5))
            frames1, counters1, t1 = target_frames(topology), balancer_counters(client), time.monotonic()
            cpu1 = cpu_seconds(daemon_pid)
            out, err = proc.communicate(timeout=seconds + 30)
        finally:
            if proc.poll() is None:
                proc.kill()
    match = re.search(r"sent (\d+) seconds ([\d.]+)", out)
    if proc.returncode != 0 or match is None:
        raise BenchError(f"the generator failed ({proc.returncode}): {err.strip()} {out.strip()}")
    sent, elapsed = int(match.group(1)), float(match.group(2))
    deltas = {k: counters1.get(k, 0) - v for k, v in counters0.items() if counters1.get(k, 0) != v}
    delivered = max(frames1 - frames0, 1)
    return FloodResult(sent / elapsed / 1000, delivered / (t1 - t0) / 1000, sent, deltas,
                       (cpu1 - cpu0) / delivered * 1e6)


# --- one engine ------------------------------------------------------------------------------------


def stop_daemon(lab: Lab, daemon: LabProcess, timeout: float = 20.0) -> None:
    """SIGTERM and wait for the daemon's own cleanup (VIP, XDP program, nftables) before the next."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(daemon.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _running(daemon.pid):
        time.sleep(0.05)
    lab.stop(daemon)  # reaps it (and kills it if the cleanup hung)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def measure_engine(lab: Lab, topology: LabTopology, engine: str, binary: Path,
                   args: argparse.Namespace) -> EngineFigures:
    print(f"engine {engine}: starting the daemon", flush=True)
    balancer = topology.balancers[0]
    daemon = run_balancer(lab, balancer, engine)
    figures = EngineFigures(engine)
    try:
        with ControlClient.for_instance(balancer.netns, timeout=10.0) as client:
            figures.http_rounds = http_rounds(topology, args.rounds, args.duration, args.connections,
                                              args.threads)
            # A paced generator leaves CPU to the balancer on a small machine; a free-running one
            # shows the saturated rate. The figure is the best rate delivered over the steps.
            for rate in args.flood_rates:
                result = flood(lab, topology, binary, client, daemon.pid, args.flood_seconds,
                               args.flood_count, rate)
                figures.flood_steps.append(result)
                print(f"  flood at {rate / 1000 if rate else 'max'} kpps: offered {result.offered_kpps:.1f} "
                      f"kpps, through the balancer {result.delivered_kpps:.1f} kpps, daemon CPU "
                      f"{result.daemon_cpu_us_per_frame:.2f} us per frame; balancer counters over the "
                      f"window: {result.counters}", flush=True)
    finally:
        stop_daemon(lab, daemon)
    return figures


def measure_floor(lab: Lab, topology: LabTopology, args: argparse.Namespace) -> EngineFigures:
    """HTTP rounds with bench/dsr_floor.bpf.c on the balancer in place of the daemon (see the top)."""
    balancer, target = topology.balancers[0], topology.targets[0]
    if topology.vip.version != 4:
        raise BenchError("the floor program handles an IPv4 VIP only")
    ifname = balancer.interfaces[0]
    defines = [f"-DFLOOR_VIP_BE32=0x{int.from_bytes(topology.vip.packed, sys.byteorder):08x}U",
               "-DFLOOR_TARGET_MAC=" + ",".join(f"0x{octet}" for octet in target.mac.split(":"))]
    obj = lab.workdir / "dsr_floor.bpf.o"
    command = compile_command(FLOOR_SOURCE, obj)
    at = command.index("-c")
    done = subprocess.run([*command[:at], *defines, *command[at:]], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"clang failed on {FLOOR_SOURCE.name}: {done.stderr.strip()}")
    print(f"floor: {FLOOR_SOURCE.name} on {balancer.name}:{ifname}, every VIP frame to {target.name}",
          flush=True)
    prepare_native_xdp(lab, balancer)
    vip = f"{topology.vip}/32"
    in_netns(balancer.netns, ["ip", "addr", "add", vip, "dev", ifname])
    try:
        in_netns(balancer.netns, ["ip", "link", "set", "dev", ifname, "xdpdrv", "obj", str(obj),
                                  "sec", "xdp"])
        try:
            rounds = http_rounds(topology, args.rounds, args.duration, args.connections, args.threads)
        finally:
            in_netns(balancer.netns, ["ip", "link", "set", "dev", ifname, "xdpdrv", "off"])
    finally:
        in_netns(balancer.netns, ["ip", "addr", "del", vip, "dev", ifname])
    return EngineFigures("floor", rounds)


def run(args: argparse.Namespace) -> dict[str, Any]:
    require_tools()
    with Lab("e2e") as lab:
        topology = BUILDERS["dsr"](lab)
        binary = compile_c(lab.workdir, "flood", FLOOD_C)
        if args.server == "c":
            serve_with_c_httpd(lab, topology, compile_c(lab.workdir, "httpd", HTTPD_C))
        install_target_counters(topology)
        figures = {engine: measure_floor(lab, topology, args) if engine == "floor"
                   else measure_engine(lab, topology, engine, binary, args) for engine in args.engines}
    result: dict[str, Any] = {}
    for engine, fig in figures.items():
        result[f"{engine}_vs_direct"] = round(fig.vs_direct, 4)
        if engine == "floor":
            continue
        best = fig.best_flood
        result[f"{engine}_kpps"] = round(best.delivered_kpps, 2) if best else 0.0
        result[f"{engine}_daemon_cpu_us_per_frame"] = round(best.daemon_cpu_us_per_frame, 2) if best else 0.0
    if "xdp" in figures and "floor" in figures and figures["floor"].vs_direct:
        result["xdp_vs_floor"] = round(figures["xdp"].vs_direct / figures["floor"].vs_direct, 4)
    result["detail"] = {name: {**asdict(fig), "vs_direct": fig.vs_direct} for name, fig in figures.items()}
    result["settings"] = {k: v for k, v in vars(args).items() if k != "engines"} | {"engines": args.engines}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated, in order")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved HTTP rounds per engine")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t")
    parser.add_argument("--server", choices=("c", "lab"), default="c",
                        help="HTTP server on the targets: the bench's C server, or the lab's Python one")
    parser.add_argument("--flood-seconds", type=float, default=5.0, help="per step")
    parser.add_argument("--flood-count", type=int, default=10_000_000, help="at most this many frames")
    parser.add_argument("--flood-rates", default="25000,50000,100000,0",
                        help="comma-separated generator rates in frames/s, one step each; 0 = free-running")
    args = parser.parse_args(argv)
    args.engines = [e for e in args.engines.split(",") if e]
    try:
        args.flood_rates = [float(r) for r in args.flood_rates.split(",") if r]
    except ValueError:
        parser.error("--flood-rates: numbers, comma-separated")
    unknown = [e for e in args.engines if e not in ENGINES]
    bad_rates = not args.flood_rates or len(args.flood_rates) > 10 or min(args.flood_rates) < 0
    if unknown or bad_rates or not 1 <= args.rounds <= 20 or not 1 <= args.duration <= 60 \
            or not 2.5 <= args.flood_seconds <= MAX_FLOOD_SECONDS:
        parser.error("engines: xdp, afpacket, floor; 1-10 flood rates >= 0; rounds 1-20; duration 1-60 s; "
                     f"flood-seconds 2.5-{MAX_FLOOD_SECONDS:.0f}")
    try:
        result = run(args)
    except (BenchError, LabError, subprocess.TimeoutExpired) as exc:
        print(f"e2e bench failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
