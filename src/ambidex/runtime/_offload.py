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

__all__ = ["to_elastic_thread", "to_reserved_thread", "to_thread"]

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


async def to_elastic_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Like ``to_thread``, but when every I/O thread is busy and stays so, start one more.

    The pool grows up to the runtime's ``io_threads_max`` (default 256) rather
    than making the call wait for one of ``io_threads``; the extra threads exit
    after 1 s without a call. "Stays so": the call waits 10 ms, and threads start
    if fewer calls ended meanwhile than threads were busy (a burst of short calls
    does not grow the pool). For fan-outs of calls that mostly wait, such as a
    workflow's blocking nodes (the scheduler runs those this way). To make every
    blocking call of a block elastic (``@ax.blocking`` ones too), use
    ``with ax.elastic_threads():``.
    """
    return await current_runtime().run_in_thread(fn, args, kwargs, elastic=True)
