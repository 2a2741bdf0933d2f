"""An asyncio event loop on a virtual clock: when nothing is ready, time jumps to the next timer.

The scheduler runs its real timers, heap and tasks on it; the fake probes in the tests sleep in
virtual time, so a test of minutes of checking takes milliseconds and never depends on the
machine's speed.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


class _VirtualSelector(selectors.DefaultSelector):
    loop: VirtualClockLoop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # nothing scheduled: wait for real I/O a little
            return list(super().select(0.05))
        self.loop.now += timeout
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self.now = 1000.0

    def time(self) -> float:
        return self.now


def _run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@pytest.fixture
def run_virtual() -> Callable[[Coroutine[Any, Any, T]], T]:
    """Run a coroutine to completion on a fresh virtual-clock loop (starts at t = 1000 s)."""
    return _run_virtual


def _stall(seconds: float) -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualClockLoop)
    loop.now += seconds


@pytest.fixture
def stall() -> Callable[[float], None]:
    """`stall(s)`: inside run_virtual, the loop's clock jumps by s seconds, as if it had been blocked."""
    return _stall
