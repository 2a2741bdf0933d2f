"""The multiplexed tcpopen prober against real loopback sockets, on the virtual-clock loop.

Loopback handshakes complete inside connect(), so "connected" and "refused" are real answers; a
listener whose accept queue is full drops SYNs, a real black hole, and its timeouts pass in
virtual time (no sleeping).
"""

from __future__ import annotations

import asyncio
import itertools
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
