"""keepalived checkers (TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK, PING_CHECK) -> dsrlb checks.

keepalived's timing (keepalived.conf(5), 2.x defaults): a checker runs every `delay_loop` seconds
(virtual server's, or the checker's own); an attempt fails after `connect_timeout` (default 5 s;
`misc_timeout` for MISC_CHECK, default delay_loop); after a failure it retries `retry` times
(default 1, alias `nb_get_retry`) `delay_before_retry` seconds apart (default 1 s), and only when every
retry failed is the server taken out. One success brings it back.

dsrlb's rendering (see docs/importers.md):
- interval = delay_loop (rounded up to whole seconds);
- fall = retry + 1 consecutive failed probes take the target down;
- the timeout window = the longest keepalived can take from the last success to declaring the server
  down: delay_loop + retry * delay_before_retry + (retry + 1) * connect_timeout, rounded up;
- rise = 1; inhibit_on_failure -> quiesce.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from dsrlb.config.importers.common import ceil_seconds, fail
from dsrlb.config.importers.keepalived_parse import Statement, address, expect_args, integer, seconds, unknown
from dsrlb.model import (
    Check,
    HealthPolicy,
    HttpCheck,
    IPAddress,
    PingCheck,
    PortRange,
    ScriptCheck,
    TcpOpenCheck,
)

Warn = Callable[[Statement, str, "str | None"], None]


@dataclass(frozen=True)
class CheckDefaults:
    """Timing settings inherited virtual_server -> real_server -> checker (keepalived 2.x)."""

    retry: int = 1
    delay_before_retry: float = 1.0
    connect_timeout: float = 5.0
    delay_loop: float | None = None
    inhibit_on_failure: bool = False
    virtualhost: str | None = None

    def with_setting(self, stmt: Statement) -> CheckDefaults:
        name = stmt.name
        if name == "inhibit_on_failure":
            args = expect_args(stmt, 0, 1, "inhibit_on_failure [true|false]")
            return replace(
                self, inhibit_on_failure=not args or args[0].text.lower() in ("true", "on", "yes", "1")
            )
        if name == "virtualhost":
            return replace(self, virtualhost=expect_args(stmt, 1, 1, "virtualhost NAME")[0].text)
        tok = expect_args(stmt, 1, 1, f"{name} VALUE")[0]
        if name in ("retry", "nb_get_retry"):
            return replace(self, retry=integer(tok, 0, 100))
        if name == "delay_before_retry":
            return replace(self, delay_before_retry=seconds(tok))
        if name == "connect_timeout":
            return replace(self, connect_timeout=seconds(tok, 0.001))
        if name == "delay_loop":
            return replace(self, delay_loop=seconds(tok, 0.001))
        raise AssertionError(name)


@dataclass(frozen=True)
class CheckContext:
    address: IPAddress
    port: int  # the real server's port (or the service's), used when no connect_port is given
    delay_loop: float
    virtualhost: str | None
    warn: Callable[..., None]


_COMMON = (
    "connect_ip",
    "connect_port",
    "bindto",
    "bind_port",
    "bind_if",
    "connect_timeout",
    "retry",
    "nb_get_retry",
    "delay_before_retry",
    "warmup",
    "delay_loop",
    "fwmark",
    "alpha",
)
_IGNORED_COMMON = {
    "bindto": "checks leave from the network's real address (ignored)",
    "bind_port": "the source port of checks is not configurable (ignored)",
    "bind_if": "checks leave from the network's real address (ignored)",
    "warmup": "has no equivalent (ignored)",
    "fwmark": "checks are not marked (ignored)",
    "alpha": "targets start up in dsrlb; alpha is ignored",
}
_HTTP_ONLY = ("url", "http_protocol", "virtualhost", "enable_sni", "tls_compliant", "fast_recovery")
_URL_KEYS = (
    "path",
    "digest",
    "status_code",
    "virtualhost",
    "regex",
    "regex_no_match",
    "regex_options",
    "regex_stop",
    "regex_min_offset",
    "regex_max_offset",
)
_MISC_ONLY = ("misc_path", "misc_timeout", "misc_dynamic", "user")


def _status_ranges(stmt: Statement) -> tuple[PortRange, ...]:
    ranges: list[PortRange] = []
    for tok in expect_args(stmt, 1, 64, "status_code CODE|FIRST-LAST ..."):
        first_text, dash, last_text = tok.text.partition("-")
        if not first_text.isdigit() or (dash and not last_text.isdigit()):
            raise fail(tok.position, "bad status code", "a code such as 200 or a range such as 200-299")
        first, last = int(first_text), int(last_text) if dash else int(first_text)
        if not 100 <= first <= last <= 599:
            raise fail(tok.position, "status code out of range", "100..599")
        ranges.append(PortRange(first, last))
    return tuple(ranges)


@dataclass(frozen=True)
class _Url:
    path: str
    status: tuple[PortRange, ...]
    body_regex: str | None
    host: str | None


def _url(stmt: Statement, ctx: CheckContext) -> _Url:
    path = "/"
    status: tuple[PortRange, ...] = (PortRange(200, 299),)  # keepalived: any 2xx when no status_code
    regex: str | None = None
    host: str | None = None
    for sub in stmt.block or []:
        if sub.name == "path":
            path = expect_args(sub, 1, 1, "path /URL")[0].text
        elif sub.name == "status_code":
            status = _status_ranges(sub)
        elif sub.name == "regex":
            regex = expect_args(sub, 1, 1, 'regex "EXPRESSION"')[0].text
        elif sub.name == "virtualhost":
            host = expect_args(sub, 1, 1, "virtualhost NAME")[0].text
        elif sub.name == "digest":
            ctx.warn(sub, "page digests have no equivalent; only the status code is checked (ignored)")
        elif sub.name in _URL_KEYS:
            ctx.warn(sub, "regular expression options have no equivalent (ignored)")
        else:
            raise unknown(sub, "url", list(_URL_KEYS))
    return _Url(path, status, regex, host)


def convert_checker(
    stmt: Statement, inherited: CheckDefaults, ctx: CheckContext
) -> tuple[tuple[Check, ...], HealthPolicy]:
    """The dsrlb checks for one checker block (HTTP_GET gives one per url) and its health policy."""
    kind = stmt.name
    defaults = inherited
    port = ctx.port
    urls: list[_Url] = []
    command: str | None = None
    misc_timeout: float | None = None
    allowed = (
        _COMMON
        + (_HTTP_ONLY if kind in ("HTTP_GET", "SSL_GET") else ())
        + (_MISC_ONLY if kind == "MISC_CHECK" else ())
    )
    for sub in stmt.block or []:
        name = sub.name
        if name not in allowed:
            raise unknown(sub, kind, list(allowed))
        if name in (
            "connect_timeout",
            "retry",
            "nb_get_retry",
            "delay_before_retry",
            "delay_loop",
            "virtualhost",
        ):
            defaults = defaults.with_setting(sub)
        elif name == "connect_port":
            port = integer(expect_args(sub, 1, 1, "connect_port PORT")[0], 1, 65535)
        elif name == "connect_ip":
            tok = expect_args(sub, 1, 1, "connect_ip ADDRESS")[0]
            if address(tok) != ctx.address:
                ctx.warn(sub, "checks go to the target's own address; connect_ip is ignored")
        elif name == "url":
            urls.append(_url(sub, ctx))
        elif name == "misc_path":
            command = expect_args(sub, 1, 1, 'misc_path "COMMAND ARGS"')[0].text
        elif name == "misc_timeout":
            misc_timeout = seconds(expect_args(sub, 1, 1, "misc_timeout SECONDS")[0], 0.001)
        elif name in _IGNORED_COMMON:
            ctx.warn(sub, _IGNORED_COMMON[name])
        else:  # http_protocol, enable_sni, tls_compliant, fast_recovery, misc_dynamic, user
            ctx.warn(sub, "has no equivalent (ignored)")
    delay_loop = defaults.delay_loop or ctx.delay_loop
    attempt = defaults.connect_timeout
    if kind == "MISC_CHECK":
        attempt = misc_timeout or delay_loop
    interval = ceil_seconds(delay_loop)
    window = ceil_seconds(
        delay_loop + defaults.retry * defaults.delay_before_retry + (defaults.retry + 1) * attempt
    )
    policy = HealthPolicy(rise=1, fall=defaults.retry + 1, quiesce=defaults.inhibit_on_failure)
    if kind == "TCP_CHECK":
        return (TcpOpenCheck(port, interval, window),), policy
    if kind == "PING_CHECK":
        return (PingCheck(interval, window, ipv6=ctx.address.version == 6),), policy
    if kind == "MISC_CHECK":
        if command is None:
            raise fail(stmt.keyword.end_of_line, "MISC_CHECK needs misc_path", 'misc_path "COMMAND"')
        return (ScriptCheck(command, interval, window),), policy
    if not urls:
        raise fail(stmt.keyword.end_of_line, f"{kind} needs at least one url block", "url { path / }")
    host = defaults.virtualhost or ctx.virtualhost
    checks = tuple(
        HttpCheck(
            port,
            url.path,
            interval,
            window,
            tls=kind == "SSL_GET",
            status=url.status,
            body_regex=url.body_regex,
            host=url.host or host,
        )
        for url in urls
    )
    return checks, policy
