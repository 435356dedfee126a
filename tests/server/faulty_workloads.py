"""Workloads that misbehave, loaded by real server and worker subprocesses (``test_faults``).

Start one with ``--workloads tests/server/faulty_workloads.py``. Every
workload takes ``log_dir``, ``gate`` and ``tag``: it appends
``start <tag> <attempt> <pid> <time>`` to a file of its own process in
``log_dir`` when it starts (and ``end ...`` when a good one ends; the format
of ``durable_workloads``, read by ``_durable_support.executions``), then
waits until the file ``gate`` exists, then does its thing. So a test can
start a faulty job with a batch of good ones, see them all running, and
let them all finish at once by creating the gate.

Async jobs waiting on one gate all wake in the same turn of the event loop
(one watcher polls the file; each job awaits its future), so their
outcomes reach the group commit together: one transaction holds the faulty
job's outcome and the good ones'. Blocking and cpu jobs poll the file in
their thread or process.

Only the subprocesses import this file: importing it in the test process
would add these workloads to that process's default registry.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import ambidex as ax
from ambidex.jobs import JobContext

_POLL_S = 0.005
_gates: dict[str, asyncio.Future[None]] = {}
_watchers: set[asyncio.Task[None]] = set()


def _record(log_dir: str, what: str, tag: str, attempt: int) -> None:
    line = f"{what} {tag} {attempt} {os.getpid()} {time.time():.6f}\n"
    fd = os.open(
        Path(log_dir) / f"runs-{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
    )
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


async def _watch(path: str, opened: asyncio.Future[None]) -> None:
    while not os.path.exists(path):  # noqa: ASYNC240 - a stat of a local file, every 5 ms
        await asyncio.sleep(_POLL_S)
    if not opened.done():
        opened.set_result(None)


async def _through_gate(path: str) -> None:
    """Wait until the file ``path`` exists; every async job waiting on it wakes together."""
    loop = asyncio.get_running_loop()
    opened = _gates.get(path)
    if opened is None or opened.get_loop() is not loop:
        opened = _gates[path] = loop.create_future()
        watcher = loop.create_task(_watch(path, opened))
        _watchers.add(watcher)
        watcher.add_done_callback(_watchers.discard)
    await asyncio.shield(opened)


def _through_gate_blocking(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(_POLL_S)


class Unprintable(Exception):
    """An exception whose ``str()`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no words for it")


class Unformattable(Exception):
    """An exception whose traceback cannot be formatted: reading its ``__notes__`` raises."""

    @property
    def __notes__(self) -> list[str]:
        raise RuntimeError("no notes to show")


def _escape(how: str) -> BaseException:
    """What a job raises for ``how`` (``StopIteration`` too: what ``next()`` raises at the end)."""
    return {
        "exit": SystemExit(3),
        "interrupt": KeyboardInterrupt("interrupted by the job"),
        "generator_exit": GeneratorExit("closed by the job"),
        "cancelled": asyncio.CancelledError("cancelled by the job itself"),
        "stop_iteration": StopIteration("nothing left"),
    }[how]


@ax.jobs.workload(max_attempts=3)
async def good(ctx: JobContext, log_dir: str, gate: str, tag: str) -> dict[str, Any]:
    """Wait for the gate; return who ran it."""
    _record(log_dir, "start", tag, ctx.attempt)
    await _through_gate(gate)
    _record(log_dir, "end", tag, ctx.attempt)
    return {"tag": tag, "attempt": ctx.attempt, "pid": os.getpid()}


@ax.jobs.workload(max_attempts=3)
async def unprintable(ctx: JobContext, log_dir: str, gate: str, tag: str) -> None:
    """Wait for the gate; raise an exception whose ``str()`` raises."""
    _record(log_dir, "start", tag, ctx.attempt)
    await _through_gate(gate)
    raise Unprintable("never shown")


@ax.jobs.workload(max_attempts=3)
async def unformattable(ctx: JobContext, log_dir: str, gate: str, tag: str) -> None:
    """Wait for the gate; raise an exception whose traceback cannot be formatted."""
    _record(log_dir, "start", tag, ctx.attempt)
    await _through_gate(gate)
    raise Unformattable("its notes cannot be read")


@ax.jobs.workload(max_attempts=3)
async def escape(ctx: JobContext, log_dir: str, gate: str, tag: str, how: str) -> None:
    """Wait for the gate; raise ``SystemExit``, ``KeyboardInterrupt``... (see ``_escape``)."""
    _record(log_dir, "start", tag, ctx.attempt)
    await _through_gate(gate)
    if how == "exit":
        sys.exit(3)
    raise _escape(how)


@ax.jobs.workload(max_attempts=3)
async def escape_in_a_child_task(
    ctx: JobContext, log_dir: str, gate: str, tag: str, how: str
) -> None:
    """Wait for the gate; raise as ``escape`` does, in a task the job awaits (``gather``)."""
    _record(log_dir, "start", tag, ctx.attempt)
    await _through_gate(gate)

    async def child() -> None:
        if how == "exit":
            sys.exit(3)
        raise _escape(how)

    await asyncio.gather(child())


@ax.jobs.workload(max_attempts=3)
def blocking_escape(ctx: JobContext, log_dir: str, gate: str, tag: str, how: str) -> None:
    """On an I/O thread: wait for the gate; ``sys.exit(3)`` or raise as ``_escape`` says."""
    _record(log_dir, "start", tag, ctx.attempt)
    _through_gate_blocking(gate)
    if how == "exit":
        sys.exit(3)
    raise _escape(how)


@ax.jobs.workload(max_attempts=3)
@ax.cpu
def cpu_escape(log_dir: str, gate: str, tag: str, how: str) -> None:
    """In a cpu worker process: wait for the gate; ``sys.exit(3)`` or raise ``KeyboardInterrupt``.

    (A cpu function has no context: its start is recorded as attempt 0.)
    """
    _record(log_dir, "start", tag, 0)
    _through_gate_blocking(gate)
    if how == "exit":
        sys.exit(3)
    raise _escape(how)


_ODD_TEXT = {"nul": "a\x00b", "surrogate": "a\udc80b", "both": "nul \x00 and surrogate \ud800"}


@ax.jobs.workload(max_attempts=3)
async def odd_error(ctx: JobContext, log_dir: str, gate: str, tag: str, which: str) -> None:
    """Wait for the gate; raise ``ValueError`` with a NUL or a lone surrogate in its message."""
    _record(log_dir, "start", tag, ctx.attempt)
    await _through_gate(gate)
    raise ValueError(_ODD_TEXT[which])


def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


@ax.jobs.workload(max_attempts=3)
async def odd_result(ctx: JobContext, log_dir: str, gate: str, tag: str, which: str) -> Any:
    """Wait for the gate; return what no database can store as JSON (see ``which``)."""
    _record(log_dir, "start", tag, ctx.attempt)
    await _through_gate(gate)
    return {
        "surrogate": {"text": "a\udc80b"},
        "nan": {"score": float("nan")},
        "infinity": {"score": float("-inf")},
        "deep": {"tree": _deep(150)},
    }[which]


@ax.jobs.workload(max_attempts=3)
async def chatty(ctx: JobContext, log_dir: str, gate: str, tag: str) -> dict[str, Any]:
    """Report progress with a NUL and a lone surrogate in its message; then succeed."""
    _record(log_dir, "start", tag, ctx.attempt)
    ctx.progress(0.5, _ODD_TEXT["both"])
    await _through_gate(gate)
    _record(log_dir, "end", tag, ctx.attempt)
    return {"tag": tag, "attempt": ctx.attempt, "pid": os.getpid()}
