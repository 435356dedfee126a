"""Helpers shared by the runtime tests: polling with a deadline, process checks."""

from __future__ import annotations

from pathlib import Path

import psutil

from _waiting import await_for, wait_for

__all__ = ["await_for", "process_gone", "read_pid", "wait_for"]


def read_pid(path: Path, timeout_s: float = 10.0) -> int:
    """The pid a task wrote to ``path``, waiting for the file to appear."""
    assert wait_for(path.exists, timeout_s), f"{path} was never written"
    return int(path.read_text())


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
