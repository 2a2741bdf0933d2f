"""Fuzz: whatever the input, the loader returns a Config or raises ConfigErrors, nothing else."""

from __future__ import annotations

from config_strategies import configs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsrlb.config import ConfigErrors, loads, write
from dsrlb.config.keywords import (
    CHECK_KEYWORDS,
    LIFECYCLE_OBJECTS,
    NETWORK_KEYWORDS,
    SERVER_KEYWORDS,
    SET_KEYS,
    TARGET_KEYWORDS,
    TOP_LEVEL,
    VRRP_KEYWORDS,
)
from dsrlb.model import Config

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

GRAMMAR_WORDS = sorted(
    {
        *TOP_LEVEL,
        *LIFECYCLE_OBJECTS,
        *NETWORK_KEYWORDS,
        *SERVER_KEYWORDS,
        *TARGET_KEYWORDS,
        *VRRP_KEYWORDS,
        *CHECK_KEYWORDS,
        *SET_KEYS,
        "enable",
        "disable",
        "raw",
        "tcp",
        "udp",
        "src",
        "src+port",
        "dst+port",
        "rr",
        "agent",
        "1",
        "0",
        "80",
        "65536",
        "1-3",
        "3-1",
        "192.0.2.1",
        "2001:db8::1",
        "255.255.255.0",
        "{",
        "}",
        ",",
        "\n",
        '"x"',
        '"',
        "//",
        "=",
        "-",
        "99999999999999999999999",
    }
)


def load_or_errors(text: str | bytes) -> Config | ConfigErrors:
    try:
        return loads(text, "fuzz.conf")
    except ConfigErrors as errors:
        for error in errors.errors:  # every error renders and has a real position
            assert error.line >= 1 and error.column >= 1 and str(error).startswith("fuzz.conf:")
        return errors


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    load_or_errors(data)


@FUZZ
@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    load_or_errors(text)


@FUZZ
@given(st.lists(st.sampled_from(GRAMMAR_WORDS), max_size=60), st.sampled_from([" ", "  ", "\t"]))
def test_token_soup(words: list[str], blank: str) -> None:
    load_or_errors(blank.join(words))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs(), st.data())
def test_mutated_valid_configs(config: Config, data: st.DataObject) -> None:
    """Valid text with one line deleted, duplicated or truncated: a Config or precise errors."""
    lines = write(config).splitlines(keepends=True)
    if not lines:
        return
    index = data.draw(st.integers(0, len(lines) - 1))
    action = data.draw(st.sampled_from(["delete", "duplicate", "truncate", "swap"]))
    if action == "delete":
        del lines[index]
    elif action == "duplicate":
        lines.insert(index, lines[index])
    elif action == "truncate":
        lines[index] = lines[index][: data.draw(st.integers(0, max(0, len(lines[index]) - 1)))] + "\n"
    else:
        other = data.draw(st.integers(0, len(lines) - 1))
        lines[index], lines[other] = lines[other], lines[index]
    load_or_errors("".join(lines))
