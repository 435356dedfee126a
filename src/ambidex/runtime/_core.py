"""The Runtime: one loop thread, one I/O thread pool, one cpu backend, named limits.

A process normally has one runtime, created lazily by ``ax.current_runtime()`` on the
first call and closed at interpreter exit. ``with ax.Runtime(...) as rt:``
installs another one for the duration of the block (and closes it after).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from ambidex.exceptions import RuntimeClosedError, UnknownLimitError
from ambidex.runtime._backends import (
    BackendFeatures,
    CpuBackend,
    Shared,
    backend_features,
    check_backend,
    open_backend,
)
from ambidex.runtime._cpus import (
    default_cpu_workers,
    default_io_threads,
    default_io_threads_max,
    usable_cpus,
)
from ambidex.runtime._limits import CapacityLimit, Rate, RateLimit
from ambidex.runtime._loop import Escaped, LoopThread, guarded
from ambidex.runtime._stats import CallCounters, RuntimeStatistics
from ambidex.runtime._threads import IOThreadPool

__all__ = ["Runtime", "current_runtime"]

T = TypeVar("T")
Limit = CapacityLimit | RateLimit


def _check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class Runtime:
    """Where ambidex runs work: an event loop thread, I/O threads, cpu processes.

    Args:
        io_threads: size of the I/O thread pool; default ``AMBIDEX_IO_THREADS``
            or 4 per usable CPU (8 to 64).
        io_threads_max: how far elastic calls (a workflow's blocking nodes,
            ``ax.to_elastic_thread``) may grow the I/O pool beyond
            ``io_threads`` when every thread is busy; default
            ``AMBIDEX_IO_THREADS_MAX`` or 256, never below ``io_threads``. The
            extra threads exit after 1 s without a call.
        cpu_workers: size of the cpu process pool; default
            ``AMBIDEX_CPU_WORKERS`` or the CPUs this process may use (affinity
            mask and cgroup quota).
        backend: where cpu work runs: ``"local"`` (this machine's process
            pool, the default; ``AMBIDEX_BACKEND``) or ``"ray"`` (Ray tasks;
            ``pip install 'ambidex[ray]'``; Ray is imported on first cpu call).
        address: the Ray cluster to join (``ray://...`` or ``auto``; default
            ``AMBIDEX_RAY_ADDRESS``, else a local Ray with ``cpu_workers`` CPUs).

    Everything starts lazily: creating a Runtime starts no thread or process.
    """

    def __init__(
        self,
        *,
        io_threads: int | None = None,
        io_threads_max: int | None = None,
        cpu_workers: int | None = None,
        backend: str | None = None,
        address: str | None = None,
    ) -> None:
        backend = backend or os.environ.get("AMBIDEX_BACKEND", "local")
        check_backend(backend, address)
        self.backend = backend
        self.address = address or os.environ.get("AMBIDEX_RAY_ADDRESS") or None
        cpus = usable_cpus()
        self.usable_cpus = cpus
        self.io_threads = _check_size(
            "io_threads", io_threads if io_threads is not None else default_io_threads(cpus)
        )
        if io_threads_max is None:
            io_threads_max = default_io_threads_max(self.io_threads)
        #: The bound on the I/O pool's general and elastic threads (never below io_threads).
        self.io_threads_max = max(self.io_threads, _check_size("io_threads_max", io_threads_max))
        self.cpu_workers = _check_size(
            "cpu_workers", cpu_workers if cpu_workers is not None else default_cpu_workers(cpus)
        )
        #: True inside a cpu worker process: cpu work then runs on threads of
        #: the worker's own runtime rather than starting processes of its own.
        self.in_worker = os.environ.get("AMBIDEX_IN_WORKER") == "1"
        # Inside a worker cpu calls run on this process's threads, so what
        # they share stays in this machine's memory: the local backend's.
        self._engine = "local" if self.in_worker else backend
        self.counters = CallCounters()
        self.threads = IOThreadPool(self.io_threads, elastic_cap=self.io_threads_max)
        self._lock = threading.Lock()
        self._loop_thread: LoopThread | None = None
        self._cpu: CpuBackend | None = None
        self._capacity: dict[str, CapacityLimit] = {}
        self._rates: dict[str, RateLimit] = {}
        self._closed = False
        self._previous: Runtime | None = None

    # -- lifecycle ---------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._closed

    @property
    def loop_thread(self) -> LoopThread:
        """The runtime's loop thread, started on first use."""
        lt = self._loop_thread
        if lt is not None:
            return lt
        with self._lock:
            if self._closed:
                raise RuntimeClosedError("this ambidex Runtime is closed")
            if self._loop_thread is None:
                self._loop_thread = LoopThread()
            return self._loop_thread

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the loop thread from sync code; block until done."""
        if self._closed:
            coro.close()
            raise RuntimeClosedError("this ambidex Runtime is closed")
        try:
            return self.loop_thread.call(coro)
        except (asyncio.CancelledError, RuntimeError) as exc:
            # Cut off by close(), or the loop closed between our check and the hand-over.
            if self.closed and not isinstance(exc, RuntimeClosedError):
                raise RuntimeClosedError(
                    "the ambidex Runtime was closed while this call was running"
                ) from None
            raise

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the cpu backend, the loop thread and the I/O threads.

        What was shared with ``put`` is freed (shared memory unlinked).

        Work still running on the loop is cancelled. An I/O thread stuck in a
        blocking call cannot be stopped; ``close`` waits up to ``timeout_s``
        for it and then leaves it (a daemon thread) behind.
        """
        lt = self._loop_thread
        if lt is not None and lt.in_loop_thread:
            raise RuntimeError(
                "Runtime.close() was called from inside the runtime's own event loop, "
                "where it would deadlock; use `await runtime.aclose()` from another loop "
                "or close it from sync code"
            )
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if lt is not None:
            cpu = self._cpu
            if cpu is not None:
                with contextlib.suppress(RuntimeError):
                    lt.call(cpu.aclose())
            lt.close(timeout_s)
        self.threads.close(timeout_s)

    async def aclose(self) -> None:
        """``close()`` from async code, without blocking the caller's loop."""
        # The one place ambidex offloads to asyncio's own threads and not to
        # ``ax.to_thread``: ``close`` joins the runtime's I/O threads.
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Runtime:
        global _current
        with _current_lock:
            self._previous = _current
            _current = self
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        global _current
        with _current_lock:
            # A default runtime created during the block (after this one was
            # closed) belongs to the block too: close it, restore the previous.
            replaced = _current if _current is not self else None
            _current = self._previous
        self._previous = None
        if replaced is not None and replaced is not _current:
            replaced.close()
        self.close()

    # -- limits ------------------------------------------------------------

    def limits(self, **limits: int | Rate) -> None:
        """Declare or resize named limits: ``limits(llm=5, openai=Rate(10, burst=20))``.

        An integer is a capacity (at most N calls at once); a ``Rate`` is a
        rate limit. A name may not be both.
        """
        with self._lock:
            for name, spec in limits.items():
                if isinstance(spec, Rate):
                    if name in self._capacity:
                        raise ValueError(f"limit {name!r} is a capacity limit, not a rate")
                    self._rates[name] = RateLimit(name, spec)
                elif isinstance(spec, int) and not isinstance(spec, bool):
                    if name in self._rates:
                        raise ValueError(f"limit {name!r} is a rate limit, not a capacity")
                    if name in self._capacity:
                        self._capacity[name].resize(spec)
                    else:
                        self._capacity[name] = CapacityLimit(name, spec)
                else:
                    raise TypeError(
                        f"limit {name!r}: expected a positive int (capacity) or ax.Rate(...), "
                        f"got {spec!r}"
                    )

    def limit(self, name: str) -> Limit:
        """The named limit, for ``with`` / ``async with`` blocks of your own."""
        found = self._capacity.get(name) or self._rates.get(name)
        if found is None:
            raise UnknownLimitError(name, [*self._capacity, *self._rates])
        return found

    def resolve_limits(self, names: tuple[str, ...]) -> tuple[Limit, ...]:
        """Limits in a fixed order (capacities by name, then rates) to avoid deadlock."""
        found = [self.limit(name) for name in names]
        return tuple(sorted(found, key=lambda lim: (isinstance(lim, RateLimit), lim.name)))

    # -- executors ---------------------------------------------------------

    async def run_in_thread(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        reserved: bool = False,
        elastic: bool | None = None,
    ) -> T:
        """Run a blocking function on the I/O threads (``reserved``: their reserved lane).

        ``elastic=True`` lets the call start a thread beyond ``io_threads`` (up to
        ``io_threads_max``) when every thread is busy; None: only inside
        ``elastic_threads()``. See ``IOThreadPool``.
        """
        result: T = await self.threads.run(fn, args, kwargs, reserved=reserved, elastic=elastic)
        return result

    async def run_in_process(self, payload: bytes, label: str, timeout_s: float | None) -> Any:
        """Run a pickled call on the cpu backend; await it from any loop."""
        lt = self.loop_thread
        if lt.in_loop_thread:
            return await self.cpu_backend.run(payload, label, timeout_s)
        return await _run_on_loop(lt.loop, self._run_on_backend(payload, label, timeout_s))

    async def _run_on_backend(self, payload: bytes, label: str, timeout_s: float | None) -> Any:
        return await self.cpu_backend.run(payload, label, timeout_s)

    def cpu_in_flight(self, *, timed: bool) -> int:
        """How many cpu calls ``map`` keeps in flight unless told otherwise.

        The backend says: twice the pool locally, where more would only wait
        in this process; on Ray, calls without a timeout go up to 1,024 at
        once (Ray queues them and feeds its workers without waiting for us),
        and a call with a timeout keeps to twice the pool there too, since
        its deadline runs from submission.
        """
        return self.cpu_backend.in_flight(timed=timed)

    @property
    def cpu_features(self) -> BackendFeatures:
        """What this runtime's cpu backend can do (starts nothing)."""
        return backend_features(self._engine)

    @property
    def cpu_backend(self) -> CpuBackend:
        """The cpu backend, created on first use (creating it starts no process).

        Its ``run`` and ``aclose`` belong to the runtime's loop; the loop
        thread is started with it, so that ``close`` has a loop to close it on.
        """
        if self._closed:
            raise RuntimeClosedError("this ambidex Runtime is closed")
        cpu = self._cpu
        if cpu is not None:
            return cpu
        self.loop_thread  # noqa: B018 - started first: close() closes the backend on it
        with self._lock:
            if self._closed:
                raise RuntimeClosedError("this ambidex Runtime is closed")
            if self._cpu is None:
                self._cpu = open_backend(self._engine, self.cpu_workers, self.address)
            return self._cpu

    def put(self, value: Any, *, writable: bool = False) -> Shared[Any]:
        """Store a large value once for cpu calls to read; returns its handle.

        Pass the handle to cpu calls (as an argument, or inside one) instead of
        the value; ``handle.get()`` there returns the value without a copy per
        call: locally from shared memory (a numpy array is mapped read-only,
        anything else unpickled once per worker), on Ray from its object store.
        The value lives until ``handle.release()``, until the handle is
        garbage collected, or until this runtime closes.

        ``writable=True`` shares a numeric array that workers may write into
        and this process sees while they run (the local backend only:
        ``cpu_features.writable_shares``).

        Raises:
            ValueError: ``writable`` where the backend cannot, or for a value
                that is not a numeric numpy array.
            RuntimeClosedError: the runtime is closed.
        """
        return self.cpu_backend.share(value, writable=writable)

    async def aput(self, value: Any, *, writable: bool = False) -> Shared[Any]:
        """``put`` for async code: the copy (or Ray's start) runs on an I/O thread."""
        backend = self.cpu_backend
        share: Shared[Any] = await self.run_in_thread(
            backend.share, (value,), {"writable": writable}
        )
        return share

    # -- statistics --------------------------------------------------------

    def statistics(self) -> RuntimeStatistics:
        """A snapshot: calls by kind, in flight, limits, pool sizes, timeouts, retries."""
        cpu = self._cpu
        with self._lock:
            capacity = dict(self._capacity)
            rates = dict(self._rates)
        lt = self._loop_thread
        return RuntimeStatistics(
            kinds=self.counters.snapshot(),
            limits={name: lim.statistics() for name, lim in capacity.items()},
            rate_limits={name: lim.statistics() for name, lim in rates.items()},
            io_threads=self.threads.statistics(),
            cpu_workers=cpu.statistics() if cpu is not None else None,
            loop_running=lt is not None and lt.loop.is_running(),
            backend=self.backend,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<Runtime {state} backend={self.backend} io_threads={self.io_threads} "
            f"cpu_workers={self.cpu_workers}>"
        )


def _relay(done: asyncio.Future[Any], task: asyncio.Task[Any]) -> None:
    if done.done():
        return
    if task.cancelled():
        done.cancel()
    elif (exc := task.exception()) is not None:
        done.set_exception(exc)
    else:
        done.set_result(task.result())


async def _run_on_loop(target: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` running on another thread's loop; cancelling us cancels it.

    On cancellation we wait until the remote task has really stopped (so a
    cpu worker has been killed) before letting the ``CancelledError`` out.
    """
    caller = asyncio.get_running_loop()
    done: asyncio.Future[T] = caller.create_future()
    holder: list[asyncio.Task[T]] = []

    def start() -> None:
        task = target.create_task(guarded(coro))
        holder.append(task)
        task.add_done_callback(lambda t: caller.call_soon_threadsafe(_relay, done, t))

    target.call_soon_threadsafe(start)
    try:
        return await asyncio.shield(done)
    except Escaped as escaped:
        original = escaped.exc
        raise original from original.__cause__  # its own cause: a remote traceback
    except asyncio.CancelledError:
        target.call_soon_threadsafe(lambda: holder[0].cancel())
        with contextlib.suppress(BaseException):
            await done
        raise


_current: Runtime | None = None
_current_lock = threading.Lock()


def current_runtime() -> Runtime:
    """The current runtime, created with defaults on first use (or after close)."""
    global _current
    rt = _current
    if rt is not None and not rt.closed:
        return rt
    with _current_lock:
        if _current is None or _current.closed:
            _current = Runtime()
        return _current


@atexit.register
def _close_at_exit() -> None:
    rt = _current
    if rt is not None:
        # A second Ctrl-C while the exit waits for threads still running (a blocking
        # node the first one could not interrupt): stop waiting, quietly. Raised out of
        # an atexit callback it printed a traceback under the CLI's one-line message.
        with contextlib.suppress(KeyboardInterrupt):
            rt.close(timeout_s=2.0)
