"""A sync face for an async function, written once: ``sweep = sync_facade(asweep)``.

A sync facade is the async function run on the runtime's loop thread
(``current_runtime().call``), blocking only the calling thread, so it works from
any thread, a Jupyter cell with its own running loop included. Written by hand,
each facade copied its async function's whole signature and forwarded every
argument, and the two drifted; here the facade takes the async function's
parameters (``ParamSpec``: mypy checks calls to it against them) and
``inspect.signature`` follows ``__wrapped__`` to show them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from ambidex.runtime._core import current_runtime

__all__ = ["sync_facade"]

P = ParamSpec("P")
R = TypeVar("R")


def sync_facade(
    afn: Callable[P, Coroutine[Any, Any, R]], *, name: str, doc: str | None = None
) -> Callable[P, R]:
    """``afn`` as a plain function that runs it on the current runtime's loop thread.

    Args:
        afn: the ``async def`` to face; it is looked up when called, not here.
        name: the facade's ``__name__`` (``sweep`` for ``asweep``).
        doc: its docstring; default ``afn``'s.

    The facade keeps ``afn``'s module and parameters; ``__wrapped__`` is
    ``afn``. Called from inside the runtime's own loop it raises
    ``RuntimeError`` (``current_runtime().call`` does): await ``afn`` there.
    """

    @functools.wraps(afn)
    def facade(*args: P.args, **kwargs: P.kwargs) -> R:
        return current_runtime().call(afn(*args, **kwargs))

    owner = afn.__qualname__.rpartition(".")[0]  # a class, for a method
    facade.__name__ = name
    facade.__qualname__ = f"{owner}.{name}" if owner else name
    if doc is not None:
        facade.__doc__ = doc
    return facade
