"""Carrying out a target-setup plan: read the system's state, then run the actions in order.

This is the only part of `dsrlb.target` that touches the system: addresses through the netlink
facade, sysctls through /proc/sys, files under the request's root. `netns` runs the whole thing in
a named namespace (labs and tests); None is the current one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from dsrlb.netlink import Netlink, Sysctl, SysctlError, read_sysctl, sysctl_exists, write_sysctl
from dsrlb.netlink.types import IPInterface
from dsrlb.target.plan import (
    LOOPBACK,
    Action,
    AddAddress,
    DropRecord,
    Note,
    PlanError,
    RemoveAddress,
    RemoveFile,
    SaveRecord,
    SetSysctl,
    SetupRecord,
    SetupRequest,
    SystemState,
    WriteFile,
    persistent_files,
    plan_setup,
    plan_undo,
    undo_state_needs,
)


def _read_file(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PlanError(f"cannot read {path}: {exc.strerror}") from exc


def read_record(path: Path) -> SetupRecord | None:
    text = _read_file(path)
    return SetupRecord.from_json(text) if text is not None else None


def _read_sysctls(keys: tuple[Sysctl, ...], netns: str | None) -> dict[Sysctl, str | None]:
    values: dict[Sysctl, str | None] = {}
    for key in keys:
        values[key] = read_sysctl(key, netns) if sysctl_exists(key, netns) else None
    return values


def _lo_addresses(netns: str | None) -> frozenset[IPInterface]:
    with Netlink(netns) as nl:
        return frozenset(a.interface for a in nl.addresses(LOOPBACK))


def read_state(request: SetupRequest, netns: str | None = None, undo: bool = False) -> SystemState:
    """Everything plan_setup / plan_undo look at, read without changing anything."""
    record = read_record(request.state_file)
    if undo:
        keys, paths = undo_state_needs(record) if record is not None else ((), ())
    else:
        keys = request.sysctl_keys if request.live else ()
        paths = tuple(f.path for f in persistent_files(request)[0])
    return SystemState(
        lo_addresses=_lo_addresses(netns),
        sysctls=_read_sysctls(keys, netns),
        files={p: _read_file(p) for p in paths},
        record=record,
    )


def plan(request: SetupRequest, netns: str | None = None, undo: bool = False) -> list[Action]:
    state = read_state(request, netns, undo)
    return plan_undo(request, state) if undo else plan_setup(request, state)


def _write(path: Path, content: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.dsrlb-tmp")
    tmp.write_text(content)
    os.chmod(tmp, mode)
    os.replace(tmp, path)  # atomic: a reader sees the old or the new file, never half of one


def execute(actions: list[Action], netns: str | None = None,
            report: Callable[[str], None] = lambda line: None) -> int:
    """Run the actions; returns how many changed something. `report` gets one line per action."""
    changed = 0
    with Netlink(netns) as nl:
        for action in actions:
            try:
                if isinstance(action, AddAddress):
                    done = nl.add_address(action.ifname, action.interface, nodad=True)
                elif isinstance(action, RemoveAddress):
                    done = nl.remove_address(action.ifname, action.interface)
                elif isinstance(action, SetSysctl):
                    write_sysctl(action.key, action.value, netns)
                    done = True
                elif isinstance(action, WriteFile):
                    _write(action.path, action.content, action.mode)
                    done = True
                elif isinstance(action, RemoveFile):
                    action.path.unlink(missing_ok=True)
                    done = True
                elif isinstance(action, SaveRecord):
                    _write(action.path, action.record.to_json(), 0o600)
                    done = False
                elif isinstance(action, DropRecord):
                    action.path.unlink(missing_ok=True)
                    done = False
                else:
                    assert isinstance(action, Note)
                    done = False
            except (OSError, SysctlError) as exc:
                raise PlanError(f"{action.command().splitlines()[0]}: {exc}") from exc
            changed += done
            report(action.command())
    return changed
