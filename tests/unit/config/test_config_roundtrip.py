"""`loads(write(c)) == c` for every valid Config, and for every shipped seed."""

from __future__ import annotations

import pytest
from config_strategies import configs
from hypothesis import HealthCheck, given, settings

from dsrlb.config import loads, validate, write
from dsrlb.examples import list_examples
from dsrlb.model import Config


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_generated_configs_are_valid_and_round_trip(config: Config) -> None:
    assert validate(config) == []
    text = write(config)
    assert loads(text, "<written>") == config
    # Canonical: writing the re-read config gives the same text.
    assert write(loads(text)) == text


@pytest.mark.parametrize("name", [e.name for e in list_examples(native_only=True)])
def test_seed_round_trips(name: str) -> None:
    from dsrlb.examples import example

    config = loads(example(name).text(), name)
    text = write(config)
    assert loads(text) == config
    assert write(loads(text)) == text
