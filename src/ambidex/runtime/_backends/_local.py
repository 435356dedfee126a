"""The local backend: this machine's worker processes, and shared memory for large values.

One task per worker process; workers that die are replaced.

Why not ``concurrent.futures.ProcessPoolExecutor``: when one task kills its
worker (segfault, ``os._exit``, the OOM killer) the stdlib pool marks itself
broken and fails every pending task, and it cannot kill a single task that ran
past its deadline. Here each worker is a subprocess we own, driven from the
runtime's event loop over a socket pair: a task that kills its worker fails
alone with an error naming it, a task past its deadline has its worker (and
the worker's process group) killed, and the next task gets a fresh worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import cloudpickle

from ambidex import _observe
from ambidex._log import get_logger
from ambidex.exceptions import (
    AmbidexError,
    RemoteTraceback,
    SerializationError,
    TaskTimeoutError,
    WorkerCrashedError,
)
from ambidex.runtime._backends._abc import BackendFeatures, CpuStatistics, Shared
from ambidex.runtime._backends._shm import ShmStore
from ambidex.runtime._histogram import WaitHistogram

__all__ = ["Backend", "ProcessPoolStatistics", "decode_reply", "describe_exit"]

_BOOTSTRAP = (
    "import json, os, sys; "
    "sys.path[:] = json.loads(os.environ.pop('AMBIDEX_WORKER_SYS_PATH')); "
    "from ambidex.runtime._worker import main; main(int(sys.argv[1]))"
)
_EXIT_WAIT_S = 5.0

log = get_logger(__name__)


ProcessPoolStatistics = CpuStatistics
"""The old name of ``CpuStatistics``."""


def describe_exit(returncode: int | None) -> str:
    """Say how a process ended, e.g. 'killed by SIGSEGV' or 'exited with code 3'."""
    if returncode is None:
        return "closed its channel without exiting"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class _Worker:
    __slots__ = ("proc", "reader", "writer")

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        # Set once the channel is open (see Backend._spawn).
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close_channel(self) -> None:
        if self.writer is not None:
            self.writer.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the task's own children too
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.close_channel()

    async def wait_exit(self, timeout_s: float = _EXIT_WAIT_S) -> int | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        delay = 0.001
        while (code := self.proc.poll()) is None and loop.time() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return code


class Backend:
    """Worker processes started on demand, up to ``max_workers``; runs on one loop.

    Large values are shared through this machine's shared memory (``ShmStore``).
    """

    features = BackendFeatures(distributed=False, writable_shares=True)

    def __init__(self, max_workers: int, address: str | None = None) -> None:
        if max_workers < 1:
            raise ValueError(f"cpu_workers must be at least 1, got {max_workers}")
        if address is not None:
            raise ValueError("the local backend runs on this machine: it takes no address")
        self.max_workers = max_workers
        self._shares = ShmStore()
        self._slots = asyncio.Semaphore(max_workers)
        self._idle: list[_Worker] = []
        self._alive: set[_Worker] = set()
        self._reaping: set[asyncio.Task[Any]] = set()
        self._busy = 0
        self._crashed = 0
        self._killed = 0
        self._started = 0
        self._closed = False
        self.queue_waits = WaitHistogram()  # calls that waited for a free worker (the loop writes)

    async def _spawn(self) -> _Worker:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        # "" on sys.path means the current directory (python -c, the REPL).
        env["AMBIDEX_WORKER_SYS_PATH"] = json.dumps([p or os.getcwd() for p in sys.path])
        # Set before the worker imports ambidex: it never turns tracing on from
        # AMBIDEX_OTEL (its spans travel back to this process with each reply).
        env["AMBIDEX_IN_WORKER"] = "1"
        try:
            # Popen blocks the loop for the fork/exec only (about a millisecond);
            # the interpreter starts up while the loop goes on.
            proc = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-c", _BOOTSTRAP, str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # own process group: a kill reaches its children
            )
        finally:
            child_sock.close()
        worker = _Worker(proc)
        self._alive.add(worker)  # from here on, close() and cancellation can find it
        self._started += 1
        try:
            worker.reader, worker.writer = await asyncio.open_unix_connection(
                sock=parent_sock, limit=1 << 20
            )
            # The worker says it is ready once its interpreter has started and
            # imported ambidex; deadlines count from here, so start-up time
            # never eats into a task's timeout.
            await worker.reader.readexactly(8)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            self._alive.discard(worker)
            code = await worker.wait_exit()
            raise AmbidexError(
                f"a cpu worker process failed to start ({describe_exit(code)}); "
                "its error output, if any, is above"
            ) from None
        except BaseException:  # cancelled while the worker started
            self._discard(worker)
            raise
        finally:
            if worker.writer is None:
                parent_sock.close()
        return worker

    def _discard(self, worker: _Worker) -> None:
        self._alive.discard(worker)
        worker.kill()
        task = asyncio.get_running_loop().create_task(worker.wait_exit())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def run(self, payload: bytes, label: str, timeout_s: float | None) -> Any:
        """Run a pickled ``(fn, args, kwargs)`` on a worker and return its result.

        Raises:
            TaskTimeoutError: past ``timeout_s``; the worker was killed.
            WorkerCrashedError: the task ended its worker process.
            SerializationError: the result could not be unpickled here.
            BaseException: whatever the task raised, with its remote traceback
                attached as ``__cause__``.
        """
        if self._closed:
            raise RuntimeError("the cpu process pool is closed")
        queued_at = time.perf_counter() if self._slots.locked() else 0.0  # every worker busy
        submitted = time.perf_counter() if _observe.on else 0.0
        async with self._slots:
            if queued_at:
                self.queue_waits.observe(time.perf_counter() - queued_at)
            worker = self._idle.pop() if self._idle else await self._spawn()
            if submitted:
                from ambidex.runtime._spans import note_handed

                note_handed(time.perf_counter() - submitted, worker.pid)
            self._busy += 1
            try:
                data = await self._exchange(worker, payload, label, timeout_s)
            finally:
                self._busy -= 1
            self._idle.append(worker)
        return decode_reply(data, label)

    def in_flight(self, *, timed: bool) -> int:
        """Twice the workers: more calls would only wait in this process."""
        return 2 * self.max_workers

    def share(self, value: Any, *, writable: bool = False) -> Shared[Any]:
        """Copy ``value`` into shared memory once; workers map it from there."""
        if self._closed:
            raise RuntimeError("the cpu process pool is closed")
        return self._shares.put(value, writable=writable)

    async def _exchange(
        self, worker: _Worker, payload: bytes, label: str, timeout_s: float | None
    ) -> bytes:
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = worker.reader, worker.writer
                assert reader is not None
                assert writer is not None
                writer.write(len(payload).to_bytes(8, "big") + payload)
                await writer.drain()
                header = await reader.readexactly(8)
                return await reader.readexactly(int.from_bytes(header, "big"))
        except TimeoutError:
            self._killed += 1
            self._discard(worker)
            if _observe.on:
                from ambidex.runtime._spans import note_killed

                note_killed(True)
            log.info("cpu worker pid %d killed: %s ran past %s s", worker.pid, label, timeout_s)
            raise TaskTimeoutError(
                label, timeout_s or 0.0, f"worker pid {worker.pid} killed"
            ) from None
        except asyncio.CancelledError:
            self._killed += 1
            self._discard(worker)
            raise
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            self._alive.discard(worker)
            worker.close_channel()
            code = await worker.wait_exit()
            if code is None:
                worker.kill()
                code = await worker.wait_exit()
            self._crashed += 1
            how = describe_exit(code)
            log.warning("cpu worker pid %d running %s died (%s)", worker.pid, label, how)
            raise WorkerCrashedError(label, worker.pid, how) from None

    def statistics(self) -> CpuStatistics:
        """A snapshot of the pool's workers and shared values."""
        shared, shared_bytes = self._shares.usage()
        return CpuStatistics(
            max_workers=self.max_workers,
            workers=len(self._alive),
            busy=self._busy,
            crashed=self._crashed,
            killed=self._killed,
            started=self._started,
            shared=shared,
            shared_bytes=shared_bytes,
            queue_waits=self.queue_waits.count,
            queue_wait_s=self.queue_waits.total_s,
        )

    async def aclose(self) -> None:
        """Stop every worker (close its channel, then kill it if it lingers); free the shares."""
        self._closed = True
        self._shares.close()
        workers = list(self._alive)
        self._alive.clear()
        self._idle.clear()
        for worker in workers:
            worker.close_channel()  # an idle worker exits on EOF
        codes = await asyncio.gather(*(w.wait_exit(1.0) for w in workers))
        for worker, code in zip(workers, codes, strict=True):
            if code is None:
                worker.kill()
        await asyncio.gather(*(w.wait_exit() for w in workers))
        if self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)


def decode_reply(data: bytes, label: str) -> Any:
    """The result a worker sent back, or its error raised here with the remote traceback."""
    try:
        reply = cloudpickle.loads(data)
    except Exception as exc:
        raise SerializationError(f"the result of {label} could not be unpickled: {exc!r}") from exc
    if len(reply) == 4:  # a traced call: the spans it finished in the worker come too
        from ambidex.runtime._spans import adopt

        adopt(reply[3])
        reply = reply[:3]
    status, value, remote_tb = reply
    if status == "ok":
        return value
    if isinstance(value, BaseException):
        value.__cause__ = RemoteTraceback(remote_tb)
        raise value
    raise SerializationError(f"{label}: malformed reply from worker")  # pragma: no cover
