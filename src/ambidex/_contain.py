"""Keep user code's ``SystemExit`` and ``KeyboardInterrupt`` inside its job or workflow node.

A job's or a node's own coroutine is awaited inside a ``try`` that catches
anything it raises. But asyncio lets ``SystemExit`` and ``KeyboardInterrupt``
out of the event loop itself when *any* task raises them — a task the code
starts with ``asyncio.gather``, ``create_task`` or a ``TaskGroup`` included,
even one it awaits — and that would stop the whole server, or the runtime's
loop thread and every run on it. So while such code runs, a task factory on
the loop wraps every task it starts: such an exception ends that task as
``EscapedExit`` (an ordinary exception), which reaches the job or node like
any other failure. Tasks that are not user code's (the server's and the
scheduler's own) are created exactly as before.

Used by the job worker (``enter_user_code``: the job's code) and the workflow
scheduler (``enter_user_code`` in each node's task: the node's code).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ambidex._text import describe_exception
from ambidex.exceptions import AmbidexError

__all__ = ["EscapedExit", "enter_user_code", "leave_user_code", "task_factory_installed"]

T = TypeVar("T")

# Where user code's tasks come from, in words (None: not user code's).
_USER_CODE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ambidex_user_code", default=None
)


class EscapedExit(AmbidexError):
    """``SystemExit`` or ``KeyboardInterrupt`` raised in a task user code started (``exc``)."""

    def __init__(self, exc: BaseException, where: str = "a task the job started") -> None:
        self.exc = exc
        self.where = where
        super().__init__(f"{describe_exception(exc)} (raised in {where})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.exc, self.where))


async def _contained(coro: Coroutine[Any, Any, T], where: str) -> T:
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as exc:
        raise EscapedExit(exc, where) from exc


def enter_user_code(where: str = "a task the job started") -> contextvars.Token[str | None]:
    """Mark what follows (and every task it starts) as user code, until ``leave_user_code``.

    ``where`` names, in an ``EscapedExit``, the tasks that code starts.
    """
    return _USER_CODE.set(where)


def leave_user_code(token: contextvars.Token[str | None]) -> None:
    """End what ``enter_user_code`` began."""
    _USER_CODE.reset(token)


@contextmanager
def task_factory_installed(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Wrap the tasks that user code starts on ``loop`` for as long as the block lasts."""
    previous = loop.get_task_factory()
    in_job, make = _USER_CODE.get, asyncio.Task  # every task of the loop comes through here

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        where = in_job()
        if where is not None and asyncio.iscoroutine(coro):
            coro = _contained(coro, where)
        if previous is not None:
            return previous(loop, coro, **kwargs)
        return make(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    try:
        yield
    finally:
        if loop.get_task_factory() is factory:
            loop.set_task_factory(previous)
