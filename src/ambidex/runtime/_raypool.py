"""The Ray backend of the cpu pool: the same pickled calls, run as Ray tasks.

``ax.Runtime(backend="ray", address=...)`` (or ``AMBIDEX_BACKEND=ray``,
``AMBIDEX_RAY_ADDRESS``) sends every cpu call to Ray instead of the local
process pool. A call travels exactly as it does to a local worker (one
cloudpickled ``(function, args, kwargs)``, run by the same ``_run_one``, its
result or exception pickled back), so the same code and seed give the same
results on either backend. Ray is imported only when this pool is first used.

Failures read as they do locally: a task past its deadline is cancelled with
``force=True`` (its Ray worker process is killed) and raises
``TaskTimeoutError``; a task whose worker dies raises ``WorkerCrashedError``
(Ray does not retry it: ``max_retries=0``, like the local pool).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import functools
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ambidex._text import describe_exception
from ambidex.exceptions import AmbidexError, TaskTimeoutError, WorkerCrashedError
from ambidex.runtime._procpool import ProcessPoolStatistics, _decode

__all__ = ["RayPool", "ray_module", "sending_inputs", "task_inputs"]

_STOP_WAIT_S = 5.0
_remote_lock = threading.Lock()
_remote: Any = None
# Held while Ray is started, joined or shut down: Ray is one per process, and
# pools of several runtimes may need it at once.
_connection_lock = threading.Lock()


@dataclasses.dataclass
class _OurRay:
    """The Ray this process is connected to, when ambidex started it."""

    job_id: str
    users: set[RayPool] = dataclasses.field(default_factory=set)
    """The pools using it; the last one to close shuts it down."""


_our_ray: _OurRay | None = None
_ray_thread: threading.Thread | None = None
_ray_thread_lock = threading.Lock()
_ray_jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
# Object references sent with the cpu calls made in this context (set by ``sending_inputs``).
_send: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar(
    "ambidex_ray_inputs", default=()
)
# In a Ray worker: the values of the running task's references.
_received: tuple[Any, ...] = ()


@contextlib.contextmanager
def sending_inputs(refs: Sequence[Any]) -> Iterator[None]:
    """Send ``refs`` (from ``Runtime.aput``) with every cpu call started in this block.

    Ray resolves them on the worker (a numpy array is mapped from the object
    store, not copied); the call reads them with ``task_inputs()``. References
    must travel this way, as arguments of the Ray task: one pickled inside a
    call's payload is not known to Ray as borrowed and cannot be fetched.
    """
    token = _send.set(tuple(refs))
    try:
        yield
    finally:
        _send.reset(token)


def task_inputs() -> tuple[Any, ...]:
    """Inside a Ray task: the values of the references sent with it."""
    return _received


def ray_module() -> Any:
    """``import ray``, or an error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise AmbidexError("the ray backend needs Ray: pip install 'ambidex[ray]'") from None
    return ray


def _execute(payload: bytes, sys_path: list[str], *inputs: Any) -> bytes:
    """Run one pickled call inside a Ray worker (the body of the remote function)."""
    global _received
    for entry in reversed(sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    os.environ["AMBIDEX_IN_WORKER"] = "1"  # nested cpu calls run on threads, not new tasks
    from ambidex.runtime._worker import _run_one

    _received = inputs
    try:
        return _run_one(payload)
    finally:
        _received = ()


def _abandon_start(ray: Any, address: str | None, exc: BaseException) -> None:
    """Clean up after a failed ``ray.init`` and raise one error that says what failed."""
    with contextlib.suppress(Exception):
        ray.shutdown(wait_for_processes=True)  # whatever it had started
    where = f"join the Ray cluster at {address}" if address else "start a local Ray"
    raise AmbidexError(f"could not {where}: {describe_exception(exc)}") from exc


def _serve_ray_thread() -> None:
    while True:
        job = _ray_jobs.get()
        with contextlib.suppress(BaseException):
            job()


def _on_ray_thread(job: Callable[[], None]) -> None:
    """Run ``job`` on the process's Ray thread, started on first use and never ended.

    ``ray.init`` starts Ray's processes (GCS, raylet) with a parent-death
    signal, which Linux sends when the *thread* that started them ends: a Ray
    started from a short-lived thread is killed with it, and every later call
    hangs. So Ray is started from a thread that lives as long as the process.
    """
    global _ray_thread
    with _ray_thread_lock:
        if _ray_thread is None:
            _ray_thread = threading.Thread(
                target=_serve_ray_thread, name="ambidex-ray", daemon=True
            )
            _ray_thread.start()
    _ray_jobs.put(job)


def _remote_execute() -> Any:
    global _remote
    with _remote_lock:
        if _remote is None:
            ray = ray_module()
            _remote = ray.remote(max_retries=0, num_cpus=1)(_execute)
        return _remote


async def _stop(ray: Any, ref: Any) -> None:
    """Cancel a task, killing its worker, and wait until Ray says it has ended.

    Until the owner has seen the worker die, Ray may hand the next task to the
    worker being killed, and that task would fail as a crashed worker.
    """
    with contextlib.suppress(Exception):  # Ray already shut down: nothing left to stop
        ray.cancel(ref, force=True)
    with contextlib.suppress(Exception, asyncio.CancelledError):
        async with asyncio.timeout(_STOP_WAIT_S):
            await asyncio.wrap_future(ref.future())


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if not fut.done():  # not given up on (timed out, cancelled)
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def _settle_all(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in outcomes:
        _settle(fut, ok, value)


def _fetch(ray: Any, refs: list[Any]) -> list[tuple[bool, Any]]:
    """The values of finished tasks, or the error each raises (a Ray error)."""
    try:
        return [(True, value) for value in ray.get(refs)]
    except Exception:
        outcomes: list[tuple[bool, Any]] = []
        for ref in refs:
            try:
                outcomes.append((True, ray.get(ref)))
            except Exception as exc:
                outcomes.append((False, exc))
        return outcomes


class _Results:
    """Tells the loop when its Ray tasks finish, in batches where it can.

    ``ref.future()`` runs one Python callback per task on Ray's IO thread,
    which on a busy machine costs the driver as much CPU as submitting the
    task. The tasks one loop iteration submits (a ``.map`` starts all of its
    calls in one) are instead waited for together, by one thread blocked in
    ``ray.wait``, and handed to the loop as they finish, several at a time.
    Fewer than ``batch_min`` (single calls, a window that refills one call at
    a time) keep the per-task callback, which has no thread to start.
    """

    batch_min = 16

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self.threads: set[threading.Thread] = set()

    def watch(self, ref: Any) -> asyncio.Future[Any]:
        """A future of the loop that gets the task's value or Ray error."""
        fut = self.loop.create_future()
        if not self.pending:
            self.loop.call_soon(self._dispatch)  # once this iteration's tasks are all sent
        self.pending.append((ref, fut))
        return fut

    def _dispatch(self) -> None:
        batch, self.pending = self.pending, []
        if len(batch) >= self.batch_min:
            thread = threading.Thread(
                target=self._wait_batch, args=(batch,), name="ambidex-ray-wait", daemon=True
            )
            self.threads.add(thread)
            thread.start()
            return
        for ref, fut in batch:
            ref.future().add_done_callback(functools.partial(self._relay, fut))

    def _post(self, outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> bool:
        try:
            self.loop.call_soon_threadsafe(_settle_all, outcomes)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            return False
        return True

    def _relay(self, fut: asyncio.Future[Any], done: concurrent.futures.Future[Any]) -> None:
        # On Ray's IO thread.
        if not done.cancelled():
            exc = done.exception()
            self._post([(fut, exc is None, exc if exc is not None else done.result())])

    def _wait_batch(self, batch: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        ray = ray_module()
        waiting = dict(batch)
        try:
            while waiting:
                refs = list(waiting)
                ready, _ = ray.wait(refs, num_returns=1, fetch_local=True)
                if len(refs) > 1:  # and whatever else has finished meanwhile
                    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=True)
                outcomes = [
                    (waiting.pop(ref), ok, value)
                    for ref, (ok, value) in zip(ready, _fetch(ray, ready), strict=True)
                ]
                if not self._post(outcomes):
                    return
        except Exception as exc:  # Ray shut down under us
            self._post([(fut, False, exc) for fut in waiting.values()])
        finally:
            self.threads.discard(threading.current_thread())

    def join(self, timeout_s: float) -> None:
        """Wait for the batch threads (their tasks cancelled) to end."""
        deadline = time.monotonic() + timeout_s
        for thread in list(self.threads):
            thread.join(max(0.0, deadline - time.monotonic()))


class RayPool:
    """Runs pickled calls as Ray tasks; connects to (or starts) Ray on first use.

    Ray is started (or joined) once per pool, however many first calls arrive
    at once and from whichever threads and loops: the first caller starts it,
    the others wait for that start and share its outcome.
    """

    def __init__(self, max_workers: int, address: str | None = None) -> None:
        self.max_workers = max_workers
        self.address = address
        self._busy = 0
        self._crashed = 0
        self._killed = 0
        self._started = 0
        self._closed = False
        self._sys_path: list[str] = []
        self._results: _Results | None = None  # on the runtime's loop, where run() runs
        self._in_flight: set[Any] = set()
        self._state_lock = threading.Lock()
        # The one start (or join) of Ray, shared by every caller that needs it.
        # Set running at once, so a caller that gives up waiting cannot cancel it.
        self._ready: concurrent.futures.Future[None] | None = None

    def _begin(self) -> concurrent.futures.Future[None]:
        """The start of Ray to wait for: the one under way, or a new one."""
        with self._state_lock:
            if self._closed:
                raise RuntimeError("the ray pool is closed")
            ready = self._ready
            # A start under way is joined; a failed one, or a Ray shut down
            # under us (``ray.shutdown()`` by the program), is started again.
            if ready is not None and (
                not ready.done() or (ready.exception() is None and ray_module().is_initialized())
            ):
                return ready
            ready = self._ready = concurrent.futures.Future()
            ready.set_running_or_notify_cancel()
        _on_ray_thread(lambda: self._start(ready))
        return ready

    def _start(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            self._connect()
        except BaseException as exc:
            ready.set_exception(exc)
        else:
            ready.set_result(None)

    def _is_ready(self) -> bool:
        ready = self._ready
        return (
            ready is not None
            and ready.done()
            and ready.exception() is None
            and ray_module().is_initialized()
        )

    def _ensure_started(self) -> None:
        """Start or join Ray from a thread that may block (``put``)."""
        if not self._is_ready():
            self._begin().result()

    async def _aensure_started(self) -> None:
        """Start or join Ray without blocking the loop; concurrent callers share one start."""
        if not self._is_ready():
            # The start runs on the Ray thread, not in the caller's task: a
            # caller cancelled meanwhile leaves it to finish for the others.
            await asyncio.wrap_future(self._begin())

    def _connect(self) -> None:
        global _our_ray
        ray = ray_module()
        with _connection_lock:
            if not ray.is_initialized():
                options: dict[str, Any] = {
                    "include_dashboard": False,
                    "configure_logging": False,
                    "log_to_driver": False,
                }
                if self.address:
                    options["address"] = self.address
                else:
                    options["num_cpus"] = self.max_workers
                try:
                    ray.init(**options)
                except RuntimeError as exc:
                    if not ("twice" in str(exc) and ray.is_initialized()):
                        _abandon_start(ray, self.address, exc)
                    # Another thread of the program called ray.init meanwhile: use its Ray.
                except Exception as exc:
                    _abandon_start(ray, self.address, exc)
                else:
                    _our_ray = _OurRay(ray.get_runtime_context().get_job_id())
                    self._started = int(ray.cluster_resources().get("CPU", 0))
            if _our_ray is not None:
                if _our_ray.job_id == ray.get_runtime_context().get_job_id():
                    _our_ray.users.add(self)
                else:
                    _our_ray = None  # shut down and started again by the program itself
        # Local workers import what the driver can import (test modules, example
        # files): the driver's sys.path travels with every call.
        self._sys_path = [p or os.getcwd() for p in sys.path]

    def _release(self) -> None:
        """Stop using Ray; shut it down if ambidex started it and no other pool uses it."""
        global _our_ray
        with _connection_lock:
            ours = _our_ray
            if ours is None or self not in ours.users:
                return
            ours.users.discard(self)
            if ours.users:
                return
            _our_ray = None
            ray_module().shutdown(wait_for_processes=True)

    def put(self, value: Any) -> Any:
        """Store ``value`` once in Ray's object store; returns its reference."""
        self._ensure_started()
        return ray_module().put(value)

    async def run(self, payload: bytes, label: str, timeout_s: float | None) -> Any:
        """Run a pickled ``(fn, args, kwargs)`` as a Ray task and return its result.

        Raises:
            TaskTimeoutError: past ``timeout_s``; the task's worker was killed.
            WorkerCrashedError: the task's Ray worker died.
            BaseException: whatever the task raised, with its remote traceback.
        """
        if self._closed:
            raise RuntimeError("the ray pool is closed")
        if not self._is_ready():
            await self._aensure_started()
            if self._closed:
                raise RuntimeError("the ray pool is closed")
        ray = ray_module()
        results = self._results
        if results is None:
            results = self._results = _Results(asyncio.get_running_loop())
        ref = _remote_execute().remote(payload, self._sys_path, *_send.get())
        done = results.watch(ref)
        self._busy += 1
        self._in_flight.add(ref)
        try:
            if timeout_s is None:
                data = await done
            else:
                async with asyncio.timeout(timeout_s):
                    data = await done
        except TimeoutError:
            self._killed += 1
            await _stop(ray, ref)
            raise TaskTimeoutError(label, timeout_s or 0.0, "its Ray worker was killed") from None
        except asyncio.CancelledError:
            self._killed += 1
            await _stop(ray, ref)
            raise
        except ray.exceptions.WorkerCrashedError as exc:
            self._crashed += 1
            raise WorkerCrashedError(label, -1, f"the Ray worker died ({exc})") from None
        except ray.exceptions.RayError as exc:  # node lost, object lost, ...
            self._crashed += 1
            raise WorkerCrashedError(
                label, -1, f"Ray could not run it: {describe_exception(exc)}"
            ) from None
        finally:
            self._busy -= 1
            self._in_flight.discard(ref)
        return _decode(data, label)

    def statistics(self) -> ProcessPoolStatistics:
        """A snapshot in the local pool's terms (``workers``: the cluster's CPUs)."""
        return ProcessPoolStatistics(
            max_workers=self.max_workers,
            workers=self._started,
            busy=self._busy,
            crashed=self._crashed,
            killed=self._killed,
            started=self._started,
        )

    async def aclose(self) -> None:
        """Disconnect; shut Ray down if ambidex started it and no other pool uses it.

        A start still under way is waited for first, so that a Ray started
        while the runtime closed is not left behind; tasks still running are
        cancelled.
        """
        with self._state_lock:
            self._closed = True
            ready = self._ready
        if ready is None:
            return
        with contextlib.suppress(BaseException):
            await asyncio.wrap_future(ready)
        if self._in_flight:
            ray = ray_module()
            for ref in list(self._in_flight):
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        if self._results is not None:
            await asyncio.to_thread(self._results.join, _STOP_WAIT_S)
        await asyncio.to_thread(self._release)
