"""What a cpu backend is: the interface the runtime drives, whatever the engine.

A backend runs pickled calls (one ``(function, args, kwargs)`` each, built by
the task decorators), shares large values with the calls, reports its counters
and closes. ``_local`` (this machine's worker processes) and ``_ray`` (Ray
tasks) implement it; the runtime, sweeps and evolution use only this module's
names, never an engine's.
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

__all__ = ["BackendFeatures", "CpuBackend", "CpuStatistics", "Shared"]

T = TypeVar("T")


@dataclass(frozen=True)
class BackendFeatures:
    """What a backend can do beyond the interface every backend has."""

    distributed: bool
    """Calls may run on other machines (a cluster joined with ``address=``): they
    cannot rely on this machine's files, and work that needs a node of its own
    (a sandboxed evaluation) should travel as a cpu call."""
    writable_shares: bool
    """``share(value, writable=True)`` works: what a worker writes into the shared
    array is seen here while the call runs (sweep progress counters). Shared
    memory on one machine can; an object store of immutable values cannot."""


@dataclass(frozen=True)
class CpuStatistics:
    """A snapshot of the cpu backend (``Runtime.statistics().cpu_workers``)."""

    max_workers: int
    """Upper bound on worker processes (``cpu_workers``)."""
    workers: int
    """Worker processes alive now (on Ray: the cluster's CPUs)."""
    busy: int
    """Calls running now (on Ray: submitted and not finished, queued ones too)."""
    crashed: int
    """Calls that killed their worker."""
    killed: int
    """Workers killed by ambidex because their call timed out or was cancelled
    while running (a call cancelled before it started kills nothing)."""
    started: int
    """Worker processes started since the backend opened (replacements included)."""
    shared: int = 0
    """Values shared with ``Runtime.put`` and not yet released."""
    shared_bytes: int = 0
    """Their size in bytes (as stored: pickled, for values that are not arrays)."""
    queue_waits: int = 0
    """Calls that found every worker busy and waited for one (the local backend; Ray
    queues calls itself: 0 there)."""
    queue_wait_s: float = 0.0
    """Their time waiting for a worker, in seconds."""


class Shared(ABC, Generic[T]):
    """A value stored once by ``Runtime.put``, passed to cpu calls by handle.

    Pass the handle as (or inside) an argument of a cpu call; ``get()`` there
    returns the value: a numpy array is mapped from shared memory (local
    backend) or Ray's object store, not copied, and arrives read-only unless
    put ``writable``. ``get()`` works in the process that put it too.

    The stored value lives until ``release()``, until this handle (the one
    ``put`` returned; copies sent to workers do not count) is garbage
    collected, or until the runtime closes, whichever comes first.
    """

    __slots__ = ("__weakref__", "_finalizer", "key", "nbytes")

    def __init__(self, key: str, nbytes: int) -> None:
        self.key = key
        """Names the stored value; unique in the process that put it."""
        self.nbytes = nbytes
        """Its size as stored."""
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def own(self, release: Callable[[str], None]) -> None:
        """In the putting process: call ``release(key)`` when this handle dies or is released."""
        self._finalizer = weakref.finalize(self, release, self.key)

    def release(self) -> None:
        """Free the stored value now (in the putting process; a no-op elsewhere)."""
        if self._finalizer is not None:
            self._finalizer()

    @abstractmethod
    def get(self) -> T:
        """The value (in a worker running a call that carries this handle, or here)."""

    @abstractmethod
    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle what a worker needs to find the value, never the value itself."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key} {self.nbytes} bytes>"


class CpuBackend(Protocol):
    """Where cpu calls run. Created lazily by the runtime; starts nothing until used.

    ``run`` and ``aclose`` are called on the runtime's loop; ``share``,
    ``in_flight`` and ``statistics`` from any thread.
    """

    features: ClassVar[BackendFeatures]

    async def run(self, payload: bytes, label: str, timeout_s: float | None) -> Any:
        """Run a pickled ``(fn, args, kwargs)``; return its result or raise its error.

        Raises:
            TaskTimeoutError: past ``timeout_s``; the worker running it was killed.
            WorkerCrashedError: the call ended its worker process.
            SerializationError: the result could not be unpickled here.
            BaseException: whatever the call raised, with its remote traceback
                as ``__cause__``.

        Cancelling the caller kills the worker running the call, and returns
        only once it has stopped.
        """
        ...

    def in_flight(self, *, timed: bool) -> int:
        """How many calls ``map`` keeps in flight (``timed``: calls with a deadline)."""
        ...

    def share(self, value: Any, *, writable: bool = False) -> Shared[Any]:
        """Store ``value`` once for the calls to read; may block (starting the engine).

        Raises:
            ValueError: ``writable`` without ``features.writable_shares``, or a
                writable value that is not a numeric array.
        """
        ...

    def statistics(self) -> CpuStatistics:
        """A snapshot of the backend's counters."""
        ...

    async def aclose(self) -> None:
        """Stop the workers (killing calls still running) and free every shared value."""
        ...
