"""Group commit: writes that arrive while one is being stored go together in the next.

A caller never waits for a batch to fill: when nothing is being written, its
item is written at once, alone. Only while a write is in flight do newcomers
queue, and they are then written in one transaction. Under load this turns N
commits into a few, and costs nothing when idle.

One item's fault stays its own: ``write`` may answer an exception for an item
(it is raised to that item's caller alone), and if a whole batch fails, its
items are written again one at a time, so an item the database refuses fails
alone and the others are stored.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


class GroupCommit(Generic[I, O]):
    """Batch calls of ``write(items) -> results`` (one result per item, in order).

    Args:
        write: stores a batch in one transaction; a result that is an exception
            fails that item alone; an exception raised fails the batch (its
            items are then written one by one).
        max_batch: at most this many items per write.
        name: the name of the task that writes.
        alone_on_failure: write a failed batch's items again one by one (False:
            the batch's exception is every item's answer).
    """

    def __init__(
        self,
        write: Callable[[list[I]], Awaitable[Sequence[O | BaseException]]],
        max_batch: int = 256,
        *,
        name: str = "ambidex-jobs-group-commit",
        alone_on_failure: bool = True,
    ):
        self._write = write
        self._max_batch = max_batch
        self._name = name
        self._alone_on_failure = alone_on_failure
        self._pending: list[tuple[I, asyncio.Future[O]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def __call__(self, item: I) -> O:
        """Write ``item`` (with whatever else is waiting) and return its result."""
        # The write goes on if this caller is cancelled: the item may be stored.
        return await asyncio.shield(self.put(item))

    def put(self, item: I) -> asyncio.Future[O]:
        """Queue ``item`` for the next write; its future holds the result.

        Cancelling the future drops the answer, not the write.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[O] = loop.create_future()
        self._pending.append((item, future))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush(), name=self._name)
        return future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                try:
                    results = await self._write([item for item, _ in batch])
                except asyncio.CancelledError:
                    self._settle_all(batch, asyncio.CancelledError())
                    raise
                except builtins.BaseException as exc:
                    if len(batch) == 1 or not self._alone_on_failure:
                        self._settle_all(batch, exc)
                    else:  # one bad item must not sink the rest: each on its own
                        for one in batch:
                            await self._write_alone(one)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    _settle(future, result)
        finally:
            self._flusher = None
            for _, future in self._pending:
                if not future.done():
                    future.cancel()
            self._pending.clear()

    async def _write_alone(self, one: tuple[I, asyncio.Future[O]]) -> None:
        item, future = one
        try:
            (result,) = await self._write([item])
        except asyncio.CancelledError:
            future.cancel()
            raise
        except builtins.BaseException as exc:
            result = exc
        _settle(future, result)

    @staticmethod
    def _settle_all(batch: list[tuple[I, asyncio.Future[O]]], exc: BaseException) -> None:
        for _, future in batch:
            _settle(future, exc)

    async def aclose(self) -> None:
        """Wait for the writes in flight to end (and for those queued meanwhile)."""
        while self._flusher is not None:
            await asyncio.wait({self._flusher})


def _settle(future: asyncio.Future[O], result: O | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
