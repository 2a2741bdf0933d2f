"""keepalived.conf syntax: tokens, comments, `{ }` blocks and `include` (keepalived's parser.c rules).

- A token starting with `!` or `#` starts a comment that runs to the end of the line.
- `"..."` is one token (spaces allowed, no escapes); `{` and `}` are tokens of their own even when
  written against a word (`real_server 192.0.2.5 80{`).
- A statement is a keyword and its arguments up to the end of the line, optionally followed by a
  `{ ... }` block of statements (the `{` may also stand alone on the next line).
- `include GLOB` is replaced by the statements of the files it matches, sorted, relative to the
  directory of the including file; a pattern that matches nothing is reported as a warning.

The result is a tree of `Statement`s whose tokens keep file, line and column for errors and warnings.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address

from dsrlb.config.errors import END_OF_LINE, Position
from dsrlb.config.importers.common import end_of_file, fail
from dsrlb.model import IPAddress

MAX_INCLUDE_DEPTH = 8


@dataclass(frozen=True)
class Token:
    text: str
    file: str
    line: int
    column: int
    quoted: bool = False

    @property
    def position(self) -> Position:
        return Position(self.file, self.line, self.column, self.text)

    @property
    def end_of_line(self) -> Position:
        width = len(self.text) + (2 if self.quoted else 0)
        return Position(self.file, self.line, self.column + width, END_OF_LINE)


@dataclass
class Statement:
    keyword: Token
    args: list[Token] = field(default_factory=list)
    block: list[Statement] | None = None

    @property
    def name(self) -> str:
        return self.keyword.text

    @property
    def line(self) -> int:
        return self.keyword.line

    @property
    def file(self) -> str:
        return self.keyword.file


@dataclass(frozen=True)
class IncludeNote:
    """An include that matched no file (keepalived logs it and goes on)."""

    file: str
    line: int
    pattern: str


def tokenize(text: str, filename: str) -> list[list[Token]]:
    """Tokens per line (empty lines and comment-only lines give empty lists)."""
    lines: list[list[Token]] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        raw = raw.rstrip("\r")
        toks: list[Token] = []
        i, n = 0, len(raw)
        while i < n:
            ch = raw[i]
            if ch in " \t\f\v":
                i += 1
            elif ch in "!#":
                break
            elif ch in "{}":
                toks.append(Token(ch, filename, number, i + 1))
                i += 1
            elif ch == '"':
                end = raw.find('"', i + 1)
                if end < 0:
                    raise fail(
                        Position(filename, number, i + 1, raw[i:]), "unterminated string", 'a closing "'
                    )
                toks.append(Token(raw[i + 1 : end], filename, number, i + 1, quoted=True))
                i = end + 1
            else:
                start = i
                while i < n and raw[i] not in ' \t\f\v{}"':
                    i += 1
                toks.append(Token(raw[start:i], filename, number, start + 1))
        lines.append(toks)
    return lines


ReadFile = Callable[[str], str]


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


@dataclass
class _Source:
    lines: list[list[Token]]
    filename: str
    end: Position
    row: int = 0
    col: int = 0

    def peek(self) -> Token | None:
        while self.row < len(self.lines):
            if self.col < len(self.lines[self.row]):
                return self.lines[self.row][self.col]
            self.row, self.col = self.row + 1, 0
        return None

    def take(self) -> Token:
        tok = self.peek()
        assert tok is not None
        self.col += 1
        return tok

    def on_current_line(self, line: int) -> bool:
        tok = self.peek()
        return tok is not None and tok.line == line


class KeepalivedReader:
    """Parses a file and its includes into statements. `read_file` and `expand_glob` are the only I/O."""

    def __init__(
        self,
        read_file: ReadFile = _read_text,
        expand_glob: Callable[[str], list[str]] | None = None,
    ) -> None:
        self.read_file = read_file
        self.expand_glob = expand_glob or (lambda pattern: sorted(glob.glob(pattern)))
        self.notes: list[IncludeNote] = []

    def parse(self, text: str, filename: str, depth: int = 0, stack: tuple[str, ...] = ()) -> list[Statement]:
        lines = tokenize(text, filename)
        source = _Source(lines, filename, end_of_file(text, filename))
        statements = self._statements(source, None, depth, (*stack, os.path.abspath(filename)))
        return statements

    def _statements(
        self, source: _Source, opener: Statement | None, depth: int, stack: tuple[str, ...]
    ) -> list[Statement]:
        result: list[Statement] = []
        while True:
            tok = source.peek()
            if tok is None:
                if opener is not None:
                    where = source.end
                    raise fail(where, f"unterminated block '{opener.name}' opened at line {opener.line}", "}")
                return result
            if tok.text == "}" and not tok.quoted:
                source.take()
                if opener is None:
                    raise fail(tok.position, "unbalanced '}'", "a keyword")
                return result
            if tok.text == "{" and not tok.quoted:
                previous = result[-1] if result else None
                if previous is None or previous.block is not None:
                    raise fail(tok.position, "'{' without a keyword", "a keyword before '{'")
                source.take()
                previous.block = self._statements(source, previous, depth, stack)
                continue
            statement = Statement(source.take())
            while source.on_current_line(statement.line):
                nxt = source.peek()
                assert nxt is not None
                if nxt.text in "{}" and not nxt.quoted:
                    break
                statement.args.append(source.take())
            nxt = source.peek()
            if nxt is not None and nxt.text == "{" and not nxt.quoted and nxt.line == statement.line:
                source.take()
                statement.block = self._statements(source, statement, depth, stack)
            if statement.name == "include" and not statement.keyword.quoted:
                result.extend(self._include(statement, depth, stack))
            else:
                result.append(statement)

    def _include(self, statement: Statement, depth: int, stack: tuple[str, ...]) -> list[Statement]:
        if len(statement.args) != 1 or statement.block is not None:
            where = statement.args[1].position if len(statement.args) > 1 else statement.keyword.end_of_line
            raise fail(where, "include takes one file name or pattern", "include PATH-OR-GLOB")
        pattern = statement.args[0].text
        if not os.path.isabs(pattern):
            pattern = os.path.join(os.path.dirname(statement.file), pattern)
        if depth + 1 > MAX_INCLUDE_DEPTH:
            raise fail(
                statement.args[0].position, "includes nested too deeply", f"at most {MAX_INCLUDE_DEPTH}"
            )
        matches = self.expand_glob(pattern)
        if not matches:
            self.notes.append(IncludeNote(statement.file, statement.line, statement.args[0].text))
        result: list[Statement] = []
        for path in matches:
            if os.path.abspath(path) in stack:
                raise fail(statement.args[0].position, f"include loop: {path} includes itself", "no cycles")
            try:
                text = self.read_file(path)
            except OSError as exc:
                raise fail(
                    statement.args[0].position,
                    f"cannot read included file {path}: {exc.strerror}",
                    "a readable file",
                ) from None
            result.extend(self.parse(text, path, depth + 1, stack))
        return result


# --- argument readers, shared by the keepalived mapping modules -----------------------------------


def expect_args(stmt: Statement, low: int, high: int, usage: str) -> list[Token]:
    if len(stmt.args) < low:
        where = stmt.args[-1].end_of_line if stmt.args else stmt.keyword.end_of_line
        raise fail(where, f"missing argument for {stmt.name}", usage)
    if len(stmt.args) > high:
        raise fail(stmt.args[high].position, f"unexpected argument for {stmt.name}", usage)
    return stmt.args


def expect_block(stmt: Statement) -> list[Statement]:
    if stmt.block is None:
        raise fail(stmt.keyword.end_of_line, f"{stmt.name} needs a block", "{")
    return stmt.block


def integer(tok: Token, low: int, high: int) -> int:
    text = tok.text
    if not text.isdigit():
        raise fail(tok.position, "bad number", f"an integer {low}..{high}")
    value = int(text)
    if not low <= value <= high:
        raise fail(tok.position, "number out of range", f"{low}..{high}")
    return value


def signed_integer(tok: Token, low: int, high: int) -> int:
    text = tok.text
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isdigit():
        raise fail(tok.position, "bad number", f"an integer {low}..{high}")
    value = int(text)
    if not low <= value <= high:
        raise fail(tok.position, "number out of range", f"{low}..{high}")
    return value


def seconds(tok: Token, low: float = 0.0) -> float:
    try:
        value = float(tok.text)
    except ValueError:
        raise fail(tok.position, "bad number", "seconds, e.g. 6 or 0.5") from None
    if not low <= value <= 86400 or value != value:
        raise fail(tok.position, "number out of range", f"{low:g}..86400 seconds")
    return value


def address(tok: Token) -> IPAddress:
    try:
        return ip_address(tok.text)
    except ValueError:
        raise fail(tok.position, "bad IP address", "an IPv4 or IPv6 address") from None


def unknown(stmt: Statement, where: str, known: list[str]) -> Exception:
    return fail(stmt.keyword.position, f"unknown keyword in {where}", "one of " + ", ".join(sorted(known)))


def parse_keepalived(
    text: str,
    filename: str,
    read_file: ReadFile = _read_text,
    expand_glob: Callable[[str], list[str]] | None = None,
) -> tuple[list[Statement], list[IncludeNote]]:
    """Parse keepalived.conf text (includes resolved). Raises `ConfigErrors` on syntax errors."""
    reader = KeepalivedReader(read_file, expand_glob)
    statements = reader.parse(text, filename)
    return statements, reader.notes
