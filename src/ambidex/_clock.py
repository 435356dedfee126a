"""Where ambidex's own waits read the time: the system clock, or a test's fake one.

Rate limits, retry waits (the runtime's, the LLM client's, the workflow
scheduler's) and the job store's timestamps (leases, delays, retries) ask
``current_clock()`` instead of calling ``time`` and ``asyncio`` directly, so a
test can install a clock whose sleeps return at once and whose time moves only
when the test says (``ambidex.testing.FakeClock``).

The installed clock is process-wide, not a context variable: one rate limit is
shared by the runtime's loop thread, its I/O threads and the caller's own loop,
and all of them must read the same time. Timeouts (``timeout_s``,
``asyncio.timeout``) and polling stay on real time: they bound real work.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "current_clock", "use_clock"]


@runtime_checkable
class Clock(Protocol):
    """What ambidex's waits need from a clock. Every method may be called from any thread."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for durations and rate limits)."""
        ...

    def time(self) -> float:
        """Seconds since the epoch (for timestamps stored in the job database)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block this thread for ``seconds``."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds``."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time``, ``time.sleep``, ``asyncio.sleep``."""

    # The builtins themselves, not methods that call them: a rate limit reads
    # the clock on every acquire, and a Python frame there costs ~100 ns.
    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    def sleep(self, seconds: float) -> None:
        """``time.sleep(seconds)`` (a negative wait returns at once)."""
        time.sleep(max(seconds, 0.0))

    async def asleep(self, seconds: float) -> None:
        """``await asyncio.sleep(seconds)``."""
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


_SYSTEM_CLOCK = SystemClock()
_current: Clock = _SYSTEM_CLOCK
_install_lock = threading.Lock()
# The installed clocks, oldest first, each under a token of its own: the last one
# still installed is the current clock. A block that ends out of order (two tests on
# threads, a fixture torn down after the block it wraps) takes only its own entry
# away, instead of putting back whatever was current when it began: that could be a
# clock whose block has ended, left installed for the rest of the process.
_installed: list[tuple[object, Clock]] = []


def current_clock() -> Clock:
    """The clock ambidex's waits use now: the system clock unless a test installed another."""
    return _current


@contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Install ``clock`` for the whole process inside the ``with`` block, then take it away.

    After the block the clock installed latest among those whose blocks have not
    ended is current again (the system clock when there is none), even when
    blocks end in another order than they began.

    ``ambidex.testing.FakeClock`` installs itself this way; use this directly
    for a clock of your own (anything with the methods of ``Clock``).

    Raises:
        TypeError: ``clock`` lacks a method of ``Clock``.
    """
    global _current
    if not isinstance(clock, Clock):
        raise TypeError(f"{clock!r} is not a clock: it needs monotonic, time, sleep and asleep")
    token = object()
    with _install_lock:
        _installed.append((token, clock))
        _current = clock
    try:
        yield clock
    finally:
        with _install_lock:
            _installed[:] = [entry for entry in _installed if entry[0] is not token]
            _current = _installed[-1][1] if _installed else _SYSTEM_CLOCK
