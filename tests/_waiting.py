"""Waiting in tests for a condition, never for a fixed time: poll it, with a deadline.

A test that sleeps "long enough" is slow when the machine is idle and flaky when it is
busy; these return the moment ``predicate()`` holds, and give up after ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

POLL_S = 0.005


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(POLL_S)
    return predicate()


async def await_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """``wait_for`` for async tests: polls without blocking the loop."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(POLL_S)
    return predicate()


def run_within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()``'s result or exception, from a thread; fails the test if it takes longer."""
    box: list[Any] = []

    def target() -> None:
        try:
            box.append(fn())
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: the run hangs"
    return box[0]
