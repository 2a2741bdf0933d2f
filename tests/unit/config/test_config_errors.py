"""A corpus of broken configurations: each gives exactly one error, at an exact line:column.

Every row is (name, config text, line, column, offending token, words the message must contain).
The texts are small and complete so that each row shows exactly what is wrong.
"""

from __future__ import annotations

import pytest

from dsrlb.config import ConfigErrors, loads
from dsrlb.config.errors import SourceMap
from dsrlb.config.validate import validate
from dsrlb.model import Config

# A valid DSR config (seed 001 shape, documentation addresses) that the semantic rows build on.
NET = """interface 1 {
  name eth0
}
register interface 1
network 1 {
  addr 192.0.2.0
  mask 255.255.255.0
  real 192.0.2.252
  interface 1
}
register network 1
"""  # 11 lines: rows that append start on line 12

SERVER = """server 1 {
  ipaddr 192.0.2.10
  port 80
  protocol tcp
  targets 1,2
}
register server 1
"""  # lines 12-18

TARGETS = """target 1 {
  ipaddr 192.0.2.100
  port 80
  dsr enable
}
target 2 {
  ipaddr 192.0.2.101
  dsr enable
}
register targets 1,2
"""  # lines 19-28

CASES: list[tuple[str, str, int, int, str, str]] = [
    # --- lexical ---------------------------------------------------------------------------------
    ("unterminated string", 'remark "no end\n', 1, 8, '"no end', "unterminated string"),
    ("bad hex escape", 'remark "a\\xZZ"\n', 1, 10, "\\xZZ", "bad \\x escape"),
    ("control character", "hostname a\x01b\n", 1, 11, "\x01", "control character"),
    # --- statements ------------------------------------------------------------------------------
    ("misspelt keyword", "servr 1 {\n}\n", 1, 1, "servr", "did you mean 'server'"),
    ("statement starts with a number", "80\n", 1, 1, "80", "must start with a keyword"),
    ("lvs.cf fed to the native parser", "serial_no = 5\n", 1, 1, "serial_no", "dsrlb convert"),
    ("keepalived fed to the native parser", "global_defs {\n}\n", 1, 1, "global_defs", "keepalived"),
    ("text after a statement", "hostname a b\n", 1, 12, "b", "unexpected text"),
    ("missing id", "server {\n}\n", 1, 8, "{", "whole number"),
    ("id out of range", "target 0 {\n}\n", 1, 8, "0", "id out of range"),
    ("huge number", "target 1 port 1234567890123456789012\n", 1, 15, "1234567890123456789012", "too large"),
    ("block not closed", "server 1 {\n  ipaddr 192.0.2.10\n", 3, 1, "", "not closed"),
    (
        "two settings on one line",
        "target 1 {\n  port 80 protocol tcp\n}\n",
        2,
        11,
        "protocol",
        "unexpected text",
    ),
    ("unknown server keyword", "server 1 {\n  metod rr\n}\n", 2, 3, "metod", "did you mean 'method'"),
    ("unknown target keyword", "target 1 {\n  tcpopn 80,3,10\n}\n", 2, 3, "tcpopn", "did you mean 'tcpopen'"),
    ("duplicate block id", "target 1 {\n}\ntarget 1 {\n}\n", 3, 8, "1", "duplicate id"),
    ("duplicate vrrp block", "vrrp {\n vrid 1\n}\nvrrp {\n}\n", 4, 1, "vrrp", "duplicate id"),
    ("field twice in a block", "target 1 {\n  port 80\n  port 81\n}\n", 3, 3, "port", "given twice"),
    (
        "ipaddr and ipaddr6 in one block",
        "server 1 {\n ipaddr 192.0.2.1\n ipaddr6 2001:db8::1\n}\n",
        3,
        2,
        "ipaddr6",
        "given twice",
    ),
    ("unknown method", "server 1 method rrr\n", 1, 17, "rrr", "did you mean 'rr'"),
    ("unknown protocol", "server 1 protocol sctp\n", 1, 19, "sctp", "unknown protocol"),
    ("bad IPv4 address", "server 1 ipaddr 192.0.2.300\n", 1, 17, "192.0.2.300", "bad IPv4 address"),
    ("IPv6 address under ipaddr", "target 1 ipaddr 2001:db8::1\n", 1, 17, "2001:db8::1", "*6 keyword"),
    ("bad IPv6 address", "target 1 ipaddr6 2001:db8:::1\n", 1, 18, "2001:db8:::1", "bad IPv6 address"),
    ("ping with one value", "target 1 ping 3\n", 1, 16, "\n", "ping takes 2 values"),
    ("tcpopen with a word", "target 1 tcpopen 80,x,10\n", 1, 21, "x", "whole number"),
    ("script with 4 values", 'target 1 script "x",1,2,3\n', 1, 24, ",", "script takes 3 values"),
    ("backwards port range", "server 1 ports 80,90-85\n", 1, 19, "90-85", "runs backwards"),
    ("bad port list item", "server 1 ports 80,,443\n", 1, 19, ",", "bad port"),
    (
        "httpstatus without http check",
        "target 1 {\n  ping 1,2\n  httpstatus 200\n}\n",
        3,
        3,
        "httpstatus",
        "refines the last http or https check",
    ),
    ("expectregex without sendexpect", "target 1 expectregex enable\n", 1, 10, "expectregex", "sendexpect"),
    ("dsr with a bad switch", "target 1 dsr yes\n", 1, 14, "yes", "unknown dsr setting"),
    (
        "unknown set key",
        "set {\n  sesiontimeout 30\n}\n",
        2,
        3,
        "sesiontimeout",
        "did you mean 'sessiontimeout'",
    ),
    ("set switch not 0/1", "set vrrppreempt 2\n", 1, 17, "2", "is a switch"),
    ("session timeout 0", "set tcpsessiontimeout 0\n", 1, 23, "0", "tcpsessiontimeout 0 is out of range"),
    (
        "session timeout over a week",
        "set {\n  sessiontimeout 604801\n}\n",
        2,
        18,
        "604801",
        "sessiontimeout 604801 is out of range",
    ),
    ("session table too small", "set sessiontabsize 10\n", 1, 20, "10", "sessiontabsize 10 is out of range"),
    ("register what?", "register targetz 1\n", 1, 10, "targetz", "did you mean 'target'"),
    ("mask prefix too long", "network 1 mask 33\n", 1, 16, "33", "prefix length"),
    ("advert not a number", "vrrp advert fast\n", 1, 13, "fast", "must be a number"),
    # --- semantic (validation) -------------------------------------------------------------------
    ("register of an undefined id", "register target 4\n", 1, 17, "4", "target 4 is not defined"),
    (
        "enable without register",
        NET + "target 1 ipaddr 192.0.2.5\nenable target 1\n",
        13,
        15,
        "1",
        "enabled but not registered",
    ),
    (
        "server target not defined",
        NET + SERVER + TARGETS.replace("target 2 {", "target 3 {").replace("targets 1,2", "targets 1,3"),
        16,
        13,
        "2",
        "target 2 is not defined",
    ),
    (
        "server target not registered",
        NET + SERVER + TARGETS.replace("register targets 1,2", "register target 1"),
        16,
        13,
        "2",
        "not registered",
    ),
    (
        "backup also primary",
        NET + SERVER.replace("  protocol tcp\n", "  backup 2\n") + TARGETS,
        15,
        10,
        "2",
        "both primary and backup",
    ),
    (
        "target listed twice",
        NET + SERVER.replace("targets 1,2", "targets 1,2,1") + TARGETS,
        16,
        15,
        "1",
        "listed twice",
    ),
    (
        "port out of range",
        NET + SERVER.replace("port 80", "port 70000") + TARGETS.replace("  port 80\n", ""),
        14,
        8,
        "70000",
        "out of range",
    ),
    (
        "DSR port rewriting",
        NET + SERVER + TARGETS.replace("port 80", "port 8080"),
        21,
        8,
        "8080",
        "DSR cannot rewrite ports",
    ),
    (
        "multi-port server, target with port",
        NET + SERVER.replace("port 80", "ports 80,443") + TARGETS,
        21,
        8,
        "80",
        "multi-port",
    ),
    (
        "any-port server, target with protocol",
        NET
        + SERVER.replace("  port 80\n", "").replace("  protocol tcp\n", "")
        + TARGETS.replace("  port 80\n", "  protocol udp\n"),
        19,
        12,
        "udp",
        "any-port",
    ),
    (
        "target protocol differs",
        NET + SERVER + TARGETS.replace("  port 80\n", "  protocol udp\n"),
        21,
        12,
        "udp",
        "differs from server",
    ),
    (
        "address families differ",
        NET
        + SERVER
        + TARGETS.replace("ipaddr 192.0.2.101", "ipaddr6 2001:db8::5").replace(
            "target 2 {\n  ipaddr6 2001:db8::5\n  dsr enable", "target 2 {\n  ipaddr6 2001:db8::5"
        ),
        25,
        11,
        "2001:db8::5",
        "is IPv6 but server 1 is IPv4",
    ),
    (
        "server without address",
        NET + SERVER.replace("  ipaddr 192.0.2.10\n", "") + TARGETS,
        12,
        1,
        "server",
        "has no address",
    ),
    (
        "DSR target off-link",
        NET + SERVER + TARGETS.replace("192.0.2.101", "198.51.100.7"),
        25,
        10,
        "198.51.100.7",
        "not on any network",
    ),
    (
        "real outside the network",
        NET.replace("real 192.0.2.252", "real 198.51.100.1"),
        8,
        8,
        "198.51.100.1",
        "outside network 192.0.2.0/24",
    ),
    (
        "mask not contiguous",
        NET.replace("255.255.255.0", "255.0.255.0"),
        7,
        8,
        "255.0.255.0",
        "not a netmask",
    ),
    ("network without interface", NET.replace("  interface 1\n", ""), 5, 1, "network", "has no interface"),
    ("interface without name", "interface 1 {\n}\n", 1, 1, "interface", "has no name"),
    (
        "interface name too long",
        "interface 1 name averyveryverylongname\n",
        1,
        18,
        "averyveryverylongname",
        "bad interface name",
    ),
    ("vrid out of range", NET + "vrrp {\n  vrid 256\n  network 1\n}\n", 13, 8, "256", "vrid 256"),
    ("vrrp without vrid", NET + "vrrp {\n  priority 100\n}\n", 12, 1, "vrrp", "has no vrid"),
    ("vrrp on undefined network", NET + "vrrp {\n  vrid 9\n  network 2\n}\n", 14, 11, "2", "not defined"),
    ("priority out of range", "vrrp {\n  vrid 9\n  priority 0\n}\n", 3, 12, "0", "priority 0"),
    ("preemptdelay out of range", "vrrp {\n  vrid 9\n  preemptdelay 2000\n}\n", 3, 16, "2000",
     "preemptdelay 2000"),
    (
        "authpass too long",
        'vrrp {\n  vrid 9\n  authpass "123456789"\n}\n',
        3,
        12,
        '"123456789"',
        "bad authpass",
    ),
    (
        "check timeout below interval",
        NET + "target 1 {\n  ipaddr 192.0.2.5\n  tcpopen 80,10,3\n}\n",
        14,
        3,
        "tcpopen",
        "shorter than its interval",
    ),
    (
        "ping6 on an IPv4 target",
        NET + "target 1 {\n  ipaddr 192.0.2.5\n  ping6 3,10\n}\n",
        14,
        3,
        "ping6",
        "does not fit",
    ),
    (
        "method agent without agent checks",
        NET + SERVER.replace("  protocol tcp\n", "  method agent\n") + TARGETS,
        15,
        10,
        "agent",
        "needs an agent check on targets 1,2",
    ),
    (
        "bad body regex",
        NET + 'target 1 {\n  ipaddr 192.0.2.5\n  http 80,"/",2,5\n  httpbody "(("\n}\n',
        15,
        12,
        '"(("',
        "bad regular expression",
    ),
    (
        "overlapping servers",
        NET
        + SERVER.replace("targets 1,2", "targets 1")
        + SERVER.replace("server 1", "server 2").replace("targets 1,2", "targets 2")
        + TARGETS,
        20,
        10,
        "192.0.2.10",
        "overlaps server 1",
    ),
    (
        "gateway ping without ipaddr",
        "gateway {\n  ipaddr6 2001:db8::1\n  ping 3,10\n}\n",
        3,
        3,
        "ping",
        "needs the gateway's ipaddr",
    ),
]


@pytest.mark.parametrize(
    ("name", "text", "line", "column", "token", "words"), CASES, ids=[c[0] for c in CASES]
)
def test_one_precise_error(name: str, text: str, line: int, column: int, token: str, words: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        loads(text, "bad.conf")
    errors = caught.value.errors
    assert len(errors) == 1, str(caught.value)
    error = errors[0]
    assert (error.file, error.line, error.column) == ("bad.conf", line, column), str(error)
    assert error.token == token, str(error)
    assert words in error.message, str(error)


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


def test_base_fragments_are_valid() -> None:
    """The semantic rows are single mutations of a config that loads."""
    config = loads(NET + SERVER + TARGETS)
    assert [t.id for t in config.targets] == [1, 2]


def test_rendering() -> None:
    with pytest.raises(ConfigErrors) as caught:
        loads("server 1 method rrr\n", "x.conf")
    assert str(caught.value) == (
        "x.conf:1:17: error: unknown method; did you mean 'rr'? (got 'rrr'; expected rr, wrr, random, "
        "wrandom, hash, maglev, first, session, bandwidth, agent or rndagent)"
    )


def test_not_utf8_bytes() -> None:
    with pytest.raises(ConfigErrors) as caught:
        loads(b'hostname a\nremark "caf\xe9"\n', "latin.conf")
    (error,) = caught.value.errors
    assert (error.line, error.column, error.message) == (2, 12, "the file is not valid UTF-8")


def test_validation_reports_all_errors_in_order() -> None:
    text = NET + SERVER.replace("protocol tcp", "timeout 0").replace("targets 1,2", "targets 1,7") + TARGETS
    text += "enable target 2\nenable interface 3\n"
    with pytest.raises(ConfigErrors) as caught:
        loads(text, "many.conf")
    positions = [(e.line, e.column) for e in caught.value.errors]
    assert positions == [(15, 11), (16, 13), (30, 18)]
    assert "timeout 0" in caught.value.errors[0].message
    assert "target 7 is not defined" in caught.value.errors[1].message
    assert "interface 3 is not defined" in caught.value.errors[2].message
    assert len(str(caught.value).splitlines()) == 3


def test_session_timeouts_of_a_config_not_parsed() -> None:
    """Importers build a Config directly: its settings are checked too, positioned at the file's top."""
    config = Config(settings=(("sessiontimeout", "soon"), ("udpsessiontimeout", "604800")))
    (error,) = validate(config, SourceMap("import.conf"))
    assert (error.file, error.line, error.column) == ("import.conf", 1, 1)
    assert "sessiontimeout 'soon' is not a number" in error.message
