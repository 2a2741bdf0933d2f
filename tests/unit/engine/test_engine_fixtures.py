"""Every fixture through the reference data path: verdict, bytes, egress interface, counters."""

from __future__ import annotations

import pytest

from dsrlb.engine.fixtures import FIXTURES, Fixture, fixture_changes
from dsrlb.engine.reference import ReferenceDataplane


class ScriptedRandom:
    """The random source of a fixture step: returns the step's rand32, fails if none was given."""

    def __init__(self) -> None:
        self.value: int | None = None

    def __call__(self) -> int:
        if self.value is None:
            raise AssertionError("the data path asked for rand32 on a step that gives none")
        return self.value


def test_there_are_enough_fixtures() -> None:
    assert len(FIXTURES) >= 40
    assert len({f.description for f in FIXTURES}) == len(FIXTURES)


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.description for f in FIXTURES])
def test_fixture(fixture: Fixture) -> None:
    rand = ScriptedRandom()
    dataplane = ReferenceDataplane(rand32=rand)
    dataplane.apply(fixture_changes(fixture))
    for number, step in enumerate(fixture.steps, 1):
        dataplane.apply(step.changes)
        rand.value = step.rand32
        result = dataplane.run(step.frame, step.ingress_ifindex, step.now_ns)
        where = f"step {number}"
        assert result.verdict == step.expected_verdict, where
        assert result.frame.hex() == step.expected_frame.hex(), where
        assert result.ifindex == step.expected_ifindex, where
    stats = dataplane.stats()
    for name, value in fixture.expected_stats:
        assert stats[name] == value, name
    assert stats["rx"] == len(fixture.steps)
    verdicts = stats["pass"] + stats["drop"] + stats["tx"] + stats["redirect"]
    assert verdicts == stats["rx"]
