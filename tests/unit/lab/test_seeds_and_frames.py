"""Pure parts of the lab: seed config remapping, the address checks, and the DSR capture's frame parser."""

from __future__ import annotations

import re
import struct
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address

import pytest

from dsrlb.lab.builders import SEED_001_REMAP, SEED_003_REMAP, SEED_004_REMAP
from dsrlb.lab.capture import DsrProof, parse_tcp_source
from dsrlb.lab.core import in_documentation_range
from dsrlb.lab.seeds import Remap, remap_text, seed_config_text

IPV4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])")
IPV6 = re.compile(r"\b(2001:[0-9a-fA-F:]+)\b")
NETMASKS = {"255.255.255.0", "255.255.255.255"}


def test_host_part_is_kept_and_other_addresses_are_left() -> None:
    remap = Remap(networks=((IPv4Network("172.16.1.0/24"), IPv4Network("192.0.2.0/24")),))
    text, mapping = remap_text("real 172.16.1.252\nmask 255.255.255.0\nx 172.16.10.1\n", remap)
    assert text == "real 192.0.2.252\nmask 255.255.255.0\nx 172.16.10.1\n"
    assert mapping == (("172.16.1.252", "192.0.2.252"),)


@pytest.mark.parametrize(
    ("name", "remap"),
    [
        ("seed000-node1.conf", SEED_001_REMAP),
        ("seed000-node2.conf", SEED_001_REMAP),
        ("seed001-dsr.conf", SEED_001_REMAP),
        ("seed003-lb1.conf", SEED_003_REMAP),
        ("seed003-lb2.conf", SEED_003_REMAP),
        ("seed004-lvs.cf", SEED_004_REMAP),
    ],
)
def test_remapped_seed_configs_use_only_documentation_addresses(name: str, remap: Remap) -> None:
    text, mapping = remap_text(seed_config_text(name), remap)
    assert mapping, "every seed has addresses to move"
    for literal in IPV4.findall(text):
        assert literal in NETMASKS or in_documentation_range(literal), literal
    assert "255.0.0.0" not in text  # seed 003's /8 became a /24
    for literal in IPV6.findall(text):
        assert in_documentation_range(literal), literal


@pytest.mark.parametrize("name", ["seed000-node1.conf", "seed001-dsr.conf", "seed003-lb1.conf"])
def test_remapped_native_configs_still_load(name: str) -> None:
    config = pytest.importorskip("dsrlb.config")
    remap = SEED_003_REMAP if name.startswith("seed003") else SEED_001_REMAP
    text, _ = remap_text(seed_config_text(name), remap)
    loaded = config.loads(text, name)
    assert all(t.address is None or in_documentation_range(str(t.address)) for t in loaded.targets)


def test_documentation_ranges() -> None:
    assert in_documentation_range("192.0.2.7")
    assert in_documentation_range("2001:db8:ffff::1:1/48")
    assert not in_documentation_range("10.0.0.1")
    assert not in_documentation_range("172.16.1.10/32")


def _frame(src_mac: bytes, src: str, sport: int, vlan: bool = False) -> bytes:
    eth = b"\x02" * 6 + src_mac + (b"\x81\x00\x00\x05" if vlan else b"")
    if ip_address(src).version == 4:
        ip = bytes([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]) + IPv4Address(src).packed + bytes(4)
        return eth + b"\x08\x00" + ip + struct.pack("!HH", sport, 40000) + bytes(16)
    ip6 = struct.pack("!IHBB", 0x60000000, 20, 6, 64) + IPv6Address(src).packed + bytes(16)
    return eth + b"\x86\xdd" + ip6 + struct.pack("!HH", sport, 40000) + bytes(16)


@pytest.mark.parametrize("vlan", [False, True])
def test_parse_tcp_source(vlan: bool) -> None:
    reply = parse_tcp_source(_frame(b"\xaa\xbb\xcc\x00\x00\x01", "192.0.2.10", 80, vlan))
    assert reply is not None
    assert (reply.src_mac, str(reply.src), reply.src_port) == ("aa:bb:cc:00:00:01", "192.0.2.10", 80)
    six = parse_tcp_source(_frame(b"\xaa\xbb\xcc\x00\x00\x02", "2001:db8::2:4", 8080, vlan))
    assert six is not None and six.src_port == 8080


def test_parse_tcp_source_drops_short_and_foreign_frames() -> None:
    assert parse_tcp_source(b"") is None
    assert parse_tcp_source(_frame(b"\x00" * 6, "192.0.2.10", 80)[:20]) is None
    arp = b"\x02" * 12 + b"\x08\x06" + bytes(28)
    assert parse_tcp_source(arp) is None


def test_dsr_proof_verdicts() -> None:
    targets = {"aa:00:00:00:00:01": "target1", "aa:00:00:00:00:02": "target2"}
    ok = DsrProof({"aa:00:00:00:00:01": 3, "aa:00:00:00:00:02": 2}, targets, ("bb:00:00:00:00:01",))
    assert ok.holds and ok.frames == 5 and "DSR holds" in ok.describe()
    via_balancer = DsrProof({"bb:00:00:00:00:01": 5}, targets, ("bb:00:00:00:00:01",))
    assert not via_balancer.holds and "BALANCER" in via_balancer.describe()
    assert not DsrProof({}, targets, ()).holds
