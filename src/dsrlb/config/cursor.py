"""A cursor over the token list with the value readers the grammar needs.

Each reader consumes the tokens of one value (a number, an address, a comma list, a port range list,
the argument list of a health check) or raises `ConfigErrors` with the position of the first token that
does not fit and a description of what would have fitted. Readers never consume the end of the line:
the grammar decides what may follow a statement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from ipaddress import AddressValueError, IPv4Address, IPv6Address
from typing import TypeVar

from dsrlb.config.errors import ConfigError, ConfigErrors, Position
from dsrlb.config.keywords import MAX_ID, MAX_NUMBER_DIGITS, one_of, suggestion
from dsrlb.config.lexer import Kind, Token
from dsrlb.model import IPAddress, PortRange

V = TypeVar("V")
_VALUE_KINDS = (Kind.WORD, Kind.NUMBER, Kind.STRING)


class Cursor:
    def __init__(self, tokens: list[Token]) -> None:
        self._tokens = tokens
        self._index = 0

    # --- movement -------------------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> Token:
        return self._tokens[min(self._index + ahead, len(self._tokens) - 1)]

    def next(self) -> Token:
        token = self.peek()
        if token.kind is not Kind.EOF:
            self._index += 1
        return token

    def at_line_end(self) -> bool:
        return self.peek().kind in (Kind.NEWLINE, Kind.EOF)

    def skip_newlines(self) -> None:
        while self.peek().kind is Kind.NEWLINE:
            self.next()

    @staticmethod
    def fail(token: Token | Position, message: str, expected: str | None = None) -> ConfigErrors:
        where = token.position if isinstance(token, Token) else token
        return ConfigErrors([ConfigError.at(where, message, expected)])

    def expect(self, kind: Kind, message: str, expected: str) -> Token:
        token = self.peek()
        if token.kind is not kind:
            raise self.fail(token, message, expected)
        return self.next()

    # --- scalar values --------------------------------------------------------------------------

    def value_token(self, what: str) -> Token:
        """Any single value (word, number or string) for `what`."""
        token = self.peek()
        if token.kind not in _VALUE_KINDS:
            raise self.fail(token, f"missing {what}", what)
        return self.next()

    def text(self, what: str) -> tuple[str, Token]:
        token = self.value_token(what)
        return token.text, token

    def integer(self, what: str) -> tuple[int, Token]:
        token = self.peek()
        if token.kind is not Kind.NUMBER:
            raise self.fail(token, f"{what} must be a whole number", f"a number for {what}")
        return number_value(token, what), self.next()

    def decimal(self, what: str) -> tuple[float, Token]:
        """A non-negative decimal such as `1`, `0.5` or `1e-2` (no nan, no infinity)."""
        token = self.peek()
        text = token.text
        ok = token.kind in (Kind.NUMBER, Kind.WORD) and 0 < len(text) <= 32
        ok = ok and all(ch in "0123456789.eE+-" for ch in text) and text[0].isdigit()
        if ok:
            try:
                value = float(text)
            except ValueError:
                ok = False
        if not ok:
            raise self.fail(token, f"{what} must be a number", "a number of seconds such as 1 or 0.5")
        return value, self.next()

    def choice(self, options: Mapping[str, V], what: str) -> tuple[V, Token]:
        token = self.peek()
        if token.kind in (Kind.WORD, Kind.NUMBER) and token.text.lower() in options:
            return options[token.text.lower()], self.next()
        message = f"unknown {what}" if token.kind in _VALUE_KINDS else f"missing {what}"
        close = suggestion(token.text, options) if token.kind is Kind.WORD else None
        if close is not None:
            message += f"; did you mean '{close}'?"
        raise self.fail(token, message, one_of(options))

    def switch(self, what: str) -> tuple[bool, Token]:
        return self.choice({"enable": True, "disable": False}, f"{what} setting")

    def ipv4(self, keyword: str) -> tuple[IPv4Address, Token]:
        token = self.value_token(f"an IPv4 address for {keyword}")
        try:
            return IPv4Address(token.text), token
        except AddressValueError:
            hint = "; this is an IPv6 address, use the *6 keyword" if _looks_v6(token.text) else ""
            raise self.fail(
                token, f"bad IPv4 address for {keyword}{hint}", "an IPv4 address such as 192.0.2.1"
            ) from None

    def ipv6(self, keyword: str) -> tuple[IPv6Address, Token]:
        token = self.value_token(f"an IPv6 address for {keyword}")
        try:
            return IPv6Address(token.text), token
        except AddressValueError:
            raise self.fail(
                token, f"bad IPv6 address for {keyword}", "an IPv6 address such as 2001:db8::1"
            ) from None

    def ip(self, keyword: str) -> tuple[IPAddress, Token]:
        token = self.peek()
        if _looks_v6(token.text):
            return self.ipv6(keyword)
        return self.ipv4(keyword)

    # --- lists ----------------------------------------------------------------------------------

    def comma_list(self, item: Callable[[], tuple[V, Token]]) -> list[tuple[V, Token]]:
        items = [item()]
        while self.peek().kind is Kind.COMMA:
            self.next()
            items.append(item())
        return items

    def id_list(self, what: str) -> list[tuple[int, Token]]:
        """`1,2`, `1-3,7`: ids in the order written, ranges expanded (bounded by MAX_ID)."""
        result: list[tuple[int, Token]] = []
        for (first, last), token in self.comma_list(lambda: self.range_item(what)):
            for value in (first, last):
                if not 1 <= value <= MAX_ID:
                    raise self.fail(token, f"{what} id out of range", f"an id 1-{MAX_ID}")
            result.extend((oid, token) for oid in range(first, last + 1))
        return result

    def range_list(self, what: str) -> tuple[tuple[PortRange, ...], list[Token]]:
        """`80,443,33000-33999` as PortRanges in the order written (validation checks the bounds)."""
        pairs = self.comma_list(lambda: self.range_item(what))
        return tuple(PortRange(a, b) for (a, b), _ in pairs), [tok for _, tok in pairs]

    def range_item(self, what: str) -> tuple[tuple[int, int], Token]:
        token = self.peek()
        parts = token.text.split("-")
        good = token.kind in (Kind.NUMBER, Kind.WORD) and len(parts) in (1, 2)
        good = good and all(p.isascii() and p.isdigit() and len(p) <= MAX_NUMBER_DIGITS for p in parts)
        if not good:
            raise self.fail(token, f"bad {what}", f"a number or a range such as 33000-33999 for {what}")
        first, last = int(parts[0]), int(parts[-1])
        if first > last:
            raise self.fail(token, f"{what} range runs backwards", f"a range low-high such as {last}-{first}")
        return (first, last), self.next()

    def arguments(self, keyword: str, signature: tuple[str, ...], usage: str) -> list[tuple[object, Token]]:
        """A check's comma-separated arguments; signature items are "int" or "str"."""
        values: list[tuple[object, Token]] = []
        for index, kind in enumerate(signature):
            if index:
                separator = self.peek()
                if separator.kind is not Kind.COMMA:
                    raise self.fail(separator, f"{keyword} takes {len(signature)} values", usage)
                self.next()
            if kind == "int":
                values.append(self.integer(f"{keyword} value {index + 1}"))
            else:
                values.append(self.text(f"a string for {keyword}"))
        if self.peek().kind is Kind.COMMA:
            raise self.fail(self.peek(), f"{keyword} takes {len(signature)} values", usage)
        return values


def number_value(token: Token, what: str) -> int:
    if len(token.text) > MAX_NUMBER_DIGITS:
        raise Cursor.fail(token, f"{what} is too large", f"a number of at most {MAX_NUMBER_DIGITS} digits")
    return int(token.text)


def _looks_v6(text: str) -> bool:
    return ":" in text
