"""The command registry: BalanceNG-style parsing, errors with suggestions, help, completion, execution."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsrlb.control.commands import (
    Command,
    CommandError,
    CommandResult,
    Param,
    ParamKind,
    ParsedArgs,
    Registry,
    parse_ids,
    split_line,
)
from dsrlb.control.protocol import ErrorCode, Request


@pytest.fixture
def registry(demo: Any) -> Registry:
    result: Registry = demo.registry()
    return result


@pytest.mark.parametrize(
    ("line", "command", "values"),
    [
        ("show targets", "show targets", {}),
        ("SHOW Targets", "show targets", {}),
        ("show target 3", "show targets", {"ids": (3,)}),
        ("enable target 3", "enable targets", {"ids": (3,)}),
        ("disable targets 1,2", "disable targets", {"ids": (1, 2)}),
        ("disable targets 2,1,2,5-7", "disable targets", {"ids": (2, 1, 5, 6, 7)}),
        ("drain target 2", "drain targets", {"ids": (2,)}),
        ("reload", "reload", {}),
        ("help", "help", {}),
        ("help show targets", "help", {"command": "show targets"}),
        ("show config", "show config", {}),
        ("  show   servers  ", "show servers", {}),
    ],
)
def test_lines_parse_into_calls(registry: Registry, line: str, command: str, values: dict[str, Any]) -> None:
    call = registry.parse_line(line)
    assert call.command.name == command
    assert dict(call.args.values) == values


def test_parse_ids() -> None:
    assert parse_ids("4") == (4,)
    assert parse_ids("1, 3-4") == (1, 3, 4)
    for bad in ("", "a", "3-", "-3", "5-2", "1,,2", "1-100000"):
        with pytest.raises(ValueError):
            parse_ids(bad)


@pytest.mark.parametrize(
    ("line", "code", "fragment"),
    [
        ("disable targets", ErrorCode.BAD_ARGUMENTS, "missing IDS; usage: disable targets IDS"),
        ("disable targets x", ErrorCode.BAD_ARGUMENTS, "'x' is not an id"),
        ("enable target 3 now", ErrorCode.BAD_ARGUMENTS, "unexpected 'now' after 'enable targets'"),
        ("reload please", ErrorCode.BAD_ARGUMENTS, "unexpected 'please'"),
        ("subscribe news", ErrorCode.BAD_ARGUMENTS, "'news' is not one of events"),
        ("", ErrorCode.UNKNOWN_COMMAND, "empty command"),
        ('show "targets', ErrorCode.BAD_ARGUMENTS, "cannot split the line"),
    ],
)
def test_bad_lines_give_clear_errors(registry: Registry, line: str, code: ErrorCode, fragment: str) -> None:
    with pytest.raises(CommandError) as caught:
        registry.parse_line(line)
    assert caught.value.code is code
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    ("line", "suggestion"),
    [
        ("show tagrets", "show targets"),
        ("shwo targets", "show targets"),
        ("relaod", "reload"),
        ("disabel target 3", "disable target"),
        ("show bogus", "show config"),  # nothing close: the phrases that start with `show`
    ],
)
def test_unknown_commands_get_suggestions(registry: Registry, line: str, suggestion: str) -> None:
    with pytest.raises(CommandError) as caught:
        registry.parse_line(line)
    assert caught.value.code is ErrorCode.UNKNOWN_COMMAND
    assert suggestion in caught.value.suggestions
    assert "try 'help'" in caught.value.message


def test_nothing_alike_gives_no_suggestion(registry: Registry) -> None:
    with pytest.raises(CommandError) as caught:
        registry.parse_line("xyzzy")
    assert caught.value.suggestions == ()
    assert caught.value.message == "unknown command 'xyzzy' (try 'help')"


def test_duplicate_and_malformed_registrations_are_refused(registry: Registry) -> None:
    def handler(args: ParsedArgs) -> CommandResult:
        return CommandResult()

    with pytest.raises(ValueError, match="already registered"):
        registry.add(Command(("show", "target"), handler, "again"))
    with pytest.raises(ValueError, match="bad command phrase"):
        registry.add(Command(("show targets",), handler, "spaces in a word"))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", None),  # every first word
        ("sh", ["show"]),
        ("show t", ["target", "targets"]),
        ("show ", ["config", "networks", "server", "servers", "sessions", "stats", "target", "targets"]),
        ("disable targets ", ["1", "2", "3"]),
        ("disable targets 1,", ["1,1", "1,2", "1,3"]),
        ("subscribe ", ["events"]),
        ("help sh", ["show"]),
        ("help show ta", ["target", "targets"]),
        ("reload ", []),
        ("nosuch ", []),
        ('show "ta', []),
    ],
)
def test_completion(registry: Registry, line: str, expected: list[str] | None) -> None:
    got = registry.complete(line)
    if expected is None:
        assert {"show", "enable", "disable", "drain", "reload", "help", "hello", "subscribe"} <= set(got)
    else:
        assert got == expected


def test_help_lists_commands_and_usage(registry: Registry) -> None:
    everything = asyncio.run(registry.run(["help"]))
    assert any(row["command"] == "disable targets" and row["action"] for row in everything.data)
    assert everything.text is not None and "disable targets IDS" in everything.text
    one = asyncio.run(registry.run(["help", "disable", "target"]))
    assert one.text is not None and one.text.startswith("usage: disable targets IDS")
    assert one.data["aliases"] == ["disable target"]
    with pytest.raises(CommandError):
        asyncio.run(registry.run(["help", "nosuch"]))


def test_hello_reports_the_daemons_hostname(registry: Registry) -> None:
    hello = asyncio.run(registry.run(["hello"])).data
    assert hello["hostname"] == "lb-test" and "version" in hello


def test_execute_turns_every_outcome_into_a_response(registry: Registry, demo: Any) -> None:
    async def scenario() -> list[Any]:
        return [
            await registry.execute(Request(1, "disable", ("targets", "1,2"))),
            await registry.execute(Request(2, "show", ("targets", "9"))),
            await registry.execute(Request(3, "crash")),
            await registry.execute(Request(4, "reload", (), json=True)),
            await registry.execute(Request(5, "subscribe", ("events",))),
        ]

    disabled, missing, crashed, reloaded, subscribe = asyncio.run(scenario())
    assert disabled.ok and disabled.result == {"targets": [1, 2], "state": "disabled"}
    assert disabled.text == "2 target(s) now disabled"
    assert demo.targets[1].state == demo.targets[2].state == "disabled"
    assert not missing.ok and missing.error.code is ErrorCode.FAILED
    assert missing.error.message == "no target 9"
    assert not crashed.ok and crashed.error.code is ErrorCode.INTERNAL
    assert "ZeroDivisionError" in crashed.error.message
    assert reloaded.ok and reloaded.result == {"reloads": 1} and reloaded.text is None  # json: no text
    assert not subscribe.ok and "control socket only" in subscribe.error.message


def test_handler_returning_the_wrong_type_is_an_internal_error() -> None:
    registry = Registry()
    registry.add(Command(("bad",), lambda args: {"not": "a CommandResult"}, "bad"))  # type: ignore[arg-type,return-value]
    response = asyncio.run(registry.execute(Request(1, "bad")))
    assert not response.ok and response.error is not None and response.error.code is ErrorCode.INTERNAL


def test_param_kinds() -> None:
    registry = Registry()
    registry.add(Command(
        ("set", "weight"), lambda args: CommandResult(dict(args.values)), "set a weight",
        params=(Param("target", ParamKind.INT), Param("mode", choices=("soft", "hard")),
                Param("note", ParamKind.TEXT, required=False)),
    ))
    call = registry.parse_line('set weight 3 HARD "a b" c')
    assert dict(call.args.values) == {"target": 3, "mode": "hard", "note": "a b c"}
    assert call.args.integer("target") == 3 and call.args.word("mode") == "hard" and call.args.ids("x") == ()
    with pytest.raises(CommandError, match="did you mean 'soft'"):
        registry.parse_line("set weight 3 sfot")
    with pytest.raises(CommandError, match="is not a number"):
        registry.parse_line("set weight -3 soft")


def test_split_line_keeps_quoted_words() -> None:
    assert split_line("set remark 'two words'") == ["set", "remark", "two words"]


words = st.lists(st.sampled_from(["show", "targets", "target", "enable", "1,2", "x", "", "5-1", "help", "ä"])
                 | st.text(max_size=12), max_size=5)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words)
def test_fuzz_resolve_only_raises_command_errors(make_demo: Any, typed: list[str]) -> None:
    registry: Registry = make_demo().registry()  # fresh state per example
    try:
        registry.resolve(typed)
    except CommandError as exc:
        assert exc.message
    response = asyncio.run(registry.execute(Request(1, typed[0] if typed else "x", tuple(typed[1:]))))
    assert response.ok or (response.error is not None and response.error.message)
    assert isinstance(registry.complete(" ".join(typed)), list)
