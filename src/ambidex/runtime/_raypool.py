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
import contextlib
import contextvars
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from ambidex._text import describe_exception
from ambidex.exceptions import AmbidexError, TaskTimeoutError, WorkerCrashedError
from ambidex.runtime._procpool import ProcessPoolStatistics, _decode

__all__ = ["RayPool", "ray_module", "sending_inputs", "task_inputs"]

_lock = threading.Lock()
_remote: Any = None
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


def _remote_execute() -> Any:
    global _remote
    with _lock:
        if _remote is None:
            ray = ray_module()
            _remote = ray.remote(max_retries=0, num_cpus=1)(_execute)
        return _remote


class RayPool:
    """Runs pickled calls as Ray tasks; connects to (or starts) Ray on first use."""

    def __init__(self, max_workers: int, address: str | None = None) -> None:
        self.max_workers = max_workers
        self.address = address
        self._owns_ray = False
        self._busy = 0
        self._crashed = 0
        self._killed = 0
        self._started = 0
        self._closed = False
        self._sys_path: list[str] = []

    def _connect(self) -> None:
        ray = ray_module()
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
            ray.init(**options)
            self._owns_ray = True
            self._started = int(ray.cluster_resources().get("CPU", 0))
        # Local workers import what the driver can import (test modules, example
        # files): the driver's sys.path travels with every call.
        self._sys_path = [p or os.getcwd() for p in sys.path]

    def put(self, value: Any) -> Any:
        """Store ``value`` once in Ray's object store; returns its reference."""
        if not ray_module().is_initialized():
            self._connect()
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
        ray = ray_module()
        if not self._sys_path or not ray.is_initialized():
            await asyncio.to_thread(self._connect)
        ref = _remote_execute().remote(payload, self._sys_path, *_send.get())
        self._busy += 1
        try:
            async with asyncio.timeout(timeout_s):
                data = await asyncio.wrap_future(ref.future())
        except TimeoutError:
            self._killed += 1
            ray.cancel(ref, force=True)
            raise TaskTimeoutError(label, timeout_s or 0.0, "its Ray worker was killed") from None
        except asyncio.CancelledError:
            self._killed += 1
            ray.cancel(ref, force=True)
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
        """Disconnect; shut Ray down if this pool started it."""
        self._closed = True
        if self._owns_ray:
            ray = ray_module()
            await asyncio.to_thread(ray.shutdown)
