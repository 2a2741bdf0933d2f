r"""Tokens of the BalanceNG configuration dialect.

The dialect is line oriented: a statement ends at the end of its line, so NEWLINE is a token. Words are
runs of anything but blanks, braces, commas and double quotes (addresses, `src+port`, `33000-33999`
and paths are single words); a word of digits only is a NUMBER. Quoted strings take the escapes
`\"` and `\\` of BalanceNG plus `\n`, `\r`, `\t`, `\xHH`, `\uHHHH` and `\UHHHHHHHH` (needed for
send/expect strings, and so that the writer can spell any string); any other backslash is kept as
written, so regular expressions such as `"\d+"` need no doubling.

`//` starts a comment to the end of the line when it begins a token (after a blank or at the start of a
line); inside a word such as `http://x` it is part of the word. Columns count characters from 1; a
tab is one column.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dsrlb.config.errors import END_OF_FILE, END_OF_LINE, ConfigError, ConfigErrors, Position


class Kind(enum.Enum):
    WORD = "word"
    NUMBER = "number"
    STRING = "string"
    LBRACE = "{"
    RBRACE = "}"
    COMMA = ","
    NEWLINE = "end of line"
    EOF = "end of file"


@dataclass(frozen=True)
class Token:
    kind: Kind
    text: str  # the value: word text, decoded string contents, the punctuation itself
    file: str
    line: int
    column: int

    @property
    def position(self) -> Position:
        """The token's position; strings show with their quotes, so errors quote what was written."""
        if self.kind is Kind.STRING:
            shown = '"' + self.text + '"'
        elif self.kind is Kind.NEWLINE:
            shown = END_OF_LINE
        elif self.kind is Kind.EOF:
            shown = END_OF_FILE
        else:
            shown = self.text
        return Position(self.file, self.line, self.column, shown)


_PUNCTUATION = {"{": Kind.LBRACE, "}": Kind.RBRACE, ",": Kind.COMMA}
_WORD_STOP = frozenset(' \t\r\n{},"')
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
_HEX = frozenset("0123456789abcdefABCDEF")
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


def _fail(file: str, line: int, column: int, token: str, message: str, expected: str | None = None) -> None:
    raise ConfigErrors([ConfigError(file, line, column, token, message, expected)])


def tokenize(text: str, file: str = "<string>") -> list[Token]:
    """All tokens of `text`, ending with EOF. Raises ConfigErrors on the first lexical error."""
    tokens: list[Token] = []
    line, line_start, i, n = 1, 0, 0, len(text)
    while i < n:
        ch = text[i]
        column = i - line_start + 1
        if ch in " \t\r\f\v":
            i += 1
        elif ch == "\n":
            tokens.append(Token(Kind.NEWLINE, "\n", file, line, column))
            i += 1
            line, line_start = line + 1, i
        elif ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif ch in _PUNCTUATION:
            tokens.append(Token(_PUNCTUATION[ch], ch, file, line, column))
            i += 1
        elif ch == '"':
            value, i = _read_string(text, i, file, line, line_start)
            tokens.append(Token(Kind.STRING, value, file, line, column))
        elif not ch.isprintable():
            _fail(
                file,
                line,
                column,
                ch,
                f"unexpected control character U+{ord(ch):04X}",
                "printable text (use a quoted string with \\xHH)",
            )
        else:
            start = i
            while i < n and text[i] not in _WORD_STOP and text[i].isprintable():
                i += 1
            word = text[start:i]
            kind = Kind.NUMBER if word.isascii() and word.isdigit() else Kind.WORD
            tokens.append(Token(kind, word, file, line, column))
    tokens.append(Token(Kind.EOF, "", file, line, i - line_start + 1))
    return tokens


def _read_string(text: str, start: int, file: str, line: int, line_start: int) -> tuple[str, int]:
    """Decode the quoted string opening at `start`; returns its value and the index after it."""
    out: list[str] = []
    i, n = start + 1, len(text)
    while True:
        if i >= n or text[i] == "\n":
            _fail(
                file,
                line,
                start - line_start + 1,
                text[start:i][:40],
                "unterminated string",
                'a closing " on the same line',
            )
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[nxt])
                i += 2
                continue
            if nxt in _HEX_ESCAPES:
                width = _HEX_ESCAPES[nxt]
                digits = text[i + 2 : i + 2 + width]
                if len(digits) != width or not set(digits) <= _HEX or int(digits, 16) > 0x10FFFF:
                    _fail(
                        file,
                        line,
                        i - line_start + 1,
                        text[i : i + 2 + width],
                        f"bad \\{nxt} escape",
                        f"{width} hex digits after \\{nxt}",
                    )
                out.append(chr(int(digits, 16)))
                i += 2 + width
                continue
        if not ch.isprintable() and ch != "\t":
            _fail(
                file,
                line,
                i - line_start + 1,
                ch,
                f"control character U+{ord(ch):04X} in a string",
                "printable text or an escape (\\n \\r \\t \\xHH)",
            )
        out.append(ch)
        i += 1
