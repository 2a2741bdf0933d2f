"""Per-instance locations: several balancers can run on one host (`-i/--instance`, BalanceNG style)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_INSTANCE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class InstanceNameError(ValueError):
    pass


@dataclass(frozen=True)
class InstancePaths:
    """Where instance NAME keeps its pidfile, control socket, state and BPF pins."""

    instance: str
    run_dir: Path
    state_dir: Path
    bpf_dir: Path

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "dsrlb.pid"

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "control.sock"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "dsrlb.log"


def instance_paths(instance: str = "0") -> InstancePaths:
    """Paths for `instance`; DSRLB_RUN_DIR / DSRLB_STATE_DIR move the roots (tests, labs)."""
    if not _INSTANCE_RE.match(instance):
        raise InstanceNameError(f"bad instance name {instance!r}: use 1-32 of A-Z a-z 0-9 _ . -")
    run_root = Path(os.environ.get("DSRLB_RUN_DIR", "/run/dsrlb"))
    state_root = Path(os.environ.get("DSRLB_STATE_DIR", "/var/lib/dsrlb"))
    bpf_root = Path(os.environ.get("DSRLB_BPF_DIR", "/sys/fs/bpf/dsrlb"))
    return InstancePaths(instance, run_root / instance, state_root / instance, bpf_root / instance)
