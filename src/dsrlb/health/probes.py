"""The probes (asyncio drivers): one coroutine per check type, each returning a ProbeResult.

`ProbeKit.run(check, target, timeout)` never raises (but for cancellation): every failure, timeout
included, is a `ProbeResult(ok=False, detail=...)`. Every probe is sourced from `target.source`
when given (the balancer's `real`/`real6` address, as BalanceNG does) and bounded by `timeout`
(default `state.probe_timeout`: min(interval, window)).

Choices (docs/health.md has the operator's view):
- ping/ping6 and tcpopen run on the multiplexed probers of `multiplex.py` (no task per probe; the
  scheduler starts them directly, `run()` wraps them in a future): one ICMP socket per (family,
  source) shared by all pings, replies matched by (address, identifier, sequence), an unprivileged
  datagram ICMP socket when raw is not allowed; tcpopen connects on one epoll set.
- arp/ndp: an ARP request / neighbour solicitation of our own on the egress interface, answered or
  not. Asking the kernel's neighbour table instead would report a REACHABLE entry for up to
  base_reachable_time after the target died, and flushing entries would disturb the next-hop MACs
  the data path uses.
- tcpopen: a non-blocking connect; the socket is closed with RST (SO_LINGER 0) so that thousands of
  checks per second leave no TIME_WAIT sockets behind on the balancer (HAProxy does the same).
- script: argv from shlex.split after macro substitution, no shell (write `sh -c '...'` to get
  one), its own session and process group, killed as a group with SIGKILL at the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_address

from dsrlb.agent.protocol import DropCounters, ReplyMatcher
from dsrlb.health.multiplex import EchoProber, TcpConnectProber, canonical_address, why
from dsrlb.health.packets import (
    build_arp_request,
    build_neighbour_solicitation,
    parse_arp_reply,
    parse_neighbour_advertisement,
    solicited_node_multicast,
)
from dsrlb.model import (
    AgentCheck,
    Check,
    HttpCheck,
    NeighbourCheck,
    PingCheck,
    ScriptCheck,
    SendExpectCheck,
    TcpOpenCheck,
)

IPAddress = IPv4Address | IPv6Address

ICMP6_FILTER = 1  # linux/icmpv6.h
ETH_P_ARP = 0x0806
MAX_HTTP_RESPONSE = 64 * 1024
MAX_EXPECT_READ = 4096
MAX_SCRIPT_OUTPUT = 4096
ROUTE_CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class ProbeTarget:
    """What a probe is aimed at. `port` is the target's service port (for `$port$`)."""

    address: IPAddress
    port: int | None = None
    source: IPAddress | None = None  # local address to probe from (the network's real / real6)


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency: float | None  # seconds from start to answer; None when there was no answer
    detail: str
    load: float | None = None  # agent checks: the load the agent reported (percent)


class ProbeError(Exception):
    """A probe failed for a reason worth showing (the message is the detail)."""


def _settle(future: asyncio.Future[ProbeResult], ok: bool, latency: float | None, detail: str) -> None:
    """The multiplexed probers' result callback for `ProbeKit.run`."""
    if not future.done():
        future.set_result(ProbeResult(ok, latency, detail))


def _family(address: IPAddress) -> socket.AddressFamily:
    return socket.AF_INET6 if isinstance(address, IPv6Address) else socket.AF_INET


def _sockaddr(address: IPAddress, port: int) -> tuple[str, int]:
    return (str(address), port)


def unescape(text: str) -> str:
    """C-style escapes of Piranha's send/expect strings (\\r \\n \\t \\\\ \\xHH); others stay as written."""
    table = {"r": "\r", "n": "\n", "t": "\t", "\\": "\\", "0": "\0"}

    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        return chr(int(code[1:], 16)) if code[0] == "x" else table[code]

    return re.sub(r"\\(x[0-9a-fA-F]{2}|[rnt\\0])", one, text)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def substitute_macros(command: str, target: ProbeTarget) -> str:
    """$ipaddr$ = the target's address (either family), $ipaddr6$ = its IPv6 address or empty,
    $port$ = its service port or empty (BalanceNG script macros)."""
    v6 = str(target.address) if isinstance(target.address, IPv6Address) else ""
    port = "" if target.port is None else str(target.port)
    return command.replace("$ipaddr6$", v6).replace("$ipaddr$", str(target.address)).replace("$port$", port)


@dataclass(frozen=True)
class _Route:
    ifindex: int
    ifname: str
    mac: bytes
    source: IPAddress | None
    gateway: str | None


class ProbeKit:
    """Shared probe resources and the dispatcher from check type to probe coroutine."""

    def __init__(self, agent_secret: bytes | None = None) -> None:
        self.agent_secret = agent_secret
        self.agent_drops = DropCounters()
        self._tcp: TcpConnectProber | None = None
        self._pingers: dict[tuple[bool, str | None], EchoProber] = {}
        self._routes: dict[IPAddress, tuple[float, _Route]] = {}
        self._tls = ssl.create_default_context()
        # A health check asks "does it answer", not "is the certificate valid" (keepalived SSL_GET
        # does not verify either); verifying would take down targets with self-signed certificates.
        self._tls.check_hostname = False
        self._tls.verify_mode = ssl.CERT_NONE

    def close(self) -> None:
        """Close the shared sockets; probes still in flight on them fail at once."""
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        for pinger in self._pingers.values():
            pinger.close()
        self._pingers.clear()

    def tcp_prober(self, loop: asyncio.AbstractEventLoop | None = None) -> TcpConnectProber:
        """The tcpopen multiplexer of `loop` (default: the running loop), made on first use."""
        loop = loop if loop is not None else asyncio.get_running_loop()
        if self._tcp is None or self._tcp.closed or self._tcp.loop is not loop:
            self._tcp = TcpConnectProber(loop)
        return self._tcp

    def echo_prober(
        self, ipv6: bool, source: str | None, loop: asyncio.AbstractEventLoop | None = None,
    ) -> EchoProber:
        """The ICMP socket for pings of one family from one source (None: the kernel picks)."""
        loop = loop if loop is not None else asyncio.get_running_loop()
        pinger = self._pingers.get((ipv6, source))
        if pinger is None or pinger.closed or pinger.loop is not loop:
            pinger = self._pingers[(ipv6, source)] = EchoProber(loop, ipv6, source)
        return pinger

    async def run(self, check: Check, target: ProbeTarget, timeout: float) -> ProbeResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        if target.source is not None and _family(target.source) != _family(target.address):
            target = ProbeTarget(target.address, target.port, None)  # a real of the other family
        try:
            multiplexed = self._multiplexed(check, target, timeout)
        except OSError as exc:  # the shared socket cannot be made (a source address we do not have)
            return ProbeResult(False, None, why(exc))
        if multiplexed is not None:  # tcpopen and ping keep their own deadlines
            return await multiplexed
        try:
            async with asyncio.timeout(timeout):
                detail, load = await self._dispatch(check, target, timeout)
        except TimeoutError:
            if isinstance(check, ScriptCheck):  # run_script killed its process group on the way out
                return ProbeResult(False, None, f"script killed after {timeout:g} s")
            return ProbeResult(False, None, f"no answer within {timeout:g} s")
        except ProbeError as exc:
            return ProbeResult(False, loop.time() - started, str(exc))
        except OSError as exc:
            # asyncio's connect errors carry "Connect call failed (...)" as text; the errno says why
            return ProbeResult(False, None, why(exc))
        except ssl.SSLError as exc:
            return ProbeResult(False, None, f"TLS: {exc.reason or exc}")
        return ProbeResult(True, loop.time() - started, detail, load)

    def _multiplexed(
        self, check: Check, target: ProbeTarget, timeout: float,
    ) -> asyncio.Future[ProbeResult] | None:
        """Start a tcpopen or ping probe on the shared multiplexers; None for other checks."""
        address = target.address
        family = _family(address)
        if isinstance(check, TcpOpenCheck):
            done: asyncio.Future[ProbeResult] = asyncio.get_running_loop().create_future()
            bind_to = _sockaddr(target.source, 0) if target.source is not None else None
            self.tcp_prober().start(_settle, done, family, _sockaddr(address, check.port), timeout, bind_to)
            return done
        if isinstance(check, PingCheck) and isinstance(address, IPv6Address) == check.ipv6:
            done = asyncio.get_running_loop().create_future()
            source = str(target.source) if target.source is not None else None
            self.echo_prober(check.ipv6, source).start(_settle, done, canonical_address(family, str(address)),
                                                       timeout)
            return done
        return None

    async def _dispatch(self, check: Check, target: ProbeTarget, timeout: float) -> tuple[str, float | None]:
        match check:
            case PingCheck(ipv6=v6):  # only a family mismatch comes here (the rest is multiplexed)
                self._need_family(target, v6, "ping")
                raise ProbeError(f"unsupported check {check!r}")
            case NeighbourCheck(ipv6=v6):
                addr = self._need_family(target, v6, "ndp" if v6 else "arp")
                if isinstance(addr, IPv6Address):
                    return await self._ndp(addr, target.source), None
                return await self._arp(addr, target.source), None
            case AgentCheck(port=port, ipv6=v6):
                return await self._agent(self._need_family(target, v6, "agent"), port, target.source)
            case HttpCheck():
                return await self._http(check, target), None
            case SendExpectCheck():
                return await self._send_expect(check, target), None
            case ScriptCheck(command=command):
                return await run_script(substitute_macros(command, target), timeout), None
        raise ProbeError(f"unsupported check {check!r}")

    @staticmethod
    def _need_family(target: ProbeTarget, v6: bool, what: str) -> IPAddress:
        if isinstance(target.address, IPv6Address) != v6:
            need = f"{what}6 needs an IPv6 address" if v6 else f"{what} needs an IPv4 address"
            raise ProbeError(f"{need}, the target has {target.address}")
        return target.address

    # --- the probes ----------------------------------------------------------------------------------

    async def _agent(self, address: IPAddress, port: int, source: IPAddress | None) -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        matcher = ReplyMatcher(self.agent_secret)
        nonce = os.urandom(16)
        sock = socket.socket(_family(address), socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if source is not None:
                sock.bind(_sockaddr(source, 0))
            sock.connect(_sockaddr(address, port))  # only datagrams from the agent's address:port
            await loop.sock_sendall(sock, matcher.query(nonce))
            while True:
                data = await loop.sock_recv(sock, 512)
                reply = matcher.accept(data)
                if reply is not None:
                    break
        finally:
            sock.close()
            for reason, count in matcher.drops.counts.items():
                for _ in range(count):
                    self.agent_drops.add(reason)
        if reply.load is None:
            raise ProbeError("agent answered: load unavailable")
        return f"load {reply.load:g}%", reply.load

    async def _http(self, check: HttpCheck, target: ProbeTarget) -> str:
        host = check.host or (f"[{target.address}]" if isinstance(target.address, IPv6Address)
                              else str(target.address))
        default_port = 443 if check.tls else 80
        host_header = host if check.port == default_port or check.host else f"{host}:{check.port}"
        request = (f"GET {check.path} HTTP/1.0\r\nHost: {host_header}\r\nUser-Agent: dsrlb-health\r\n"
                   "Accept: */*\r\nConnection: close\r\n\r\n").encode("latin-1", "replace")
        reader, writer = await asyncio.open_connection(
            str(target.address), check.port,
            ssl=self._tls if check.tls else None,
            server_hostname=(check.host or "") if check.tls else None,
            local_addr=_sockaddr(target.source, 0) if target.source is not None else None,
        )
        try:
            writer.write(request)
            response = b""
            while len(response) < MAX_HTTP_RESPONSE:
                chunk = await reader.read(MAX_HTTP_RESPONSE - len(response))
                if not chunk:
                    break
                response += chunk
        finally:
            writer.transport.abort()
        head, _sep, body = response.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        m = re.match(r"HTTP/\d\.\d (\d{3})", status_line)
        if m is None:
            raise ProbeError(f"not an HTTP response: {status_line[:60]!r}")
        status = int(m.group(1))
        if not any(status in r for r in check.status):
            raise ProbeError(f"HTTP status {status}")
        if check.body_regex is not None:
            try:
                pattern = _regex(check.body_regex)
            except re.error as exc:
                raise ProbeError(f"bad httpbody regex: {exc}") from None
            if pattern.search(body.decode("utf-8", "replace")) is None:
                raise ProbeError(f"HTTP {status}, body does not match {check.body_regex!r}")
        return f"HTTP {status}"

    async def _send_expect(self, check: SendExpectCheck, target: ProbeTarget) -> str:
        expect = unescape(check.expect)
        try:
            pattern = _regex(expect) if check.regex else None
        except re.error as exc:
            raise ProbeError(f"bad expect regex: {exc}") from None
        reader, writer = await asyncio.open_connection(
            str(target.address), check.port,
            local_addr=_sockaddr(target.source, 0) if target.source is not None else None,
        )
        try:
            if check.send:
                writer.write(unescape(check.send).encode("latin-1", "replace"))
            got = b""
            while len(got) < MAX_EXPECT_READ:
                chunk = await reader.read(MAX_EXPECT_READ - len(got))
                eof = not chunk
                got += chunk
                text = got.decode("latin-1")
                if pattern is not None and pattern.search(text):
                    return f"matched {expect!r}"
                if pattern is None and (len(got) >= len(expect) or eof):
                    # Piranha nanny: the expected string must begin the response
                    if text.startswith(expect):
                        return f"got {expect!r}"
                    raise ProbeError(f"expected {expect!r}, got {text[:40]!r}")
                if eof:
                    break
        finally:
            writer.transport.abort()
        raise ProbeError(f"expected {expect!r}, got {got[:40].decode('latin-1')!r}")

    async def _route(self, address: IPAddress) -> _Route:
        now = time.monotonic()
        cached = self._routes.get(address)
        if cached is not None and cached[0] > now:
            return cached[1]
        from pyroute2 import AsyncIPRoute  # driver-only dependency, imported where it is used

        async with AsyncIPRoute() as ipr:
            routes = await ipr.route("get", dst=str(address))
            if not routes:
                raise ProbeError(f"no route to {address}")
            ifindex = int(routes[0].get("RTA_OIF"))
            prefsrc = routes[0].get("RTA_PREFSRC")
            gateway = routes[0].get("RTA_GATEWAY")
            links = await ipr.link("get", index=ifindex)
            ifname = str(links[0].get("IFLA_IFNAME"))
            mac = bytes.fromhex(str(links[0].get("IFLA_ADDRESS") or "00:00:00:00:00:00").replace(":", ""))
        route = _Route(ifindex, ifname, mac, ip_address(prefsrc) if prefsrc else None,
                       str(gateway) if gateway else None)
        self._routes[address] = (now + ROUTE_CACHE_SECONDS, route)
        return route

    async def _arp(self, address: IPv4Address, source: IPAddress | None) -> str:
        route = await self._route(address)
        if route.gateway is not None:
            raise ProbeError(f"{address} is not on-link (route via {route.gateway})")
        src = source if isinstance(source, IPv4Address) else route.source
        if not isinstance(src, IPv4Address):
            raise ProbeError(f"no IPv4 source address on {route.ifname}")
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ARP))
        try:
            sock.setblocking(False)
            sock.bind((route.ifname, ETH_P_ARP))
            request = build_arp_request(route.mac, src, address)
            sock.sendto(request, (route.ifname, ETH_P_ARP, 0, 0, b"\xff" * 6))
            while True:
                reply = parse_arp_reply(await loop.sock_recv(sock, 128))
                if reply is not None and reply[0] == address:
                    return f"is-at {reply[1].hex(':')} on {route.ifname}"
        finally:
            sock.close()

    async def _ndp(self, address: IPv6Address, source: IPAddress | None) -> str:
        route = await self._route(address)
        if route.gateway is not None:
            raise ProbeError(f"{address} is not on-link (route via {route.gateway})")
        src = source if isinstance(source, IPv6Address) else route.source
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            sock.setblocking(False)
            # RFC 4861 §7.1: neighbour discovery packets carry hop limit 255 (checked by receivers)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, route.ifindex)
            blocked = [0xFFFFFFFF] * 8
            blocked[136 >> 5] &= ~(1 << (136 & 31))  # pass only neighbour advertisements
            sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("8I", *blocked))
            if src is not None:
                sock.bind((str(src), 0, 0, route.ifindex if src.is_link_local else 0))
            group = solicited_node_multicast(address)
            sock.sendto(build_neighbour_solicitation(address, route.mac), (str(group), 0, 0, route.ifindex))
            while True:
                if parse_neighbour_advertisement(await loop.sock_recv(sock, 512)) == address:
                    return f"neighbour advertisement on {route.ifname}"
        finally:
            sock.close()


async def run_script(command: str, timeout: float) -> str:
    """Run a check script: exit 0 is success. No shell unless the command itself starts one.

    The script gets its own session (so its own process group); at the timeout, or when the probe is
    cancelled, the whole group is killed with SIGKILL, so children it forked die with it. Leftover
    background children of a script that exited are killed too: a check must not leave processes.
    """
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ProbeError(f"cannot split script command: {exc}") from None
    if not argv:
        raise ProbeError("empty script command")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
    except OSError as exc:
        raise ProbeError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    try:
        async with asyncio.timeout(timeout):
            assert proc.stdout is not None
            output = b""
            while chunk := await proc.stdout.read(65536):
                output = (output + chunk)[-MAX_SCRIPT_OUTPUT:]  # keep the end: the last line matters
            code = await proc.wait()
    except TimeoutError:
        raise ProbeError(f"script killed after {timeout:g} s") from None
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
    last = output.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    if code != 0:
        why = f"killed by signal {-code}" if code < 0 else f"exit {code}"
        raise ProbeError(f"script {why}" + (f": {last[0][:100]}" if last[0] else ""))
    return "exit 0" + (f": {last[0][:100]}" if last[0] else "")
