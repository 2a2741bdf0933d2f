"""compile_state and diff: what becomes a service or target, states, and minimal change lists."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, ip_address

from dsrlb.config import loads
from dsrlb.engine.compile import (
    AdminState,
    Environment,
    compile_state,
    diff,
    service_keys,
    service_timeout,
)
from dsrlb.engine.dataplane import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    RemoveService,
    SetTable,
    SetTargetState,
    TargetState,
    UpsertService,
)
from dsrlb.engine.fixtures import CLIENT4, CLIENT4B, SECOND, VIP4, cfg, frame, lab_environment, server, target
from dsrlb.engine.reference import ReferenceDataplane
from dsrlb.model import Config, Method, Network, PortRange, Protocol


def _config() -> Config:
    other = replace(server(2, vip="192.0.2.11", targets=(3,)), method=Method.WRR)
    disabled = replace(server(3, vip="192.0.2.12", targets=(1,)), enabled=False)
    unregistered = replace(target(4), registered=False)
    return Config(
        servers=(server(1, targets=(1, 2)), other, disabled),
        targets=(target(1, dsr=True), target(2, dsr=True), target(3, dsr=True), unregistered),
        networks=(Network(1, real=IPv4Address("192.0.2.2"), virt=IPv4Address("192.0.2.1")),),
    )


def test_only_registered_enabled_servers_and_registered_targets() -> None:
    state = compile_state(_config(), lab_environment(_config()))
    assert sorted(state.services) == [1, 2]
    assert sorted(state.targets) == [1, 2, 3]
    assert state.tables[1] == (1, 2)
    assert state.local_addresses == {ip_address("192.0.2.1"), ip_address("192.0.2.2")}


def test_keys_expand_ports_ranges_and_protocols() -> None:
    keys = service_keys(server(ports=(PortRange(80, 80), PortRange(33000, 33002)), protocol=None))
    assert {(k.protocol, k.port) for k in keys} == {
        (p, port) for p in (IPPROTO_TCP, IPPROTO_UDP) for port in (80, 33000, 33001, 33002)
    }
    assert [k.port for k in service_keys(server(ports=(), protocol=Protocol.UDP))] == [0]


def test_default_timeouts() -> None:
    config = cfg(server(1), server(2, vip="192.0.2.11", protocol=Protocol.UDP), server(3, vip="192.0.2.12",
                 timeout=5), targets=(target(1),))
    services = compile_state(config, lab_environment(config)).services
    assert (services[1].timeout, services[2].timeout, services[3].timeout) == (900, 300, 5)


def _timeouts(**settings: int) -> tuple[int, int, int, int]:
    """(TCP, UDP, protocol-less, server `timeout 5`) under these `set` keys."""
    config = replace(cfg(targets=()), settings=tuple(sorted((k, str(v)) for k, v in settings.items())))
    servers = (server(protocol=Protocol.TCP), server(protocol=Protocol.UDP), server(protocol=None),
               server(protocol=Protocol.UDP, timeout=5))
    tcp, udp, both, own = (service_timeout(s, config) for s in servers)
    return tcp, udp, both, own


def test_set_session_timeouts() -> None:
    assert _timeouts() == (900, 300, 900, 5)
    assert _timeouts(tcpsessiontimeout=60) == (60, 300, 60, 5)
    assert _timeouts(udpsessiontimeout=20) == (900, 20, 900, 5)  # no protocol: the TCP timeout
    # sessiontimeout is the default of both, where the protocol's own key is absent.
    assert _timeouts(sessiontimeout=120) == (120, 120, 120, 5)
    assert _timeouts(sessiontimeout=120, udpsessiontimeout=20) == (120, 20, 120, 5)
    assert _timeouts(sessiontimeout=120, tcpsessiontimeout=60, udpsessiontimeout=20) == (60, 20, 60, 5)


def test_set_session_timeouts_reach_the_services_and_a_reload() -> None:
    text = (
        "set {\n  tcpsessiontimeout 60\n  udpsessiontimeout 20\n}\n"
        "server 1 {\n  ipaddr 192.0.2.10\n  port 80\n  protocol tcp\n  targets 1\n}\n"
        "server 2 {\n  ipaddr 192.0.2.10\n  port 53\n  protocol udp\n  targets 1\n}\n"
        "server 3 {\n  ipaddr 192.0.2.11\n  targets 1\n}\n"
        "server 4 {\n  ipaddr 192.0.2.12\n  port 80\n  protocol tcp\n  timeout 7\n  targets 1\n}\n"
        "target 1 {\n  ipaddr 192.0.2.20\n  dsr enable\n}\n"
        "register servers 1-4\nenable servers 1-4\nregister target 1\nenable target 1\n"
    )
    config = loads(text)
    env = lab_environment(config)
    old = compile_state(config, env)
    assert {sid: spec.timeout for sid, spec in old.services.items()} == {1: 60, 2: 20, 3: 60, 4: 7}
    # Changing a default is a service update (no service removed, so sessions survive the reload).
    changed = replace(config, settings=(("tcpsessiontimeout", "90"), ("udpsessiontimeout", "20")))
    changes = diff(old, compile_state(changed, env))
    assert sorted(c.spec.id for c in changes if isinstance(c, UpsertService)) == [1, 3]
    assert all(isinstance(c, UpsertService) for c in changes)


def test_target_states_from_admin_health_and_next_hop() -> None:
    config = cfg(server(targets=(1, 2, 3, 4, 5)), targets=tuple(target(i) for i in range(1, 6)))
    env = lab_environment(config)
    hops = dict(env.next_hops)
    del hops[5]
    env = replace(env, next_hops=hops, admin={1: AdminState.DRAINING, 2: AdminState.DISABLED},
                  health={3: TargetState.DOWN, 4: TargetState.NO_NEW})
    state = compile_state(config, env)
    assert [state.targets[i].state for i in range(1, 6)] == [
        TargetState.NO_NEW, TargetState.NO_NEW, TargetState.DOWN, TargetState.NO_NEW, TargetState.DOWN]
    assert state.tables[1] == ()


def test_diff_of_identical_states_is_empty() -> None:
    config = _config()
    first = compile_state(config, lab_environment(config))
    assert diff(first, compile_state(config, lab_environment(config))) == []


def test_diff_emits_only_what_changed() -> None:
    config = _config()
    env = lab_environment(config)
    before = compile_state(config, env)
    after = compile_state(config, replace(env, health={2: TargetState.DOWN}))
    assert diff(before, after) == [SetTargetState(2, TargetState.DOWN), SetTable(1, (1,))]
    without_two = replace(config, servers=config.servers[:1] + config.servers[2:])
    assert diff(before, compile_state(without_two, env)) == [RemoveService(2)]


def test_a_reload_that_changes_one_service_keeps_the_sessions_of_the_others() -> None:
    config = cfg(server(1, targets=(1, 2)), server(2, vip="192.0.2.11", targets=(1, 2)),
                 targets=(target(1, dsr=True), target(2, dsr=True)))
    env = lab_environment(config)
    old = compile_state(config, env)
    dataplane = ReferenceDataplane()
    dataplane.apply(diff(None, old))
    dataplane.run(frame(IPPROTO_TCP, CLIENT4, VIP4, 40000, 80), 1, SECOND)
    dataplane.run(frame(IPPROTO_TCP, CLIENT4B, "192.0.2.11", 40000, 80), 1, SECOND)
    before = {(s.service_id, s.client): s.target_id for s in dataplane.sessions()}
    changed = replace(config, servers=(config.servers[0], replace(config.servers[1], method=Method.FIRST,
                                                                  timeout=60)))
    changes = diff(old, compile_state(changed, env))
    assert {type(c).__name__ for c in changes} <= {"UpsertService", "SetTable"}
    dataplane.apply(changes)
    after = {(s.service_id, s.client): s.target_id for s in dataplane.sessions()}
    assert after == before
    reply = dataplane.run(frame(IPPROTO_TCP, CLIENT4, VIP4, 40001, 80), 1, 2 * SECOND)
    assert reply.frame[0:6] == bytes.fromhex("020000000101")  # still the session's target 1
    assert dataplane.stats()["session_hit"] == 1


def test_environment_defaults_make_targets_down_without_next_hops() -> None:
    config = cfg(server(), targets=(target(1),))
    state = compile_state(config, Environment())
    assert state.targets[1].state is TargetState.DOWN
    assert state.tables[1] == ()
