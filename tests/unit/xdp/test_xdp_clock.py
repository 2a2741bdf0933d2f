"""The XDP clock's calibration (xdp/clock.py): jiffies to CLOCK_MONOTONIC ns, from readings alone."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dsrlb.xdp.clock import COARSE, KNOWN_HZ, U64, calibrate, clock_base_from, tick_nsec

JIFFIES_AT_BOOT = (1 << 32) - 300 * 250  # INITIAL_JIFFIES at HZ=250, as a 64-bit counter


class FakeKernel:
    """jiffies and the coarse clock as the kernel keeps them: both move at each tick, jiffies first."""

    def __init__(self, hz: int, start_ns: int, late_ns: int = 0) -> None:
        self.step = tick_nsec(hz)
        self.now = start_ns
        self.base_jiffies = JIFFIES_AT_BOOT
        self.between = False  # a reading taken between the jiffies and the clock update of a tick
        self.late_ns = late_ns  # how late the tick handler ran: the coarse clock is stamped then

    def read(self) -> tuple[int, int]:
        ticks = self.now // self.step
        coarse = ticks * self.step + self.late_ns
        if self.between:
            coarse -= self.step  # jiffies already moved, the coarse clock not yet
        return self.base_jiffies + ticks, coarse

    def sleep(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


@given(st.sampled_from(KNOWN_HZ), st.integers(10**9, 10**15))
def test_calibration_recovers_hz_and_offset(hz: int, start_ns: int) -> None:
    fake = FakeKernel(hz, start_ns)
    base = calibrate(fake.read, fake.sleep)
    assert base.hz == hz and base.ns_per_jiffy == tick_nsec(hz)
    jiffies, coarse = fake.read()
    assert base.now_ns(jiffies) == coarse  # the program's clock is the coarse monotonic clock


def test_a_reading_between_the_two_updates_does_not_set_the_offset() -> None:
    fake = FakeKernel(250, 5 * 10**9)
    first = fake.read()
    fake.sleep(0.1)
    fake.between = True
    skewed = fake.read()
    fake.between = False
    fake.sleep(0.001)
    base = clock_base_from(first, [skewed, fake.read()])
    jiffies, coarse = fake.read()
    assert base.now_ns(jiffies) == coarse


def test_readings_that_fit_no_known_hz_keep_the_coarse_clock() -> None:
    step = 7_777_777  # HZ ~ 128.6: no Linux CONFIG_HZ
    first = (1000, 10**10)
    assert clock_base_from(first, [(1013, 10**10 + 13 * step)]) is COARSE
    assert clock_base_from(first, [first]) is COARSE  # no tick in between
    assert clock_base_from(first, []) is COARSE


def test_the_offset_wraps_as_the_program_adds_it() -> None:
    base = clock_base_from((JIFFIES_AT_BOOT, 10**9), [(JIFFIES_AT_BOOT + 25, 10**9 + 25 * tick_nsec(250))])
    assert 0 <= base.offset_ns < U64 and base.now_ns(JIFFIES_AT_BOOT) == 10**9
    assert len(base.to_bytes()) == 16 and COARSE.to_bytes() == bytes(16)


def test_a_late_tick_does_not_put_the_clock_ahead_of_monotonic_time() -> None:
    """Readings from ticks whose handler ran late (0.75 ms, as seen under load in CI) and one on time:
    the offset is the on-time one, so the program's clock never runs ahead of CLOCK_MONOTONIC."""
    fake = FakeKernel(250, 7 * 10**9, late_ns=750_000)
    first = fake.read()
    fake.sleep(0.1)
    late = fake.read()
    fake.sleep(0.004 + 30e-6)  # the next tick, 30 us after its boundary: its handler ran 20 us late
    fake.late_ns = 20_000
    on_time = fake.read()
    base = clock_base_from(first, [late, on_time])
    jiffies, _ = on_time
    boundary = (jiffies - fake.base_jiffies) * fake.step
    assert base.now_ns(jiffies) == boundary + 20_000 <= fake.now
