"""The Ray backend: the same pickled calls as the local backend, run as Ray tasks.

``ax.Runtime(backend="ray", address=...)`` (or ``AMBIDEX_BACKEND=ray``,
``AMBIDEX_RAY_ADDRESS``) sends every cpu call to Ray instead of the local
process pool. A call travels exactly as it does to a local worker (one
cloudpickled ``(function, args, kwargs)``, run by the same ``_run_one``, its
result or exception pickled back), so the same code and seed give the same
results on either backend. Ray is imported only when this backend is first used.

Failures read as they do locally: a task past its deadline is cancelled with
``force=True`` (its Ray worker process is killed) and raises
``TaskTimeoutError``; a task whose worker dies raises ``WorkerCrashedError``
(Ray does not retry it: ``max_retries=0``, like the local pool).

Shared values (``Runtime.put``) are stored in Ray's object store and travel
as arguments of the Ray task, so Ray resolves them on the worker (a numpy
array is mapped, not copied). A reference pickled inside the call's payload
would not be known to Ray as borrowed, and could not be fetched there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

from ambidex import _observe
from ambidex._text import describe_exception
from ambidex.exceptions import TaskTimeoutError, WorkerCrashedError
from ambidex.runtime._backends._abc import BackendFeatures, CpuStatistics, Shared
from ambidex.runtime._backends._local import decode_reply
from ambidex.runtime._backends._ray_start import RayConnection, ray_module
from ambidex.runtime._backends._ray_wait import Results

__all__ = ["Backend", "RayShared"]

_STOP_WAIT_S = 5.0
_UNTIMED_IN_FLIGHT = 1024
_remote_lock = threading.Lock()
# One Ray remote function per driver ``sys.path`` (in practice one), so the
# path travels once, with the function Ray exports to its workers, not as an
# argument Ray serializes with every task.
_remotes: dict[tuple[str, ...], Any] = {}


# -- shared values -----------------------------------------------------------------


class _Stored:
    """The object references this process put, by handle key (process-wide).

    Every call's payload is searched for the keys (``sent_with``): a handle
    pickled into a call's arguments carries its key, so the references that
    call needs travel with its Ray task, however deep in the arguments the
    handle is. With nothing stored the search costs nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[str, tuple[Any, int, object]] = {}
        # Rebuilt on every change, so ``sent_with`` reads it without the lock.
        self._keys: tuple[tuple[bytes, str, Any], ...] = ()

    def add(self, key: str, ref: Any, nbytes: int, owner: object) -> None:
        with self._lock:
            self._refs[key] = (ref, nbytes, owner)
            self._rebuild()

    def drop(self, key: str) -> None:
        with self._lock:
            if self._refs.pop(key, None) is not None:
                self._rebuild()

    def drop_owned_by(self, owner: object) -> None:
        with self._lock:
            for key in [k for k, (_, _, o) in self._refs.items() if o is owner]:
                del self._refs[key]
            self._rebuild()

    def ref(self, key: str) -> Any:
        found = self._refs.get(key)
        return None if found is None else found[0]

    def usage(self, owner: object) -> tuple[int, int]:
        with self._lock:
            sizes = [n for _, n, o in self._refs.values() if o is owner]
        return len(sizes), sum(sizes)

    def sent_with(self, payload: bytes) -> tuple[Any, ...]:
        """For the handles pickled into ``payload``: their keys, then their references.

        Empty when there are none: the common call sends no extra argument.
        """
        keys: list[str] = []
        refs: list[Any] = []
        for needle, key, ref in self._keys:
            if needle in payload:
                keys.append(key)
                refs.append(ref)
        return (tuple(keys), *refs) if keys else ()

    def _rebuild(self) -> None:
        self._keys = tuple((k.encode(), k, r) for k, (r, _, _) in self._refs.items())


_stored = _Stored()
# In a Ray worker, while a task runs: the values of the references sent with it.
_received: dict[str, Any] = {}


class RayShared(Shared[Any]):
    """A handle to a value in Ray's object store."""

    __slots__ = ()

    def get(self) -> Any:
        if self.key in _received:  # a worker running a call that carries this handle
            return _received[self.key]
        ref = _stored.ref(self.key)
        if ref is None:
            raise LookupError(
                f"shared value {self.key} is not here: it was released, the runtime that "
                "put it closed, or it did not travel as an argument of this cpu call"
            )
        return ray_module().get(ref)

    @property
    def ref(self) -> Any:
        """The ``ray.ObjectRef`` (in the process that put the value), for raw Ray calls."""
        return _stored.ref(self.key)

    def __reduce__(self) -> tuple[Any, ...]:
        return (RayShared, (self.key, self.nbytes))


# -- running calls -----------------------------------------------------------------


def _execute(payload: bytes, sys_path: tuple[str, ...], *shared: Any) -> bytes:
    """Run one pickled call inside a Ray worker (the body of the remote function).

    ``shared`` is empty, or the keys of the shared values the call carries
    followed by their values (Ray resolves the references, as task arguments).
    """
    for entry in reversed(sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    if _run_one is None:
        _enter_worker()
    if shared:
        keys, *values = shared
        _received.update(zip(keys, values, strict=True))
    try:
        return _run_one(payload)  # type: ignore[misc]  # set by _enter_worker
    finally:
        _received.clear()


_run_one: Callable[[bytes], bytes] | None = None


def _enter_worker() -> None:
    """Once per Ray worker process: mark it a worker, load the call runner."""
    global _run_one
    os.environ["AMBIDEX_IN_WORKER"] = "1"  # nested cpu calls run on threads, not new tasks
    from ambidex.runtime._worker import _run_one as run_one

    _run_one = run_one


def _executor(sys_path: tuple[str, ...]) -> Callable[..., bytes]:
    def execute(payload: bytes, *shared: Any) -> bytes:
        return _execute(payload, sys_path, *shared)

    return execute


def _remote_execute(sys_path: list[str]) -> Any:
    key = tuple(sys_path)
    remote = _remotes.get(key)
    if remote is None:
        with _remote_lock:
            remote = _remotes.get(key)
            if remote is None:
                ray = ray_module()
                remote = ray.remote(max_retries=0, num_cpus=1)(_executor(key))
                _remotes[key] = remote
    return remote


async def _stop(ray: Any, ref: Any) -> bool:
    """Cancel a task, killing its worker if it runs, and wait until Ray says it has ended.

    Until the owner has seen the worker die, Ray may hand the next task to the
    worker being killed, and that task would fail as a crashed worker.

    Returns:
        Whether a worker was killed. Not for a task still queued: Ray drops it
        at once, so its outcome is settled as soon as ``cancel`` returns. Not
        for one that finished meanwhile (its reply was on its way): it ends
        with its result, not cancelled.
    """
    try:
        ray.cancel(ref, force=True)
        settled, _ = ray.wait([ref], timeout=0, fetch_local=False)
    except Exception:  # Ray already shut down: nothing left to stop
        return False
    if settled:
        return False
    try:
        async with asyncio.timeout(_STOP_WAIT_S):
            await asyncio.wrap_future(ref.future())
    except (Exception, asyncio.CancelledError):
        return True  # cancelled while running (or still being killed)
    return False


class Backend:
    """Runs pickled calls as Ray tasks; connects to (or starts) Ray on first use."""

    features = BackendFeatures(distributed=True, writable_shares=False)

    def __init__(self, max_workers: int, address: str | None = None) -> None:
        self.max_workers = max_workers
        self.address = address
        self._ray = RayConnection(max_workers, address)
        self._busy = 0
        self._crashed = 0
        self._killed = 0
        self._results: Results | None = None  # on the runtime's loop, where run() runs
        self._in_flight: set[Any] = set()

    def in_flight(self, *, timed: bool) -> int:
        """Untimed calls: up to 1,024 at once; timed ones: twice the workers.

        Ray queues calls and pipelines them to its workers, which a handful at
        a time would starve (and a cluster has more CPUs than this machine). A
        call with a timeout keeps to twice the workers: its deadline runs from
        submission, so time queued in Ray would count against it.
        """
        return 2 * self.max_workers if timed else _UNTIMED_IN_FLIGHT

    def share(self, value: Any, *, writable: bool = False) -> Shared[Any]:
        """Store ``value`` once in Ray's object store (starting or joining Ray first)."""
        if writable:
            raise ValueError(
                "Ray's object store holds immutable values: a writable shared value needs "
                "a backend with features.writable_shares (the local one)"
            )
        self._ray.ensure_started()
        ref = ray_module().put(value)
        key = f"ambidex-shared-{uuid.uuid4().hex}"
        nbytes = int(getattr(value, "nbytes", 0))
        _stored.add(key, ref, nbytes, self)
        handle = RayShared(key, nbytes)
        handle.own(_stored.drop)
        return handle

    async def run(self, payload: bytes, label: str, timeout_s: float | None) -> Any:
        """Run a pickled ``(fn, args, kwargs)`` as a Ray task and return its result.

        Raises:
            TaskTimeoutError: past ``timeout_s``; the task was cancelled, and
                its Ray worker killed if it was running.
            WorkerCrashedError: the task's Ray worker died.
            BaseException: whatever the task raised, with its remote traceback.
        """
        connection = self._ray
        if connection.closed:
            raise RuntimeError("the ray backend is closed")
        if not connection.is_ready():
            await connection.aensure_started()
            if connection.closed:
                raise RuntimeError("the ray backend is closed")
        ray = ray_module()
        results = self._results
        if results is None:
            results = self._results = Results(asyncio.get_running_loop())
        shared = _stored.sent_with(payload)  # () unless the payload carries handles
        ref = _remote_execute(connection.sys_path).remote(payload, *shared)
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
            killed = await self._stop(ray, ref)
            if _observe.on:
                from ambidex.runtime._spans import note_killed

                note_killed(killed)
            detail = "its Ray worker was killed" if killed else "it was cancelled before it started"
            raise TaskTimeoutError(label, timeout_s or 0.0, detail) from None
        except asyncio.CancelledError:
            await self._stop(ray, ref)
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
        return decode_reply(data, label)

    async def _stop(self, ray: Any, ref: Any) -> bool:
        killed = await _stop(ray, ref)
        if killed:
            self._killed += 1
        return killed

    def statistics(self) -> CpuStatistics:
        """A snapshot in the local pool's terms (``workers``: the cluster's CPUs)."""
        shared, shared_bytes = _stored.usage(self)
        cpus = self._ray.cpus
        return CpuStatistics(
            max_workers=self.max_workers,
            workers=cpus,
            busy=self._busy,
            crashed=self._crashed,
            killed=self._killed,
            started=cpus,
            shared=shared,
            shared_bytes=shared_bytes,
        )

    async def aclose(self) -> None:
        """Disconnect; shut Ray down if ambidex started it and no other backend uses it.

        A start still under way is waited for first, so that a Ray started
        while the runtime closed is not left behind; tasks still running are
        cancelled, and the values this backend shared are let go.
        """
        ready = self._ray.close()
        _stored.drop_owned_by(self)
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
        await asyncio.to_thread(self._ray.release)
