"""`dsrlb target setup` for real, inside a namespace: VIPs on lo, ARP sysctls, undo, dry run, ARP silence."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from ipaddress import ip_interface
from pathlib import Path

import pytest

from dsrlb.lab import Lab
from dsrlb.netlink import Netlink, Resolution, Sysctl, read_sysctl

SYSCTLS = [Sysctl.ipv4_conf(scope, name)
           for scope in ("all", "eth0") for name in ("arp_ignore", "arp_announce")]


@pytest.fixture
def lan() -> Iterator[Lab]:
    """`tg` (the target, 192.0.2.100 on eth0) and `peer` (192.0.2.1) on one veth."""
    with Lab() as lab:
        lab.add_node("tg")
        lab.add_node("peer")
        lab.veth("tg", "eth0", "peer", "eth0")
        lab.address("tg", "eth0", "192.0.2.100/24")
        lab.address("peer", "eth0", "192.0.2.1/24")
        yield lab


def dsrlb(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["ip", "netns", "exec", lab.ns("tg"), sys.executable, "-m", "dsrlb.cli.main", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def snapshot(lab: Lab) -> tuple[frozenset[str], dict[str, str]]:
    with Netlink(lab.ns("tg")) as nl:
        addresses = frozenset(str(a.interface) for a in nl.addresses("lo"))
    return addresses, {k.dotted: read_sysctl(k, lab.ns("tg")) for k in SYSCTLS}


@pytest.mark.root
def test_setup_then_undo_restores_everything(lan: Lab, tmp_path: Path) -> None:
    before = snapshot(lan)
    state = tmp_path / "state.json"
    done = dsrlb(lan, "target", "setup", "--vip", "192.0.2.10", "--vip", "2001:db8::10",
                 "--interface", "eth0", "--persist", "networkd", "--root", str(tmp_path),
                 "--state", str(state))
    assert done.returncode == 0, done.stderr
    addresses, sysctls = snapshot(lan)
    assert {"192.0.2.10/32", "2001:db8::10/128"} <= addresses
    assert sysctls == {"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2",
                       "net.ipv4.conf.eth0.arp_ignore": "1", "net.ipv4.conf.eth0.arp_announce": "2"}
    assert "Address=192.0.2.10/32" in (tmp_path / "etc/systemd/network/50-dsrlb-lo.network").read_text()
    assert state.exists()
    undo = dsrlb(lan, "target", "setup", "--undo", "--root", str(tmp_path), "--state", str(state))
    assert undo.returncode == 0, undo.stderr
    assert snapshot(lan) == before
    assert not (tmp_path / "etc/systemd/network/50-dsrlb-lo.network").exists()
    assert not state.exists()


@pytest.mark.root
def test_undo_keeps_what_was_there_before(lan: Lab, tmp_path: Path) -> None:
    lan.netlink("tg").add_address("lo", ip_interface("192.0.2.10/32"))
    state = tmp_path / "state.json"
    assert dsrlb(lan, "target", "setup", "--vip", "192.0.2.10", "--vip", "192.0.2.11",
                 "--state", str(state)).returncode == 0
    assert dsrlb(lan, "target", "setup", "--undo", "--state", str(state)).returncode == 0
    addresses, _ = snapshot(lan)
    assert "192.0.2.10/32" in addresses and "192.0.2.11/32" not in addresses


@pytest.mark.root
def test_dry_run_changes_nothing(lan: Lab, tmp_path: Path) -> None:
    vipaddrs = tmp_path / "vipaddrs"
    vipaddrs.write_text("# seed 002 format\n192.0.2.40/30\n")
    before = snapshot(lan)
    done = dsrlb(lan, "target", "setup", "--vipaddrs", str(vipaddrs), "--interface", "eth0",
                 "--persist", "rhel", "--root", str(tmp_path / "root"),
                 "--state", str(tmp_path / "state.json"), "--dry-run")
    assert done.returncode == 0, done.stderr
    for address in ("192.0.2.40", "192.0.2.43"):
        assert f"ip address add {address}/32 dev lo" in done.stdout
    assert "sysctl -w net.ipv4.conf.eth0.arp_ignore=1" in done.stdout
    assert "ifup-lo" in done.stdout
    assert snapshot(lan) == before
    assert not (tmp_path / "root").exists() and not (tmp_path / "state.json").exists()


@pytest.mark.root
def test_missing_interface_is_an_environment_error(lan: Lab, tmp_path: Path) -> None:
    done = dsrlb(lan, "target", "setup", "--vip", "192.0.2.10", "--interface", "nosuch0",
                 "--state", str(tmp_path / "s.json"))
    assert done.returncode == 2 and "nosuch0" in done.stderr and "Traceback" not in done.stderr
    assert "192.0.2.10/32" not in snapshot(lan)[0]


@pytest.mark.root
def test_target_is_silent_on_arp_for_the_vip_but_answers_for_itself(lan: Lab, tmp_path: Path) -> None:
    assert dsrlb(lan, "target", "setup", "--vip", "192.0.2.10", "--interface", "eth0",
                 "--state", str(tmp_path / "s.json")).returncode == 0
    with Netlink(lan.ns("peer")) as peer:
        assert peer.resolve_neighbour("192.0.2.100", timeout=2.0).outcome is Resolution.RESOLVED
        assert peer.resolve_neighbour("192.0.2.10", timeout=0.5).outcome is not Resolution.RESOLVED
