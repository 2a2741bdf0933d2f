"""Piranha lvs.cf -> dsrlb Config: seed 004, Piranha's defaults and number syntax, NAT, the backup node."""

from __future__ import annotations

from importlib.resources import files
from ipaddress import IPv4Address

import pytest

from dsrlb.config import loads, write
from dsrlb.config.importers import ImportResult, import_lvs, parse_fwmark_options
from dsrlb.model import (
    Method,
    PortRange,
    Protocol,
    ScriptCheck,
    SendExpectCheck,
    SessionKey,
    TcpOpenCheck,
)

SEED_004 = files("dsrlb.examples").joinpath("seed004-lvs.cf").read_text()

MINIMAL = """\
primary = 192.0.2.1
network = direct
virtual web {
     active = 1
     address = 192.0.2.10 eth0:1
     port = 8080
     server a {
         address = 192.0.2.21
         active = 1
     }
}
"""


def convert(text: str, **kwargs: object) -> ImportResult:
    result = import_lvs(text, "lvs.cf", **kwargs)  # type: ignore[arg-type]
    # Every conversion must be a valid dsrlb configuration that survives the canonical writer.
    assert loads(write(result.config), "converted") == result.config
    return result


def settings(result: ImportResult) -> list[str]:
    return [w.setting for w in result.warnings]


def test_seed004_without_fwmark_ports_is_an_any_port_server() -> None:
    result = convert(SEED_004)
    (server,) = result.config.servers
    assert server.address == IPv4Address("10.10.1.20")
    assert server.ports == ()
    assert (server.sessionid, server.timeout) == (SessionKey.SRC, 30)
    assert server.method is Method.SESSION
    fwmark = [w for w in result.warnings if w.setting == "fwmark"]
    assert len(fwmark) == 1 and "--fwmark 80=" in fwmark[0].message and fwmark[0].line == 18


def test_seed004_with_fwmark_option_bundles_80_and_443() -> None:
    result = convert(SEED_004, fwmarks=parse_fwmark_options(["80=80,443"]))
    (server,) = result.config.servers
    assert server.ports == (PortRange(80, 80), PortRange(443, 443))
    assert server.protocol is Protocol.TCP and server.enabled and server.registered
    assert server.targets == (1, 2)
    assert "fwmark" not in settings(result)
    targets = result.config.targets
    assert [t.address for t in targets] == [IPv4Address("10.10.1.23"), IPv4Address("10.10.1.24")]
    for target in targets:
        assert target.dsr and target.weight == 1 and target.enabled
        assert target.port is None and target.protocol is None  # multi-port: no port on targets
        (check,) = target.checks
        assert check == SendExpectCheck(80, "GET / HTTP/1.0\r\n\r\n", "HTTP", 6, 12)
        assert (target.health.fall, target.health.rise, target.health.quiesce) == (1, 2, False)


def test_seed004_heartbeat_becomes_vrrp_and_network() -> None:
    result = convert(SEED_004)
    config = result.config
    assert config.vrrp is not None
    assert config.vrrp.priority == 200 and config.vrrp.advert_interval == 2.0
    assert config.vrrp.unicast_peers == (IPv4Address("10.10.1.22"),)
    assert config.vrrp.tracking  # monitor_links = 1
    (network,) = config.networks
    assert network.real == IPv4Address("10.10.1.21")
    assert str(network.ipv4_network) == "10.10.1.0/24"
    assert [i.name for i in config.interfaces] == ["eth0"]
    assert {"serial_no", "heartbeat_port", "deadtime", "scheduler", "backup"} <= set(settings(result))
    assert all(str(w).startswith("lvs.cf:") and ": warning: " in str(w) for w in result.warnings)


def test_backup_node_swaps_address_and_priority() -> None:
    primary = convert(SEED_004).config
    backup = convert(SEED_004, node="backup").config
    assert backup.vrrp is not None and primary.vrrp is not None
    assert backup.vrrp.priority == 100 and backup.vrrp.vrid == primary.vrrp.vrid
    assert backup.networks[0].real == IPv4Address("10.10.1.22")
    assert backup.vrrp.unicast_peers == (IPv4Address("10.10.1.21"),)


def test_defaults_inactive_and_port_inheritance() -> None:
    text = MINIMAL.replace("     active = 1\n     address", "     address").replace(
        "         active = 1\n", ""
    )
    config = convert(text).config
    (server,) = config.servers
    (target,) = config.targets
    assert server.registered and not server.enabled  # active defaults to 0
    assert target.registered and not target.enabled
    assert target.port == 8080  # a server without port takes the virtual's
    assert server.sessionid is SessionKey.SRC_PORT  # no persistence: per connection
    # port 8080 and no send/expect: nanny only connects
    assert target.checks == (TcpOpenCheck(8080, 10, 20),)
    assert target.health.rise == 18  # reentry 180 // timeout 10


def test_c_numbers_octal_and_hex() -> None:
    text = MINIMAL.replace("port = 8080", "port = 0x1f90\n     persistent = 036\n     timeout = 010")
    config = convert(text).config
    assert config.servers[0].single_port == 8080
    assert config.servers[0].timeout == 30
    check = config.targets[0].checks[0]
    assert isinstance(check, TcpOpenCheck) and check.interval == 8


def test_nat_with_router_and_sorry_server() -> None:
    text = """\
primary = 192.0.2.1
backup_active = 1
backup = 192.0.2.2
nat_router = 198.51.100.254 eth1:1
nat_nmask = 255.255.255.0
syncdaemon = 1
virtual mail {
     active = 1
     address = 192.0.2.10 eth0:1
     port = 25
     scheduler = rr
     sorry_server = 198.51.100.99
     send = "HELO x\\r\\n"
     expect = "^2[0-9][0-9]"
     use_regex = 1
     quiesce_server = 1
     server m1 {
         address = 198.51.100.5
         active = 1
         port = 2525
         weight = 3
     }
}
"""
    result = convert(text)
    config = result.config
    server = config.servers[0]
    m1, sorry = config.targets
    assert server.method is Method.RR and server.backup == (sorry.id,)
    assert not m1.dsr and m1.port == 2525 and m1.weight == 3
    assert m1.checks == (SendExpectCheck(2525, "HELO x\r\n", "^2[0-9][0-9]", 10, 20, regex=True),)
    assert m1.health.quiesce
    assert [str(n.ipv4_network) for n in config.networks] == ["192.0.2.0/24", "198.51.100.0/24"]
    assert config.networks[1].virt == IPv4Address("198.51.100.254")
    assert config.networks[0].syncpeer == IPv4Address("192.0.2.2")
    assert [i.name for i in config.interfaces] == ["eth0", "eth1"]
    assert "nat_router" in settings(result)  # no own address on the NAT network


def test_send_program_becomes_script_with_macros() -> None:
    text = MINIMAL.replace("port = 8080", 'port = 80\n     send_program = "/bin/check %h %p"')
    target = convert(text).config.targets[0]
    assert target.checks == (ScriptCheck("/bin/check $ipaddr$ $port$", 10, 20),)


def test_direct_routing_cannot_rewrite_ports() -> None:
    text = MINIMAL.replace("address = 192.0.2.21", "address = 192.0.2.21\n         port = 81")
    result = convert(text)
    assert result.config.targets[0].port == 8080
    assert any(w.setting == "port" for w in result.warnings)


@pytest.mark.parametrize(
    ("scheduler", "method", "warned"),
    [("rr", Method.RR, False), ("wrr", Method.WRR, False), ("lc", Method.SESSION, False),
     ("sh", Method.HASH, False), ("wlc", Method.SESSION, True), ("dh", Method.HASH, True),
     ("sed", Method.SESSION, True), ("nq", Method.SESSION, True), ("lblc", Method.SESSION, True),
     ("lblcr", Method.SESSION, True)],
)  # fmt: skip
def test_scheduler_mapping(scheduler: str, method: Method, warned: bool) -> None:
    result = convert(MINIMAL.replace("port = 8080", f"port = 8080\n     scheduler = {scheduler}"))
    assert result.config.servers[0].method is method
    assert ("scheduler" in settings(result)) is warned


def test_pmask_warns_unless_host_mask() -> None:
    host = convert(MINIMAL.replace("port = 8080", "port = 8080\n     pmask = 255.255.255.255"))
    net = convert(MINIMAL.replace("port = 8080", "port = 8080\n     pmask = 255.255.255.0"))
    assert "pmask" not in settings(host) and "pmask" in settings(net)


def test_failover_blocks_are_accepted_with_a_warning() -> None:
    text = MINIMAL + 'failover ftp {\n     address = 192.0.2.30 eth0:2\n     start_cmd = "/x"\n}\n'
    result = convert(text)
    assert len(result.config.servers) == 1
    assert ("failover", 12) in [(w.setting, w.line) for w in result.warnings]
