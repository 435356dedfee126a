"""The I/O thread pool: blocking calls, awaited from any event loop.

A lean pool rather than ``ThreadPoolExecutor`` + ``asyncio.wrap_future``: a
finished call sets its asyncio future directly with one
``call_soon_threadsafe``, skipping the intermediate ``concurrent.futures``
future and its callbacks. Threads start lazily, up to ``max_threads``.

Two lanes share the pool's bookkeeping: the general lane (``max_threads``
threads: ``@ax.blocking`` work, ``ax.to_thread``) and a small *reserved* lane
(``ax.to_reserved_thread``) for ambidex's own short calls that must never wait
behind long blocking work, such as a job worker renewing its leases while every
general thread runs a user's 10-minute job. Reserved threads serve only
reserved calls, so a user's work can never occupy them.

A thread cannot be killed. When a caller stops waiting (timeout or
cancellation) the call is *abandoned*: if it has not started it never will;
if it is running it finishes on its own and its result is dropped. Running
abandoned calls are counted so a user can see threads held by them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ambidex._futures import settle

__all__ = ["IOThreadPool", "ThreadPoolStatistics"]


@dataclass(frozen=True)
class ThreadPoolStatistics:
    """A snapshot of the I/O thread pool."""

    max_threads: int
    """Upper bound on threads (``io_threads``)."""
    threads: int
    """Threads alive now (the reserved lane's included)."""
    busy: int
    """Threads running a call now."""
    queued: int
    """Calls waiting for a free thread."""
    abandoned: int
    """Running calls whose caller gave up (timeout or cancellation)."""


class _Item:
    __slots__ = ("abandoned", "args", "ctx", "fn", "fut", "kwargs", "loop", "running")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
        fut: asyncio.Future[Any],
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.ctx = contextvars.copy_context()
        self.loop = loop
        self.fut = fut
        self.abandoned = False
        self.running = False


_STOP = object()

RESERVED_THREADS = 2
"""Threads of the reserved lane: enough for a job worker's heartbeat and one store call."""


class _Lane:
    """One queue and the threads that serve only it."""

    __slots__ = ("idle", "max_threads", "name", "queue", "threads")

    def __init__(self, max_threads: int, name: str) -> None:
        self.max_threads = max_threads
        self.name = name
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.idle = 0


class IOThreadPool:
    """Threads for blocking calls, started lazily up to ``max_threads``, plus a reserved lane."""

    def __init__(self, max_threads: int, name: str = "ambidex-io") -> None:
        if max_threads < 1:
            raise ValueError(f"io_threads must be at least 1, got {max_threads}")
        self.max_threads = max_threads
        self._general = _Lane(max_threads, name)
        self._reserved = _Lane(RESERVED_THREADS, f"{name}-reserved")
        self._lock = threading.Lock()
        self._busy = 0
        self._queued = 0
        self._abandoned = 0
        self._closed = False

    async def run(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        reserved: bool = False,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` on a pool thread and await its result.

        ``reserved`` sends it to the reserved lane, which only such calls use.
        Cancelling the awaiting task abandons the call (see the module docstring).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        item = _Item(fn, args, kwargs, loop, fut)
        self._submit(item, self._reserved if reserved else self._general)
        try:
            return await fut
        except asyncio.CancelledError:
            self._abandon(item)
            raise

    def _submit(self, item: _Item, lane: _Lane) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the I/O thread pool is closed")
            self._queued += 1
            if lane.idle > 0:
                lane.idle -= 1  # that idle thread will pick this item up
            elif len(lane.threads) < lane.max_threads:
                thread = threading.Thread(
                    target=self._work,
                    args=(lane,),
                    name=f"{lane.name}-{len(lane.threads)}",
                    daemon=True,
                )
                lane.threads.append(thread)
                thread.start()
        lane.queue.put(item)

    def _abandon(self, item: _Item) -> None:
        with self._lock:
            if item.abandoned:
                return
            item.abandoned = True
            if item.running:
                self._abandoned += 1

    def _work(self, lane: _Lane) -> None:
        get = lane.queue.get
        lock = self._lock
        while True:
            item = get()
            if item is _STOP:
                return
            with lock:
                self._queued -= 1
                if item.abandoned:
                    lane.idle += 1
                    continue
                item.running = True
                self._busy += 1
            try:
                value = item.ctx.run(item.fn, *item.args, **item.kwargs)
                ok = True
            except BaseException as exc:
                value, ok = exc, False
            with lock:
                self._busy -= 1
                lane.idle += 1
                item.running = False
                if item.abandoned:
                    self._abandoned -= 1
            if not item.abandoned:
                with contextlib.suppress(RuntimeError):  # the caller's loop has closed
                    item.loop.call_soon_threadsafe(settle, item.fut, ok, value)
            del item, value

    def statistics(self) -> ThreadPoolStatistics:
        """A snapshot of the pool's threads and calls."""
        with self._lock:
            threads = self._general.threads + self._reserved.threads
            return ThreadPoolStatistics(
                max_threads=self.max_threads,
                threads=sum(t.is_alive() for t in threads),
                busy=self._busy,
                queued=self._queued,
                abandoned=self._abandoned,
            )

    def close(self, timeout_s: float = 10.0) -> list[threading.Thread]:
        """Stop the threads once their current call ends; return any still alive."""
        with self._lock:
            self._closed = True
            lanes = [(lane, list(lane.threads)) for lane in (self._general, self._reserved)]
        for lane, lane_threads in lanes:
            for _ in lane_threads:
                lane.queue.put(_STOP)
        threads = [t for _, lane_threads in lanes for t in lane_threads]
        for thread in threads:
            thread.join(timeout_s)
        return [t for t in threads if t.is_alive()]
