"""The XDP engine for the daemon: the BPF program loaded, pinned under the instance's bpf dir, and
attached to the balancer's interfaces (native mode, else generic with a warning)."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from dsrlb.engine.compile import DesiredState
from dsrlb.engine.dataplane import Change, SessionEntry
from dsrlb.xdp.dataplane import XdpDataplane

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


class XdpRunner:
    name = "xdp"

    def __init__(self, instance: str, mode: str = "auto") -> None:
        # Loading here (not in start) makes `--engine auto` fall back before anything is configured.
        self._dataplane = XdpDataplane(instance=instance)
        self._mode = mode

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

    def service_stats(self, service_id: int) -> Mapping[str, int]:
        return self._dataplane.service_stats(service_id)

    def target_stats(self, target_id: int) -> Mapping[str, int]:
        return self._dataplane.target_stats(target_id)
