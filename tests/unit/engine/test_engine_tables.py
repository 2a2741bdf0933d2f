"""Selection tables: Maglev consistency and weights, smooth WRR, pools and backups, least metric."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsrlb.engine.hashing import hash_session_key
from dsrlb.engine.tables import (
    MAGLEV_RING_SIZE,
    MAX_TABLE_SIZE,
    Candidate,
    build_table,
    choose_pool,
    least_metric_table,
    maglev_ring,
    repeated_by_weight,
    smooth_wrr_schedule,
    spare_capacity_table,
)
from dsrlb.model import Method

FLOWS = 100_000


def _flow_slots(seed: int) -> list[int]:
    rng = random.Random(seed)
    return [
        hash_session_key(rng.getrandbits(32).to_bytes(4, "big"), rng.getrandbits(16)) % MAGLEV_RING_SIZE
        for _ in range(FLOWS)
    ]


_SLOTS = _flow_slots(7)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count=st.integers(5, 50), data=st.data())
def test_removing_one_target_moves_about_one_nth_of_flows(count: int, data: st.DataObject) -> None:
    ids = data.draw(st.lists(st.integers(1, 10_000), min_size=count, max_size=count, unique=True))
    removed = data.draw(st.sampled_from(ids))
    before = maglev_ring([Candidate(i) for i in ids])
    after = maglev_ring([Candidate(i) for i in ids if i != removed])
    moved = sum(1 for slot in _SLOTS if before[slot] != after[slot])
    assert moved / FLOWS <= 1 / count + 0.01
    assert all(after[slot] != removed for slot in _SLOTS)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(weights=st.lists(st.integers(1, 10), min_size=2, max_size=12))
def test_maglev_honours_weights(weights: list[int]) -> None:
    ring = maglev_ring([Candidate(i + 1, weight=w) for i, w in enumerate(weights)])
    total = sum(weights)
    slots = Counter(ring)
    flows = Counter(ring[slot] for slot in _SLOTS)
    for i, weight in enumerate(weights):
        share = weight / total
        assert abs(slots[i + 1] / len(ring) - share) <= 0.01 * share + 1 / len(ring) * len(weights)
        assert abs(flows[i + 1] / FLOWS - share) <= 0.01


def test_maglev_ring_shape() -> None:
    assert maglev_ring([]) == ()
    assert set(maglev_ring([Candidate(4)])) == {4}
    ring = maglev_ring([Candidate(1), Candidate(2, weight=0), Candidate(3)])
    assert len(ring) == MAGLEV_RING_SIZE and set(ring) == {1, 3}


def test_smooth_wrr_interleaves() -> None:
    assert smooth_wrr_schedule([Candidate(1, 5), Candidate(2, 1), Candidate(3, 1)]) == (1, 1, 2, 1, 3, 1, 1)
    assert smooth_wrr_schedule([Candidate(1, 2), Candidate(2, 2)]) == (1, 2)  # reduced by the gcd
    assert smooth_wrr_schedule([Candidate(1, 0)]) == ()


def test_weighted_tables_are_capped() -> None:
    big = [Candidate(1, 100_000), Candidate(2, 50_000), Candidate(3, 1)]
    table = repeated_by_weight(big)
    assert len(table) <= MAX_TABLE_SIZE
    counts = Counter(table)
    assert counts[3] >= 1 and abs(counts[1] / counts[2] - 2) < 0.01


def test_pool_prefers_up_primaries_then_backups() -> None:
    primaries = [Candidate(1, up=False), Candidate(2, up=True)]
    backups = [Candidate(3, up=True)]
    assert choose_pool(primaries, backups) == ((Candidate(2, up=True),), False)
    down = [Candidate(1, up=False), Candidate(2, up=False)]
    assert choose_pool(down, backups) == ((Candidate(3, up=True),), True)
    assert choose_pool(down, [Candidate(3, up=False)]) == ((), True)


def test_least_metric_and_spare_capacity() -> None:
    pool = [Candidate(1, metric=5), Candidate(2, metric=2), Candidate(3, metric=2), Candidate(4)]
    assert least_metric_table(pool) == (4,)  # unknown counts as 0
    assert least_metric_table(pool[:3]) == (2, 3)
    spare = Counter(spare_capacity_table([Candidate(1, metric=20), Candidate(2, metric=100)]))
    assert spare == {1: 80, 2: 1}


def test_build_table_per_method() -> None:
    pool = [Candidate(1, 3), Candidate(2, 1, up=False), Candidate(3, 1)]
    assert build_table(Method.RR, pool).table == (1, 3)
    assert build_table(Method.RANDOM, pool).table == (1, 3)
    assert build_table(Method.FIRST, pool).table == (1,)
    assert build_table(Method.WRR, pool).table == (1, 1, 3, 1)
    assert build_table(Method.WRANDOM, pool).table == (1, 1, 1, 3)
    assert set(build_table(Method.HASH, pool).table) == {1, 3}
    assert build_table(Method.FIRST, [], [Candidate(9)]) .table == (9,)
    assert build_table(Method.FIRST, [], [Candidate(9)]).backup_in_use
