"""Bounded fan-out: run awaitables with at most N in flight, results in input order.

The first error cancels everything still running (and closes what never
started) and is raised as itself, not wrapped in an ``ExceptionGroup``, unless
``return_exceptions=True``, in which case errors take their place in the result
list. Completions are collected through done-callbacks, so each costs O(1)
however many are in flight (``asyncio.wait`` rescans every pending task on
each wake-up).
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from types import CoroutineType
from typing import Any, Generic, TypeVar

from ambidex.runtime._facade import sync_facade

__all__ = ["agather", "gather", "run_bounded"]

T = TypeVar("T")


def _check_bound(max_in_flight: int | None) -> None:
    if max_in_flight is not None and (
        isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1
    ):
        raise ValueError(f"max_in_flight must be a positive integer or None, got {max_in_flight!r}")


class _FanOut(Generic[T]):
    """The state of one ``run_bounded`` call."""

    def __init__(
        self,
        thunks: Iterable[Callable[[], Awaitable[T]]],
        max_in_flight: int | None,
        return_exceptions: bool,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.source: Iterator[Callable[[], Awaitable[T]]] = iter(thunks)
        self.max_in_flight = max_in_flight
        self.return_exceptions = return_exceptions
        self.results: list[Any] = []
        self.pending: dict[asyncio.Future[T], int] = {}
        self.finished: deque[asyncio.Future[T]] = deque()
        self.wake: asyncio.Future[None] | None = None
        self.exhausted = False

    def _on_done(self, fut: asyncio.Future[T]) -> None:
        self.finished.append(fut)
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def start_more(self) -> None:
        limit = self.max_in_flight
        pending, results, source = self.pending, self.results, self.source
        create_task, on_done = self.loop.create_task, self._on_done
        while not self.exhausted and (limit is None or len(pending) < limit):
            try:
                thunk = next(source)
            except StopIteration:
                self.exhausted = True
                return
            aw = thunk()
            # create_task directly for coroutines: ensure_future's checks cost
            # more than they are worth in a 10,000-call fan-out.
            fut = create_task(aw) if type(aw) is CoroutineType else asyncio.ensure_future(aw)
            pending[fut] = len(results)
            results.append(None)
            fut.add_done_callback(on_done)

    async def wait_for_some(self) -> None:
        if not self.finished:
            self.wake = self.loop.create_future()
            try:
                await self.wake
            finally:
                self.wake = None

    def collect(self) -> None:
        """Store finished results; raise the first error unless errors are returned."""
        while self.finished:
            fut = self.finished.popleft()
            index = self.pending.pop(fut)
            exc = asyncio.CancelledError() if fut.cancelled() else fut.exception()
            if exc is None:
                self.results[index] = fut.result()
            elif self.return_exceptions:
                self.results[index] = exc
            else:
                raise exc

    async def stop(self) -> None:
        """Cancel what runs, wait for it to stop, close what never started."""
        if self.pending:
            for fut in self.pending:
                fut.cancel()
            await asyncio.gather(*self.pending, return_exceptions=True)
        close = getattr(self.source, "close_unstarted", None)
        if close is not None:
            close()


async def run_bounded(
    thunks: Iterable[Callable[[], Awaitable[T]]],
    *,
    max_in_flight: int | None = None,
    return_exceptions: bool = False,
) -> list[Any]:
    """Start ``thunk()`` for each thunk, at most ``max_in_flight`` at once.

    Returns:
        The results in input order; with ``return_exceptions=True`` an error
        stands in the list in place of its result.

    Raises:
        BaseException: the first error, after every other call has stopped.
    """
    _check_bound(max_in_flight)
    fan: _FanOut[T] = _FanOut(thunks, max_in_flight, return_exceptions)
    try:
        while True:
            fan.start_more()
            if not fan.pending:
                return fan.results
            await fan.wait_for_some()
            fan.collect()
    finally:
        await fan.stop()


class _Awaitables:
    """Iterates thunks over given awaitables; closes the coroutines never started."""

    def __init__(self, aws: tuple[Awaitable[Any], ...]) -> None:
        self._aws = aws
        self._next = 0

    def __iter__(self) -> _Awaitables:
        return self

    def __next__(self) -> Callable[[], Awaitable[Any]]:
        if self._next >= len(self._aws):
            raise StopIteration
        aw = self._aws[self._next]
        self._next += 1
        return lambda: aw

    def close_unstarted(self) -> None:
        for aw in self._aws[self._next :]:
            if inspect.iscoroutine(aw):
                aw.close()
        self._next = len(self._aws)


async def agather(
    *aws: Awaitable[Any], max_in_flight: int | None = None, return_exceptions: bool = False
) -> list[Any]:
    """Await many awaitables, at most ``max_in_flight`` at once; results in order.

    ``await ax.agather(f.aio(1), g.aio(2), max_in_flight=8)``. The first error
    cancels the rest unless ``return_exceptions=True``.
    """
    source = _Awaitables(aws)
    try:
        _check_bound(max_in_flight)
    except ValueError:
        source.close_unstarted()
        raise
    return await run_bounded(
        source, max_in_flight=max_in_flight, return_exceptions=return_exceptions
    )


gather = sync_facade(
    agather,
    name="gather",
    doc="""``agather`` from sync code: ``ax.gather(f.aio(1), g.aio(2))`` returns a list.

    The coroutines run on the runtime's loop thread; this thread blocks until
    all have finished (or the first error has cancelled the rest).
    """,
)
