"""A thread of the store's own that runs calls in turns, and wakes each waiting loop once a turn.

Why not the runtime's I/O threads (``to_reserved_thread``): a hop from the
loop to a pool thread and back is a wake-up each way, for every call. On the
2-CPU virtual machines the service runs on, that round trip cost 110-130 µs
(measured, ``asyncio``'s own executor as much), five times the SQLite write
it carried, and a job makes four such calls (submit, claim, finish, get).

A ``Lane`` runs every call pending when its turn starts, one after another,
inside one ``around()`` block (for the writer: one SQLite transaction, each
call in a savepoint of its own), then answers them all: one wake-up per loop
per turn, however many calls it carried. Under load a turn carries the
submits, claims, finishes and renewals of every job in flight, so the commit
and the wake-ups are shared; idle, a call runs at once in a turn of its own.

What the callers rely on, kept from ``StoreCalls``:

* nothing is answered before ``around()`` has ended without error: a write
  is acknowledged after its commit, and if the commit fails every call of
  the turn gets that error (none of them was stored);
* one call's error is its own: it is raised to its caller alone (the
  writer's savepoint undoes that call's writes, the others commit);
* a call whose caller stopped waiting before its turn began never runs;
* each call runs in its caller's ``contextvars`` context (the clock a test
  installs, for one);
* ``close`` lets the turn under way end, fails the calls still waiting with
  ``RuntimeError("the job store is closed")`` and ends the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from ambidex._futures import settle

__all__ = ["Lane"]

T = TypeVar("T")


class _Call:
    __slots__ = ("args", "ctx", "fn", "future", "gone", "loop", "ok", "value")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
    ) -> None:
        self.fn = fn
        self.args = args
        self.ctx = contextvars.copy_context()
        self.loop = loop
        self.future = future
        self.gone = False  # the caller stopped waiting (set on its loop)
        self.ok = False
        self.value: Any = None

    def given_up(self, future: asyncio.Future[Any]) -> None:
        """On the loop, when the future is done: a cancelled one's call is skipped."""
        if future.cancelled():
            self.gone = True


class Lane:
    """A thread running calls in turns, each turn inside ``around()``.

    Args:
        name: the thread's name.
        around: a context manager factory entered once a turn, on the lane's
            thread, around every call of the turn (default: nothing).
    """

    def __init__(
        self,
        name: str,
        around: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.name = name
        # Weakly: the lane's thread must not keep the store whose turn it runs alive
        # (a store dropped without close() is collected, and its lanes closed, see
        # ``JobStore``); a bound method is held by a WeakMethod.
        self._around: Callable[[], Callable[[], contextlib.AbstractContextManager[Any]] | None]
        if around is None:
            self._around = lambda: contextlib.nullcontext
        elif hasattr(around, "__self__"):
            self._around = weakref.WeakMethod(around)
        else:
            self._around = lambda: around
        self._cond = threading.Condition(threading.Lock())
        self._pending: list[_Call] = []
        self._closed = False
        self._thread: threading.Thread | None = None
        self.turns = 0
        """Turns run so far (calls per turn = calls / turns)."""
        self.calls = 0
        """Calls run so far."""

    @property
    def thread(self) -> threading.Thread | None:
        """The lane's thread, once a call has started it."""
        return self._thread

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the lane's next turn; its result once the turn has ended.

        Raises:
            RuntimeError: the lane was closed.
        """
        return await self.submit(fn, *args)

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args)`` for the lane's next turn now; the future of its result.

        Calls run in the order they were queued. Cancelling the future before
        the call's turn has begun keeps it from running.

        Raises:
            RuntimeError: the lane was closed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        call = _Call(fn, args, loop, future)
        with self._cond:
            if self._closed:
                raise RuntimeError("the job store is closed")
            self._pending.append(call)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            elif len(self._pending) == 1:
                self._cond.notify()
        future.add_done_callback(call.given_up)
        return future

    def close(self, *, wait: bool = True) -> None:
        """Let the turn under way end; fail the calls still waiting; end the thread.

        Args:
            wait: block until the thread has ended (not from a finalizer).
        """
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    def _work(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._pending and not self._closed:
                    cond.wait()
                if self._closed:
                    stopped, self._pending = self._pending, []
                    break
                batch, self._pending = self._pending, []
            self._turn(batch)
            del batch  # its calls hold their stores: nothing of them is kept while idle
        closed = RuntimeError("the job store is closed")
        for call in stopped:
            call.value = closed
        _answer(stopped)

    def _turn(self, batch: list[_Call]) -> None:
        self.turns += 1
        around = self._around()
        try:
            if around is None:
                raise RuntimeError("the job store is closed")  # collected without close()
            with around():
                for call in batch:
                    if call.gone:
                        continue
                    self.calls += 1
                    try:
                        call.value = call.ctx.run(call.fn, *call.args)
                        call.ok = True
                    except BaseException as exc:  # the caller's own error, raised to it alone
                        call.value = exc
        except BaseException as exc:  # the turn failed (BEGIN or COMMIT): nothing was stored
            for call in batch:
                if call.ok or call.value is None:
                    call.ok, call.value = False, _own_copy(exc)
        _answer(batch)


def _answer(batch: list[_Call]) -> None:
    """Settle every call's future: one wake-up for each loop waiting on the batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Call]] = {}
    for call in batch:
        if not call.gone:
            by_loop.setdefault(call.loop, []).append(call)
    for loop, calls in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop has closed: no one waits
            loop.call_soon_threadsafe(_settle, calls)


def _settle(calls: list[_Call]) -> None:
    for call in calls:
        settle(call.future, call.ok, call.value)


def _own_copy(exc: BaseException) -> BaseException:
    """A copy of a turn's error for one of its callers (their tracebacks must not pile up).

    Made without calling the type's ``__init__`` again (one that formats its
    message would format it twice): same type, ``args`` and attributes.
    """
    try:
        mine = type(exc).__new__(type(exc))
        mine.__dict__.update(getattr(exc, "__dict__", {}))
        mine.args = exc.args
    except Exception:  # a type that cannot be made so: share the error
        return exc
    mine.__cause__ = exc.__cause__
    mine.__context__ = exc.__context__
    mine.__suppress_context__ = exc.__suppress_context__
    return mine.with_traceback(exc.__traceback__)
