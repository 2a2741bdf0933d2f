"""Every fixture of engine/fixtures.py through the XDP program: same verdict, bytes and egress as
expected, and the same counters, sessions and session events as the reference given the same steps."""

from __future__ import annotations

import pytest

from dsrlb.engine.dataplane import SessionEntry
from dsrlb.engine.fixtures import FIXTURES, Fixture, fixture_changes
from dsrlb.engine.reference import COUNTER_NAMES, ReferenceDataplane
from dsrlb.xdp.dataplane import ETH_HLEN, FrameTooShort, XdpDataplane

pytestmark = pytest.mark.root


class StepRandom:
    """The reference's rand32: the current step's value."""

    def __init__(self) -> None:
        self.value: int | None = None

    def __call__(self) -> int:
        assert self.value is not None, "the reference asked for rand32 on a step that gives none"
        return self.value


def _session_set(sessions: list[SessionEntry]) -> set[SessionEntry]:
    return set(sessions)


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.description for f in FIXTURES])
def test_fixture_through_xdp(xdp: XdpDataplane, fixture: Fixture) -> None:
    rand = StepRandom()
    reference = ReferenceDataplane(rand32=rand)
    changes = fixture_changes(fixture)
    xdp.apply(changes)
    reference.apply(changes)
    for number, step in enumerate(fixture.steps):
        xdp.apply(step.changes)
        reference.apply(step.changes)
        rand.value = step.rand32
        xdp.inject_rand32(step.rand32)
        expected = reference.run(step.frame, step.ingress_ifindex, step.now_ns)
        if len(step.frame) < ETH_HLEN:
            # No NIC hands XDP a frame without a whole Ethernet header; the test run refuses it.
            with pytest.raises(FrameTooShort):
                xdp.run(step.frame, step.ingress_ifindex, step.now_ns)
            continue
        result = xdp.run(step.frame, step.ingress_ifindex, step.now_ns)
        where = f"step {number}"
        assert result.verdict == step.expected_verdict, where
        assert result.frame.hex() == step.expected_frame.hex(), where
        assert result.ifindex == step.expected_ifindex, where
        assert result == expected, where
        assert _session_set(list(xdp.sessions())) == _session_set(list(reference.sessions())), where
        assert xdp.drain_session_events() == reference.drain_session_events(), where
    if any(len(step.frame) < ETH_HLEN for step in fixture.steps):
        return
    stats = xdp.stats()
    assert {name: stats[name] for name in COUNTER_NAMES} == dict(reference.stats())
    for name, value in fixture.expected_stats:
        assert stats[name] == value, name
    for service_id in {s.id for s in fixture.config.servers}:
        assert xdp.service_stats(service_id) == reference.service_stats(service_id), service_id
    for target_id in {t.id for t in fixture.config.targets}:
        assert xdp.target_stats(target_id) == reference.target_stats(target_id), target_id
