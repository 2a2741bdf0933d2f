"""Reading a test's helper process line by line with a bound, shared by the netns tests."""

from __future__ import annotations

import select
import subprocess


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next stdout line of `proc` (bounded wait). stderr is not read here: while the process runs,
    that read would block; the caller's communicate() gets it."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no output within {timeout:.0f} s"
    return proc.stdout.readline().strip()
