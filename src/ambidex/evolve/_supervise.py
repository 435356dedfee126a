"""Supervising one evaluation of the evolve sandbox: start, watch, kill, collect.

:func:`supervise` starts a planned :class:`~ambidex.evolve._plan.Job` (the runner in
its own session, inside the namespaces the plan chose), reads its result pipe,
stdout and stderr on the event loop (bounded: the head of the messages, the tail of
the output), enforces the wall-clock timeout and, without a memory cgroup, the
memory limit by polling, kills the whole evaluation (process group, cgroups, or a
hunt by environment) when it ends or is cancelled, removes what the plan made, and
turns what came back into an :class:`EvalResult`. What the pipe says is checked,
never trusted: the candidate may have written it. :func:`run_sync` is the same run
without an event loop, for the capability probe's trial evaluation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from ambidex._text import plain_text
from ambidex.evolve._plan import MAX_METRIC_NAME, MAX_METRICS, MEMORY_POLL_S, Job, Limits
from ambidex.exceptions import AmbidexError

__all__ = ["EvalResult", "Raw", "SandboxError", "run_sync", "supervise"]

_TAIL_BYTES = 8192
_RESULT_BYTES = 1 << 20
_DRAIN_GRACE_S = 2.0


@dataclass
class EvalResult:
    """The outcome of one evaluation.

    Attributes:
        ok: True when the evaluator returned a valid metrics dict.
        metrics: The metrics (str to finite float); empty unless ``ok``.
        error: None when ``ok``, else one line, e.g. ``"timeout after 2 s (process group
            killed)"``, ``"crashed: ZeroDivisionError: division by zero"``, ``"exit code
            -9 (SIGKILL)"``, ``"bad metrics: 'score' is str, expected a number"``.
        kind: ``"ok"``, ``"timeout"``, ``"crash"`` (the candidate raised or exited),
            ``"rejected"`` (the evaluator raised), ``"bad_metrics"``, ``"killed"`` or
            ``"memory"``.
        stderr: The last ~8 kB of the candidate's stderr (tracebacks land here).
        stdout: The last ~8 kB of the candidate's stdout.
        elapsed_s: Wall-clock seconds from starting the subprocess to its end.
    """

    ok: bool
    metrics: dict[str, float]
    error: str | None
    kind: str
    stderr: str
    stdout: str
    elapsed_s: float


class SandboxError(AmbidexError, RuntimeError):
    """The sandbox itself failed (not the candidate): a layer could not be set up."""


@dataclass
class Raw:
    """What a finished run produced, before interpretation."""

    messages: list[dict[str, Any]]
    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    elapsed_s: float
    garbled: str = ""  # what was wrong with the result pipe's messages, if anything
    memory: str = ""  # how the whole evaluation went over its memory limit, if it did


async def supervise(limits: Limits, job: Job) -> EvalResult:
    """Run ``job`` to its end, remove what it made, and say how it went.

    Raises:
        SandboxError: The sandbox could not be set up (not the candidate's fault).
    """
    try:
        raw = await _run(limits, job)
    finally:
        await asyncio.shield(job.cleanup())
    return _interpret(limits, raw)


async def _run(limits: Limits, job: Job) -> Raw:
    """Start the runner, wait for it (or the timeout), collect its output."""
    loop = asyncio.get_running_loop()
    read_fd, write_fd = job.result_fds
    life_r, life_w = job.lifeline_fds
    pipes: list[int] = [read_fd, write_fd, life_r, life_w]
    drains: list[_Drain] = []
    proc: asyncio.subprocess.Process | None = None
    try:
        out_r, out_w = os.pipe()
        pipes += [out_r, out_w]
        err_r, err_w = os.pipe()
        pipes += [err_r, err_w]
        start = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *job.argv,
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            pass_fds=(write_fd, life_r),
            start_new_session=True,
            env=job.env,
            cwd=job.directory,
        )
        for fd in (write_fd, life_r, out_w, err_w):
            os.close(fd)
            pipes.remove(fd)
        for fd, limit, tail in (
            (read_fd, _RESULT_BYTES, False),
            (out_r, _TAIL_BYTES, True),
            (err_r, _TAIL_BYTES, True),
        ):
            drains.append(_Drain(loop, fd, limit, tail))
            pipes.remove(fd)
        timed_out = False
        watch = _MemoryWatch(proc.pid, job, limits.memory_mb) if job.memory is None else None
        try:
            await asyncio.wait_for(proc.wait(), limits.timeout_s)
        except TimeoutError:
            timed_out = True
            _kill(proc.pid, job)
            await proc.wait()
        finally:
            if watch is not None:
                watch.stop()
        elapsed = time.monotonic() - start
        _kill(proc.pid, job)  # stragglers outside a pid namespace
        memory = watch.exceeded if watch is not None else ""
        if job.memory is not None and job.memory.oom_kills():
            memory = (
                f"memory limit ({limits.memory_mb} MB, the whole candidate) reached: "
                "the kernel killed a process of it"
            )
        await asyncio.wait([d.eof for d in drains], timeout=_DRAIN_GRACE_S)
    except asyncio.CancelledError:
        if proc is not None:
            _kill(proc.pid, job)
            with contextlib.suppress(BaseException):
                await asyncio.shield(asyncio.wait_for(proc.wait(), 5.0))
        raise
    finally:
        for drain in drains:
            drain.close()
        for fd in pipes:
            os.close(fd)
    messages, garbled = _parse_messages(bytes(drains[0].data), drains[0].overflow)
    return Raw(
        messages,
        proc.returncode,
        bytes(drains[1].data),
        bytes(drains[2].data),
        timed_out,
        elapsed,
        garbled,
        memory,
    )


def run_sync(job: Job, timeout_s: float) -> Raw:
    """Run ``job`` to completion without an event loop (the capability probe's trial)."""
    read_fd, write_fd = job.result_fds
    life_r, life_w = job.lifeline_fds
    start = time.monotonic()
    timed_out = False
    try:
        proc = subprocess.Popen(
            job.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(write_fd, life_r),
            start_new_session=True,
            env=job.env,
            cwd=job.directory,
        )
    finally:
        os.close(write_fd)
        os.close(life_r)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        out, err = proc.communicate()
    finally:
        os.close(life_w)
    _kill_group(proc.pid)
    if job.hunt:
        _hunt(job.directory)
    chunks = []
    os.set_blocking(read_fd, False)
    with contextlib.suppress(OSError):
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)
    os.close(read_fd)
    messages, garbled = _parse_messages(b"".join(chunks))
    return Raw(
        messages,
        proc.returncode,
        out[-_TAIL_BYTES:],
        err[-_TAIL_BYTES:],
        timed_out,
        time.monotonic() - start,
        garbled,
    )


def _kill(pid: int, job: Job) -> None:
    """SIGKILL the evaluation's process group and every process of its cgroups."""
    _kill_group(pid)
    for cgroup in job.cgroups:
        cgroup.kill()
    if job.hunt:
        _hunt(job.directory)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _hunt(directory: str) -> None:
    """SIGKILL every process whose environment has ``TMPDIR=directory`` (best effort).

    Only used without a pid namespace and a cgroup, where a candidate's ``setsid``
    children would otherwise outlive the evaluation; a process that replaced its
    environment with ``execve`` escapes this.
    """
    marker = f"\0TMPDIR={directory}\0".encode()
    for _ in range(10):
        found = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    environ = b"\0" + f.read() + b"\0"
            except OSError:
                continue
            if marker in environ:
                found = True
                with contextlib.suppress(OSError):
                    os.kill(int(entry.name), signal.SIGKILL)
        if not found:
            return


class _Drain:
    """Reads a pipe on the event loop, keeping its head or its tail (bounded)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, limit: int, tail: bool) -> None:
        self._loop = loop
        self._fd = fd
        self._limit = limit
        self._tail = tail
        self.data = bytearray()
        self.overflow = False  # more than ``limit`` bytes arrived
        self.eof: asyncio.Future[None] = loop.create_future()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        if len(self.data) + len(chunk) > self._limit:
            self.overflow = True
        if self._tail:
            self.data += chunk
            if len(self.data) > self._limit:
                del self.data[: -self._limit]
        elif len(self.data) < self._limit:
            self.data += chunk[: self._limit - len(self.data)]

    def close(self) -> None:
        """Stop reading and close the pipe (its end of file has come, or we gave up)."""
        if self._fd < 0:
            return
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        if not self.eof.done():
            self.eof.set_result(None)


class _MemoryWatch:
    """Without a memory cgroup: the evaluation's memory, summed and killed at the limit.

    Polled on the event loop. The processes are the pids cgroup's, else the descendants
    of the sandbox's first process; their resident memory is summed (pages shared after
    a fork count once per process: on the safe side) with what the evaluation's tmpfs
    holds.
    """

    def __init__(self, pid: int, job: Job, memory_mb: int) -> None:
        self._pid = pid
        self._job = job
        self._limit = memory_mb * 2**20
        self._memory_mb = memory_mb
        self.exceeded = ""
        self._task = asyncio.ensure_future(self._poll())

    def stop(self) -> None:
        """Stop polling (the evaluation ended)."""
        self._task.cancel()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(MEMORY_POLL_S)
            pids = self._job.cgroup.pids() if self._job.cgroup is not None else _tree(self._pid)
            used = sum(_resident(pid) for pid in pids) + _tmpfs_used(self._pid, self._job.directory)
            if used > self._limit:
                self.exceeded = (
                    f"memory limit ({self._memory_mb} MB, the whole candidate) exceeded: "
                    f"{used / 2**20:.0f} MB in {len(pids)} processes and its files; killed"
                )
                _kill(self._pid, self._job)
                return


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _resident(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (from /proc's parent pids)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat_line = f.read()
            ppid = int(stat_line[stat_line.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _tmpfs_used(pid: int, directory: str) -> int:
    """Bytes in the evaluation's private tmpfs, seen through the sandbox's mount namespace.

    0 without one: then the directory is on the host's disk, under RLIMIT_FSIZE.
    """
    inside = f"/proc/{pid}/root{directory}"
    try:
        if os.stat(inside).st_dev == os.stat(directory).st_dev:
            return 0
        st = os.statvfs(inside)
    except OSError:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _parse_messages(data: bytes, overflow: bool = False) -> tuple[list[dict[str, Any]], str]:
    """The result pipe's messages, and what was wrong with them ("" if nothing).

    Whatever arrives here is checked, never trusted: a line that is not a JSON object
    (too deep to parse included) or more than ``_RESULT_BYTES`` in all is reported, and
    the evaluation is then a failure of its candidate.
    """
    messages = []
    problem = f"more than {_RESULT_BYTES} bytes of messages" if overflow else ""
    for line in data.splitlines():
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            message = None
        if isinstance(message, dict):
            messages.append(message)
        elif not problem:
            problem = f"a message that is not a JSON object: {_decode(line[:80])!r}"
    return messages, problem


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _interpret(limits: Limits, raw: Raw) -> EvalResult:
    """Turn what the run produced into an :class:`EvalResult`."""
    if raw.memory:
        return _result(raw, "memory", raw.memory)
    if raw.timed_out:
        return _result(
            raw, "timeout", f"timeout after {limits.timeout_s:g} s (process group killed)"
        )
    by_type: dict[str, dict[str, Any]] = {}
    results = 0
    for message in raw.messages:
        by_type.setdefault(str(message.get("type")), message)
        if message.get("type") == "exit":
            by_type["exit"] = message  # the supervisor's word is the last one
        results += message.get("type") == "result"
    # After "start" the candidate ran and may have written anything (or printed
    # "unshare: ..."): only failures from before it are the sandbox's own.
    if "start" not in by_type:
        if "setup_error" in by_type:
            m = by_type["setup_error"]
            raise SandboxError(f"sandbox setup failed ({m.get('layer')}): {m.get('error')}")
        stderr = _decode(raw.stderr)
        if raw.returncode and "unshare:" in stderr:
            raise SandboxError(f"sandbox setup failed (unshare): {stderr.strip()[-300:]}")
    if raw.garbled:
        return _result(raw, "bad_metrics", f"bad metrics: {raw.garbled}")
    if results > 1:
        return _result(raw, "bad_metrics", f"bad metrics: {results} results, expected one")
    if "result" in by_type:
        return _from_message(raw, by_type["result"])
    status = by_type.get("exit", {}).get("status", raw.returncode)
    return _from_status(limits, raw, status if isinstance(status, int) else raw.returncode)


def _from_status(limits: Limits, raw: Raw, status: int | None) -> EvalResult:
    if status is None:
        return _result(raw, "killed", "the sandbox ended without an exit status")
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        if -status == signal.SIGXCPU:
            return _result(raw, "timeout", f"cpu time limit ({limits.cpu_s} s) exceeded (SIGXCPU)")
        return _result(raw, "killed", f"exit code {status} ({name})")
    return _result(raw, "crash", f"exited with code {status} without reporting metrics")


def _result(
    raw: Raw, kind: str, error: str | None, metrics: dict[str, float] | None = None
) -> EvalResult:
    return EvalResult(
        ok=kind == "ok",
        metrics=metrics or {},
        error=None if error is None else plain_text(error),  # the candidate chose its text
        kind=kind,
        stderr=_decode(raw.stderr),
        stdout=_decode(raw.stdout),
        elapsed_s=raw.elapsed_s,
    )


def _from_message(raw: Raw, message: dict[str, Any]) -> EvalResult:
    kind = message.get("kind")
    if kind == "ok":
        metrics, problem = _valid_metrics(message.get("metrics"))
        if metrics is None:
            return _result(raw, "bad_metrics", problem)
        return _result(raw, "ok", None, metrics)
    if kind not in ("crash", "bad_metrics", "memory", "rejected", "timeout"):
        kind = "crash"
    return _result(raw, str(kind), " ".join(str(message.get("error") or kind).split())[:500])


def _valid_metrics(value: Any) -> tuple[dict[str, float] | None, str]:
    """Re-check the worker's metrics: the candidate could have forged the message."""
    if not isinstance(value, dict):
        return None, f"bad metrics: got {type(value).__name__}, expected a dict"
    if len(value) > MAX_METRICS:
        return None, f"bad metrics: {len(value)} metrics, more than {MAX_METRICS}"
    metrics: dict[str, float] = {}
    for key, number in value.items():
        if plain_text(key) != key:
            return None, f"bad metrics: the name {plain_text(key)!r} is not plain text"
        if not 0 < len(key) <= MAX_METRIC_NAME:
            return None, f"bad metrics: a name of {len(key)} characters (1 to {MAX_METRIC_NAME})"
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            return None, f"bad metrics: {key!r} is {type(number).__name__}, expected a number"
        try:
            as_float = float(number)
        except OverflowError:
            return None, f"bad metrics: {key!r} is too large"
        if not math.isfinite(as_float):
            return None, f"bad metrics: {key!r} is {as_float}, expected a finite number"
        metrics[str(key)] = as_float
    return metrics, ""
