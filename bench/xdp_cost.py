"""Per-packet cost of each XDP path, as a ratio to a swap-MAC XDP_TX floor program (DESIGN §6).

Every figure comes from BPF_PROG_TEST_RUN with `repeat`: the kernel runs the program on the same
buffer `repeat` times and reports the mean time per run. The floor (xdp/bpf/floor.bpf.c) is measured
the same way in the same rounds, interleaved with the paths, and each path's figure is the median over
rounds of (path / floor), which cancels most of the noise of a shared machine.

The repeated buffer is the same frame, already rewritten by the previous run, so each path is set up
to be stable under repetition:

- established: a DSR session hit (only the MACs change), sent on with bpf_redirect (egress != ingress);
- established_tx: the same on a one-armed balancer (the target's next hop is on the ingress
  interface, XDP_TX like the floor: no bpf_redirect helper call);
- new_session: a service with timeout 0, so every run finds its session expired and selects anew,
  overwrites the session and emits a session event (the ring buffer is drained between calls; the
  set-up checks that every run counts session_new). A key never seen before also pays the LRU
  map's insertion, which a repeated buffer cannot measure;
- nat_forward: an established NAT session whose target address and port equal the VIP's, so the
  rewrite writes the same values (checksums still computed) and only the TTL falls; TTL 255 and
  250 repeats per call keep it above 1;
- nat_return: the reply of that session, rewritten to the same source each time;
- not_balanced: TCP to an address that is no VIP (its source is no NAT target, so the nat_sources
  filter skips the return table; two service_table probes end at empty entries; PASS).

Beside the paths, `one_lookup`: the floor plus one hit in an LRU hash map with the session table's key
and value sizes (floor.bpf.c xdp_floor_lookup), the least a balancer that keeps sessions pays.

Growth: the established path with 1 and with 1000 targets (and a 1000-entry table), and with 1 and
1M sessions in the session table, each pair loaded side by side and interleaved.

Run as root:  .venv/bin/python bench/xdp_cost.py [--rounds 30]
The last line of output is a JSON object with the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from ipaddress import ip_address, ip_network

from dsrlb.engine.dataplane import (
    IPPROTO_TCP,
    Change,
    NextHop,
    ServiceKey,
    ServiceSpec,
    SetRoute,
    SetTable,
    TargetSpec,
    TargetState,
    UpsertService,
    UpsertTarget,
)
from dsrlb.engine.packet import build_l4
from dsrlb.model import Method, ReturnMatch, SessionKey
from dsrlb.xdp import build, layout
from dsrlb.xdp.dataplane import XdpDataplane, XdpSizes
from dsrlb.xdp.libbpf import BpfObject, BpfProgram

REPEAT = 250  # runs per test-run call; below the 255 TTL of the NAT frames
VIP = ip_address("192.0.2.10")
NAT_VIP = ip_address("192.0.2.20")
OTHER = ip_address("192.0.2.99")
CLIENT = ip_address("198.51.100.7")
LB_MAC, TARGET_MAC = bytes.fromhex("0200000000b1"), bytes.fromhex("020000000101")
EGRESS = 2  # test runs without a context come in on lo (ifindex 1): a forward to 2 is a REDIRECT
INGRESS = 1  # ... and a forward to lo itself is an XDP_TX
XDP_TX = 3  # linux/bpf.h enum xdp_action
PAYLOAD = b"x" * 512  # a mid-sized frame (~580 bytes)


def hop() -> NextHop:
    return NextHop(EGRESS, LB_MAC, TARGET_MAC)


def dsr_target(tid: int) -> UpsertTarget:
    address = ip_address(f"10.{tid >> 16 & 255}.{tid >> 8 & 255}.{tid & 255}")  # never on the wire
    return UpsertTarget(TargetSpec(tid, address, None, True, ReturnMatch.DST_PORT, 1, TargetState.UP, hop()))


def setup_changes(targets: int) -> list[Change]:
    """DSR service 1 (VIP:80, `targets` targets), service 2 with timeout 0, NAT service 3."""
    changes: list[Change] = [dsr_target(tid) for tid in range(1, targets + 1)]
    changes += [
        UpsertService(ServiceSpec(1, (ServiceKey(VIP, IPPROTO_TCP, 80),), Method.RR, SessionKey.SRC, 900)),
        SetTable(1, tuple(range(1, targets + 1))),
        UpsertService(ServiceSpec(2, (ServiceKey(VIP, IPPROTO_TCP, 81),), Method.RR, SessionKey.SRC, 0)),
        SetTable(2, (1,)),
        UpsertTarget(TargetSpec(200_000, ip_address("10.255.0.1"), None, True, ReturnMatch.DST_PORT, 1,
                                TargetState.UP, NextHop(INGRESS, LB_MAC, TARGET_MAC))),
        UpsertService(ServiceSpec(4, (ServiceKey(VIP, IPPROTO_TCP, 82),), Method.RR, SessionKey.SRC, 900)),
        SetTable(4, (200_000,)),
        # The NAT target is the VIP itself: the forward rewrite writes back the same address.
        UpsertTarget(TargetSpec(100_000, NAT_VIP, 80, False, ReturnMatch.DST_PORT, 1, TargetState.UP, hop())),
        UpsertService(ServiceSpec(3, (ServiceKey(NAT_VIP, IPPROTO_TCP, 80),), Method.RR, SessionKey.SRC,
                                  900)),
        SetTable(3, (100_000,)),
        SetRoute(ip_network("198.51.100.0/24"), NextHop(EGRESS, LB_MAC, TARGET_MAC)),
    ]
    return changes


FRAMES = {
    "established": build_l4(IPPROTO_TCP, CLIENT, VIP, 40000, 80, PAYLOAD),
    "established_tx": build_l4(IPPROTO_TCP, CLIENT, VIP, 40000, 82, PAYLOAD),
    "new_session": build_l4(IPPROTO_TCP, CLIENT, VIP, 40000, 81, PAYLOAD),
    "nat_forward": build_l4(IPPROTO_TCP, CLIENT, NAT_VIP, 40000, 80, PAYLOAD, ttl=255),
    "nat_return": build_l4(IPPROTO_TCP, NAT_VIP, CLIENT, 80, 40000, PAYLOAD, ttl=255),
    "not_balanced": build_l4(IPPROTO_TCP, CLIENT, OTHER, 40000, 80, PAYLOAD),
}
EXPECTED_VERDICT = {"established": 4, "established_tx": 3, "new_session": 4, "nat_forward": 4,
                    "nat_return": 4, "not_balanced": 2}


def load(targets: int = 1, sessions: int = 4096) -> XdpDataplane:
    sizes = XdpSizes(services=8, service_keys=64, targets=max(targets + 8, 64), sessions=sessions,
                     nat_returns=4096, routes=16, ring_bytes=1 << 22)
    dataplane = XdpDataplane(sizes)
    dataplane.apply(setup_changes(targets))
    for name, frame in FRAMES.items():  # create the sessions and the NAT return entry, check verdicts
        result = dataplane.program.test_run(frame, 0, 1)
        if result.retval != EXPECTED_VERDICT[name]:
            raise SystemExit(f"set-up error: {name} gave verdict {result.retval}")
    before = dataplane.stats()["session_new"]
    dataplane.program.test_run(FRAMES["new_session"], 0, 10)
    if dataplane.stats()["session_new"] - before != 10:
        raise SystemExit("set-up error: new_session runs do not all select a new target")
    dataplane.drain_session_events()
    return dataplane


def fill_sessions(dataplane: XdpDataplane, count: int) -> None:
    """Add `count` sessions of other clients of service 1 (batch updates of 64k)."""
    sessions = dataplane.maps["sessions"]
    value = bytes(layout.session_value(last_seen_ns=0, target_id=1, target_slot=0))
    chunk = 65536
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        keys = bytearray()
        for i in range(start, start + n):
            client = ip_address(f"2001:db8:f::{i >> 16:x}:{i & 0xFFFF:x}")
            key = layout.session_key(client=layout.addr_of(client), service_id=1, client_port=0, family=6)
            keys += bytes(key)
        sessions.update_batch(bytes(keys), value * n, n)


def timer(program: BpfProgram, frame: bytes, after: Callable[[], object] | None = None) -> Callable[[], int]:
    def measure() -> int:
        duration = program.test_run(frame, 0, REPEAT).duration_ns
        if after is not None:
            after()
        return duration

    return measure


def interleaved(measures: dict[str, Callable[[], int]], baseline: str, rounds: int) -> dict[str, float]:
    """Median over rounds of measure / baseline, every measure once per round, in rotating order."""
    ratios: dict[str, list[float]] = {name: [] for name in measures if name != baseline}
    names = list(measures)
    for round_number in range(rounds):
        order = names[round_number % len(names):] + names[: round_number % len(names)]
        values = {name: measures[name]() for name in order}
        for name in ratios:
            ratios[name].append(values[name] / max(1, values[baseline]))
    return {name: statistics.median(values) for name, values in ratios.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--sessions", type=int, default=1_000_000, help="large session table size")
    args = parser.parse_args(argv)

    floor_obj = BpfObject(build.ensure_object(build.FLOOR_PROGRAM))
    floor_obj.load()
    floor = floor_obj.program("xdp_floor")
    floor_lookup = floor_obj.program("xdp_floor_lookup")
    floor_key = CLIENT.packed + bytes(16 + 4 + 2 - 4) + bytes([4, 0])  # floor.bpf.c struct floor_key
    floor_obj.map("floor_sessions").update(floor_key, bytes(16))
    if floor_lookup.test_run(FRAMES["established"], 0, 1).retval != XDP_TX:
        raise SystemExit("set-up error: xdp_floor_lookup missed its key")
    small = load()
    many_targets = load(targets=1000)
    many_sessions = load(sessions=args.sessions + 65536)
    fill_sessions(many_sessions, args.sessions)
    held = sum(1 for _ in many_sessions.maps["sessions"].keys())  # noqa: SIM118 - a BPF map walk
    print(f"sessions in the large table: {held}")
    try:
        measures = {"floor": timer(floor, FRAMES["established"]),
                    "one_lookup": timer(floor_lookup, FRAMES["established"])}
        for name, frame in FRAMES.items():
            drain = small.drain_session_events if name == "new_session" else None
            measures[name] = timer(small.program, frame, drain)
        paths = interleaved(measures, "floor", args.rounds)
        growth_targets = interleaved({
            "one": timer(small.program, FRAMES["established"]),
            "many": timer(many_targets.program, FRAMES["established"]),
        }, "one", args.rounds)["many"]
        growth_sessions = interleaved({
            "one": timer(small.program, FRAMES["established"]),
            "many": timer(many_sessions.program, FRAMES["established"]),
        }, "one", args.rounds)["many"]
        floor_ns = statistics.median(measures["floor"]() for _ in range(9))
    finally:
        for dataplane in (small, many_targets, many_sessions):
            dataplane.close()
        floor_obj.close()
    for name, ratio in paths.items():
        print(f"{name:>14}: {ratio:5.2f} x floor")
    print(f"floor: {floor_ns} ns per run (BPF_PROG_TEST_RUN, {len(FRAMES['established'])}-byte frame)")
    print(f"established, 1000 targets / 1 target: {growth_targets:.3f}")
    print(f"established, {args.sessions} sessions / 1 session: {growth_sessions:.3f}")
    result = {name: round(ratio, 3) for name, ratio in paths.items()}
    result["growth_1000_targets"] = round(growth_targets, 3)
    result["growth_1m_sessions"] = round(growth_sessions, 3)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
