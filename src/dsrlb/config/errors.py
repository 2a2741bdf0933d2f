"""Configuration errors: one precise, positioned message per problem.

Every problem found in a configuration becomes a `ConfigError` that names the file, line and column,
the offending token, what is wrong and what was expected, rendered like a compiler diagnostic so that
editors can jump to it:

    dsrlb.conf:12:18: error: unknown method (got 'rrr'; expected rr, wrr, ...)

`ConfigErrors` is the one exception the loader raises; it carries every error found (parse errors stop
at the first one, validation reports them all).
"""

from __future__ import annotations

from dataclasses import dataclass

# Pseudo-token texts for the two places where there is no token to show.
END_OF_LINE = "\n"
END_OF_FILE = ""


def describe_token(token: str) -> str:
    """How a token appears after "got": quoted text, or the words for end of line / end of file."""
    if token == END_OF_LINE:
        return "end of line"
    if token == END_OF_FILE:
        return "end of file"
    shown = token if len(token) <= 60 else token[:57] + "..."
    # Escape what would break the one-line rendering (control characters, quotes stay readable).
    escaped = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in shown)
    return f"'{escaped}'"


@dataclass(frozen=True)
class Position:
    """Where something was written: file, 1-based line and column, and the token found there."""

    file: str
    line: int
    column: int
    token: str


@dataclass(frozen=True)
class ConfigError:
    """One problem in a configuration, at one position."""

    file: str
    line: int
    column: int
    token: str
    message: str
    expected: str | None = None

    @classmethod
    def at(cls, where: Position, message: str, expected: str | None = None) -> ConfigError:
        return cls(where.file, where.line, where.column, where.token, message, expected)

    def __str__(self) -> str:
        detail = f"got {describe_token(self.token)}"
        if self.expected:
            detail += f"; expected {self.expected}"
        return f"{self.file}:{self.line}:{self.column}: error: {self.message} ({detail})"

    def as_dict(self) -> dict[str, str | int | None]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "token": self.token,
            "message": self.message,
            "expected": self.expected,
        }


class ConfigErrors(Exception):
    """Raised by the loader: a non-empty list of `ConfigError`, str() is one line per error."""

    def __init__(self, errors: list[ConfigError]) -> None:
        if not errors:
            raise ValueError("ConfigErrors needs at least one error")
        self.errors: tuple[ConfigError, ...] = tuple(errors)
        super().__init__("\n".join(str(e) for e in self.errors))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)

    def __len__(self) -> int:
        return len(self.errors)


class SourceMap:
    """Where each object and field of a parsed Config was written (a side table: the model is frozen).

    Keys are (kind, id, field): kind is the statement keyword ("server", "target", "vrrp", "set", ...),
    id the object's number (0 for the unnumbered vrrp, gateway and set), field "" for the object's own
    defining statement, a field name, "checks.N" for the N-th check, "targets[3]" for one item of a
    list, or "enable" / "register" for the lifecycle statement that last touched the object. Lookups
    fall back from field to object to the top of the file, so a Config built by an importer (empty
    map) still gets errors with a usable position.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self._positions: dict[tuple[str, int, str], Position] = {}

    def record(self, kind: str, oid: int, fieldname: str, where: Position, *, first: bool = False) -> None:
        key = (kind, oid, fieldname)
        if first and key in self._positions:
            return
        self._positions[key] = where

    def has(self, kind: str, oid: int, fieldname: str = "") -> bool:
        return (kind, oid, fieldname) in self._positions

    def find(self, kind: str, oid: int, fieldname: str = "") -> Position:
        """The most precise recorded position: "checks.0.status" falls back to "checks.0", then to the
        object; "ports[1]" falls back to "ports"."""
        name = fieldname
        while True:
            if (kind, oid, name) in self._positions:
                return self._positions[(kind, oid, name)]
            if not name:
                return Position(self.file, 1, 1, kind)
            cut = max(name.rfind("."), name.rfind("["))
            name = name[:cut] if cut > 0 else ""
