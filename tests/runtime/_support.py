"""Helpers shared by the runtime tests: polling with a deadline, process checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import psutil


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


async def await_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """``wait_for`` for async tests: polls without blocking the loop."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.005)
    return predicate()


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
