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

*Elastic* calls (``elastic=True``, or any call made inside ``elastic_threads()``)
may go beyond ``max_threads``: when every general thread is busy and stays
blocked (fewer calls end within ``ELASTIC_GROW_S``, 10 ms, than threads are
busy), a thread starts for each waiting elastic call, up to ``elastic_cap``
general and elastic threads in all (``AMBIDEX_IO_THREADS_MAX``, default 256;
see ``default_io_threads_max``). A workflow asks for this when it dispatches a
blocking node, so its ready blocking nodes all run at once rather than queue
for ``io_threads`` threads.
The extra threads serve only elastic calls, so other calls keep the
``max_threads`` bound, and each exits once it has had no call for
``elastic_idle_s`` (1 s): the pool shrinks back when the demand ends. A general
thread that falls idle while elastic calls wait takes one of them.

A thread cannot be killed. When a caller stops waiting (timeout or
cancellation) the call is *abandoned*: if it has not started it never will;
if it is running it finishes on its own and its result is dropped. Running
abandoned calls are counted so a user can see threads held by them; their
threads count against ``max_threads`` and ``elastic_cap`` until they end.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ambidex._futures import settle
from ambidex.runtime._histogram import WaitHistogram

__all__ = [
    "ELASTIC_GROW_S",
    "ELASTIC_IDLE_S",
    "IOThreadPool",
    "ThreadPoolStatistics",
    "elastic_threads",
]


@dataclass(frozen=True)
class ThreadPoolStatistics:
    """A snapshot of the I/O thread pool."""

    max_threads: int
    """Upper bound on threads for ordinary calls (``io_threads``)."""
    threads: int
    """Threads alive now (the reserved lane's and the elastic ones included): may
    exceed ``max_threads`` while elastic calls (a workflow's blocking nodes) run."""
    busy: int
    """Threads running a call now."""
    queued: int
    """Calls waiting for a free thread."""
    abandoned: int
    """Running calls whose caller gave up (timeout or cancellation)."""
    elastic_cap: int
    """Upper bound on general and elastic threads together (``io_threads_max``)."""
    elastic_threads: int
    """Threads alive now beyond ``max_threads``, started for elastic calls."""
    peak_threads: int
    """The most threads alive at once since the pool started (reserved ones included)."""
    queue_waits: int = 0
    """Calls that found no idle thread and waited in the queue for one (since the pool started)."""
    queue_wait_s: float = 0.0
    """Their time in the queue, in seconds, from submission to a thread taking the call."""


class _Item:
    __slots__ = ("abandoned", "args", "ctx", "fn", "fut", "kwargs", "loop", "queued_at", "running")

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
        self.queued_at = 0.0  # perf_counter() when it queued behind busy threads, else 0.0


_STOP = object()

RESERVED_THREADS = 2
"""Threads of the reserved lane: enough for a job worker's heartbeat and one store call."""

ELASTIC_IDLE_S = 1.0
"""How long an elastic thread waits for another call before it exits.

Long enough to carry a workflow's threads from one layer of blocking nodes to the
next (a thread costs ~50 us to start), short enough to give them back soon after."""

ELASTIC_GROW_S = 0.01
"""How long an elastic call that found every thread busy waits before threads start.

Long enough to tell threads blocked in a call from a burst of short calls keeping
them busy (a few GIL switch intervals, 5 ms each); short beside a blocking call."""

_elastic: ContextVar[bool] = ContextVar("ambidex_elastic_threads", default=False)


@contextlib.contextmanager
def elastic_threads() -> Iterator[None]:
    """Within the block, blocking calls of this context may grow the I/O pool.

    Each such call (``ax.to_thread``, an ``@ax.blocking`` call, anything that
    reaches ``Runtime.run_in_thread``) that finds every thread busy, and them
    stuck (see ``ELASTIC_GROW_S``), starts one more, up to ``io_threads_max``,
    instead of waiting; the extra threads exit
    when idle. The workflow scheduler uses it for ``@ax.blocking`` nodes.
    """
    token = _elastic.set(True)
    try:
        yield
    finally:
        _elastic.reset(token)


class _Lane:
    """One queue and the threads that serve it."""

    __slots__ = ("idle", "idle_s", "max_threads", "name", "queue", "started", "threads")

    def __init__(self, max_threads: int, name: str, idle_s: float | None = None) -> None:
        self.max_threads = max_threads
        self.name = name
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        # Threads waiting for a call minus calls queued for them: negative, a backlog.
        self.idle = 0
        self.idle_s = idle_s  # None: threads live until close(); else exit when idle that long
        self.started = 0  # threads started so far (their names)


class IOThreadPool:
    """Threads for blocking calls, started lazily up to ``max_threads``, plus a reserved lane.

    ``elastic_cap`` (at least ``max_threads``; default ``max_threads``, no growth)
    bounds the general and elastic threads together when elastic calls grow the
    pool; an elastic thread exits after ``elastic_idle_s`` without a call.
    """

    def __init__(
        self,
        max_threads: int,
        name: str = "ambidex-io",
        *,
        elastic_cap: int | None = None,
        elastic_idle_s: float = ELASTIC_IDLE_S,
    ) -> None:
        if max_threads < 1:
            raise ValueError(f"io_threads must be at least 1, got {max_threads}")
        self.max_threads = max_threads
        self.elastic_cap = max(max_threads, elastic_cap or max_threads)
        self._general = _Lane(max_threads, name)
        self._elastic = _Lane(self.elastic_cap - max_threads, f"{name}-elastic", elastic_idle_s)
        self._reserved = _Lane(RESERVED_THREADS, f"{name}-reserved")
        self._lock = threading.Lock()
        self._busy = 0
        self._queued = 0
        self._abandoned = 0
        self._peak = 0
        self._done = 0  # calls ended (elastic growth: are the busy threads stuck?)
        self._done_mark = 0  # ... as of the pending _grow's arming
        self._armed = 0.0  # monotonic time a _grow was scheduled, 0.0 if none is pending
        self._closed = False
        self.queue_waits = WaitHistogram()  # written under self._lock

    async def run(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        reserved: bool = False,
        elastic: bool | None = None,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` on a pool thread and await its result.

        ``reserved`` sends it to the reserved lane, which only such calls use.
        ``elastic`` lets it start a thread beyond ``max_threads`` (up to
        ``elastic_cap``) when every thread is busy; None: as ``elastic_threads()``
        says for the caller's context (by default no).
        Cancelling the awaiting task abandons the call (see the module docstring).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        item = _Item(fn, args, kwargs, loop, fut)
        if reserved:
            self._submit(item, self._reserved)
        elif elastic or (elastic is None and _elastic.get()):
            self._submit_elastic(item)
        else:
            self._submit(item, self._general)
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
            if lane.idle <= 0 and len(lane.threads) < lane.max_threads:
                self._start(lane)
            lane.idle -= 1  # an idle thread (or the one just started) will pick this item up
            if lane.idle < 0:  # ... or none will: it waits for a busy thread
                item.queued_at = time.perf_counter()
        lane.queue.put(item)

    def _submit_elastic(self, item: _Item) -> None:
        """A free general thread if there is one, else an elastic thread, started if need be.

        Not at once: a burst of short calls (a wide layer of trivial ``def`` nodes)
        finds every thread busy too, and would start a thread per call. The call
        waits in the elastic lane's queue (general threads that fall idle take it)
        and ``_grow`` looks ``ELASTIC_GROW_S`` later: threads start only if the
        busy ones are stuck (fewer calls ended than threads were busy).
        """
        general = self._general
        arm = False
        with self._lock:
            if self._closed:
                raise RuntimeError("the I/O thread pool is closed")
            self._queued += 1
            if general.idle > 0 or len(general.threads) < general.max_threads:
                lane = general
                if lane.idle <= 0:
                    self._start(lane)
            else:
                lane = self._elastic
                if lane.idle <= 0 and len(lane.threads) < lane.max_threads:
                    now = time.monotonic()
                    if now - self._armed > 4 * ELASTIC_GROW_S:  # none pending (or its loop died)
                        self._armed = now
                        self._done_mark = self._done
                        arm = True
            lane.idle -= 1
            if lane.idle < 0:
                item.queued_at = time.perf_counter()
        lane.queue.put(item)
        if arm:
            item.loop.call_later(ELASTIC_GROW_S, self._grow)

    def _grow(self) -> None:
        """On a loop, ``ELASTIC_GROW_S`` after an elastic call queued: start threads if stuck."""
        rearm = False
        with self._lock:
            self._armed = 0.0
            lane = self._elastic
            if self._closed or lane.idle >= 0:
                return
            if self._done - self._done_mark < self._busy:  # the busy threads are blocked
                while lane.idle < 0 and len(lane.threads) < lane.max_threads:
                    self._start(lane)
            if lane.idle < 0 and len(lane.threads) < lane.max_threads:
                self._armed = time.monotonic()
                self._done_mark = self._done
                rearm = True
        if rearm:
            asyncio.get_running_loop().call_later(ELASTIC_GROW_S, self._grow)

    def _start(self, lane: _Lane) -> None:
        """Start a thread for ``lane`` (under the lock): it counts as idle until it gets a call."""
        thread = threading.Thread(
            target=self._work, args=(lane,), name=f"{lane.name}-{lane.started}", daemon=True
        )
        lane.started += 1
        lane.threads.append(thread)
        lane.idle += 1
        alive = len(self._general.threads) + len(self._elastic.threads)
        self._peak = max(self._peak, alive + len(self._reserved.threads))
        thread.start()

    def _abandon(self, item: _Item) -> None:
        with self._lock:
            if item.abandoned:
                return
            item.abandoned = True
            if item.running:
                self._abandoned += 1

    def _next_or_retire(self, lane: _Lane, idle_s: float) -> Any:
        """The next call for a thread of a lane whose threads retire after ``idle_s``.

        ``_STOP`` once the thread has waited that long with no call on its way to it
        (it has left the lane then).
        """
        while True:
            try:
                return lane.queue.get(timeout=idle_s)
            except queue.Empty:
                with self._lock:
                    if lane.idle > 0:  # no call is on its way to this thread: exit
                        lane.idle -= 1
                        lane.threads.remove(threading.current_thread())
                        return _STOP

    def _work(self, lane: _Lane) -> None:
        get = lane.queue.get
        lock = self._lock
        idle_s = lane.idle_s
        # The general lane's threads help the elastic lane when it has a backlog (at the
        # cap) and they have nothing to do: its calls may run on any thread.
        helps = self._elastic if lane is self._general else None
        source = get
        while True:
            item = source() if idle_s is None else self._next_or_retire(lane, idle_s)
            source = get
            if item is _STOP:
                return
            with lock:
                self._queued -= 1
                if item.queued_at:
                    self.queue_waits.observe(time.perf_counter() - item.queued_at)
                if item.abandoned:
                    lane.idle += 1
                    if helps is not None and lane.idle > 0 and helps.idle < 0:
                        lane.idle -= 1
                        helps.idle += 1  # this thread takes one of the calls waiting there
                        source = helps.queue.get
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
                self._done += 1
                lane.idle += 1
                item.running = False
                if item.abandoned:
                    self._abandoned -= 1
                if helps is not None and lane.idle > 0 and helps.idle < 0:
                    lane.idle -= 1
                    helps.idle += 1  # this thread takes one of the calls waiting there
                    source = helps.queue.get
            if not item.abandoned:
                with contextlib.suppress(RuntimeError):  # the caller's loop has closed
                    item.loop.call_soon_threadsafe(settle, item.fut, ok, value)
            del item, value

    def statistics(self) -> ThreadPoolStatistics:
        """A snapshot of the pool's threads and calls."""
        with self._lock:
            elastic = self._elastic.threads
            threads = self._general.threads + elastic + self._reserved.threads
            return ThreadPoolStatistics(
                max_threads=self.max_threads,
                threads=sum(t.is_alive() for t in threads),
                busy=self._busy,
                queued=self._queued,
                abandoned=self._abandoned,
                elastic_cap=self.elastic_cap,
                elastic_threads=sum(t.is_alive() for t in elastic),
                peak_threads=self._peak,
                queue_waits=self.queue_waits.count,
                queue_wait_s=self.queue_waits.total_s,
            )

    def close(self, timeout_s: float = 10.0) -> list[threading.Thread]:
        """Stop the threads once their current call ends; return any still alive."""
        with self._lock:
            self._closed = True
            lanes = [
                (lane, list(lane.threads))
                for lane in (self._general, self._elastic, self._reserved)
            ]
        for lane, lane_threads in lanes:
            for _ in lane_threads:
                lane.queue.put(_STOP)
        threads = [t for _, lane_threads in lanes for t in lane_threads]
        for thread in threads:
            thread.join(timeout_s)
        return [t for t in threads if t.is_alive()]
