"""Workloads of the PostgreSQL semantics tests, loaded by real worker subprocesses.

Start one with ``--workloads tests/server/semantic_workloads.py``. Like
``durable_workloads``, each run appends to a file of its own process in
``log_dir`` (one ``write`` of a short line with ``O_APPEND``, so lines of
concurrent runs never mix)::

    start <job id> <attempt> <pid> <time.time()>
    end <job id> <attempt> <pid> <time.time()>

which ``_durable_support.read_runs`` and ``executions`` parse. Only the
subprocesses import this file: importing it in the test process would add
these workloads to that process's default registry.

* ``stamp`` records that a tick of a schedule ran (fired by ``--schedule``);
* ``limited`` sleeps ``seconds`` and may run at most twice at once across
  every worker sharing the store (``concurrency=2``).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import ambidex as ax
from ambidex.jobs import JobContext


def _record(log_dir: str, what: str, ctx: JobContext) -> None:
    line = f"{what} {ctx.job_id} {ctx.attempt} {os.getpid()} {time.time():.6f}\n"
    fd = os.open(
        Path(log_dir) / f"runs-{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
    )
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@ax.jobs.workload
async def stamp(ctx: JobContext, log_dir: str) -> dict[str, object]:
    """Record one run (a tick of a schedule) and say where it ran."""
    _record(log_dir, "start", ctx)
    _record(log_dir, "end", ctx)
    return {"job": ctx.job_id, "pid": os.getpid()}


@ax.jobs.workload(concurrency=2)
async def limited(ctx: JobContext, log_dir: str, seconds: float = 0.2) -> dict[str, object]:
    """Sleep ``seconds``, recording start and end; at most two run at once anywhere."""
    _record(log_dir, "start", ctx)
    await asyncio.sleep(seconds)
    _record(log_dir, "end", ctx)
    return {"job": ctx.job_id, "pid": os.getpid()}
