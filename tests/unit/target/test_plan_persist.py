"""Target-setup planning (pure) and the persistent files it writes under --root."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_interface
from pathlib import Path

import pytest

from dsrlb.cli.main import main
from dsrlb.netlink.sysctl import Sysctl
from dsrlb.target.persist import PersistTarget, persistent_output, sysctl_conf
from dsrlb.target.plan import (
    AddAddress,
    Note,
    PlanError,
    RemoveAddress,
    RemoveFile,
    SaveRecord,
    SetSysctl,
    SetupRecord,
    SetupRequest,
    SystemState,
    WriteFile,
    plan_setup,
    plan_undo,
    vip_interface,
)

V4 = ip_interface("192.0.2.10/32")
V6 = ip_interface("2001:db8::10/128")
ARP_KEYS = [Sysctl.ipv4_conf(s, n) for s in ("all", "eth0") for n in ("arp_ignore", "arp_announce")]


def _state(values: str = "0", **kwargs: object) -> SystemState:
    return SystemState(sysctls={k: values for k in ARP_KEYS}, **kwargs)  # type: ignore[arg-type]


def test_vip_must_be_a_single_address() -> None:
    assert vip_interface("192.0.2.10") == V4
    assert vip_interface("2001:db8::10") == V6
    with pytest.raises(PlanError, match="single address"):
        vip_interface("192.0.2.0/24")


def test_setup_adds_vips_and_sets_arp_sysctls_and_records_old_values(tmp_path: Path) -> None:
    request = SetupRequest((V4, V6), ("eth0",), state_file=tmp_path / "rec.json")
    actions = plan_setup(request, _state())
    assert [a for a in actions if isinstance(a, AddAddress)] == [AddAddress(V4), AddAddress(V6)]
    assert {(a.key.dotted, a.value) for a in actions if isinstance(a, SetSysctl)} == {
        ("net.ipv4.conf.all.arp_ignore", "1"), ("net.ipv4.conf.all.arp_announce", "2"),
        ("net.ipv4.conf.eth0.arp_ignore", "1"), ("net.ipv4.conf.eth0.arp_announce", "2"),
    }
    record = next(a for a in actions if isinstance(a, SaveRecord)).record
    assert record.addresses == ("192.0.2.10/32", "2001:db8::10/128")
    assert ("net.ipv4.conf.all.arp_ignore", "0", "1") in record.sysctls


def test_ipv6_only_touches_no_arp_sysctl(tmp_path: Path) -> None:
    request = SetupRequest((V6,), ("eth0",), state_file=tmp_path / "rec.json")
    actions = plan_setup(request, SystemState())
    assert not any(isinstance(a, SetSysctl) for a in actions)


def test_already_present_things_are_notes_and_not_recorded(tmp_path: Path) -> None:
    request = SetupRequest((V4,), ("eth0",), state_file=tmp_path / "rec.json")
    wanted = {k: ("1" if "ignore" in k.dotted else "2") for k in ARP_KEYS}
    actions = plan_setup(request, SystemState(lo_addresses=frozenset({V4}), sysctls=wanted))
    assert all(isinstance(a, Note) for a in actions)


def test_missing_interface_is_a_clear_error(tmp_path: Path) -> None:
    request = SetupRequest((V4,), ("nosuch0",), state_file=tmp_path / "rec.json")
    with pytest.raises(PlanError, match="nosuch0"):
        present = {Sysctl.ipv4_conf("all", name): "0" for name in ("arp_ignore", "arp_announce")}
        plan_setup(request, SystemState(sysctls=present))


def test_undo_inverts_exactly_what_was_recorded_and_spares_later_changes(tmp_path: Path) -> None:
    record = SetupRecord(
        addresses=("192.0.2.10/32", "192.0.2.11/32"),
        sysctls=(("net.ipv4.conf.all.arp_ignore", "0", "1"), ("net.ipv4.conf.all.arp_announce", "0", "2")),
        files=((str(tmp_path / "a"), None, "A\n"), (str(tmp_path / "b"), "old\n", "B\n")),
    )
    state = SystemState(
        lo_addresses=frozenset({ip_interface("192.0.2.10/32")}),  # .11 was removed by hand since
        sysctls={Sysctl.parse("net.ipv4.conf.all.arp_ignore"): "1",
                 Sysctl.parse("net.ipv4.conf.all.arp_announce"): "8"},  # changed by someone since
        files={tmp_path / "a": "A\n", tmp_path / "b": "B\n"},
        record=record,
    )
    actions = plan_undo(SetupRequest((), state_file=tmp_path / "rec.json"), state)
    assert RemoveAddress(ip_interface("192.0.2.10/32")) in actions
    assert not any(isinstance(a, RemoveAddress) and str(a.interface) == "192.0.2.11/32" for a in actions)
    assert SetSysctl(Sysctl.parse("net.ipv4.conf.all.arp_ignore"), "0") in actions
    assert not any(isinstance(a, SetSysctl) and "announce" in a.key.dotted for a in actions)
    assert RemoveFile(tmp_path / "a") in actions
    assert WriteFile(tmp_path / "b", "old\n") in actions


def test_record_merge_keeps_the_oldest_before_value() -> None:
    first = SetupRecord(("192.0.2.10/32",), (("k", "0", "1"),), (("/f", None, "x"),))
    later = SetupRecord(("192.0.2.11/32",), (("k", "1", "1"),), (("/f", "x", "y"),))
    merged = first.merged(later)
    assert merged.addresses == ("192.0.2.10/32", "192.0.2.11/32")
    assert merged.sysctls == (("k", "0", "1"),)
    assert merged.files == (("/f", None, "y"),)
    assert SetupRecord.from_json(merged.to_json()) == merged


def test_debian_files() -> None:
    out = persistent_output(PersistTarget.DEBIAN, (IPv4Address("192.0.2.10"), IPv6Address("2001:db8::10")),
                            ("eth0",))
    files = {str(f.path): f.content for f in out.files}
    interfaces = files["/etc/network/interfaces.d/dsrlb-vips"]
    assert "iface lo inet static\n    address 192.0.2.10/32\n" in interfaces
    assert "iface lo inet6 static\n    address 2001:db8::10/128\n" in interfaces
    sysctl = files["/etc/sysctl.d/90-dsrlb-dsr.conf"]
    for line in ("net.ipv4.conf.all.arp_ignore = 1", "net.ipv4.conf.all.arp_announce = 2",
                 "net.ipv4.conf.eth0.arp_ignore = 1", "net.ipv4.conf.eth0.arp_announce = 2"):
        assert line in sysctl.splitlines()


def test_rhel_aliases_and_vipaddrs_mode() -> None:
    aliases = persistent_output(PersistTarget.RHEL, (IPv4Address("192.0.2.10"), IPv4Address("192.0.2.11"),
                                                     IPv6Address("2001:db8::1")))
    files = {str(f.path): f.content for f in aliases.files}
    assert "IPADDR=192.0.2.11\nNETMASK=255.255.255.255\nONBOOT=yes\n" in files[
        "/etc/sysconfig/network-scripts/ifcfg-lo:1"]
    assert any("2001:db8::1" in w for w in aliases.warnings)
    scripts = persistent_output(PersistTarget.RHEL, (IPv4Address("192.0.2.10"),), vipaddrs_text="192.0.2.10")
    modes = {str(f.path): f.mode for f in scripts.files}
    assert modes["/etc/sysconfig/network-scripts/ifup-lo"] == 0o755
    contents = {str(f.path): f.content for f in scripts.files}
    assert contents["/etc/sysconfig/vipaddrs"] == "192.0.2.10\n"


def test_networkd_freebsd_solaris() -> None:
    vips = (IPv4Address("192.0.2.10"), IPv6Address("2001:db8::10"))
    networkd = {str(f.path): f.content for f in persistent_output(PersistTarget.NETWORKD, vips).files}
    assert "[Match]\nName=lo\n" in networkd["/etc/systemd/network/50-dsrlb-lo.network"]
    assert "Address=2001:db8::10/128" in networkd["/etc/systemd/network/50-dsrlb-lo.network"]
    freebsd = persistent_output(PersistTarget.FREEBSD, vips)
    assert freebsd.files == ()
    assert 'ifconfig_lo0_alias0="inet 192.0.2.10 netmask 255.255.255.255"' in freebsd.printed
    assert 'ifconfig_lo0_alias1="inet6 2001:db8::10 prefixlen 128"' in freebsd.printed
    solaris = {str(f.path): f.content for f in persistent_output(PersistTarget.SOLARIS, vips).files}
    assert solaris["/etc/hostname.lo0:1"].startswith("192.0.2.10 ")
    assert "/etc/hostname6.lo0:1" in solaris


def test_sysctl_conf_writes_dotted_interface_names_with_slashes() -> None:
    assert "net.ipv4.conf.eth0/100.arp_ignore = 1" in sysctl_conf(("eth0.100",))


def test_cli_solaris_files_under_root_then_undo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Files for another OS change nothing on this machine, so this runs without root or namespaces.
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hostname.lo0:2").write_text("keep me\n")
    args = ["target", "setup", "--vip", "192.0.2.10", "--vip", "192.0.2.11", "--persist", "solaris",
            "--root", str(tmp_path)]
    assert main([*args, "--dry-run"]) == 0
    assert not (tmp_path / "etc" / "hostname.lo0:1").exists()
    assert "cat > " in capsys.readouterr().out
    assert main(args) == 0
    assert (tmp_path / "etc" / "hostname.lo0:1").read_text() == "192.0.2.10 netmask 255.255.255.255 up\n"
    assert (tmp_path / "etc" / "hostname.lo0:2").read_text().startswith("192.0.2.11")
    assert main(["target", "setup", "--undo", "--root", str(tmp_path)]) == 0
    assert not (tmp_path / "etc" / "hostname.lo0:1").exists()
    assert (tmp_path / "etc" / "hostname.lo0:2").read_text() == "keep me\n"  # restored, not deleted
    assert not list((tmp_path / "var").rglob("*.json"))


def test_cli_bad_input_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "vipaddrs"
    bad.write_text("192.0.2.0/16\n")
    args = ["target", "setup", "--vipaddrs", str(bad), "--persist", "freebsd", "--root", str(tmp_path)]
    assert main(args) == 1
    assert "Incorrect mask" in capsys.readouterr().err
    assert main(["target", "setup", "--vip", "not-an-address", "--persist", "freebsd"]) == 2
    assert main(["target", "setup", "--persist", "freebsd"]) == 2
    assert main(["target", "setup", "--vipaddrs", str(tmp_path / "missing")]) == 2
