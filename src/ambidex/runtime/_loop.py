"""The runtime's event loop in a daemon thread, and the sync -> async bridge.

Sync callers hand a coroutine to the loop thread and block on a plain lock
until it finishes. That is the cheapest wait there is (no
``concurrent.futures.Future``, no condition variable), which is why a sync
call costs tens of microseconds rather than the few hundred ``asyncio.run``
pays for creating and tearing down a loop on every call. Because every sync
caller's async work runs on this one loop, connection pools and limits created
there are shared by all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar, cast

from ambidex.runtime._waits import acquire_interruptibly

__all__ = ["Escaped", "LoopThread", "guarded", "new_event_loop"]

T = TypeVar("T")

#: How long a sync caller interrupted by Ctrl-C waits for its work to stop.
_CANCEL_GRACE_S = 10.0


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop: uvloop when installed, unless ``AMBIDEX_LOOP=asyncio``."""
    choice = os.environ.get("AMBIDEX_LOOP", "auto").strip().lower()
    if choice not in {"auto", "uvloop", "asyncio"}:
        raise ValueError(f"AMBIDEX_LOOP={choice!r}: expected 'auto', 'uvloop' or 'asyncio'")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ImportError(
                    "AMBIDEX_LOOP=uvloop but uvloop is not installed: pip install 'ambidex[fast]'"
                ) from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class Escaped(Exception):
    """``SystemExit`` or ``KeyboardInterrupt`` raised by work on the loop thread, in transit.

    asyncio lets those two out of the event loop itself (a task that raises one
    re-raises it from ``run_forever``), which would stop the loop thread, and
    with it every caller's work. The work's task ends with this instead, and the
    caller that waits for it raises the original (``exc``), as a plain call would.
    """

    def __init__(self, exc: BaseException) -> None:
        super().__init__(exc)
        self.exc = exc


async def guarded(coro: Coroutine[Any, Any, T]) -> T:
    """``coro``, with ``SystemExit`` and ``KeyboardInterrupt`` carried out as ``Escaped``."""
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as exc:
        raise Escaped(exc) from None


class _Waiter(Generic[T]):
    """One sync caller's wait for one coroutine on the loop thread."""

    __slots__ = ("_exception", "_lock", "_result", "finished", "task")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        #: Set (before the lock is released) once the outcome is known.
        self.finished = False
        self.task: asyncio.Task[T] | None = None
        self._result: T | None = None
        self._exception: BaseException | None = None

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, T],
        ctx: contextvars.Context,
    ) -> None:
        # Runs on the loop thread; the task runs in the caller's context (a copy).
        wrapped = guarded(coro)
        try:
            self.task = loop.create_task(wrapped, context=ctx)
        except BaseException as exc:  # e.g. the loop is closing
            wrapped.close()
            coro.close()
            self._exception = exc
            self.finished = True
            self._lock.release()
            return
        self.task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[T]) -> None:
        if task.cancelled():
            self._exception = asyncio.CancelledError()
        else:
            exc = task.exception()
            if exc is None:
                self._result = task.result()
            else:
                self._exception = exc
        self.finished = True
        self._lock.release()

    def cancel(self) -> None:
        # Runs on the loop thread.
        if self.task is not None:
            self.task.cancel()

    def wait(self, timeout_s: float | None = None) -> bool:
        return acquire_interruptibly(self._lock, timeout_s)

    def outcome(self) -> T:
        exc = self._exception
        if exc is not None:
            self._exception = None  # break the frame <-> exception cycle
            raise exc.exc if isinstance(exc, Escaped) else exc
        return self._result  # type: ignore[return-value]


class LoopThread:
    """An event loop running forever in a daemon thread until ``close()``."""

    def __init__(self, name: str = "ambidex-loop") -> None:
        self._ready = threading.Event()
        self._startup_errors: list[BaseException] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_errors:
            raise self._startup_errors[0]
        # Set by the thread before _ready; mypy cannot see across threads.
        self.loop: asyncio.AbstractEventLoop = cast(asyncio.AbstractEventLoop, self._loop)
        self.thread_id: int | None = self._thread.ident

    def _main(self) -> None:
        try:
            loop = new_event_loop()
        except BaseException as exc:
            self._startup_errors.append(exc)
            self._ready.set()
            return
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._ready.set()
        try:
            while True:
                try:
                    loop.run_forever()
                    break  # stopped: close()
                except (SystemExit, KeyboardInterrupt):
                    # A task raised it (user code's sys.exit, run as a task that is not
                    # `guarded`: a map's call, a gathered coroutine), and asyncio re-raised
                    # it from the loop. The task holds it as its exception, so whoever
                    # waits for the task gets it, as a plain call would; the loop, and
                    # every other caller's work on it, goes on.
                    continue
        finally:
            self._shutdown(loop)

    @staticmethod
    def _shutdown(loop: asyncio.AbstractEventLoop) -> None:
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    @property
    def in_loop_thread(self) -> bool:
        """True when the calling thread is this loop's thread."""
        return threading.get_ident() == self.thread_id

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and block until it finishes; return its value.

        The coroutine runs in a copy of the caller's context: it sees the
        caller's context variables, and what it sets stays with it.

        Ctrl-C (or any exception raised into the waiting thread) cancels the
        coroutine and waits for it to stop before re-raising, so nothing keeps
        running after this returns or raises.

        Raises:
            RuntimeError: when called from the loop thread itself, where blocking
                would deadlock; ``await`` the coroutine there instead.
        """
        if threading.get_ident() == self.thread_id:
            coro.close()
            raise RuntimeError(
                "a sync ambidex call was made from inside the ambidex event loop, where "
                "blocking would deadlock; inside async code use `await f.aio(...)`"
            )
        waiter: _Waiter[T] = _Waiter()
        try:
            # The caller's context variables (its OpenTelemetry span among them) go
            # with the coroutine, as they would into ``asyncio.to_thread``.
            ctx = contextvars.copy_context()
            self.loop.call_soon_threadsafe(waiter.start, self.loop, coro, ctx)
        except RuntimeError:
            coro.close()
            raise
        try:
            waiter.wait()
        except BaseException:
            # KeyboardInterrupt (or another async exception) in the caller:
            # stop the work before letting the exception through -- unless it
            # arrived just after the work ended.
            if not waiter.finished:
                with contextlib.suppress(RuntimeError):
                    self.loop.call_soon_threadsafe(waiter.cancel)
                waiter.wait(_CANCEL_GRACE_S)
            raise
        return waiter.outcome()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the loop (cancelling what still runs on it) and join its thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)
