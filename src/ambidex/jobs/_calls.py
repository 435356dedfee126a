"""Store calls off the event loop, on the runtime's I/O threads, and a way to wait them out.

The desk and the worker call the (blocking) ``JobStore`` through ``StoreCalls``:
each call goes to ``ax.to_reserved_thread``, the reserved lane of the runtime's
I/O threads (the one pool ambidex offloads blocking calls to), so a slow disk
never stalls the loop, no pool of the job service's own competes with the
runtime's, and store calls never queue behind users' blocking jobs on the
general lane: with every I/O thread running a long ``def`` job, lease renewals
still go out on time and the jobs are not taken for dead and run twice.

The reserved lane has two threads, and the desk shares them with the worker
beside it. A desk answers whoever asks, as often as they ask: a flood of HTTP
reads would fill the lane's queue and hold both threads, and the worker's lease
renewals would wait behind the reads until the leases lapsed (jobs requeued,
run twice, failed once out of attempts). So a desk's calls take a turn:
``StoreCalls(at_once=1)`` keeps at most one of them on the lane, queued or
running, until it has ended on its thread; the others wait on the loop. The
worker's calls are not limited: they are few (a heartbeat a second, claims,
outcomes) and always find a thread no read holds.

What a pool of its own gave, and ``close`` keeps: a job manager that stops
first lets every store call already running end (a claim in flight, say), and
starts no new one, before it gives its jobs back; otherwise a job claimed at
the last moment would wait for its lease to lapse.

A call whose caller was cancelled before it started never starts (see
``ax.to_reserved_thread``); one that started is counted until it ends, from
the thread that runs it, so ``close`` cannot miss it.

The hot calls of a SQLite store (submit, claim, finish, renew, get) are the
exception: they run on the store's own two threads, in turns (``_lanes``),
where a turn's writes share one transaction and a loop is woken once per
turn, not once per call. They are not limited by ``at_once`` (a flood of
reads there holds no thread the worker's renewals need: those are on the
writer's thread, which serves every call pending at each turn), and are
counted for ``close`` like the others.

The hot calls of a PostgreSQL store (the same, see ``JobStore.on_loop``) run
on the loop itself, as coroutines on psycopg's ``AsyncConnection`` (``_pg_hot``):
no thread to go to and come back from (110-130 µs a call on the 2-CPU VMs).
Each runs as a task of its own, so a caller cancelled meanwhile stops waiting
but the call goes on to its end, as it would on a thread (a claim committed
is answered, and counted until then); ``close``, called from a thread, waits
for them too (counted on the loop, under the same lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ambidex._job_errors import JobServiceStoppedError
from ambidex.jobs._store import JobStore
from ambidex.runtime import to_reserved_thread

__all__ = ["StoreCalls"]

T = TypeVar("T")


class _Turn:
    """One limited call's place on the lane, given back once: when it ends, or if it never runs.

    A caller cancelled while its call runs stops waiting, but the call still
    holds its thread: the place is given back by the thread when the call ends
    (so a client that hangs up does not let more calls onto the lane).
    """

    __slots__ = ("_gate", "_lock", "_loop", "_state")

    def __init__(self, gate: asyncio.Semaphore) -> None:
        self._gate = gate
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._state = "waiting"  # then "running" (on a thread) or "gone" (never to run)

    def start(self) -> bool:
        """On the thread: whether the call may run (not if its caller gave up before)."""
        with self._lock:
            if self._state == "gone":
                return False
            self._state = "running"
            return True

    def end(self) -> None:
        """On the thread: the call has ended; the next one may go."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: no one waits
            self._loop.call_soon_threadsafe(self._gate.release)

    def leave(self) -> None:
        """On the loop, once the caller stops waiting: give the place back if the call never ran."""
        with self._lock:
            never_ran = self._state == "waiting"
            self._state = "gone"
        if never_ran:
            self._gate.release()


class StoreCalls:
    """Runs store calls on the runtime's I/O threads; ``close`` waits for those running.

    Args:
        at_once: at most this many of these calls on the reserved lane at a
            time, queued or running (None: no bound); see the module docstring.
    """

    def __init__(self, *, at_once: int | None = None) -> None:
        if at_once is not None and at_once < 1:
            raise ValueError(f"at_once must be at least 1, got {at_once}")
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = 0
        self._on_loops: dict[asyncio.AbstractEventLoop, int] = {}  # coroutines running, per loop
        self._closed = False
        self._gate = None if at_once is None else asyncio.Semaphore(at_once)

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on an I/O thread, awaited.

        Raises:
            JobServiceStoppedError: the calls were closed (before this one started).
        """
        store = getattr(fn, "__self__", None)
        if isinstance(store, JobStore):
            hot = store.on_loop(fn, args, kwargs)
            if hot is not None:  # a hot call of a PostgreSQL store: on this loop
                return await self._on_loop(hot)
        queued = self.queue(fn, *args, **kwargs)
        if queued is not None:  # a hot call of a SQLite store: its own threads, in turns
            return await queued
        if self._gate is None:
            return await to_reserved_thread(self._run, fn, args, kwargs, None)
        await self._gate.acquire()
        turn = _Turn(self._gate)
        try:
            return await to_reserved_thread(self._run, fn, args, kwargs, turn)
        finally:
            turn.leave()

    def queue(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T] | None:
        """Queue a hot call of a SQLite store in its lane now (None for any other call).

        Calls queued run in that order: one queued before a claim is written
        before the claim reads (in the same turn, or an earlier one).

        Raises:
            JobServiceStoppedError: the calls were closed.
        """
        if self._closed:
            raise _stopped()
        store = getattr(fn, "__self__", None)
        lane = store.lane_of(fn) if isinstance(store, JobStore) else None
        if lane is None:
            return None
        return lane.submit(self._run, fn, args, kwargs, None)

    async def _on_loop(self, call: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise _stopped()
            self._running += 1
            self._on_loops[loop] = self._on_loops.get(loop, 0) + 1
        try:
            task = loop.create_task(self._counted(call, loop))
        except BaseException:
            self._ended(loop)
            raise
        # The call goes on if its caller is cancelled (as one on a thread would).
        return await asyncio.shield(task)

    async def _counted(
        self, call: Callable[[], Awaitable[T]], loop: asyncio.AbstractEventLoop
    ) -> T:
        try:
            return await call()
        finally:
            self._ended(loop)

    def _ended(self, loop: asyncio.AbstractEventLoop | None) -> None:
        with self._lock:
            self._running -= 1
            if loop is not None:
                left = self._on_loops[loop] - 1
                if left:
                    self._on_loops[loop] = left
                else:
                    del self._on_loops[loop]
            if self._running == 0 or loop is not None:
                self._idle.notify_all()

    def _run(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        turn: _Turn | None,
    ) -> T:
        if turn is not None and not turn.start():
            raise RuntimeError("the call was given up before it started")  # no one reads this
        try:
            with self._lock:
                if self._closed:
                    raise _stopped()
                self._running += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._ended(None)
        finally:
            if turn is not None:
                turn.end()

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    def close(self) -> None:
        """Start no more calls; block until those running have ended.

        Called on a loop's own thread, it cannot wait for that loop's calls
        (they would never end): it waits for the others only.
        """
        here = asyncio._get_running_loop()
        with self._lock:
            self._closed = True
            while self._running - self._never_ending(here):
                self._idle.wait(0.1)  # and look again: a loop may have closed meanwhile

    def _never_ending(self, here: asyncio.AbstractEventLoop | None) -> int:
        """The calls counted on this thread's loop, or on a closed loop: none will end.

        A loop closed without cancelling its tasks drops a call's task pending,
        and its ``finally`` never runs.
        """
        return sum(n for loop, n in self._on_loops.items() if loop is here or loop.is_closed())


def _stopped() -> JobServiceStoppedError:
    return JobServiceStoppedError("the job service has stopped: its store calls are closed")
