"""The executors the daemon can run, behind one small interface.

`afpacket`: the reference data path on raw sockets, with nftables keeping the kernel away from the
balanced VIP traffic. `xdp`: the BPF program attached to the interfaces (native, else generic mode).
`auto` tries XDP and falls back to AF_PACKET with a clear message (DESIGN §1: the fallback where BPF is
unavailable).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

from dsrlb.afpacket.engine import AfPacketEngine
from dsrlb.afpacket.sockfilter import BalancedAddresses
from dsrlb.afpacket.steal import KernelSteal, ReturnSource, return_sources
from dsrlb.engine.compile import DesiredState
from dsrlb.engine.dataplane import Change, ServiceKey, SessionEntry
from dsrlb.engine.reference import ReferenceDataplane
from dsrlb.model import Config

log = logging.getLogger("dsrlb.daemon")

ENGINE_NAMES = ("auto", "xdp", "afpacket")


class EngineError(RuntimeError):
    pass


class Engine(Protocol):
    name: str

    def start(self, interfaces: Sequence[str]) -> None: ...

    def stop(self) -> None: ...

    def apply(self, changes: Sequence[Change]) -> None: ...

    def steer(self, state: DesiredState) -> None:
        """Tell the engine what it serves (AF_PACKET keeps the kernel off that traffic)."""

    def stats(self) -> Mapping[str, int]: ...

    def sessions(self) -> Sequence[SessionEntry]: ...

    def drain_session_events(self) -> list[SessionEntry]:
        """New and moved sessions since the last call; must be called regularly (bounded memory)."""

    def install_sessions(self, entries: Sequence[SessionEntry]) -> int:
        """Sessions from the peer balancer (engine/dataplane.py Dataplane.install_sessions)."""

    def service_stats(self, service_id: int) -> Mapping[str, int]:
        """`packets`, `bytes`, `sessions_new` of one service."""

    def target_stats(self, target_id: int) -> Mapping[str, int]:
        """`packets`, `bytes`, `sessions_new` of one target."""

    def capacity_problem(self, config: Config) -> str | None:
        """Why this running engine cannot take `config` without a restart (fixed sizes), or None."""


class AfPacketRunner:
    name = "afpacket"

    def __init__(self, instance: str) -> None:
        self._steal = KernelSteal(instance)
        self._dataplane = ReferenceDataplane()
        self._addresses = BalancedAddresses()  # narrows the socket filters to the balanced traffic
        self._engine: AfPacketEngine | None = None
        self._steered: tuple[tuple[ServiceKey, ...], tuple[ReturnSource, ...]] = ((), ())

    def start(self, interfaces: Sequence[str]) -> None:
        self._engine = AfPacketEngine(self._dataplane, tuple(interfaces), addresses=self._addresses)
        self._engine.start()
        self._steal.install(*self._steered)

    def stop(self) -> None:
        try:
            self._steal.remove()
        finally:
            if self._engine is not None:
                self._engine.stop()
                self._engine = None

    def apply(self, changes: Sequence[Change]) -> None:
        if self._engine is None:
            self._dataplane.apply(changes)
            self._addresses.apply(changes)
            return
        self._engine.apply(changes)  # takes the engine's lock and updates the socket filters

    def steer(self, state: DesiredState) -> None:
        keys = {key for spec in state.services.values() for key in spec.keys}
        returns = return_sources(state.services.values(), state.members, state.targets)
        ordered = tuple(sorted(keys, key=lambda k: (str(k.address), k.protocol, k.port)))
        new = (ordered, tuple(sorted(returns)))
        if new != self._steered:
            self._steered = new
            if self._engine is not None:
                self._steal.install(*new)

    def stats(self) -> Mapping[str, int]:
        if self._engine is None:
            return dict(self._dataplane.stats())
        return self._engine.stats()

    def drain_session_events(self) -> list[SessionEntry]:
        with self._locked():
            return self._dataplane.drain_session_events()

    def install_sessions(self, entries: Sequence[SessionEntry]) -> int:
        with self._locked():
            return self._dataplane.install_sessions(entries)

    def service_stats(self, service_id: int) -> Mapping[str, int]:
        with self._locked():
            return self._dataplane.service_stats(service_id)

    def target_stats(self, target_id: int) -> Mapping[str, int]:
        with self._locked():
            return self._dataplane.target_stats(target_id)

    def capacity_problem(self, config: Config) -> str | None:
        return None  # the reference's tables grow as needed

    def _locked(self) -> AbstractContextManager[object]:
        return self._engine.lock if self._engine is not None else nullcontext()

    def sessions(self) -> Sequence[SessionEntry]:
        if self._engine is None:
            return list(self._dataplane.sessions())
        with self._engine.lock:
            return list(self._dataplane.sessions())


def make_engine(kind: str, instance: str, xdp_mode: str = "auto", config: Config | None = None) -> Engine:
    """The engine `kind` names; `auto` is XDP when BPF works here, else AF_PACKET.

    `xdp_mode`: auto (native, else generic with a warning), native, or generic (skb mode). `config`
    sizes the XDP maps (xdp_runner.sizes_for).
    """
    if kind not in ENGINE_NAMES:
        raise EngineError(f"unknown engine {kind!r}: choose one of {', '.join(ENGINE_NAMES)}")
    if kind in ("xdp", "auto"):
        try:
            from dsrlb.daemon.xdp_runner import XdpRunner

            runner: Engine = XdpRunner(instance, xdp_mode, config)
            return runner
        except Exception as exc:
            if kind == "xdp":
                raise EngineError(f"the XDP engine is not available: {exc}") from exc
            log.warning("XDP is not available here (%s); falling back to the AF_PACKET engine", exc)
    return AfPacketRunner(instance)
