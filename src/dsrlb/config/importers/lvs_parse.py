"""Piranha lvs.cf, read with the grammar of Piranha's own parser (lvsconfig.c, lvs.cf(5)).

The rules, as lvsconfig.c applies them:

- one statement per line; a line whose first non-blank character is `#` is a comment, and there are no
  end-of-line comments (a `#` after a setting is an extra argument);
- tokens are separated by blanks; a token that starts with `"` or `'` runs to the matching quote (no
  escapes: the backslash sequences in `send`/`expect` are translated later by nanny);
- `key = value`, where `=` is a token of its own; `address` and `nat_router` take two values
  (`address = 10.10.1.20 eth0:1`);
- numbers are C numbers read by strtol(base 0): `010` is 8 and `0x10` is 16; booleans are 0 or 1;
- `virtual NAME {`, `failover NAME {` and, inside a virtual, `server NAME {` open blocks; `}` alone on
  a line closes one; any unknown key is an error.

The result is a typed tree (`LvsFile`) that keeps the line of every setting for warnings.
Defaults are lvsconfig.c's: `active` 0, `network` nat, virtual `port` 80, `scheduler` wlc,
`timeout` 10, `reentry` 180, `keepalive` 2, `deadtime` 5, server `weight` 1.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import AddressValueError, IPv4Address

from dsrlb.config.errors import END_OF_LINE, Position
from dsrlb.config.importers.common import end_of_file, fail, netmask_prefix, parse_c_integer

Value = int | str | IPv4Address | tuple[IPv4Address, str] | tuple[str, ...]


@dataclass(frozen=True)
class Token:
    text: str
    line: int
    column: int
    quoted: bool = False


@dataclass
class LvsServer:
    """`server NAME { address; active; weight; port }` inside a virtual."""

    name: str
    line: int
    port: int  # the virtual's port at the point the block starts (lvsconfig.c copies it then)
    values: dict[str, Value] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)


@dataclass
class LvsVirtual:
    """`virtual NAME { ... }` or `failover NAME { ... }`."""

    name: str
    line: int
    failover: bool
    values: dict[str, Value] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    servers: list[LvsServer] = field(default_factory=list)


@dataclass
class LvsFile:
    filename: str
    last_line: int
    values: dict[str, Value] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    virtuals: list[LvsVirtual] = field(default_factory=list)


def int_value(values: dict[str, Value], key: str, default: int) -> int:
    """A numeric or boolean setting (the readers guarantee the type), or its lvsconfig.c default."""
    value = values.get(key, default)
    assert isinstance(value, int)
    return value


# --- value readers (each mirrors a lvsconfig.c helper) ---------------------------------------------

Reader = Callable[[str, "Position"], Value]


def _position(filename: str, tok: Token) -> Position:
    return Position(filename, tok.line, tok.column, tok.text)


def _number(minimum: int = 0, maximum: int = 2**31 - 1) -> Reader:
    def read(text: str, where: Position) -> Value:
        value = parse_c_integer(text)
        if value is None:
            raise fail(where, "integer expected", "a C number such as 30, 036 or 0x1e")
        if not minimum <= value <= maximum:
            raise fail(where, "number out of range", f"{minimum}..{maximum}")
        return value

    return read


def _boolean(text: str, where: Position) -> Value:
    value = parse_c_integer(text)
    if value not in (0, 1):
        raise fail(where, "boolean expected", "0 or 1")
    return value


def _port(text: str, where: Position) -> Value:
    """getPort(): a number, or a service name from the services database (tcp)."""
    value = parse_c_integer(text)
    if value is None:
        try:
            return socket.getservbyname(text, "tcp")
        except OSError:
            raise fail(where, "invalid argument", "a port number or a service name such as http") from None
    if not 1 <= value <= 65535:
        raise fail(where, "port out of range", "1..65535")
    return value


def _address(text: str, where: Position) -> Value:
    try:
        return IPv4Address(text)
    except AddressValueError:
        raise fail(
            where, "invalid host name or ip address", "a dotted IPv4 address (host names are not resolved)"
        ) from None


def _netmask(text: str, where: Position) -> Value:
    try:
        mask = IPv4Address(text)
    except AddressValueError:
        raise fail(where, "bad subnet mask", "a dotted netmask such as 255.255.255.0") from None
    if netmask_prefix(mask) is None:
        raise fail(where, "bad subnet mask (not contiguous)", "a netmask such as 255.255.255.0")
    return mask


def _any_mask(text: str, where: Position) -> Value:
    try:
        return IPv4Address(text)
    except AddressValueError:
        raise fail(where, "bad subnet mask", "a dotted netmask such as 255.255.255.0") from None


def _text(text: str, where: Position) -> Value:
    return text


def _choice(*choices: str) -> Reader:
    def read(text: str, where: Position) -> Value:
        if text not in choices:
            raise fail(where, "invalid argument", "one of " + ", ".join(choices))
        return text

    return read


_PAIR = "pair"  # marker: `key = ADDRESS DEVICE`
_LIST = "list"  # marker: `key = [ a b c ]`

GLOBAL_KEYS: dict[str, Reader | str] = {
    "serial_no": _number(),
    "primary": _address,
    "primary_private": _address,
    "primary_shared": _text,
    "backup": _address,
    "backup_active": _boolean,
    "backup_private": _address,
    "backup_shared": _text,
    "reservation_conflict_action": _choice("nothing", "preempt"),
    "nat_nmask": _netmask,
    "nat_router": _PAIR,
    "active_cmd": _text,
    "inactive_cmd": _text,
    "monitor_links": _number(),
    "debug_level": _text,
    "hard_shutdown": _boolean,
    "ipvsadm": _text,
    "keepalive": _number(1, 3600),
    "deadtime": _number(1, 3600),
    "rsh_command": _text,
    "syncdaemon": _boolean,
    "syncd_iface": _text,
    "syncd_id": _number(0, 255),
    "tcp_timeout": _number(),
    "tcpfin_timeout": _number(),
    "udp_timeout": _number(),
    "heartbeat": _boolean,
    "heartbeat_port": _port,
    "sync": _boolean,
    "network": _choice("direct", "nat", "tunnel"),
    "service": _choice("lvs", "fos"),
}

VIRTUAL_KEYS: dict[str, Reader | str] = {
    "active": _boolean,
    "address": _PAIR,
    "sorry_server": _address,
    "vip_nmask": _netmask,
    "fwmark": _number(0, 2**31 - 1),
    "protocol": _choice("tcp", "udp"),
    "port": _port,
    # lvsconfig.c knows rr wrr lc wlc lblc lblcr dh sh; later Piranha releases added sed and nq.
    "scheduler": _choice("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq"),
    "persistent": _number(),
    "pmask": _any_mask,
    "client_monitor": _text,
    "send_program": _text,
    "send": _text,
    "expect": _text,
    "use_regex": _boolean,
    "timeout": _number(1, 3600),
    "reentry": _number(0, 86400),
    "load_monitor": _text,
    "quiesce_server": _boolean,
    "start_cmd": _text,
    "stop_cmd": _text,
    "master": _address,
    "dirs": _LIST,
}

SERVER_KEYS: dict[str, Reader | str] = {
    "address": _address,
    "active": _boolean,
    "weight": _number(0, 65535),
    "port": _number(1, 65535),
}


# --- tokenizer ------------------------------------------------------------------------------------


def _tokenize_line(filename: str, text: str, line: int) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        if text[i] in " \t":
            i += 1
            continue
        start = i
        if text[i] in "\"'":
            quote = text[i]
            end = text.find(quote, i + 1)
            if end < 0:
                where = Position(filename, line, start + 1, text[start:])
                raise fail(where, "quotation mismatch: unterminated string", f"a closing {quote}")
            if end + 1 < n and text[end + 1] not in " \t":
                where = Position(filename, line, end + 2, text[end + 1 :].split()[0])
                raise fail(where, "quotation mismatch: text right after the closing quote", "a blank")
            tokens.append(Token(text[i + 1 : end], line, start + 1, quoted=True))
            i = end + 1
            continue
        while i < n and text[i] not in " \t":
            i += 1
        tokens.append(Token(text[start:i], line, start + 1))
    return tokens


def tokenize(filename: str, text: str) -> Iterator[list[Token]]:
    """The token lists of the non-blank, non-comment lines. `\\r\\n` endings are accepted (1.63)."""
    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.rstrip("\r").lstrip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        yield _tokenize_line(filename, raw.rstrip("\r"), number)


# --- parser ---------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, filename: str, text: str) -> None:
        self.filename = filename
        self.lines = tokenize(filename, text)
        self.end = end_of_file(text, filename)
        self.last_line = self.end.line

    def where(self, tok: Token) -> Position:
        return _position(self.filename, tok)

    def next_line(self, block: Token | None) -> list[Token] | None:
        toks = next(self.lines, None)
        if toks is None and block is not None:
            where = self.end
            raise fail(
                where, f"unexpected end of file: block '{block.text}' at line {block.line} is not closed", "}"
            )
        return toks

    def parse(self) -> LvsFile:
        result = LvsFile(self.filename, self.last_line)
        saw_statement = False
        while (toks := self.next_line(None)) is not None:
            saw_statement = True
            head = toks[0]
            if head.text in ("virtual", "failover"):
                result.virtuals.append(self.virtual(toks))
            else:
                self.setting(toks, GLOBAL_KEYS, result.values, result.lines, "global setting")
        if not saw_statement:
            raise fail(
                self.end,
                "empty configuration",
                "settings such as primary = ADDRESS and virtual blocks",
            )
        return result

    def block_header(self, toks: list[Token]) -> str:
        head = toks[0]
        if len(toks) < 2:
            where = Position(self.filename, head.line, head.column + len(head.text), END_OF_LINE)
            raise fail(where, "missing arguments", f"{head.text} NAME {{")
        if len(toks) < 3 or toks[2].text != "{" or toks[2].quoted:
            tok = toks[2] if len(toks) >= 3 else toks[1]
            where = (
                self.where(tok)
                if len(toks) >= 3
                else Position(self.filename, tok.line, tok.column + len(tok.text), END_OF_LINE)
            )
            raise fail(where, "missing arguments", f"'{{' on the same line: {head.text} {toks[1].text} {{")
        if len(toks) > 3:
            raise fail(self.where(toks[3]), "unexpected arguments", "end of line after '{'")
        return toks[1].text

    def close_ok(self, toks: list[Token]) -> bool:
        if toks[0].text != "}" or toks[0].quoted:
            return False
        if len(toks) > 1:
            raise fail(self.where(toks[1]), "unexpected arguments", "end of line after '}'")
        return True

    def virtual(self, toks: list[Token]) -> LvsVirtual:
        head = toks[0]
        virtual = LvsVirtual(self.block_header(toks), head.line, failover=head.text == "failover")
        while True:
            line = self.next_line(head)
            assert line is not None
            if self.close_ok(line):
                return virtual
            if line[0].text == "server":
                server = LvsServer(
                    self.block_header(line), line[0].line, int_value(virtual.values, "port", 80)
                )
                self.server(line[0], server)
                virtual.servers.append(server)
                continue
            self.setting(line, VIRTUAL_KEYS, virtual.values, virtual.lines, f"setting in {head.text} block")

    def server(self, head: Token, server: LvsServer) -> None:
        while True:
            line = self.next_line(head)
            assert line is not None
            if self.close_ok(line):
                return
            self.setting(line, SERVER_KEYS, server.values, server.lines, "setting in server block")

    def setting(
        self,
        toks: list[Token],
        keys: dict[str, Reader | str],
        values: dict[str, Value],
        lines: dict[str, int],
        what: str,
    ) -> None:
        key = toks[0]
        reader = keys.get(key.text)
        if reader is None or key.quoted:
            if "=" in key.text and key.text != "=":
                raise fail(
                    self.where(key), "'=' must be a token of its own", "key = value with blanks around '='"
                )
            raise fail(self.where(key), f"unknown command ({what})", "one of " + ", ".join(sorted(keys)))
        if len(toks) < 2 or toks[1].text != "=" or toks[1].quoted:
            tok = toks[1] if len(toks) > 1 else None
            where = (
                self.where(tok)
                if tok
                else Position(self.filename, key.line, key.column + len(key.text), END_OF_LINE)
            )
            raise fail(where, "equal (=) expected after command", f"{key.text} = VALUE")
        args = toks[2:]
        if reader == _LIST:
            values[key.text] = self.list_value(key, args)
            lines[key.text] = key.line
            return
        count = 2 if reader == _PAIR else 1
        if len(args) < count:
            last = toks[-1]
            where = Position(
                self.filename,
                last.line,
                last.column + len(last.text) + (2 if last.quoted else 0),
                END_OF_LINE,
            )
            raise fail(
                where, "missing arguments", f"{key.text} = ADDRESS DEVICE" if count == 2 else "a value"
            )
        if len(args) > count:
            extra = args[count]
            if extra.text.startswith("#") and not extra.quoted:
                raise fail(
                    self.where(extra),
                    "unexpected arguments: lvs.cf has no end-of-line comments",
                    "'#' only at the start of a line",
                )
            raise fail(self.where(extra), "unexpected arguments", "end of line")
        if reader == _PAIR:
            address = _address(args[0].text, self.where(args[0]))
            assert isinstance(address, IPv4Address)
            values[key.text] = (address, args[1].text)
        else:
            assert callable(reader)
            values[key.text] = reader(args[0].text, self.where(args[0]))
        lines[key.text] = key.line

    def list_value(self, key: Token, args: list[Token]) -> tuple[str, ...]:
        if not args or args[0].text != "[":
            where = (
                self.where(args[0])
                if args
                else Position(self.filename, key.line, key.column + len(key.text), END_OF_LINE)
            )
            raise fail(where, "list expected", f"{key.text} = [ ITEM ... ]")
        items: list[str] = []
        for tok in args[1:]:
            if tok.text == "]" and not tok.quoted:
                rest = args[len(items) + 2 :]
                if rest:
                    raise fail(self.where(rest[0]), "unexpected arguments", "end of line after ']'")
                return tuple(items)
            items.append(tok.text)
        last = args[-1]
        raise fail(
            Position(self.filename, last.line, last.column + len(last.text), END_OF_LINE),
            "list expected: missing ']'",
            "]",
        )


def parse_lvs(text: str, filename: str) -> LvsFile:
    """Read lvs.cf text; raises `ConfigErrors` (one positioned error) on anything lvsconfig.c rejects."""
    return _Parser(filename, text).parse()
