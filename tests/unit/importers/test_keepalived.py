"""keepalived.conf -> dsrlb Config: a realistic file with every supported keyword, includes, timing."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from dsrlb.config import loads, write
from dsrlb.config.errors import ConfigErrors
from dsrlb.config.importers import ImportResult, import_keepalived, parse_fwmark_options
from dsrlb.model import (
    HttpCheck,
    Method,
    PingCheck,
    PortRange,
    Protocol,
    ScriptCheck,
    SessionKey,
    TcpOpenCheck,
)

DATA = Path(__file__).parent / "data"
FULL = DATA / "keepalived.conf"


def convert(source: str | Path, filename: str | None = None, **kwargs: object) -> ImportResult:
    result = import_keepalived(source, filename, **kwargs)  # type: ignore[arg-type]
    assert loads(write(result.config), "converted") == result.config
    return result


@pytest.fixture(scope="module")
def full() -> ImportResult:
    return convert(FULL, fwmarks=parse_fwmark_options(["80=80,443"]))


def test_vrrp_instance(full: ImportResult) -> None:
    config = full.config
    vrrp = config.vrrp
    assert vrrp is not None
    assert (vrrp.vrid, vrrp.priority, vrrp.advert_interval) == (51, 150, 1.0)
    assert vrrp.unicast_peers == (IPv4Address("192.0.2.3"),)
    assert vrrp.auth_pass == "s3cret" and vrrp.tracking
    assert config.hostname == "LB1"
    assert config.settings == (("vrrppreempt", "0"),)
    assert [(i.name, i.trackval) for i in config.interfaces] == [("eth0", 60), ("eth1", 255)]


def test_networks_from_virtual_addresses(full: ImportResult) -> None:
    local, nat = full.config.networks
    assert str(local.ipv4_network) == "192.0.2.0/24" and local.real == IPv4Address("192.0.2.2")
    assert local.syncpeer == IPv4Address("192.0.2.3")  # lvs_sync_daemon + one unicast peer
    assert str(nat.ipv4_network) == "198.51.100.0/24" and nat.virt == IPv4Address("198.51.100.254")


def test_dsr_http_server(full: ImportResult) -> None:
    config = full.config
    web = config.servers[0]
    assert web.address == IPv4Address("192.0.2.10") and web.single_port == 80
    assert (web.method, web.sessionid, web.timeout) == (Method.SESSION, SessionKey.SRC, 50)
    first = config.target(web.targets[0])
    sorry = config.target(web.backup[0])
    assert first is not None and sorry is not None
    assert first.dsr and first.weight == 3 and first.port == 80 and first.health.quiesce
    # delay_loop 6, connect_timeout 3, nb_get_retry 3, delay_before_retry 2: 6 + 3*2 + 4*3 = 24
    assert first.checks == (
        HttpCheck(80, "/health", 6, 24, status=(PortRange(200, 200),), host="www.example.net"),
        HttpCheck(80, "/", 6, 24, status=(PortRange(200, 299), PortRange(302, 302)), host="www.example.net"),
    )
    assert (first.health.rise, first.health.fall) == (1, 4)
    second = config.target(web.targets[1])
    assert second is not None and second.checks == (TcpOpenCheck(80, 6, 17),)
    assert sorry.address == IPv4Address("192.0.2.99") and sorry.checks == ()


def test_tls_nat_misc_ping_and_included_udp(full: ImportResult) -> None:
    config = full.config
    https, smtp, fwmark, dns = config.servers[1:]
    https_target = config.target(https.targets[0])
    assert https_target is not None and https_target.checks == (
        HttpCheck(443, "/", 10, 21, tls=True, status=(PortRange(200, 299),)),
    )
    assert https.sessionid is SessionKey.SRC_PORT and https.method is Method.RR
    smtp_target = config.target(smtp.targets[0])
    assert smtp_target is not None and not smtp_target.dsr and smtp_target.port == 2525
    assert smtp.method is Method.HASH
    assert smtp_target.checks == (ScriptCheck("/usr/local/bin/check_smtp 198.51.100.5 2525", 15, 26),)
    assert fwmark.ports == (PortRange(80, 80), PortRange(443, 443))
    assert fwmark.address == IPv4Address("192.0.2.12")  # the free virtual address
    fw_target = config.target(fwmark.targets[0])
    assert fw_target is not None and fw_target.port is None and fw_target.checks == (PingCheck(5, 16),)
    assert dns.protocol is Protocol.UDP and dns.method is Method.WRR


def test_warnings_name_file_line_and_setting(full: ImportResult) -> None:
    found = {(Path(w.file).name, w.line, w.setting) for w in full.warnings}
    assert ("keepalived.conf", 5, "notification_email") in found
    assert ("keepalived.conf", 53, "vrrp_instance") in found  # the second instance
    assert ("keepalived.conf", 63, "lb_algo") in found  # wlc
    assert ("keepalived.conf", 82, "digest") in found
    assert all(str(w).startswith(f"{w.file}:{w.line}: warning: ") for w in full.warnings)


def test_preempt_delay_maps_onto_the_vrrp_preemptdelay(full: ImportResult) -> None:
    """keepalived's preempt_delay is dsrlb's `preemptdelay` (docs/vrrp.md); BalanceNG's undocumented
    `vrrppreemptts` is not guessed at."""
    assert not [w for w in full.warnings if w.setting == "preempt_delay"]
    assert full.config.vrrp is not None and full.config.vrrp.preempt_delay == 30
    assert full.config.setting("vrrppreemptts") is None


def test_include_relative_to_including_file(tmp_path: Path) -> None:
    (tmp_path / "services").mkdir()
    (tmp_path / "services" / "b.conf").write_text(
        "virtual_server 192.0.2.20 80 {\n  lb_algo rr\n  real_server 192.0.2.21 80 {\n  }\n}\n"
    )
    (tmp_path / "services" / "a.conf").write_text("include ../more/*.conf\n")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "c.conf").write_text("virtual_server 192.0.2.30 80 {\n lb_algo rr\n}\n")
    main = tmp_path / "keepalived.conf"
    main.write_text("include services/*.conf\ninclude missing/*.conf\n")
    result = convert(main)
    assert [str(s.address) for s in result.config.servers] == ["192.0.2.30", "192.0.2.20"]
    assert [(w.setting, w.line) for w in result.warnings if w.setting == "include"] == [("include", 2)]


def test_include_errors_name_the_included_file(tmp_path: Path) -> None:
    (tmp_path / "bad.conf").write_text("vrrp_instance X {\n  priority high\n}\n")
    main = tmp_path / "keepalived.conf"
    main.write_text("include bad.conf\n")
    with pytest.raises(ConfigErrors) as caught:
        import_keepalived(main)
    (error,) = caught.value.errors
    assert (Path(error.file).name, error.line, error.column) == ("bad.conf", 2, 12)


def test_include_loop_is_an_error(tmp_path: Path) -> None:
    main = tmp_path / "keepalived.conf"
    main.write_text("include keepalived.conf\n")
    with pytest.raises(ConfigErrors, match="include loop"):
        import_keepalived(main)


def test_comments_and_attached_braces() -> None:
    text = (
        "# c\n! c\nvirtual_server 192.0.2.1 80{ # trailing\n  lb_algo rr ! more\n"
        "  real_server 192.0.2.5 80{\n  }}\n"
    )
    result = convert(text, "k.conf")
    assert result.config.servers[0].method is Method.RR
    assert len(result.config.targets) == 1


def test_track_interface_positive_weight_raises_base_priority() -> None:
    text = (
        "vrrp_instance V {\n interface eth0\n virtual_router_id 9\n priority 100\n"
        " track_interface {\n  eth1 weight 20\n }\n}\n"
    )
    config = convert(text, "k.conf").config
    assert config.vrrp is not None and config.vrrp.priority == 120
    assert [(i.name, i.trackval) for i in config.interfaces] == [("eth0", None), ("eth1", 20)]
