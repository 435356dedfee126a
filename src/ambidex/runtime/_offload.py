"""``ax.to_thread``: the one way ambidex (and its users) offload a blocking call.

Every blocking call ambidex makes from async code (a store query, a file
read, a driver without async) goes to the current runtime's I/O threads, the
pool ``@ax.blocking`` work runs on, rather than to a pool of its own or to
asyncio's default executor: one set of threads to size (``io_threads``), one
place where ``statistics().io_threads`` sees them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from ambidex.runtime._core import current_runtime

__all__ = ["to_reserved_thread", "to_thread"]

P = ParamSpec("P")
T = TypeVar("T")


async def to_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` on the current runtime's I/O threads; await its result.

    The same contract as ``asyncio.to_thread`` (the caller's context variables
    go with the call), on the threads ``@ax.blocking`` work uses. Cancelling
    the caller abandons the call: if it had not started it never will; if it is
    running it finishes on its own and its result is dropped (see
    ``RuntimeStatistics.io_threads.abandoned``).
    """
    return await current_runtime().run_in_thread(fn, args, kwargs)


async def to_reserved_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Like ``to_thread``, on the I/O threads' small reserved lane.

    For short bookkeeping calls that must not queue behind long blocking work,
    for example a job worker renewing its leases while every I/O thread runs a
    user's blocking job (its lease would lapse and the job would run twice).
    Only calls made through this function use the reserved threads (two of
    them), so keep the calls short: a long one delays the others.
    """
    return await current_runtime().run_in_thread(fn, args, kwargs, reserved=True)
