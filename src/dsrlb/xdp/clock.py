"""The XDP program's clock: jiffies turned into CLOCK_MONOTONIC nanoseconds (bpf/maps.h clock_base).

The kernel advances jiffies by one for every TICK_NSEC of CLOCK_MONOTONIC, so after load we read both
clocks side by side in the kernel (the `dsrlb_clock` program under BPF_PROG_TEST_RUN) and solve
monotonic_ns = jiffies * TICK_NSEC + offset. TICK_NSEC follows from HZ, which we recognise among
Linux's CONFIG_HZ choices from two readings a moment apart; when the readings fit none of them the
program keeps reading bpf_ktime_get_coarse_ns() (ns_per_jiffy 0), which is always right, only slower.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

KNOWN_HZ = (100, 250, 300, 1000)  # kernel/Kconfig.hz
HZ_TOLERANCE = 0.05  # the measured tick may be this far off a known one (readings are a tick coarse)
SPAN_SECONDS = 0.1  # between the two readings that give HZ: 25 ticks at HZ=250
OFFSET_READINGS = 8
U64 = 1 << 64

Reading = tuple[int, int]  # (jiffies, coarse monotonic ns), read back to back in the kernel


@dataclass(frozen=True)
class ClockBase:
    offset_ns: int  # modulo 2**64, as the program adds it (jiffies start near 2**32 - 300 * HZ)
    ns_per_jiffy: int  # TICK_NSEC; 0: the program reads the coarse clock
    hz: int | None

    def to_bytes(self) -> bytes:
        return struct.pack("<QQ", self.offset_ns, self.ns_per_jiffy)

    def now_ns(self, jiffies: int) -> int:
        return (jiffies * self.ns_per_jiffy + self.offset_ns) % U64


COARSE = ClockBase(0, 0, None)


def tick_nsec(hz: int) -> int:
    return (10**9 + hz // 2) // hz  # include/linux/jiffies.h TICK_NSEC


def clock_base_from(first: Reading, later: Sequence[Reading]) -> ClockBase:
    """HZ from `first` and the last of `later` (SPAN_SECONDS apart), the offset from all readings.

    Each reading gives coarse - jiffies * TICK_NSEC = the tick's boundary offset plus how late that
    tick's update ran (the coarse clock is stamped when the handler runs, later under load). A reading
    taken between a tick's jiffies update and its clock update is a whole tick lower: those are left
    out (more than half a tick below the highest), and of the rest the smallest is the closest to the
    boundary, so the clock is not ahead of CLOCK_MONOTONIC by a late tick's delay."""
    if not later:
        return COARSE
    j1, c1 = first
    j2, c2 = later[-1]
    if j2 <= j1 or c2 <= c1:
        return COARSE
    measured = (c2 - c1) / (j2 - j1)
    hz = min(KNOWN_HZ, key=lambda h: abs(tick_nsec(h) - measured))
    step = tick_nsec(hz)
    if abs(step - measured) > HZ_TOLERANCE * step:
        return COARSE
    offsets = [c - j * step for j, c in (first, *later)]
    top = max(offsets)
    offset = min(o for o in offsets if o > top - step // 2)
    return ClockBase(offset % U64, step, hz)


def calibrate(read: Callable[[], Reading], sleep: Callable[[float], None] = time.sleep) -> ClockBase:
    """Readings through `read` (the dsrlb_clock program), SPAN_SECONDS apart, then a few more."""
    first = read()
    sleep(SPAN_SECONDS)
    later = [read()]
    for _ in range(OFFSET_READINGS - 1):
        sleep(0.001)
        later.append(read())
    return clock_base_from(first, later)
