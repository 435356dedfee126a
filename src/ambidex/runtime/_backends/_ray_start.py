"""Starting or joining Ray: once per backend, on a thread that lives as long as the process.

However many first calls arrive at once (threads, tasks, sync and async,
``put`` among them), the first starts Ray and the others wait for that start
and share its outcome. Several ray runtimes in one process share the Ray one
of them started; the last to close shuts it down.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

from ambidex._text import describe_exception
from ambidex.exceptions import AmbidexError

__all__ = ["RayConnection", "ray_module"]

# Held while Ray is started, joined or shut down: Ray is one per process, and
# backends of several runtimes may need it at once.
_connection_lock = threading.Lock()


@dataclasses.dataclass
class _OurRay:
    """The Ray this process is connected to, when ambidex started it."""

    job_id: str
    users: set[RayConnection] = dataclasses.field(default_factory=set)
    """The connections using it; the last one to close shuts it down."""


_our_ray: _OurRay | None = None
_ray_thread: threading.Thread | None = None
_ray_thread_lock = threading.Lock()
_ray_jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()


def ray_module() -> Any:
    """``import ray``, or an error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise AmbidexError("the ray backend needs Ray: pip install 'ambidex[ray]'") from None
    return ray


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


class RayConnection:
    """One backend's use of Ray: started (or joined) on first use, released on close."""

    def __init__(self, max_workers: int, address: str | None) -> None:
        self.max_workers = max_workers
        self.address = address
        self.cpus = 0
        """The CPUs of the Ray ambidex started (0 when it joined one)."""
        self.sys_path: list[str] = []
        """The driver's ``sys.path`` once connected, sent with the remote function."""
        self._closed = False
        self._state_lock = threading.Lock()
        # The one start (or join) of Ray, shared by every caller that needs it.
        # Set running at once, so a caller that gives up waiting cannot cancel it.
        self._ready: concurrent.futures.Future[None] | None = None

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._closed

    def close(self) -> concurrent.futures.Future[None] | None:
        """Refuse new starts; return the start to wait for before ``release`` (if any)."""
        with self._state_lock:
            self._closed = True
            return self._ready

    def begin(self) -> concurrent.futures.Future[None]:
        """The start of Ray to wait for: the one under way, or a new one."""
        with self._state_lock:
            if self._closed:
                raise RuntimeError("the ray backend is closed")
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

    def is_ready(self) -> bool:
        ready = self._ready
        return (
            ready is not None
            and ready.done()
            and ready.exception() is None
            and ray_module().is_initialized()
        )

    def ensure_started(self) -> None:
        """Start or join Ray from a thread that may block (``put``)."""
        if not self.is_ready():
            self.begin().result()

    async def aensure_started(self) -> None:
        """Start or join Ray without blocking the loop; concurrent callers share one start."""
        if not self.is_ready():
            # The start runs on the Ray thread, not in the caller's task: a
            # caller cancelled meanwhile leaves it to finish for the others.
            await asyncio.wrap_future(self.begin())

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
                    self.cpus = int(ray.cluster_resources().get("CPU", 0))
            if _our_ray is not None:
                if _our_ray.job_id == ray.get_runtime_context().get_job_id():
                    _our_ray.users.add(self)
                else:
                    _our_ray = None  # shut down and started again by the program itself
        # Local workers import what the driver can import (test modules, example
        # files): the driver's sys.path travels with the remote function.
        self.sys_path = [p or os.getcwd() for p in sys.path]

    def release(self) -> None:
        """Stop using Ray; shut it down if ambidex started it and no other backend uses it."""
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
