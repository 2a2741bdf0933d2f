"""The configuration language: BalanceNG dialect in, `dsrlb.model.Config` out, and back.

    from dsrlb.config import load, loads, write
    config = load("/etc/dsrlb/dsrlb.conf")      # raises ConfigErrors (str() = one line per error)
    text = write(config)                         # canonical text; loads(text) == config

`load` raises OSError when the file cannot be read. A file that is not UTF-8 is a ConfigError at the
first bad byte. Parse errors stop at the first one; semantic errors are all reported.
"""

from __future__ import annotations

from pathlib import Path

from dsrlb.config.errors import ConfigError, ConfigErrors, Position, SourceMap
from dsrlb.config.parser import ParseResult, parse
from dsrlb.config.validate import validate
from dsrlb.config.writer import write
from dsrlb.model import Config

DEFAULT_CONFIG_PATH = "/etc/dsrlb/dsrlb.conf"


def _decode(data: bytes, filename: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise ConfigErrors(
            [ConfigError(filename, line, column, f"\\x{bad}", "the file is not valid UTF-8", "UTF-8 text")]
        ) from None


def parse_checked(text: str | bytes, filename: str = "<string>") -> ParseResult:
    """Parse and validate; the result keeps the SourceMap for callers that report on positions."""
    if isinstance(text, bytes):
        text = _decode(text, filename)
    result = parse(text, filename)
    errors = sorted(
        [*result.pending, *validate(result.config, result.where)], key=lambda e: (e.line, e.column)
    )
    if errors:
        raise ConfigErrors(errors)
    return result


def loads(text: str | bytes, filename: str = "<string>") -> Config:
    """The Config written in `text`; raises ConfigErrors on any problem."""
    return parse_checked(text, filename).config


def load(path: str | Path) -> Config:
    """The Config in file `path`; raises OSError if it cannot be read, ConfigErrors if it is bad."""
    return loads(Path(path).read_bytes(), str(path))


__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "ParseResult",
    "Position",
    "SourceMap",
    "load",
    "loads",
    "parse_checked",
    "validate",
    "write",
]
