"""Session events, per-service and per-target counters, capacity, and control changes of the reference."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address

from dsrlb.engine.dataplane import RemoveService, TargetState, Verdict
from dsrlb.engine.fixtures import (
    CLIENT4,
    SECOND,
    TARGET_IF,
    VIP4,
    cfg,
    environment_changes,
    fixture_changes,
    frame,
    lab_environment,
    server,
    simple,
    t4,
    target,
)
from dsrlb.engine.packet import IPPROTO_TCP
from dsrlb.engine.reference import ReferenceDataplane

CONFIG = cfg(server(targets=(1, 2)), targets=(target(1), target(2)))
ENV = lab_environment(CONFIG)


def _dataplane(capacity: int = 1 << 20) -> ReferenceDataplane:
    dataplane = ReferenceDataplane(session_capacity=capacity)
    dataplane.apply(fixture_changes(simple("state", CONFIG, [], ENV)))
    return dataplane


def test_events_and_counters_for_new_hit_moved_and_return() -> None:
    dataplane = _dataplane()
    inbound = frame(IPPROTO_TCP, CLIENT4, VIP4, 40000, 80)
    assert dataplane.run(inbound, 1, SECOND).verdict == Verdict.REDIRECT
    assert dataplane.run(inbound, 1, 2 * SECOND).verdict == Verdict.REDIRECT
    events = dataplane.drain_session_events()
    assert [(e.service_id, e.client, e.client_port, e.target_id) for e in events] == [
        (1, ip_address(CLIENT4), 0, 1)]
    assert dataplane.drain_session_events() == []
    reply = frame(IPPROTO_TCP, t4(1), CLIENT4, 80, 40000, from_target=1)
    assert dataplane.run(reply, TARGET_IF, 3 * SECOND).verdict == Verdict.REDIRECT
    dataplane.apply(environment_changes(CONFIG, ENV, replace(ENV, health={1: TargetState.DOWN})))
    dataplane.run(inbound, 1, 4 * SECOND)
    moved = dataplane.drain_session_events()
    assert [(e.target_id, e.last_seen_ns) for e in moved] == [(2, 4 * SECOND)]
    service, one, two = dataplane.service_stats(1), dataplane.target_stats(1), dataplane.target_stats(2)
    assert (service["packets"], service["sessions_new"]) == (4, 2)
    assert (one["packets"], one["sessions_new"], two["packets"], two["sessions_new"]) == (3, 1, 1, 1)
    assert service["bytes"] == 3 * len(inbound) + len(reply)
    stats = dataplane.stats()
    names = ("session_new", "session_hit", "session_moved", "nat_return")
    assert [stats[name] for name in names] == [1, 1, 1, 1]
    assert [(s.target_id, s.last_seen_ns) for s in dataplane.sessions()] == [(2, 4 * SECOND)]


def test_capacity_evicts_the_oldest_session() -> None:
    dataplane = _dataplane(capacity=2)
    for i in range(3):
        dataplane.run(frame(IPPROTO_TCP, f"198.51.100.{i + 1}", VIP4, 40000, 80), 1, SECOND + i)
    assert sorted(str(s.client) for s in dataplane.sessions()) == ["198.51.100.2", "198.51.100.3"]


def test_remove_service_drops_its_sessions_and_traffic_passes() -> None:
    dataplane = _dataplane()
    inbound = frame(IPPROTO_TCP, CLIENT4, VIP4, 40000, 80)
    dataplane.run(inbound, 1, SECOND)
    dataplane.apply([RemoveService(1)])
    assert dataplane.sessions() == []
    assert dataplane.run(inbound, 1, 2 * SECOND).verdict == Verdict.PASS
    reply = frame(IPPROTO_TCP, t4(1), CLIENT4, 80, 40000, from_target=1)
    assert dataplane.run(reply, TARGET_IF, 2 * SECOND).verdict == Verdict.PASS
