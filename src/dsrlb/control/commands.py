"""The command registry: what the control socket, the HTTP API and `dsrlb control` can call.

A command is a fixed phrase of words (`show targets`, `disable target`) followed by typed parameters
(`disable targets 1,2,5-7`), as in BalanceNG's interactive mode. The daemon registers its commands with a
`Registry`; the registry parses a command line (a list of words) into a call, runs the handler and turns
the outcome into a protocol `Response`. Parsing and completion are pure and need no daemon.

Built in: `help [words...]`, `complete LINE` (tab completion for remote shells) and `hello` (who is
answering: hostname, instance, version, for the shell's prompt).
"""

from __future__ import annotations

import difflib
import enum
import inspect
import logging
import shlex
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dsrlb import __version__
from dsrlb.control.protocol import ErrorCode, Request, Response

log = logging.getLogger(__name__)

MAX_ID_LIST = 4096  # ids one `1-100000` may expand to; protects the daemon from a typo


class ParamKind(enum.StrEnum):
    IDS = "ids"  # comma-separated ids and ranges: 1,2,5-7
    INT = "int"
    WORD = "word"  # one word, from `choices` when given
    TEXT = "text"  # the rest of the line, words joined by single spaces


@dataclass(frozen=True)
class Param:
    """A parameter after the command's words. `completer` lists candidate values at completion time."""

    name: str
    kind: ParamKind = ParamKind.WORD
    required: bool = True
    help: str = ""
    choices: tuple[str, ...] = ()
    completer: Callable[[], Iterable[str]] | None = None

    @property
    def usage(self) -> str:
        shown = "|".join(self.choices) if self.choices else self.name.upper()
        if self.kind is ParamKind.TEXT:
            shown += "..."
        return shown if self.required else f"[{shown}]"


@dataclass(frozen=True)
class CommandResult:
    """What a handler returns: `data` (JSON-able, see protocol.to_jsonable) and optional human `text`."""

    data: Any = None
    text: str | None = None


class CommandError(Exception):
    """Raised by parsing or by a handler: becomes an error response with `code`."""

    def __init__(self, code: ErrorCode, message: str, suggestions: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.suggestions = tuple(suggestions)


class CommandFailed(CommandError):
    """A handler refusing a valid call (`enable target 9` when there is no target 9, a bad reload)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.FAILED, message)


@dataclass(frozen=True)
class ParsedArgs:
    """The parameter values of one call, by parameter name."""

    values: Mapping[str, str | int | tuple[int, ...]] = field(default_factory=dict)
    want_json: bool = False

    def ids(self, name: str) -> tuple[int, ...]:
        value = self.values.get(name, ())
        return value if isinstance(value, tuple) else ()

    def integer(self, name: str) -> int | None:
        value = self.values.get(name)
        return value if isinstance(value, int) else None

    def word(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if isinstance(value, str) else None


Handler = Callable[[ParsedArgs], "CommandResult | Awaitable[CommandResult]"]


@dataclass(frozen=True)
class Command:
    """A command: its phrase, alternative phrases (`disable targets` for `disable target`), parameters.

    `action` commands change state: the HTTP API serves them on POST only.
    """

    words: tuple[str, ...]
    handler: Handler
    help: str
    params: tuple[Param, ...] = ()
    aliases: tuple[tuple[str, ...], ...] = ()
    action: bool = False

    @property
    def name(self) -> str:
        return " ".join(self.words)

    @property
    def usage(self) -> str:
        return " ".join([*self.words, *(p.usage for p in self.params)])

    @property
    def phrases(self) -> tuple[tuple[str, ...], ...]:
        return (self.words, *self.aliases)


@dataclass(frozen=True)
class Call:
    command: Command
    args: ParsedArgs


def parse_ids(text: str) -> tuple[int, ...]:
    """`1,2,5-7` -> (1, 2, 5, 6, 7); order kept, duplicates dropped. Raises ValueError with the reason."""
    ids: dict[int, None] = {}
    for part in text.split(","):
        part = part.strip()
        first, sep, last = part.partition("-")
        if not first.isdigit() or (sep and not last.isdigit()):
            raise ValueError(f"{part!r} is not an id or a range of ids (like 3 or 5-7)")
        low, high = int(first), int(last) if sep else int(first)
        if high < low:
            raise ValueError(f"range {part!r} runs backwards")
        if high - low + 1 + len(ids) > MAX_ID_LIST:
            raise ValueError(f"more than {MAX_ID_LIST} ids")
        ids.update(dict.fromkeys(range(low, high + 1)))
    return tuple(ids)


def split_line(line: str) -> list[str]:
    """Words of a shell line; quotes group words (`set remark "two words"`)."""
    try:
        return shlex.split(line, comments=False, posix=True)
    except ValueError as exc:  # unbalanced quotes
        raise CommandError(ErrorCode.BAD_ARGUMENTS, f"cannot split the line: {exc}") from None


class Registry:
    """All commands a daemon answers, with parsing, help, completion and execution."""

    def __init__(self, info: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self._commands: list[Command] = []
        self._info = info or (lambda: {})
        self.add(Command(("help",), self._help, "list commands, or show the usage of one",
                         params=(Param("command", ParamKind.TEXT, required=False),)))
        self.add(Command(("complete",), self._complete_handler,
                         "completion candidates for the last word of a partial line (shells)",
                         params=(Param("line", ParamKind.TEXT, required=False),)))
        self.add(Command(("hello",), self._hello, "who is answering: hostname, instance, version"))
        # The control server answers these on the connection itself; listed here for help and completion.
        stream = (Param("stream", required=False, choices=("events",)),)
        self.add(Command(("subscribe",), self._socket_only, "stream events (control socket only)", stream))
        self.add(Command(("unsubscribe",), self._socket_only, "stop the event stream", stream))

    # --- registration ---------------------------------------------------------------------------

    def add(self, command: Command) -> Command:
        for phrase in command.phrases:
            if not phrase or any(not w or w != w.strip() or " " in w for w in phrase):
                raise ValueError(f"bad command phrase {phrase!r}")
            for existing in self._commands:
                if phrase in existing.phrases:
                    raise ValueError(f"command {' '.join(phrase)!r} is already registered")
        self._commands.append(command)
        return command

    def command(
        self,
        words: str,
        help: str,
        *,
        params: Sequence[Param] = (),
        aliases: Sequence[str] = (),
        action: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Decorator form: `@registry.command("show targets", "list targets")`."""

        def register(handler: Handler) -> Handler:
            self.add(Command(tuple(words.split()), handler, help, tuple(params),
                             tuple(tuple(a.split()) for a in aliases), action))
            return handler

        return register

    @property
    def commands(self) -> tuple[Command, ...]:
        return tuple(self._commands)

    def find(self, name: str) -> Command | None:
        words = tuple(name.split())
        return next((c for c in self._commands if words in c.phrases), None)

    # --- parsing --------------------------------------------------------------------------------

    def resolve(self, words: Sequence[str], want_json: bool = False) -> Call:
        """The call a list of words means. Raises CommandError (unknown command, bad arguments)."""
        words = [w for w in words if w != ""]
        if not words:
            raise CommandError(ErrorCode.UNKNOWN_COMMAND, "empty command; try 'help'")
        folded = [w.lower() for w in words]
        best: tuple[int, Command] | None = None
        for command in self._commands:
            for phrase in command.phrases:
                n = len(phrase)
                if tuple(folded[:n]) == phrase and (best is None or n > best[0]):
                    best = (n, command)
        if best is None:
            raise self._unknown(words)
        n, command = best
        return Call(command, self._bind(command, list(words[n:]), want_json))

    def parse_line(self, line: str, want_json: bool = False) -> Call:
        return self.resolve(split_line(line), want_json)

    def _bind(self, command: Command, rest: list[str], want_json: bool) -> ParsedArgs:
        values: dict[str, str | int | tuple[int, ...]] = {}
        for param in command.params:
            if not rest:
                if param.required:
                    raise CommandError(
                        ErrorCode.BAD_ARGUMENTS,
                        f"missing {param.name.upper()}; usage: {command.usage}",
                    )
                continue
            if param.kind is ParamKind.TEXT:
                values[param.name] = " ".join(rest)
                rest = []
                continue
            word = rest.pop(0)
            values[param.name] = self._convert(command, param, word)
        if rest:
            raise CommandError(
                ErrorCode.BAD_ARGUMENTS,
                f"unexpected {' '.join(rest)!r} after '{command.name}'; usage: {command.usage}",
            )
        return ParsedArgs(values, want_json)

    @staticmethod
    def _convert(command: Command, param: Param, word: str) -> str | int | tuple[int, ...]:
        def bad(reason: str) -> CommandError:
            message = f"{param.name.upper()}: {reason}; usage: {command.usage}"
            return CommandError(ErrorCode.BAD_ARGUMENTS, message)

        if param.kind is ParamKind.IDS:
            try:
                return parse_ids(word)
            except ValueError as exc:
                raise bad(str(exc)) from None
        if param.kind is ParamKind.INT:
            if not word.isdigit() or len(word) > 18:
                raise bad(f"{word!r} is not a number")
            return int(word)
        if param.choices and word.lower() not in param.choices:
            close = difflib.get_close_matches(word.lower(), param.choices, n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise bad(f"{word!r} is not one of {', '.join(param.choices)}{hint}")
        return word.lower() if param.choices else word

    def _unknown(self, words: Sequence[str]) -> CommandError:
        typed = " ".join(words).lower()
        phrases = sorted({" ".join(p) for c in self._commands for p in c.phrases})
        # Compare with phrases of the same length, so that `show tagrets 3` still finds `show targets`.
        candidates: dict[str, None] = {}
        for size in range(min(len(words), 4), 0, -1):
            head = " ".join(w.lower() for w in words[:size])
            same_size = [p for p in phrases if len(p.split()) == size]
            candidates.update(dict.fromkeys(difflib.get_close_matches(head, same_size, n=3, cutoff=0.6)))
            if candidates:
                break
        if not candidates:  # `show` alone, or `show bogus`: list what follows the known first word
            first = words[0].lower()
            candidates.update(dict.fromkeys(p for p in phrases if p.split()[0] == first))
        suggestions = list(candidates)[:5]
        hint = f"; did you mean {' or '.join(repr(s) for s in suggestions[:3])}?" if suggestions else ""
        return CommandError(
            ErrorCode.UNKNOWN_COMMAND, f"unknown command {typed!r}{hint} (try 'help')", suggestions
        )

    # --- execution ------------------------------------------------------------------------------

    async def run(self, words: Sequence[str], want_json: bool = False) -> CommandResult:
        """Resolve and run; raises CommandError. Handlers may be plain or async functions."""
        call = self.resolve(words, want_json)
        outcome = call.command.handler(call.args)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if not isinstance(outcome, CommandResult):
            raise TypeError(f"handler of {call.command.name!r} returned {type(outcome).__name__}")
        return outcome

    async def execute(self, request: Request) -> Response:
        """The response to a request; never raises (a handler bug becomes an `internal` error)."""
        try:
            result = await self.run(request.words, request.json)
        except CommandError as exc:
            return Response.failure(request.id, exc.code, exc.message, exc.suggestions)
        except Exception as exc:
            log.exception("control command %r failed", " ".join(request.words))
            return Response.failure(request.id, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        return Response.success(request.id, result.data, None if request.json else result.text)

    # --- help and completion ----------------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"command": c.name, "usage": c.usage, "help": c.help, "action": c.action,
             "aliases": [" ".join(a) for a in c.aliases]}
            for c in self._commands
        ]

    def _help(self, args: ParsedArgs) -> CommandResult:
        wanted = args.word("command")
        if wanted:
            command = self.find(wanted)
            if command is None:
                raise self._unknown(wanted.split())
            lines = [f"usage: {command.usage}", command.help]
            lines += [f"  {p.name.upper()}: {p.help}" for p in command.params if p.help]
            return CommandResult(self.describe()[self._commands.index(command)], "\n".join(lines))
        width = max(len(c.usage) for c in self._commands)
        text = "\n".join(f"{c.usage.ljust(width)}  {c.help}" for c in self._commands)
        return CommandResult(self.describe(), text)

    @staticmethod
    def _socket_only(args: ParsedArgs) -> CommandResult:
        raise CommandFailed("event subscriptions exist on the control socket only")

    def _hello(self, args: ParsedArgs) -> CommandResult:
        info: dict[str, Any] = {"hostname": socket.gethostname(), "version": __version__}
        info.update(self._info())
        return CommandResult(info, f"dsrlb {info['version']} on {info['hostname']}")

    def _complete_handler(self, args: ParsedArgs) -> CommandResult:
        # `complete` gets the raw partial line as one TEXT parameter; a trailing blank matters, so
        # clients send it quoted as a single word and we take it verbatim.
        line = args.word("line") or ""
        return CommandResult(self.complete(line))

    def complete(self, line: str) -> list[str]:
        """Candidates for the word being typed at the end of `line` (all of it, not only the suffix)."""
        try:
            words = shlex.split(line)
        except ValueError:
            return []
        if not line or line[-1].isspace():
            words.append("")
        if len(words) > 1 and words[0].lower() == "help":
            words = words[1:]  # `help show tar<TAB>` completes like `show tar<TAB>`
        typed, prefix = [w.lower() for w in words[:-1]], words[-1]
        candidates: set[str] = set()
        for command in self._commands:
            for phrase in command.phrases:
                candidates.update(self._candidates_after(command, phrase, typed))
        # Id lists complete the last element: `disable targets 1,<TAB>`.
        head, comma, last = prefix.rpartition(",")
        if comma:
            return sorted(f"{head},{c}" for c in candidates if c.startswith(last) and c.isdigit())
        return sorted(c for c in candidates if c.lower().startswith(prefix.lower()))

    @staticmethod
    def _candidates_after(command: Command, phrase: tuple[str, ...], typed: list[str]) -> list[str]:
        k = len(typed)
        if k < len(phrase):
            return [phrase[k]] if list(phrase[:k]) == typed else []
        if list(phrase) != typed[: len(phrase)]:
            return []
        index = k - len(phrase)
        if index >= len(command.params):
            return []
        param = command.params[index]
        if param.choices:
            return list(param.choices)
        if param.completer is not None:
            try:
                return [str(c) for c in param.completer()]
            except Exception:  # completion is a convenience; a failing source must not break the shell
                log.exception("completer of %r failed", command.name)
        return []
