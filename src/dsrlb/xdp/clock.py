"""The XDP program's clock: jiffies turned into CLOCK_MONOTONIC nanoseconds (bpf/maps.h clock_base).

The kernel advances jiffies on a fixed grid of CLOCK_MONOTONIC: jiffies becomes j no earlier than
boundary + j * TICK_NSEC (kernel/time/tick-sched.c tick_do_update_jiffies64 moves last_jiffies_update
by whole ticks), but as late as the tick handler runs, which on a loaded VM is up to a tick or more.
After load we read jiffies and then the precise monotonic clock in the kernel (the `dsrlb_clock`
program under BPF_PROG_TEST_RUN). Every reading (j, t) has t >= boundary + j * TICK_NSEC, so
min(t - j * TICK_NSEC) bounds the boundary from above, tightly when a reading sees a tick land. The
program's offset is that bound less one tick: its clock is never ahead of CLOCK_MONOTONIC, whatever
later ticks' lateness (as long as one tick seen at calibration landed less than a tick late), and
behind it by at most two ticks plus the current tick's lateness. Idle
timeouts are whole seconds, so that changes nothing; Python only compares session ages with
time.monotonic_ns(), and an age a few ms too old is harmless where one in the future is not.

TICK_NSEC follows from HZ, recognised among Linux's CONFIG_HZ choices from two tick edges
SPAN_SECONDS apart, each seen between two readings close together (so that the edge's time is known
to within those readings' gap and the tick's lateness, not to a whole tick). When the edges fit
none of them, or no tick was seen, the program keeps reading bpf_ktime_get_coarse_ns()
(ns_per_jiffy 0), which is always right, only slower.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

KNOWN_HZ = (100, 250, 300, 1000)  # kernel/Kconfig.hz
HZ_TOLERANCE = 0.05  # the measured tick may be this far off a known one (edges land a little late)
SPAN_SECONDS = 0.1  # between the two edges that give HZ: 25 ticks at HZ=250
MAX_READS_PER_EDGE = 20_000  # a reading is a few us: 40-100 ms, several ticks at HZ=100
CLEAN_EDGE_NS = 200_000  # readings this close around a tick edge date it well enough for HZ
U64 = 1 << 64

Reading = tuple[int, int]  # (jiffies, precise monotonic ns), jiffies read first, in the kernel


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


def clock_base_from(start: Reading, end: Reading, readings: Sequence[Reading]) -> ClockBase:
    """HZ from two tick edges (`start`, `end`: the first readings of a new jiffy, SPAN_SECONDS
    apart), the offset from every reading (see the module doc)."""
    (j1, t1), (j2, t2) = start, end
    if j2 <= j1 or t2 <= t1:
        return COARSE
    measured = (t2 - t1) / (j2 - j1)
    hz = min(KNOWN_HZ, key=lambda h: abs(tick_nsec(h) - measured))
    step = tick_nsec(hz)
    if abs(step - measured) > HZ_TOLERANCE * step:
        return COARSE
    bound = min(t - j * step for j, t in (start, end, *readings))
    return ClockBase((bound - step) % U64, step, hz)


def next_edge(read: Callable[[], Reading], seen: list[Reading]) -> Reading | None:
    """Read until a tick lands between two readings at most CLEAN_EDGE_NS apart; the first reading
    of the new jiffy, or None if none came. A gap wider than that (this process preempted between
    two readings) would put the edge's time up to a tick late, so that edge is not taken."""
    previous = read()
    seen.append(previous)
    for _ in range(MAX_READS_PER_EDGE):
        reading = read()
        seen.append(reading)
        if reading[0] != previous[0] and reading[1] - previous[1] <= CLEAN_EDGE_NS:
            return reading
        previous = reading
    return None


def calibrate(read: Callable[[], Reading], sleep: Callable[[float], None] = time.sleep) -> ClockBase:
    """Two tick edges through `read` (the dsrlb_clock program), SPAN_SECONDS apart."""
    seen: list[Reading] = []
    start = next_edge(read, seen)
    sleep(SPAN_SECONDS)
    end = next_edge(read, seen)
    if start is None or end is None:
        return COARSE
    return clock_base_from(start, end, seen)
