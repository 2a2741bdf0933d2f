"""The shipped seed configurations: byte-exact copies of the seed documents, and they load as described."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from dsrlb.config import load, write
from dsrlb.examples import example, list_examples
from dsrlb.model import (
    AgentCheck,
    Method,
    PingCheck,
    PortRange,
    Protocol,
    ReturnMatch,
    ScriptCheck,
    SessionKey,
)

# The seed documents live beside the repository (../shared/seeds), not in it: a clone without them skips.
SEEDS = Path(__file__).resolve().parents[3] / ".." / "shared" / "seeds"
SEED_FILES = {
    "000": "000_6998b958ebf58ed2.txt",
    "001": "001_edc01bddabfefed5.txt",
    "003": "003_d6a93c8b7cba2b8f.txt",
    "004": "004_a466034beaac3c2e.txt",
}


@pytest.mark.skipif(not SEEDS.is_dir(), reason="no seed documents beside this repository (../shared/seeds)")
@pytest.mark.parametrize("name", [e.name for e in list_examples()])
def test_shipped_copy_is_cut_exactly_from_its_seed(name: str) -> None:
    shipped = example(name)
    text = shipped.text()
    seed_text = (SEEDS / SEED_FILES[shipped.seed]).read_text(encoding="utf-8")
    assert text.endswith("\n") and not text.endswith("\n\n")
    body = text[:-1]
    assert body in seed_text
    # Cut at whole lines: the copy starts at a line start and ends at a line end of the seed.
    start = seed_text.index(body)
    assert start == 0 or seed_text[start - 1] == "\n"
    end = start + len(body)
    assert end == len(seed_text) or seed_text[end] == "\n"


def test_examples_are_listed_in_seed_order() -> None:
    names = [e.name for e in list_examples()]
    assert names == [
        "seed000-node1.conf",
        "seed000-node2.conf",
        "seed001-dsr.conf",
        "seed003-lb1.conf",
        "seed003-lb2.conf",
        "seed004-lvs.cf",
    ]
    assert [e.name for e in list_examples(native_only=True)] == names[:5]
    assert all(e.path.is_file() for e in list_examples())
    with pytest.raises(KeyError):
        example("seed999")


@pytest.mark.parametrize("name", [e.name for e in list_examples(native_only=True)])
def test_native_seed_loads_clean(name: str) -> None:
    config = load(example(name).path)
    assert config.servers and config.targets
    assert all(s.registered and s.enabled for s in config.servers)
    assert all(t.registered and t.enabled for t in config.targets)


def test_seed000_node1_dual_port_dsr_with_agent() -> None:
    config = load(example("seed000-node1").path)
    assert config.hostname == "node1"
    assert config.remark == "DSR configuration with dual node HA and session synchronisation"
    assert config.modules == ("vrrp", "arp", "ping", "hc", "master", "slb", "tnat", "nat", "rt")
    assert config.settings == (("sessionautoresync", "1"), ("sessionsyncack", "1"))
    assert config.vrrp is not None and (config.vrrp.vrid, config.vrrp.priority, config.vrrp.network) == (
        9,
        200,
        1,
    )
    network = config.networks[0]
    assert network.name == "local network" and network.syncpeer == IPv4Address("172.16.1.251")
    assert network.virt == IPv4Address("172.16.1.253") and network.interfaces == (1,)
    server = config.servers[0]
    assert server.ports == (PortRange(80, 80), PortRange(443, 443)) and server.multi_port
    assert (server.protocol, server.method, server.targets) == (Protocol.TCP, Method.AGENT, (1, 2))
    target = config.targets[0]
    assert target.dsr and target.port is None and target.protocol is None
    assert target.checks == (
        AgentCheck(439, 2, 5),
        ScriptCheck("/usr/lib/mon/mon.d/http.monitor -p $port$ -u /index.html $ipaddr$", 2, 7),
    )
    assert config.interfaces[0].access == "raw"


def test_seed000_node2_is_reproduced_by_the_writer() -> None:
    """The canonical layout is the seed's own: node 2 comes back byte for byte, less its comments."""
    text = example("seed000-node2").text()
    without_comments = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("//"))
    assert write(load(example("seed000-node2").path)) == without_comments


def test_seed000_nodes_differ_only_where_the_seed_says() -> None:
    one, two = load(example("seed000-node1").path), load(example("seed000-node2").path)
    assert one.vrrp is not None and two.vrrp is not None
    assert (one.vrrp.priority, two.vrrp.priority) == (200, 100)
    assert (one.networks[0].real, two.networks[0].real) == (
        two.networks[0].syncpeer,
        one.networks[0].syncpeer,
    )
    assert one.servers == two.servers and one.targets == two.targets


def test_seed001_single_legged_dsr() -> None:
    config = load(example("seed001-dsr").path)
    assert config.hostname is None and config.vrrp is None
    server = config.servers[0]
    assert (server.single_port, server.method) == (80, Method.RR)
    assert [t.address for t in config.targets] == [IPv4Address("172.16.1.100"), IPv4Address("172.16.1.101")]
    assert all(t.dsr and t.port == 80 for t in config.targets)


def test_seed003_ipv6_nat_with_tracking() -> None:
    config = load(example("seed003-lb1").path)
    assert [i.trackval for i in config.interfaces] == [None, 10, 10]
    assert config.vrrp is not None and config.vrrp.tracking and config.vrrp.vrid == 64
    assert dict(config.settings) == {"ipforwarding": "1", "vrrppreempt": "1", "vrrppreemptts": "8"}
    one, two = config.networks
    assert one.interfaces == (1, 3) and two.interfaces == (2,)
    assert str(one.ipv6_network) == "2001:db8::/48" and str(two.ipv6_network) == "2001:db8:ffff::/48"
    assert config.gateway is not None and config.gateway.ipaddr6 == IPv6Address("2001:db8::2:10")
    assert config.gateway.checks == (PingCheck(3, 10, ipv6=True),) and config.gateway.trackval == 10
    server = config.servers[0]
    assert (server.address, server.single_port) == (IPv6Address("2001:db8::2:4"), 8080)
    assert (server.sessionid, server.method) == (SessionKey.SRC_PORT, Method.SESSION)
    for target in config.targets:
        assert (target.port, target.dsr, target.sessionid) == (80, False, ReturnMatch.DST_PORT)
        assert target.checks == (PingCheck(3, 10, ipv6=True), AgentCheck(10000, 3, 10, ipv6=True))


def test_seed003_pair_differs_only_in_identity() -> None:
    one, two = load(example("seed003-lb1").path), load(example("seed003-lb2").path)
    assert (one.hostname, two.hostname) == ("LB1", "LB2")
    assert one.servers == two.servers and one.targets == two.targets and one.vrrp == two.vrrp
    assert [n.virt6 for n in one.networks] == [n.virt6 for n in two.networks]
    assert [n.real6 for n in one.networks] != [n.real6 for n in two.networks]


def test_lvs_cf_is_not_native() -> None:
    """The lvs.cf is for `dsrlb convert`; fed to the native loader it says so."""
    from dsrlb.config import ConfigErrors

    with pytest.raises(ConfigErrors) as caught:
        load(example("seed004-lvs.cf").path)
    assert "dsrlb convert" in str(caught.value)
