"""Lexer and grammar: tokens and positions, the one-line and block forms, lists, lifecycle statements."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from dsrlb.config import ConfigErrors, loads
from dsrlb.config.lexer import Kind, tokenize
from dsrlb.config.parser import parse
from dsrlb.config.writer import quote
from dsrlb.model import HttpCheck, PortRange, SendExpectCheck

TARGET = "target 1 {\n  ipaddr 192.0.2.5\n}\n"


def kinds_and_texts(text: str) -> list[tuple[str, str]]:
    return [(t.kind.name, t.text) for t in tokenize(text)]


def test_tokens_with_positions() -> None:
    tokens = tokenize('server 1 {\n\tports 80,33000-33999 // web\n  name "a \\"b\\" \\\\ c"\n}', "f.conf")
    shown = [(t.kind, t.text, t.line, t.column) for t in tokens]
    assert shown == [
        (Kind.WORD, "server", 1, 1),
        (Kind.NUMBER, "1", 1, 8),
        (Kind.LBRACE, "{", 1, 10),
        (Kind.NEWLINE, "\n", 1, 11),
        (Kind.WORD, "ports", 2, 2),
        (Kind.NUMBER, "80", 2, 8),
        (Kind.COMMA, ",", 2, 10),
        (Kind.WORD, "33000-33999", 2, 11),
        (Kind.NEWLINE, "\n", 2, 29),
        (Kind.WORD, "name", 3, 3),
        (Kind.STRING, 'a "b" \\ c', 3, 8),
        (Kind.NEWLINE, "\n", 3, 22),
        (Kind.RBRACE, "}", 4, 1),
        (Kind.EOF, "", 4, 2),
    ]
    assert all(t.file == "f.conf" for t in tokens)


def test_comment_only_at_token_start() -> None:
    assert kinds_and_texts("a http://x //c\n") == [
        ("WORD", "a"),
        ("WORD", "http://x"),
        ("NEWLINE", "\n"),
        ("EOF", ""),
    ]


def test_string_escapes_and_literal_backslashes() -> None:
    (token, _) = tokenize(r'"\r\n\t\x41\u00e9\U0001F600\d"')
    assert token.text == "\r\n\tAé\U0001f600\\d"


def test_crlf_and_trailing_blanks() -> None:
    config = loads("hostname a  \r\nset {\r\n threads 2\r\n}   \r\n")
    assert config.hostname == "a" and config.settings == (("threads", "2"),)


@pytest.mark.parametrize(
    "text", ["", "x", 'a"b', "\\", "//x", "a b", "{", "é", "\x00\x7f\x85\u2028", "\U0001f600"]
)
def test_quote_reads_back(text: str) -> None:
    (token, _) = tokenize(quote(text))
    assert token.kind is Kind.STRING and token.text == text


def test_one_line_forms_create_and_amend() -> None:
    config = loads(
        TARGET + "target 1 weight 3\ntarget 2 ipaddr 192.0.2.6\ntarget 2 dsr enable\n"
        "server 1 ipaddr 192.0.2.1\nserver 1 sessionid src+port\nserver 1 targets 1,2\n"
    )
    one, two = config.targets
    assert (one.weight, one.address) == (3, IPv4Address("192.0.2.5"))
    assert two.dsr and two.address == IPv4Address("192.0.2.6")
    assert config.servers[0].sessionid.value == "src+port" and config.servers[0].targets == (1, 2)


def test_one_line_form_replaces_a_block_field() -> None:
    config = loads("target 1 {\n  ipaddr 192.0.2.5\n  port 80\n}\ntarget 1 port 81\n")
    assert config.targets[0].port == 81


def test_one_line_block_and_closing_brace_on_the_last_line() -> None:
    config = loads("set { threads 2 }\ninterface 1 { name eth0 }\ninterface 2 {\n name eth1 }\n")
    assert config.settings == (("threads", "2"),)
    assert [i.name for i in config.interfaces] == ["eth0", "eth1"]


def test_unnumbered_one_line_forms() -> None:
    config = loads(
        "vrrp vrid 7\nvrrp priority 150\nset ipforwarding 1\nset arpinterval 5\ngateway ipaddr 192.0.2.1\n"
        "gateway ping 3,10\n"
    )
    assert config.vrrp is not None and (config.vrrp.vrid, config.vrrp.priority) == (7, 150)
    assert config.settings == (("arpinterval", "5"), ("ipforwarding", "1"))  # sorted by key
    assert config.gateway is not None and len(config.gateway.checks) == 1


def test_later_set_wins() -> None:
    assert loads("set threads 2\nset threads 4\n").setting("threads") == "4"


def test_lifecycle_words_lists_and_ranges() -> None:
    text = "".join(f"target {i} ipaddr 192.0.2.{i}\n" for i in range(1, 6))
    config = loads(
        text + "register targets 1-3,5\nregister target 4\nenable targets 1-5\n"
        "disable target 2\nunregister targets 5\n"
    )
    states = [(t.registered, t.enabled) for t in config.targets]
    assert states == [(True, True), (True, False), (True, True), (True, True), (False, False)]


def test_register_before_definition_is_fine() -> None:
    config = loads("register interface 1\nenable interface 1\ninterface 1 name eth0\n")
    assert config.interfaces[0].registered and config.interfaces[0].enabled


def test_plural_interfaces_in_network_and_prefix_mask() -> None:
    config = loads(
        "interface 1 name a\ninterface 3 name b\nnetwork 1 {\n"
        "  addr 192.0.2.0\n  mask 24\n  real 192.0.2.1\n  interfaces 1,3\n}\n"
    )
    network = config.networks[0]
    assert network.mask == IPv4Address("255.255.255.0") and network.interfaces == (1, 3)


def test_refinements_attach_to_the_latest_check() -> None:
    config = loads(
        "target 1 {\n  ipaddr 192.0.2.5\n"
        '  http 80,"/a",2,5\n  https 443,"/b",2,5\n  httpstatus 200-299,302\n  httphost "h"\n'
        '  sendexpect 25,"HELO\\r\\n","^250",2,5\n  expectregex enable\n}\n'
    )
    first, second, third = config.targets[0].checks
    assert isinstance(first, HttpCheck) and first.status == (PortRange(200, 399),) and first.host is None
    assert isinstance(second, HttpCheck) and second.tls and second.host == "h"
    assert second.status == (PortRange(200, 299), PortRange(302, 302))
    assert isinstance(third, SendExpectCheck) and third.regex and third.send == "HELO\r\n"


def test_keywords_are_case_insensitive_values_are_not() -> None:
    config = loads('Target 1 IPADDR 192.0.2.5\nTARGET 1 Name "MiXed"\n')
    assert config.targets[0].name == "MiXed"


def test_sourcemap_positions() -> None:
    result = parse("server 1 {\n  ipaddr 192.0.2.1\n  targets 4,5\n}\n", "p.conf")
    where = result.where
    assert (where.find("server", 1).line, where.find("server", 1).column) == (1, 1)
    assert (where.find("server", 1, "targets[5]").line, where.find("server", 1, "targets[5]").column) == (
        3,
        13,
    )
    assert where.find("server", 1, "timeout").line == 1  # falls back to the object
    assert where.find("target", 9).file == "p.conf"


def test_empty_and_comment_only_files_are_valid() -> None:
    assert loads("") == loads("// nothing\n\n   // here\n")


def test_errors_are_config_errors_with_one_entry_for_syntax() -> None:
    with pytest.raises(ConfigErrors) as caught:
        loads("server 1 {\n  port x\n  method zzz\n")
    assert len(caught.value) == 1


def test_every_keyword_is_documented() -> None:
    from pathlib import Path

    from dsrlb.config import keywords as kw

    docs = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
    text = docs.read_text(encoding="utf-8")
    every = {
        *kw.TOP_LEVEL,
        *kw.INTERFACE_KEYWORDS,
        *kw.NETWORK_KEYWORDS,
        *kw.VRRP_KEYWORDS,
        *kw.GATEWAY_KEYWORDS,
        *kw.SERVER_KEYWORDS,
        *kw.TARGET_KEYWORDS,
        *kw.SET_KEYS,
        *kw.LIFECYCLE_OBJECTS,
    }
    missing = sorted(word for word in every if f"`{word}" not in text)
    assert missing == []
