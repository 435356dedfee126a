"""Store calls off the event loop, on the runtime's I/O threads, and a way to wait them out.

The desk and the worker call the (blocking) ``JobStore`` through ``StoreCalls``:
each call goes to ``ax.to_reserved_thread``, the reserved lane of the runtime's
I/O threads (the one pool ambidex offloads blocking calls to), so a slow disk
never stalls the loop, no pool of the job service's own competes with the
runtime's, and store calls never queue behind users' blocking jobs on the
general lane: with every I/O thread running a long ``def`` job, lease renewals
still go out on time and the jobs are not taken for dead and run twice.

What a pool of its own gave, and ``close`` keeps: a job manager that stops
first lets every store call already running end (a claim in flight, say), and
starts no new one, before it gives its jobs back; otherwise a job claimed at
the last moment would wait for its lease to lapse.

A call whose caller was cancelled before it started never starts (see
``ax.to_reserved_thread``); one that started is counted until it ends, from
the thread that runs it, so ``close`` cannot miss it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ambidex.runtime import to_reserved_thread

__all__ = ["StoreCalls"]

T = TypeVar("T")


class StoreCalls:
    """Runs store calls on the runtime's I/O threads; ``close`` waits for those running."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = 0
        self._closed = False

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on an I/O thread, awaited.

        Raises:
            RuntimeError: the calls were closed (before this one started).
        """
        return await to_reserved_thread(self._run, fn, args, kwargs)

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        with self._lock:
            if self._closed:
                raise RuntimeError("the job service has stopped: its store calls are closed")
            self._running += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self._idle.notify_all()

    def close(self) -> None:
        """Start no more calls; block until those running have ended."""
        with self._lock:
            self._closed = True
            while self._running:
                self._idle.wait()
