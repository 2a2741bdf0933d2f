"""Which target a flow goes to, and why: the engine side of `dsrlb explain`.

All registered and enabled targets are assumed UP with synthetic next hops whose MAC address encodes
the target id, so the answer of *any* engine can be read off its output frame: `engine_answer` works
on the `Dataplane` protocol only. The reference answers; when the caller hands the `Explainer` a
second engine (the XDP program loaded with test inputs: `dsrlb.cli.explain` does), both get the same
Change list, the same frames, the same clock and the same random numbers, and `compare_answers`
names every difference in verdict, target, session and output bytes (`FlowReport.disagree`).

This module stays sans-I/O: it never loads BPF itself, it only drives what it is given.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, Protocol

from dsrlb.engine.compile import AdminState, DesiredState, Environment, compile_state, diff
from dsrlb.engine.dataplane import Dataplane, IPAddress, NextHop, Verdict
from dsrlb.engine.hashing import hash_client, hash_session_key
from dsrlb.engine.packet import IPPROTO_TCP, IPPROTO_UDP, build_l4
from dsrlb.engine.reference import ReferenceDataplane
from dsrlb.model import Config, Method, SessionKey

# The ingress (and synthetic egress) interface of explained frames. ifindex 1 is lo in every network
# namespace, so BPF_PROG_TEST_RUN, which looks the ingress interface up in the caller's namespace,
# finds it anywhere; the egress next hop on the same index makes a forwarded frame XDP_TX.
EXPLAIN_IFINDEX = 1
_BALANCER_MAC = bytes.fromhex("02d500000001")
_ENDPOINT = re.compile(r"^\[?(?P<addr>[0-9A-Fa-f:.]+?)\]?:(?P<port>\d{1,5})$")
_PROTOCOLS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}

_WHY = {
    Method.RR: "round robin over the UP targets (per-service counter)",
    Method.WRR: "smooth weighted round robin schedule",
    Method.RANDOM: "random choice among the UP targets",
    Method.WRANDOM: "random choice weighted by target weight",
    Method.FIRST: "first operational target in list order",
    Method.SESSION: "fewest active sessions",
    Method.BANDWIDTH: "least recent bandwidth",
    Method.AGENT: "lowest agent-reported load",
    Method.RNDAGENT: "random choice weighted by spare capacity reported by the agent",
}


class FlowSyntaxError(ValueError):
    """A flow that cannot be read; the message says what was expected."""


@dataclass(frozen=True)
class Flow:
    client: IPAddress
    client_port: int
    vip: IPAddress
    vip_port: int
    protocol: str  # "tcp" | "udp"


def parse_endpoint(text: str, what: str) -> tuple[IPAddress, int]:
    match = _ENDPOINT.match(text.strip())
    if match is None:
        raise FlowSyntaxError(f"{what} {text!r}: expected ADDR:PORT (IPv6 as [ADDR]:PORT)")
    try:
        address = ip_address(match["addr"])
    except ValueError:
        raise FlowSyntaxError(f"{what} {text!r}: {match['addr']!r} is not an IP address") from None
    port = int(match["port"])
    if not 0 < port < 65536:
        raise FlowSyntaxError(f"{what} {text!r}: port must be 1-65535")
    return address, port


def parse_flow(client: str, vip: str, protocol: str = "tcp") -> Flow:
    client_addr, client_port = parse_endpoint(client, "client")
    vip_addr, vip_port = parse_endpoint(vip, "vip")
    if client_addr.version != vip_addr.version:
        raise FlowSyntaxError(f"client {client} and vip {vip} are of different address families")
    if protocol.lower() not in _PROTOCOLS:
        raise FlowSyntaxError(f"protocol {protocol!r}: expected tcp or udp")
    return Flow(client_addr, client_port, vip_addr, vip_port, protocol.lower())


def parse_flow_line(line: str) -> Flow | None:
    """`client vip [proto]` (e.g. `198.51.100.7:40000 192.0.2.10:80 tcp`); blank and # lines: None."""
    words = line.split("#", 1)[0].split()
    if not words:
        return None
    if len(words) not in (2, 3):
        raise FlowSyntaxError(f"{line.strip()!r}: expected `CLIENT:PORT VIP:PORT [tcp|udp]`")
    return parse_flow(words[0], words[1], words[2] if len(words) == 3 else "tcp")


@dataclass(frozen=True)
class EngineAnswer:
    """What one engine did with a flow's first-seen frame."""

    target: int | None
    session: str | None  # "new" | "hit" | "moved" | None (no session: passed or dropped)
    verdict: str
    frame: bytes = b""  # the frame the engine put out (the input frame on PASS and DROP)


def compare_answers(reference: EngineAnswer, other: EngineAnswer, other_name: str = "xdp") -> tuple[str, ...]:
    """Every way `other` differs from the reference, one phrase each; () when they agree.

    The XDP program must give the reference's verdict *and bytes* (DESIGN §1), so the output frames
    are compared whole, not only the target read off them."""
    differences: list[str] = []
    if other.verdict != reference.verdict:
        differences.append(f"verdict {other.verdict} ({other_name}) vs {reference.verdict} (reference)")
    if other.target != reference.target:
        differences.append(f"target {_or_none(other.target)} ({other_name}) vs "
                           f"{_or_none(reference.target)} (reference)")
    if other.session != reference.session:
        differences.append(f"session {other.session or '-'} ({other_name}) vs "
                           f"{reference.session or '-'} (reference)")
    if other.frame != reference.frame:
        differences.append(_frame_difference(reference.frame, other.frame, other_name))
    return tuple(differences)


def _or_none(target: int | None) -> str:
    return "none" if target is None else str(target)


def _frame_difference(reference: bytes, other: bytes, other_name: str) -> str:
    if len(other) != len(reference):
        return f"output frame of {len(other)} bytes ({other_name}) vs {len(reference)} (reference)"
    offset = next(i for i, (a, b) in enumerate(zip(reference, other, strict=True)) if a != b)
    count = sum(1 for a, b in zip(reference, other, strict=True) if a != b)
    return f"output bytes differ: {count} byte(s), the first at offset {offset}"


@dataclass(frozen=True)
class FlowReport:
    """One flow's answer: the reference's, the XDP program's, or both side by side.

    `reference` is None only when the reference was not asked (`--engine xdp`); then the XDP answer
    is the report's answer. With both, the reference's answer is the report's and the XDP answer is
    compared with it."""

    flow: Flow
    service: int | None
    method: str | None
    backup: bool
    reference: EngineAnswer | None
    reason: str
    xdp: EngineAnswer | None = None

    def __post_init__(self) -> None:
        if self.reference is None and self.xdp is None:
            raise ValueError("a FlowReport needs at least one engine's answer")

    @property
    def answer(self) -> EngineAnswer:
        answer = self.reference if self.reference is not None else self.xdp
        assert answer is not None  # __post_init__
        return answer

    @property
    def differences(self) -> tuple[str, ...]:
        if self.reference is None or self.xdp is None:
            return ()
        return compare_answers(self.reference, self.xdp)

    @property
    def disagree(self) -> bool:
        return bool(self.differences)

    def as_json(self) -> dict[str, Any]:
        f = self.flow
        answer = self.answer
        return {
            "client": _endpoint(f.client, f.client_port),
            "vip": _endpoint(f.vip, f.vip_port),
            "proto": f.protocol,
            "service": self.service,
            "engine": "reference" if self.reference is not None else "xdp",
            "target": answer.target,
            "method": self.method,
            "session": answer.session,
            "backup": self.backup,
            "verdict": answer.verdict,
            "reason": self.reason,
            # The XDP program's answer (None when it did not run): its target, and its verdict so that
            # "no target" and "not asked" stay apart.
            "xdp": None if self.xdp is None else self.xdp.target,
            "xdp_verdict": None if self.xdp is None else self.xdp.verdict,
            "xdp_session": None if self.xdp is None else self.xdp.session,
            "disagree": self.disagree,
            "differences": list(self.differences),
        }


def _endpoint(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def synthetic_next_hop(target_id: int) -> NextHop:
    """A next hop whose MAC names the target: 02:<id as 4 bytes>:01."""
    dst_mac = b"\x02" + (target_id & 0xFFFFFFFF).to_bytes(4, "big") + b"\x01"
    return NextHop(EXPLAIN_IFINDEX, _BALANCER_MAC, dst_mac)


def target_from_mac(mac: bytes) -> int | None:
    if len(mac) == 6 and mac[0] == 2 and mac[5] == 1 and mac != _BALANCER_MAC:
        return int.from_bytes(mac[1:5], "big")
    return None


def explain_environment(config: Config) -> Environment:
    """Every registered target enabled in the config is UP, with a synthetic next hop."""
    usable = [t for t in config.targets if t.registered and t.enabled]
    return Environment(
        next_hops={t.id: synthetic_next_hop(t.id) for t in usable},
        admin={t.id: AdminState.ENABLED for t in usable},
    )


def flow_frame(flow: Flow) -> bytes:
    return build_l4(_PROTOCOLS[flow.protocol], flow.client, flow.vip, flow.client_port, flow.vip_port,
                    b"explain")


def engine_answer(dataplane: Dataplane, flow: Flow, now_ns: int) -> EngineAnswer:
    """Run the flow's frame through any engine and read the answer off counters and the output."""
    before = dict(dataplane.stats())
    result = dataplane.run(flow_frame(flow), EXPLAIN_IFINDEX, now_ns)
    after = dataplane.stats()
    session = None
    for name, label in (("session_new", "new"), ("session_moved", "moved"), ("session_hit", "hit")):
        if after.get(name, 0) > before.get(name, 0):
            session = label
    target = target_from_mac(result.frame[0:6]) if result.verdict in (Verdict.TX, Verdict.REDIRECT) else None
    return EngineAnswer(target, session, result.verdict.name, result.frame)


class ComparedEngine(Dataplane, Protocol):
    """A second engine to hold against the reference: a Dataplane whose random source can be set
    (XdpDataplane loaded with `test_inputs=True`), so random methods can be compared at all."""

    def inject_rand32(self, value: int | None) -> None: ...


class Explainer:
    """Answers flows in order against one reference instance (a second flow of a client hits), and
    against `xdp` too when given: the same Changes, frames, clock and random numbers go to both.

    `reference=False` leaves the reference out (then `xdp` is required and answers alone). The caller
    owns `xdp` (loading, namespace, closing); it should be freshly loaded or reset."""

    def __init__(self, config: Config, seed: int = 0, *, xdp: ComparedEngine | None = None,
                 reference: bool = True) -> None:
        if not reference and xdp is None:
            raise ValueError("an Explainer needs the reference, the XDP engine, or both")
        self.config = config
        self.state: DesiredState = compile_state(config, explain_environment(config))
        self._rng = random.Random(seed)
        self._rand32 = 0
        # One random number per flow, drawn here and handed to every engine: the engines consult it
        # at most once per frame (a new session of a random method), so they draw alike.
        self.reference = ReferenceDataplane(rand32=lambda: self._rand32) if reference else None
        self.xdp = xdp
        changes = diff(None, self.state)
        for engine in self._engines():
            engine.apply(changes)
        self._now_ns = 1_000_000_000

    def _engines(self) -> list[Dataplane]:
        return [e for e in (self.reference, self.xdp) if e is not None]

    def explain(self, flow: Flow) -> FlowReport:
        self._now_ns += 1_000_000
        self._rand32 = self._rng.getrandbits(32)
        service_id = self._service_of(flow)
        reference = None if self.reference is None else engine_answer(self.reference, flow, self._now_ns)
        xdp = None
        if self.xdp is not None:
            self.xdp.inject_rand32(self._rand32)
            xdp = engine_answer(self.xdp, flow, self._now_ns)
        answer = reference if reference is not None else xdp
        assert answer is not None  # __init__ asks for at least one engine
        if service_id is None:
            reason = f"no server is registered and enabled for {_endpoint(flow.vip, flow.vip_port)}/" \
                     f"{flow.protocol}: the kernel gets the packet"
            return FlowReport(flow, None, None, False, reference, reason, xdp)
        spec = self.state.services[service_id]
        backup = self.state.backup_in_use.get(service_id, False)
        table = self.state.tables.get(service_id, ())
        return FlowReport(flow, service_id, str(spec.method), backup, reference,
                          self._reason(flow, service_id, answer, table, backup), xdp)

    def _service_of(self, flow: Flow) -> int | None:
        proto = _PROTOCOLS[flow.protocol]
        for port in (flow.vip_port, 0):
            for sid, spec in self.state.services.items():
                if any(k.address == flow.vip and k.protocol == proto and k.port == port for k in spec.keys):
                    return sid
        return None

    def _reason(
        self, flow: Flow, sid: int, answer: EngineAnswer, table: tuple[int, ...], backup: bool
    ) -> str:
        spec = self.state.services[sid]
        key = "src+port" if spec.session_key is SessionKey.SRC_PORT else "src"
        if answer.target is None:
            if not table:
                return f"server {sid}: no target is up (all primaries and backups down): dropped"
            return f"server {sid}: not forwarded ({answer.verdict})"
        prefix = f"server {sid}: backup targets in use (no primary is up); " if backup else f"server {sid}: "
        if answer.session == "hit":
            return prefix + f"existing session (sessionid {key}) -> target {answer.target}"
        if spec.method in (Method.HASH, Method.MAGLEV):
            packed = flow.client.packed
            port = flow.client_port if spec.session_key is SessionKey.SRC_PORT else 0
            digest = hash_client(packed) if spec.method is Method.HASH else hash_session_key(packed, port)
            what = "client address" if spec.method is Method.HASH else "session key"
            slot = digest % len(table)
            return prefix + (f"new session: jhash({what}) = {digest:#010x}, slot {slot} of the Maglev ring "
                             f"-> target {answer.target}")
        return prefix + f"new session: {_WHY[spec.method]} -> target {answer.target}"
