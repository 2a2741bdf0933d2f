"""Selection tables: what the control plane publishes per service so the data path only indexes.

docs/datapath.md §4 is the contract. The data path reads `table[index]` where the index is a
per-service counter, `rand32`, or a jhash of the client (hashing.py), modulo the table's length; all
the work of weights, backups and metrics happens here, in Python, once per change or control tick.

Every table holds at most MAX_TABLE_SIZE entries (the XDP table map's value size): weighted
schedules whose natural length is longer are scaled down proportionally (each weight at least 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache, reduce
from math import gcd

from dsrlb.engine.hashing import maglev_offset_skip
from dsrlb.model import Method

MAGLEV_RING_SIZE = 65537  # prime, as the Maglev paper and Katran use
MAX_TABLE_SIZE = MAGLEV_RING_SIZE


@dataclass(frozen=True)
class Candidate:
    """A target as table building sees it.

    `up` is "selectable for new sessions" (TargetState.UP with a next hop). `metric` is the
    method's load figure: active sessions (`session`), bytes/s (`bandwidth`), agent load in percent
    (`agent`, `rndagent`); None when not known yet, which counts as 0 (no evidence of load).
    """

    id: int
    weight: int = 1
    up: bool = True
    metric: float | None = None


@dataclass(frozen=True)
class SelectionTable:
    """A built table and whether it was built from the backup targets."""

    table: tuple[int, ...]
    backup_in_use: bool


def choose_pool(
    primaries: Sequence[Candidate], backups: Sequence[Candidate]
) -> tuple[tuple[Candidate, ...], bool]:
    """The UP primaries if any primary is UP, else the UP backups (`backup 3,4`); and which one it is."""
    up_primaries = tuple(c for c in primaries if c.up)
    if up_primaries or not backups:
        return up_primaries, False
    return tuple(c for c in backups if c.up), True


def _reduced_weights(pool: Sequence[Candidate]) -> list[tuple[int, int]]:
    """(id, weight) with weights > 0 divided by their gcd and capped to MAX_TABLE_SIZE in total."""
    weighted = [(c.id, c.weight) for c in pool if c.weight > 0]
    if not weighted:
        return []
    divisor = reduce(gcd, (w for _, w in weighted))
    weighted = [(tid, w // divisor) for tid, w in weighted]
    total = sum(w for _, w in weighted)
    if total > MAX_TABLE_SIZE:
        weighted = [(tid, max(1, w * MAX_TABLE_SIZE // total)) for tid, w in weighted]
    return weighted


def smooth_wrr_schedule(pool: Sequence[Candidate]) -> tuple[int, ...]:
    """nginx's smooth weighted round-robin, unrolled into one period of sum(weights)/gcd picks.

    Each pick adds every weight to its running value, takes the largest (first in config order on a
    tie) and subtracts the total from it: weights 5,1,1 give a,a,b,a,c,a,a rather than a,a,a,a,a,b,c.
    """
    weighted = _reduced_weights(pool)
    if not weighted:
        return ()
    total = sum(w for _, w in weighted)
    current = [0] * len(weighted)
    schedule: list[int] = []
    for _ in range(total):
        best = 0
        for i, (_, weight) in enumerate(weighted):
            current[i] += weight
            if current[i] > current[best]:
                best = i
        current[best] -= total
        schedule.append(weighted[best][0])
    return tuple(schedule)


def repeated_by_weight(pool: Sequence[Candidate]) -> tuple[int, ...]:
    """Each target repeated by its (gcd-reduced) weight, in config order: `wrandom`."""
    return tuple(tid for tid, weight in _reduced_weights(pool) for _ in range(weight))


def spare_capacity_table(pool: Sequence[Candidate]) -> tuple[int, ...]:
    """`rndagent`: each target repeated by its spare capacity, 100 - load, at least 1."""
    spare = [
        Candidate(c.id, max(1, 100 - round(c.metric if c.metric is not None else 0.0)))
        for c in pool
    ]
    return repeated_by_weight(spare)


def least_metric_table(pool: Sequence[Candidate]) -> tuple[int, ...]:
    """The targets sharing the lowest metric, in config order (`session`, `bandwidth`, `agent`)."""
    if not pool:
        return ()
    metrics = [c.metric if c.metric is not None else 0.0 for c in pool]
    lowest = min(metrics)
    return tuple(c.id for c, m in zip(pool, metrics, strict=True) if m == lowest)


def maglev_ring(pool: Sequence[Candidate], ring_size: int = MAGLEV_RING_SIZE) -> tuple[int, ...]:
    """The weighted Maglev lookup table (Eisenbud et al., NSDI 2016, §3.4, "populate").

    Permutations come from two hashes of the target id (hashing.maglev_offset_skip), so a target
    keeps its preference list whatever else changes: that is what makes removal move ~1/N of flows.
    Weights follow Katran's MaglevHashV2: every round each target adds its weight to a running
    credit and takes one slot per max-weight of credit, so shares are proportional to weights.
    """
    return _maglev_ring(tuple((c.id, c.weight) for c in pool if c.weight > 0), ring_size)


# The daemon recompiles its desired state every control tick; a ring depends only on the ids and
# weights of its pool, and filling 65537 slots costs ~0.1 s in CPython, so the same pool must not be
# filled again. 1024 rings bound the memory (~0.5 MB each) while covering one ring per service.
@lru_cache(maxsize=1024)
def _maglev_ring(weighted: tuple[tuple[int, int], ...], ring_size: int) -> tuple[int, ...]:
    if not weighted:
        return ()
    if len(weighted) == 1:
        return (weighted[0][0],) * ring_size
    max_weight = max(w for _, w in weighted)
    perms = [maglev_offset_skip(tid, ring_size) for tid, _ in weighted]
    nexts = [0] * len(weighted)
    credit = [0] * len(weighted)
    ring = [-1] * ring_size
    filled = 0
    while True:
        for i, (tid, weight) in enumerate(weighted):
            credit[i] += weight
            if credit[i] < max_weight:
                continue
            credit[i] -= max_weight
            offset, skip = perms[i]
            slot = (offset + nexts[i] * skip) % ring_size
            while ring[slot] >= 0:
                nexts[i] += 1
                slot = (offset + nexts[i] * skip) % ring_size
            ring[slot] = tid
            nexts[i] += 1
            filled += 1
            if filled == ring_size:
                return tuple(ring)


def build_table(
    method: Method,
    primaries: Sequence[Candidate],
    backups: Sequence[Candidate] = (),
    ring_size: int = MAGLEV_RING_SIZE,
) -> SelectionTable:
    """The selection table of one service (docs/datapath.md §4)."""
    pool, backup_in_use = choose_pool(primaries, backups)
    table: tuple[int, ...]
    if method in (Method.RR, Method.RANDOM):
        table = tuple(c.id for c in pool)
    elif method is Method.FIRST:
        table = (pool[0].id,) if pool else ()
    elif method is Method.WRR:
        table = smooth_wrr_schedule(pool)
    elif method is Method.WRANDOM:
        table = repeated_by_weight(pool)
    elif method in (Method.HASH, Method.MAGLEV):
        table = maglev_ring(pool, ring_size)
    elif method in (Method.SESSION, Method.BANDWIDTH, Method.AGENT):
        table = least_metric_table(pool)
    elif method is Method.RNDAGENT:
        table = spare_capacity_table(pool)
    else:  # pragma: no cover - Method is a closed enum
        raise ValueError(f"unknown method {method!r}")
    return SelectionTable(table, backup_in_use)
