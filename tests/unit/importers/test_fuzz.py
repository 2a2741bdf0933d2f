"""Fuzzing: whatever the bytes, the importers return a result or raise ConfigErrors, nothing else."""

from __future__ import annotations

import contextlib
from importlib.resources import files
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsrlb.config import loads, write
from dsrlb.config.errors import ConfigErrors
from dsrlb.config.importers import ImportResult, import_keepalived, import_lvs

SEED_004 = files("dsrlb.examples").joinpath("seed004-lvs.cf").read_text()
KEEPALIVED = (Path(__file__).parent / "data" / "keepalived.conf").read_text()
# Files the fuzzer cannot reach by include (an include of an absolute glob would read the disk).
KEEPALIVED = KEEPALIVED.replace("include conf.d/*.conf", "")

ALPHABET = st.sampled_from(list(" \t\n{}=#!\"'[]/.:-0123456789abcdefxXvirtualserverport\\\r"))


def _mutate(text: str, edits: list[tuple[int, int, str]]) -> str:
    for position, delete, insert in edits:
        at = position % (len(text) + 1)
        text = text[:at] + insert + text[at + delete :]
    return text


EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 8), st.text(ALPHABET, max_size=8)),
                 min_size=1, max_size=4)  # fmt: skip


def _checked(convert: object, text: str) -> None:
    try:
        result = convert(text)  # type: ignore[operator]
    except ConfigErrors as exc:
        assert exc.errors and all(e.line >= 1 and e.column >= 1 for e in exc.errors)
        return
    assert isinstance(result, ImportResult)
    # A converted file must either write canonically or be rejected by the validator, never crash it.
    with contextlib.suppress(ConfigErrors):
        loads(write(result.config), "converted")


def _no_includes(pattern: str) -> list[str]:
    return []


def _lvs(text: str) -> ImportResult:
    return import_lvs(text, "lvs.cf")


def _keepalived(text: str) -> ImportResult:
    return import_keepalived(text, "keepalived.conf", expand_glob=_no_includes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EDITS)
def test_mutated_lvs_cf(edits: list[tuple[int, int, str]]) -> None:
    _checked(_lvs, _mutate(SEED_004, edits))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EDITS)
def test_mutated_keepalived_conf(edits: list[tuple[int, int, str]]) -> None:
    _checked(_keepalived, _mutate(KEEPALIVED, edits))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    _checked(_lvs, text)
    _checked(_keepalived, text)
