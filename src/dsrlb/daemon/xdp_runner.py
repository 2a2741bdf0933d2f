"""The XDP engine for the daemon: the BPF program loaded, pinned under the instance's bpf dir, and
attached to the balancer's interfaces (native mode, else generic with a warning)."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from dsrlb.engine.compile import DesiredState, service_keys
from dsrlb.engine.dataplane import Change, SessionEntry
from dsrlb.model import Config
from dsrlb.xdp.dataplane import XdpDataplane, XdpSizes

log = logging.getLogger("dsrlb.daemon")
BPFFS = Path("/sys/fs/bpf")


def ensure_bpffs() -> bool:
    """Mount bpffs on /sys/fs/bpf when it is missing (as in `ip netns exec`, which remounts /sys in
    a mount namespace of its own); False when it cannot be had."""
    if _is_bpffs(BPFFS):
        return True
    done = subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], capture_output=True, text=True)
    return done.returncode == 0 and _is_bpffs(BPFFS)


def _is_bpffs(path: Path) -> bool:
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            return any(line.split()[1:3] == [str(path), "bpf"] for line in mounts)
    except OSError:
        return False


# Room for a reload to add servers and targets: map sizes are fixed when the program loads, so a
# config that outgrows them needs a restart (Daemon.reload refuses it and says so). Every service slot
# holds a whole selection table (65537 x 8 bytes, preallocated), so services get a fixed spare count
# rather than a multiple.
SPARE_SERVICES = 16
GROWTH = 2


@dataclass(frozen=True)
class ConfigDemand:
    """What a config needs of the XDP maps."""

    services: int
    service_keys: int
    targets: int
    sessions: int

    @classmethod
    def of(cls, config: Config) -> ConfigDemand:
        servers = [s for s in config.servers if s.registered]
        tabsize = config.setting("sessiontabsize")  # validated: a whole number in range
        return cls(services=len(servers), service_keys=sum(len(service_keys(s)) for s in servers),
                   targets=sum(1 for t in config.targets if t.registered),
                   sessions=int(tabsize) if tabsize is not None else XdpSizes.sessions)


def sizes_for(config: Config) -> XdpSizes:
    """Map sizes for `config`: the defaults, or more with room to grow; sessions = `sessiontabsize`."""
    need, default = ConfigDemand.of(config), XdpSizes()
    return replace(
        default,
        services=max(default.services, need.services + SPARE_SERVICES),
        service_keys=max(default.service_keys, GROWTH * need.service_keys),
        targets=max(default.targets, GROWTH * need.targets),
        vips=max(default.vips, GROWTH * need.services),
        sessions=need.sessions,
        nat_returns=need.sessions,
    )


def capacity_problem(sizes: XdpSizes, config: Config) -> str | None:
    """Why maps of `sizes` cannot serve `config` (a reload that needs a restart), or None."""
    need = ConfigDemand.of(config)
    over = [f"{what} {wanted} > {have}" for what, wanted, have in (
        ("servers", need.services, sizes.services), ("service keys", need.service_keys, sizes.service_keys),
        ("targets", need.targets, sizes.targets)) if wanted > have]
    if need.sessions != sizes.sessions:
        over.append(f"sessiontabsize {need.sessions} (the session table holds {sizes.sessions})")
    if not over:
        return None
    return f"the XDP maps were sized at start: {', '.join(over)}; restart the daemon to apply this config"


class XdpRunner:
    name = "xdp"

    def __init__(self, instance: str, mode: str = "auto", config: Config | None = None) -> None:
        # Loading here (not in start) makes `--engine auto` fall back before anything is configured.
        self._dataplane = XdpDataplane(sizes_for(config) if config is not None else XdpSizes(),
                                       instance=instance)
        self._mode = mode

    def capacity_problem(self, config: Config) -> str | None:
        return capacity_problem(self._dataplane.sizes, config)

    def start(self, interfaces: Sequence[str]) -> None:
        try:
            if ensure_bpffs():
                self._dataplane.pin()
            else:
                log.warning("no bpffs at %s: running without pinned maps", BPFFS)
            for name in interfaces:
                attachment = self._dataplane.attach(name, self._mode)
                log.info("XDP attached to %s in %s mode", name, attachment.mode)
        except BaseException:
            self._dataplane.close()
            raise

    def stop(self) -> None:
        self._dataplane.close()  # detaches, unpins, frees the maps

    def apply(self, changes: Sequence[Change]) -> None:
        self._dataplane.apply(changes)

    def steer(self, state: DesiredState) -> None:
        """Nothing to do: XDP takes the balanced traffic before the stack sees it."""

    def stats(self) -> Mapping[str, int]:
        return self._dataplane.stats()

    def sessions(self) -> Sequence[SessionEntry]:
        return self._dataplane.sessions()

    def drain_session_events(self) -> list[SessionEntry]:
        return self._dataplane.drain_session_events()

    def install_sessions(self, entries: Sequence[SessionEntry]) -> int:
        return self._dataplane.install_sessions(entries)

    def service_stats(self, service_id: int) -> Mapping[str, int]:
        return self._dataplane.service_stats(service_id)

    def target_stats(self, target_id: int) -> Mapping[str, int]:
        return self._dataplane.target_stats(target_id)
