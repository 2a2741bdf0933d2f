"""Per-packet cost of the reference data path by path, relative to a parse-only loop in the same run.

    .venv/bin/python bench/reference_cost.py [--packets N] [--repeat R]

Machines here are shared and noisy, so every figure is also given as a ratio to a trivial loop that
only parses the same frames (`parse_frame`), measured in the same run; the best of R repeats is
kept for each. The last line is JSON for scripts (docs/benchmarks.md records runs).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from ipaddress import ip_network

from dsrlb.engine.compile import Environment, compile_state, diff
from dsrlb.engine.fixtures import (
    CLIENT_ROUTES,
    VIP4,
    cfg,
    lab_environment,
    server,
    t4,
    target,
    target_mac,
)
from dsrlb.engine.packet import IPPROTO_TCP, build_l4, parse_frame
from dsrlb.engine.reference import ReferenceDataplane
from dsrlb.model import Config

NAT_VIP = "192.0.2.11"


def _dataplane() -> ReferenceDataplane:
    config = cfg(server(1, targets=(1, 2)), server(2, vip=NAT_VIP, targets=(3, 4)),
                 targets=(target(1, dsr=True), target(2, dsr=True), target(3), target(4)))
    routes = dict(CLIENT_ROUTES)
    routes[ip_network("0.0.0.0/0")] = next(iter(CLIENT_ROUTES.values()))
    environment = lab_environment(config, routes=routes)
    dataplane = ReferenceDataplane(rand32=lambda: 0)
    dataplane.apply(diff(None, compile_state(config, environment)))
    return dataplane


def _clients(count: int) -> list[str]:
    return [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(count)]


def _time(body: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        body()
        best = min(best, time.perf_counter() - start)
    return best


def measure(packets: int, repeat: int) -> dict[str, dict[str, float]]:
    payload = b"x" * 64
    established = build_l4(IPPROTO_TCP, "198.51.100.7", VIP4, 40000, 80, payload)
    nat_forward = build_l4(IPPROTO_TCP, "198.51.100.7", NAT_VIP, 40000, 80, payload)
    not_vip = build_l4(IPPROTO_TCP, "198.51.100.7", "192.0.2.99", 40000, 80, payload)
    dataplane = _dataplane()
    dataplane.run(established, 1, 1)
    dataplane.run(nat_forward, 1, 1)
    chosen = dataplane.session_target(2, bytes((198, 51, 100, 7)), 0) or 3
    nat_return = build_l4(IPPROTO_TCP, t4(chosen), "198.51.100.7", 80, 40000, payload,
                          src_mac=target_mac(chosen))
    new_frames: list[bytes] = []

    def parse_only() -> None:
        for _ in range(packets):
            parse_frame(established)

    def run_same(frame: bytes, ingress: int) -> Callable[[], None]:
        def body() -> None:
            run = dataplane.run
            for i in range(packets):
                run(frame, ingress, 1000 + i)
        return body

    def new_sessions() -> None:
        fresh = ReferenceDataplane(rand32=lambda: 0, session_capacity=packets + 1)
        fresh.apply(diff(None, compile_state(*_config_env())))
        for i, frame in enumerate(new_frames):
            fresh.run(frame, 1, i)

    new_frames.extend(build_l4(IPPROTO_TCP, c, VIP4, 40000, 80, payload) for c in _clients(packets))
    floor = _time(parse_only, repeat)
    paths = {
        "parse_only": floor,
        "new_tcp_session_dsr": _time(new_sessions, repeat),
        "established_dsr": _time(run_same(established, 1), repeat),
        "nat_forward_established": _time(run_same(nat_forward, 1), repeat),
        "nat_return": _time(run_same(nat_return, 2), repeat),
        "non_vip_pass": _time(run_same(not_vip, 1), repeat),
    }
    return {
        name: {"us_per_packet": seconds / packets * 1e6, "ratio_to_parse_only": seconds / floor}
        for name, seconds in paths.items()
    }


def _config_env() -> tuple[Config, Environment]:
    config = cfg(server(1, targets=(1, 2)), targets=(target(1, dsr=True), target(2, dsr=True)))
    return config, lab_environment(config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--packets", type=int, default=20_000, help="packets per measurement (max 1e6)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats per path; the best is kept")
    args = parser.parse_args()
    packets = max(100, min(args.packets, 1_000_000))
    results = measure(packets, max(1, min(args.repeat, 20)))
    print(f"{'path':<26} {'us/packet':>10} {'x parse-only':>13}")
    for name, row in results.items():
        print(f"{name:<26} {row['us_per_packet']:>10.2f} {row['ratio_to_parse_only']:>13.2f}")
    print(json.dumps({"packets": packets, "paths": results}, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
