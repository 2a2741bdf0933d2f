"""The multiplexed tcpopen prober against real loopback sockets, on the virtual-clock loop.

Loopback handshakes complete inside connect(), so "connected" and "refused" are real answers; a
listener whose accept queue is full drops SYNs, a real black hole, and its timeouts pass in
virtual time (no sleeping).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from dsrlb.health.multiplex import TcpConnectProber

RunVirtual = Callable[[Coroutine[Any, Any, Any]], Any]
Result = tuple[bool, float | None, str]


@contextmanager
def loopback_ports() -> Iterator[tuple[int, int, int]]:
    """(listening, closed, black hole) ports on 127.0.0.1; the black hole's accept queue is full."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(512)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)  # one connection fills the queue; later SYNs are dropped
    fillers = []
    for _ in range(2):
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        filler.connect_ex(hole.getsockname())
        fillers.append(filler)
    try:
        yield listening.getsockname()[1], closed.getsockname()[1], hole.getsockname()[1]
    finally:
        for sock in (listening, closed, hole, *fillers):
            sock.close()


class Recorder:
    """The deliver callback: every result by token, and whether one came from inside start()."""

    def __init__(self) -> None:
        self.results: dict[object, list[Result]] = {}
        self.inside_start = False
        self.reentered = False

    def deliver(self, token: object, ok: bool, latency: float | None, detail: str) -> None:
        self.reentered |= self.inside_start
        self.results.setdefault(token, []).append((ok, latency, detail))

    def start(self, prober: TcpConnectProber, token: object, port: int, timeout: float) -> None:
        self.inside_start = True
        try:
            prober.start(self.deliver, token, socket.AF_INET, ("127.0.0.1", port), timeout)
        finally:
            self.inside_start = False


async def until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    """Let the (virtual) loop run until `predicate()` holds; virtual seconds, not real ones."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not predicate() and loop.time() < end:
        await asyncio.sleep(0.01)


def test_connected_refused_and_black_hole(run_virtual: RunVirtual) -> None:
    rec = Recorder()

    async def main() -> float:
        loop = asyncio.get_running_loop()
        prober = TcpConnectProber(loop)
        with loopback_ports() as (up, closed, hole):
            started = loop.time()
            rec.start(prober, "up", up, 2.0)
            rec.start(prober, "closed", closed, 2.0)
            rec.start(prober, "hole", hole, 2.0)
            await until(lambda: len(rec.results) == 3)
            assert prober.in_flight == 0
            prober.close()
        return started

    run_virtual(main())
    assert not rec.reentered  # results known inside start() still come from the loop
    assert rec.results["up"] == [(True, pytest.approx(0.0, abs=0.5), "connected")]
    assert rec.results["closed"] == [(False, None, "Connection refused")]
    assert rec.results["hole"] == [(False, None, "no answer within 2 s")]


def test_many_probes_each_answered_exactly_once(run_virtual: RunVirtual) -> None:
    """Descriptors are reused as probes finish; deadlines of two timeouts interleave."""
    rec = Recorder()
    plan: dict[int, str] = {}

    async def main() -> None:
        prober = TcpConnectProber(asyncio.get_running_loop())
        with loopback_ports() as ports:
            kinds = itertools.cycle(zip(("up", "closed", "hole"), ports, strict=True))
            for token in range(300):
                kind, port = next(kinds)
                plan[token] = kind
                rec.start(prober, token, port, 1.0 if token % 2 else 3.0)
                if token % 50 == 49:
                    await asyncio.sleep(0.2)  # later probes start while earlier ones are in flight
            await until(lambda: len(rec.results) == len(plan))
        assert prober.in_flight == 0
        prober.close()

    run_virtual(main())
    assert not rec.reentered
    assert all(len(results) == 1 for results in rec.results.values())
    got = Counter((plan[t], r[0][2]) for t, r in rec.results.items())
    assert got == Counter({("up", "connected"): 100, ("closed", "Connection refused"): 100,
                           ("hole", "no answer within 1 s"): 50, ("hole", "no answer within 3 s"): 50})


def test_closing_fails_the_probes_in_flight(run_virtual: RunVirtual) -> None:
    rec = Recorder()

    async def main() -> None:
        prober = TcpConnectProber(asyncio.get_running_loop())
        with loopback_ports() as (_up, _closed, hole):
            for token in range(5):
                rec.start(prober, token, hole, 30.0)
            await asyncio.sleep(0.1)
            assert prober.in_flight == 5 and rec.results == {}
            prober.close()
        assert prober.in_flight == 0 and prober.closed

    run_virtual(main())
    assert rec.results == {t: [(False, None, "probe cancelled: the prober closed")] for t in range(5)}


def test_a_failing_receiver_does_not_lose_the_other_results(run_virtual: RunVirtual) -> None:
    got: list[str] = []

    def deliver(token: object, ok: bool, latency: float | None, detail: str) -> None:
        if token == "bad":
            raise RuntimeError("receiver bug")
        got.append(str(token))

    async def main() -> None:
        prober = TcpConnectProber(asyncio.get_running_loop())
        with loopback_ports() as (up, _closed, _hole):
            for token in ("a", "bad", "b"):
                prober.start(deliver, token, socket.AF_INET, ("127.0.0.1", up), 1.0)
            await until(lambda: len(got) == 2)
        prober.close()

    run_virtual(main())
    assert sorted(got) == ["a", "b"]


def test_a_probe_started_on_a_closed_prober_fails_at_once(run_virtual: RunVirtual) -> None:
    """A result handler that starts the next probe from inside close() (or a stale reference): before,
    the probe registered in the epoll set about to be closed and entered a `pending` nobody read again,
    its check in flight for good, its socket open (CLOSE-WAIT once the peer closed) in no epoll set."""
    rec = Recorder()
    prober_box: list[TcpConnectProber] = []
    hole_port: list[int] = []

    def deliver_then_restart(token: object, ok: bool, latency: float | None, detail: str) -> None:
        rec.deliver(token, ok, latency, detail)
        if token == "first":
            prober_box[0].start(rec.deliver, "second", socket.AF_INET, ("127.0.0.1", hole_port[0]), 30.0)

    async def main() -> None:
        prober = TcpConnectProber(asyncio.get_running_loop())
        prober_box.append(prober)
        with loopback_ports() as (_up, _closed, hole):
            hole_port.append(hole)
            prober.start(deliver_then_restart, "first", socket.AF_INET, ("127.0.0.1", hole), 30.0)
            await asyncio.sleep(0.1)
            prober.close()
            assert prober.in_flight == 0
            rec.start(prober, "third", hole, 30.0)  # a stale reference after close
            await until(lambda: "third" in rec.results)

    run_virtual(main())
    assert rec.results == {t: [(False, None, "probe cancelled: the prober closed")]
                           for t in ("first", "second", "third")}
    assert not rec.reentered


def test_a_bad_address_fails_the_probe_and_leaks_no_socket(run_virtual: RunVirtual) -> None:
    rec = Recorder()

    async def main() -> None:
        prober = TcpConnectProber(asyncio.get_running_loop())
        before = len(os.listdir("/proc/self/fd"))
        prober.start(rec.deliver, "bad", socket.AF_INET, ("127.0.0.1", 70000), 1.0)  # OverflowError
        await until(lambda: "bad" in rec.results)
        assert len(os.listdir("/proc/self/fd")) == before and prober.in_flight == 0
        prober.close()

    run_virtual(main())
    [(ok, latency, detail)] = rec.results["bad"]
    assert not ok and latency is None and detail.startswith("probe error:")


def test_expire_times_out_held_probes_now_and_names_the_tokens_it_held(run_virtual: RunVirtual) -> None:
    rec = Recorder()

    async def main() -> set[object]:
        prober = TcpConnectProber(asyncio.get_running_loop())
        with loopback_ports() as (_up, _closed, hole):
            rec.start(prober, "held", hole, 30.0)
            rec.start(prober, "other", hole, 30.0)
            await asyncio.sleep(0.5)
            held = prober.expire(["held", "lost"])
            assert prober.in_flight == 1 and set(rec.results) == {"held"}
            prober.close()
        return held

    assert run_virtual(main()) == {"held"}
    [(ok, _latency, detail)] = rec.results["held"]
    assert not ok and detail.startswith("no answer within 0.5")
