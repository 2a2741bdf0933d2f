"""Broken lvs.cf and keepalived.conf inputs: each gives one ConfigError at an exact line and column."""

from __future__ import annotations

import pytest

from dsrlb.config.errors import ConfigErrors
from dsrlb.config.importers import import_keepalived, import_lvs

LVS_OK_HEAD = "primary = 192.0.2.1\n"

LVS_CASES = [
    # (text, line, column, token, words in the message)
    ("primary 192.0.2.1\n", 1, 9, "192.0.2.1", "equal (=) expected"),
    ("primary=192.0.2.1\n", 1, 1, "primary=192.0.2.1", "'=' must be a token"),
    ("primary = 192.0.2.1 # main router\n", 1, 21, "#", "no end-of-line comments"),
    (LVS_OK_HEAD + "bogus = 1\n", 2, 1, "bogus", "unknown command"),
    (LVS_OK_HEAD + "keepalive = 08\n", 2, 13, "08", "integer expected"),
    (LVS_OK_HEAD + "keepalive = 0x\n", 2, 13, "0x", "integer expected"),
    (LVS_OK_HEAD + "backup_active = 2\n", 2, 17, "2", "boolean expected"),
    (LVS_OK_HEAD + "primary = lvs1.example\n", 2, 11, "lvs1.example", "invalid host name"),
    (LVS_OK_HEAD + "network = bridge\n", 2, 11, "bridge", "invalid argument"),
    (LVS_OK_HEAD + "virtual web {\n  active = 1\n", 3, 13, "", "unexpected end of file"),
    (LVS_OK_HEAD + "virtual web\n}\n", 2, 12, "\n", "missing arguments"),
    (LVS_OK_HEAD + 'virtual w {\n  send = "GET /\n}\n', 3, 10, '"GET /', "unterminated string"),
    (LVS_OK_HEAD + "virtual w {\n  address = 192.0.2.10\n}\n", 3, 23, "\n", "missing arguments"),
    (LVS_OK_HEAD + "virtual w {\n  scheduler = fifo\n}\n", 3, 15, "fifo", "invalid argument"),
    (LVS_OK_HEAD + "virtual w {\n  vip_nmask = 255.0.255.0\n}\n", 3, 15, "255.0.255.0", "bad subnet mask"),
    (LVS_OK_HEAD + "virtual w {\n server s {\n  weight = -1\n }\n}\n", 4, 12, "-1", "out of range"),
    (LVS_OK_HEAD + "virtual w {\n server s {\n  port = 80\n } x\n}\n", 5, 4, "x", "unexpected arguments"),
    (LVS_OK_HEAD + "virtual w {\n  port = 99999\n}\n", 3, 10, "99999", "port out of range"),
    ("# only a comment\n\n", 2, 1, "", "empty configuration"),
    (LVS_OK_HEAD + "virtual w {\n  timeout = 5\n}\n", 2, 1, "virtual", "has no address"),
]


@pytest.mark.parametrize(("text", "line", "column", "token", "words"), LVS_CASES)
def test_lvs_errors(text: str, line: int, column: int, token: str, words: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        import_lvs(text, "lvs.cf")
    (error,) = caught.value.errors
    assert (error.file, error.line, error.column, error.token) == ("lvs.cf", line, column, token), str(error)
    assert words in error.message, str(error)
    assert str(error).startswith(f"lvs.cf:{line}:{column}: error: ")


REAL_SERVER = "virtual_server 192.0.2.1 80 {\n real_server 192.0.2.5 80 {\n"

KEEPALIVED_CASES = [
    ("vrrp_instance VI_1 {\n  virtual_router_id 51\n", 2, 23, "", "unterminated block 'vrrp_instance'"),
    ("vrrp_instance VI_1 {\n  virtual_router_id 5x1\n}\n", 2, 21, "5x1", "bad number"),
    ("vrrp_instance VI_1 {\n  virtual_router_id 256\n}\n", 2, 21, "256", "out of range"),
    ("vrrp_instance VI_1 {\n  priority 100\n}\n", 1, 1, "vrrp_instance", "has no virtual_router_id"),
    ("vrrp_instance VI_1 {\n virtual_router_id 1\n  prio 100\n}\n", 3, 3, "prio", "unknown keyword"),
    ("virtual_servers 192.0.2.1 80 {\n}\n", 1, 1, "virtual_servers", "unknown keyword"),
    ("}\n", 1, 1, "}", "unbalanced '}'"),
    (
        'virtual_server 192.0.2.1 80 {\n real_server 192.0.2.5 80 {\n  MISC_CHECK {\n   misc_path "/bin/x\n',
        4,
        14,
        '"/bin/x',
        "unterminated string",
    ),
    ("virtual_server 192.0.2.1 80 {\n  lb_kind DRR\n}\n", 2, 11, "DRR", "unknown forwarding method"),
    ("virtual_server 192.0.2.1 80 {\n  lb_algo fifo\n}\n", 2, 11, "fifo", "unknown scheduler"),
    ("virtual_server 192.0.2.300 80 {\n}\n", 1, 16, "192.0.2.300", "bad IP address"),
    ("virtual_server 192.0.2.1 {\n}\n", 1, 25, "\n", "missing argument"),
    ("virtual_server 192.0.2.1 80 {\n  delay_loop soon\n}\n", 2, 14, "soon", "bad number"),
    (
        REAL_SERVER + "  HTTP_GET {\n   connect_port 80\n  }\n }\n}\n",
        3,
        11,
        "\n",
        "needs at least one url",
    ),
    (
        REAL_SERVER + "  TCP_CHECK {\n   url {\n   }\n  }\n }\n}\n",
        4,
        4,
        "url",
        "unknown keyword in TCP_CHECK",
    ),
]


@pytest.mark.parametrize(("text", "line", "column", "token", "words"), KEEPALIVED_CASES)
def test_keepalived_errors(text: str, line: int, column: int, token: str, words: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        import_keepalived(text, "keepalived.conf")
    (error,) = caught.value.errors
    where = (error.file, error.line, error.column, error.token)
    assert where == ("keepalived.conf", line, column, token), str(error)
    assert words in error.message, str(error)
