"""The BalanceNG-dialect grammar: tokens in, a `Config` plus a `SourceMap` out.

A file is a sequence of statements, one per line. Object statements come in two forms with one
meaning: the block `server 1 { ... }` (one sub-statement per line; the closing brace may end the last
line, so `set { threads 2 }` works) and the one-line `server 1 method rr`, which amends the object or
creates it. A second block for an id that already exists is a "duplicate id" error, and a field given
twice inside one block is an error; one-line statements replace the field (they are amendments, as
when typed at BalanceNG's prompt). register / enable / disable / unregister are applied in file order
to a per-object flag pair, so they may come before or after the object's definition.

Parsing stops at the first syntax error (`ConfigErrors` with one entry). Semantic problems are left
to `validate.py`, except those that cannot be represented in the model (a lifecycle statement naming
an undefined object), which `parse` returns as `pending` errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from dsrlb.config import keywords as kw
from dsrlb.config.cursor import Cursor
from dsrlb.config.errors import ConfigError, Position, SourceMap
from dsrlb.config.lexer import Kind, Token, tokenize
from dsrlb.config.objects import ObjectGrammar, Objects
from dsrlb.model import Config

T = TypeVar("T")


@dataclass
class ParseResult:
    config: Config
    where: SourceMap
    pending: list[ConfigError] = field(default_factory=list)


@dataclass
class _Lifecycle:
    registered: bool = False
    enabled: bool = False
    first_use: Position | None = None  # for "register of an undefined ..." errors


class Parser:
    def __init__(self, text: str, file: str) -> None:
        self.file = file
        self.cursor = Cursor(tokenize(text, file))
        self.where = SourceMap(file)
        self.objects = Objects()
        self.grammar = ObjectGrammar(self.cursor, self.where)
        self.hostname: str | None = None
        self.remark: str | None = None
        self.modules: tuple[str, ...] = ()
        self.settings: dict[str, str] = {}
        self.lifecycle: dict[tuple[str, int], _Lifecycle] = {}

    # --- driver ----------------------------------------------------------------------------------

    def parse(self) -> ParseResult:
        statements: dict[str, Callable[[Token], None]] = {
            "hostname": self._hostname,
            "remark": self._remark,
            "modules": self._modules,
            "set": self._set,
            "interface": self._numbered,
            "network": self._numbered,
            "server": self._numbered,
            "target": self._numbered,
            "vrrp": self._unnumbered,
            "gateway": self._unnumbered,
            "register": self._lifecycle,
            "enable": self._lifecycle,
            "disable": self._lifecycle,
            "unregister": self._lifecycle,
        }
        cursor = self.cursor
        while True:
            cursor.skip_newlines()
            token = cursor.peek()
            if token.kind is Kind.EOF:
                break
            if token.kind is not Kind.WORD or token.text.lower() not in statements:
                raise cursor.fail(token, self._unknown_statement(token), "a statement keyword")
            cursor.next()
            statements[token.text.lower()](token)
            self._end_of_statement()
        return self._result()

    def _unknown_statement(self, token: Token) -> str:
        if token.kind is not Kind.WORD:
            return "a statement must start with a keyword"
        if self.cursor.peek(1).text == "=":
            return "unknown keyword; " + kw.IMPORT_HINT.format(kind="Piranha lvs.cf")
        if token.text.lower() in kw.KEEPALIVED_WORDS:
            return "unknown keyword; " + kw.IMPORT_HINT.format(kind="keepalived.conf")
        close = kw.suggestion(token.text, kw.TOP_LEVEL)
        return "unknown keyword" + (f"; did you mean '{close}'?" if close else "")

    def _end_of_statement(self) -> None:
        token = self.cursor.peek()
        if token.kind not in (Kind.NEWLINE, Kind.EOF):
            raise self.cursor.fail(token, "unexpected text after the statement", "end of line")

    # --- simple top-level statements ------------------------------------------------------------

    def _hostname(self, keyword: Token) -> None:
        self.hostname, token = self.cursor.text("a host name")
        self.where.record("hostname", 0, "", token.position)

    def _remark(self, keyword: Token) -> None:
        self.remark, token = self.cursor.text("a remark (a quoted string)")
        self.where.record("remark", 0, "", token.position)

    def _modules(self, keyword: Token) -> None:
        items = self.cursor.comma_list(lambda: self.cursor.text("a module name"))
        self.modules = tuple(name for name, _ in items)
        self.where.record("modules", 0, "", keyword.position)

    def _set(self, keyword: Token) -> None:
        cursor = self.cursor
        if cursor.peek().kind is not Kind.LBRACE:
            self._setting()
            return
        cursor.next()
        self.grammar.block_body(self._setting, keyword, "a setting name")

    def _setting(self) -> None:
        cursor = self.cursor
        token = cursor.peek()
        if token.kind is not Kind.WORD:
            raise cursor.fail(token, "missing setting name", "a setting name such as threads")
        key = token.text.lower()
        if key not in kw.SET_KEYS:
            close = kw.suggestion(key, kw.SET_KEYS)
            hint = f"; did you mean '{close}'?" if close else ""
            raise cursor.fail(
                token, f"unknown setting{hint}", "a BalanceNG set key (see docs/configuration.md)"
            )
        cursor.next()
        value_kind = kw.SET_KEYS[key]
        if value_kind == "word":
            value, value_token = cursor.text(f"a value for {key}")
        else:
            number, value_token = cursor.integer(f"the value of {key}")
            if value_kind == "flag" and number not in (0, 1):
                raise cursor.fail(value_token, f"{key} is a switch", "0 or 1")
            value = str(number)
        self.settings[key] = value
        self.where.record("set", 0, key, token.position)
        # Range errors point at the value, as they do for object fields (`timeout 0`).
        self.where.record("set", 0, f"{key}.value", value_token.position)

    # --- objects ---------------------------------------------------------------------------------

    def _numbered(self, keyword: Token) -> None:
        kind = keyword.text.lower()
        oid, id_token = self.cursor.integer(f"the {kind} id")
        if not 1 <= oid <= kw.MAX_ID:
            raise self.cursor.fail(id_token, f"{kind} id out of range", f"an id 1-{kw.MAX_ID}")
        self.grammar.statement(self.objects, kind, oid, keyword, id_token)

    def _unnumbered(self, keyword: Token) -> None:
        self.grammar.statement(self.objects, keyword.text.lower(), 0, keyword, None)

    def _lifecycle(self, keyword: Token) -> None:
        verb = keyword.text.lower()
        kind, _ = self.cursor.choice(kw.LIFECYCLE_OBJECTS, f"object to {verb}")
        for oid, token in self.cursor.id_list(kind):
            state = self.lifecycle.setdefault((kind, oid), _Lifecycle())
            if state.first_use is None:
                state.first_use = token.position
            if verb == "register":
                state.registered = True
            elif verb == "unregister":
                state.registered = state.enabled = False
            elif verb == "enable":
                state.enabled = True
                self.where.record(kind, oid, "enable", token.position)
            else:
                state.enabled = False
            if verb in ("register", "unregister"):
                self.where.record(kind, oid, "register", token.position)

    # --- result ----------------------------------------------------------------------------------

    def _result(self) -> ParseResult:
        pending: list[ConfigError] = []
        objects = self.objects
        tables: dict[str, dict[int, Any]] = {
            "interface": objects.interfaces,
            "network": objects.networks,
            "server": objects.servers,
            "target": objects.targets,
        }
        for (kind, oid), state in self.lifecycle.items():
            table = tables[kind]
            if oid not in table:
                assert state.first_use is not None
                pending.append(
                    ConfigError.at(
                        state.first_use, f"{kind} {oid} is not defined", f"the id of a defined {kind}"
                    )
                )
                continue
            table[oid] = replace(table[oid], registered=state.registered, enabled=state.enabled)
        config = Config(
            hostname=self.hostname,
            remark=self.remark,
            modules=self.modules,
            settings=tuple(sorted(self.settings.items())),
            interfaces=_sorted(objects.interfaces),
            networks=_sorted(objects.networks),
            vrrp=objects.vrrp,
            gateway=objects.gateway,
            servers=_sorted(objects.servers),
            targets=_sorted(objects.targets),
        )
        return ParseResult(config, self.where, pending)


def _sorted(table: dict[int, T]) -> tuple[T, ...]:
    return tuple(table[oid] for oid in sorted(table))


def parse(text: str, file: str = "<string>") -> ParseResult:
    """Parse `text`; raises ConfigErrors on the first syntax error."""
    return Parser(text, file).parse()
