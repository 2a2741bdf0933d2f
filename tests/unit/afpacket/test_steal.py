"""The nftables ruleset that keeps the kernel off the AF_PACKET engine's traffic."""

from __future__ import annotations

import subprocess
import uuid
from ipaddress import ip_address

import pytest

from dsrlb.afpacket.steal import ReturnSource, render_ruleset, return_sources
from dsrlb.config import loads
from dsrlb.engine.compile import Environment, compile_state
from dsrlb.engine.dataplane import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    NextHop,
    ServiceKey,
    ServiceSpec,
    TargetSpec,
    TargetState,
)
from dsrlb.model import Method, ReturnMatch, SessionKey


def _target(tid: int, address: str, port: int | None, dsr: bool) -> TargetSpec:
    return TargetSpec(tid, ip_address(address), port, dsr, ReturnMatch.DST_PORT, 1, TargetState.UP, None)


SERVICE = ServiceSpec(1, (ServiceKey(ip_address("2001:db8::2:4"), IPPROTO_TCP, 8080),), Method.SESSION,
                      SessionKey.SRC_PORT, 900)
MULTI = ServiceSpec(2, (ServiceKey(ip_address("192.0.2.10"), IPPROTO_TCP, 80),
                        ServiceKey(ip_address("192.0.2.10"), IPPROTO_TCP, 443)),
                    Method.RR, SessionKey.SRC, 900)
TARGETS = {1: _target(1, "2001:db8:ffff::1:1", 80, False), 2: _target(2, "192.0.2.100", None, False),
           3: _target(3, "192.0.2.101", None, True)}


def test_return_sources_follow_target_port_else_service_ports_and_skip_dsr() -> None:
    sources = return_sources([SERVICE, MULTI], {1: (1, 1), 2: (2, 3)}, TARGETS)
    assert sources == {
        ReturnSource("2001:db8:ffff::1:1", IPPROTO_TCP, 80),
        ReturnSource("192.0.2.100", IPPROTO_TCP, 80),
        ReturnSource("192.0.2.100", IPPROTO_TCP, 443),
    }


def test_ruleset_drops_vip_traffic_and_forwarded_nat_replies_only() -> None:
    text = render_ruleset("lab-1", [*SERVICE.keys, *MULTI.keys, ServiceKey(ip_address("192.0.2.11"),
                                                                          IPPROTO_UDP, 0)],
                          [ReturnSource("2001:db8:ffff::1:1", IPPROTO_TCP, 80)])
    assert "table inet dsrlb_lab_1" in text
    assert "ip6 daddr 2001:db8::2:4 tcp dport { 8080 } drop" in text
    assert "ip daddr 192.0.2.10 tcp dport { 80, 443 } drop" in text
    assert "ip daddr 192.0.2.11 meta l4proto udp drop" in text
    assert "ip6 saddr . tcp sport @replies_ip6_tcp fib daddr type != local drop" in text
    assert "elements = { 2001:db8:ffff::1:1 . 80 }" in text


def test_return_sources_are_set_elements_with_one_rule_per_family_and_protocol() -> None:
    returns = [ReturnSource(f"192.0.2.{100 + i}", IPPROTO_TCP, 80) for i in range(50)]
    returns += [ReturnSource("192.0.2.200", IPPROTO_UDP, 0), ReturnSource("2001:db8::9", IPPROTO_UDP, 5060)]
    text = render_ruleset("many", [], returns)
    rules = [line for line in text.splitlines() if line.strip().endswith("drop")]
    assert rules == [
        "    ip saddr . tcp sport @replies_ip_tcp fib daddr type != local drop",
        "    ip6 saddr . udp sport @replies_ip6_udp fib daddr type != local drop",
        "    ip saddr @replies_ip_udp_any meta l4proto udp fib daddr type != local drop",
    ]
    assert "192.0.2.149 . 80" in text and "elements = { 192.0.2.200 }" in text


@pytest.mark.root
def test_nft_accepts_the_ruleset() -> None:
    netns = f"dsrlbnft{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        script = render_ruleset("t", [*SERVICE.keys, *MULTI.keys],
                                return_sources([SERVICE, MULTI], {1: (1,), 2: (2, 3)}, TARGETS))
        done = subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=script, text=True,
                              capture_output=True)
        assert done.returncode == 0, done.stderr
        listed = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "inet", "dsrlb_t"],
                                capture_output=True, text=True, check=True).stdout
        assert "fib daddr type != local drop" in listed and "tcp dport { 80, 443 } drop" in listed
        assert "192.0.2.100 . 80" in listed and "2001:db8:ffff::1:1 . 80" in listed
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


def test_a_nat_target_out_of_the_selection_table_keeps_its_return_rule() -> None:
    """`method session` leaves the busier target out of the table; its sessions' replies still come.

    The ipv6-nat lab on AF_PACKET showed it: while target 1 held more sessions, its drop rule was
    gone and the kernel forwarded its replies untranslated to the clients."""
    config = loads(
        "interface 1 { name eth0 }\nregister interface 1\nenable interface 1\n"
        "network 1 {\n addr 192.0.2.0\n mask 255.255.255.0\n real 192.0.2.252\n interface 1\n}\n"
        "register network 1\nenable network 1\n"
        "server 1 {\n ipaddr 192.0.2.10\n port 80\n protocol tcp\n method session\n"
        " targets 1,2\n backup 3\n}\n"
        "register server 1\nenable server 1\n"
        "target 1 { ipaddr 192.0.2.101 }\ntarget 2 { ipaddr 192.0.2.102 }\ntarget 3 { ipaddr 192.0.2.103 }\n"
        "register targets 1-3\nenable targets 1-3\n", "session.conf")
    hop = NextHop(2, bytes(6), bytes(6))
    state = compile_state(config, Environment(next_hops={1: hop, 2: hop, 3: hop}, metrics={1: 5.0, 2: 0.0}))
    assert state.tables[1] == (2,) and state.members[1] == (1, 2, 3)
    sources = return_sources(state.services.values(), state.members, state.targets)
    assert {s.address for s in sources} == {"192.0.2.101", "192.0.2.102", "192.0.2.103"}
