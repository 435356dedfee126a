"""Keep a job's ``SystemExit`` and ``KeyboardInterrupt`` inside the job, in the tasks it starts.

A job's own coroutine is awaited inside a ``try`` that catches anything it
raises. But asyncio lets ``SystemExit`` and ``KeyboardInterrupt`` out of the
event loop itself when *any* task raises them — a task the job starts with
``asyncio.gather``, ``create_task`` or a ``TaskGroup`` included, even one it
awaits — and that would stop the whole server. So while a job runs, a task
factory on the worker's loop wraps every task the job starts: such an
exception ends that task as ``EscapedExit`` (an ordinary exception), which
reaches the job like any other failure. Tasks that are not a job's (the
server's own) are created exactly as before.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ambidex._text import describe_exception
from ambidex.exceptions import AmbidexError

__all__ = ["EscapedExit", "enter_job", "leave_job", "task_factory_installed"]

T = TypeVar("T")

_IN_JOB: contextvars.ContextVar[bool] = contextvars.ContextVar("ambidex_in_job", default=False)


class EscapedExit(AmbidexError):
    """``SystemExit`` or ``KeyboardInterrupt`` raised in a task a job started (``exc``)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        super().__init__(f"{describe_exception(exc)} (raised in a task the job started)")


async def _contained(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as exc:
        raise EscapedExit(exc) from exc


def enter_job() -> contextvars.Token[bool]:
    """Mark the code that follows (and every task it starts) as a job's, until ``leave_job``."""
    return _IN_JOB.set(True)


def leave_job(token: contextvars.Token[bool]) -> None:
    """End what ``enter_job`` began."""
    _IN_JOB.reset(token)


@contextmanager
def task_factory_installed(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Wrap the tasks that jobs start on ``loop`` for as long as the block lasts."""
    previous = loop.get_task_factory()
    in_job, make = _IN_JOB.get, asyncio.Task  # every task of the loop comes through here

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        if in_job() and asyncio.iscoroutine(coro):
            coro = _contained(coro)
        if previous is not None:
            return previous(loop, coro, **kwargs)
        return make(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    try:
        yield
    finally:
        if loop.get_task_factory() is factory:
            loop.set_task_factory(previous)
