"""Workloads of the durability tests, loaded by real server and worker subprocesses.

Start one with ``--workloads tests/server/durable_workloads.py``. Each run
appends to a file of its own process in ``log_dir`` (one ``write`` of a short
line with ``O_APPEND``, so lines of concurrent runs never mix)::

    start <job id> <attempt> <pid> <time.time()>
    end <job id> <attempt> <pid> <time.time()>

so a test can see which job ran where, how often, and whether two runs of
one job ever overlapped, even across a ``kill -9`` (``_durable_support.read_runs``
parses them). Only the subprocesses import this file: importing it in the
test process would add ``tick`` to that process's default registry.
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


@ax.jobs.workload(max_attempts=3)
async def tick(
    ctx: JobContext, log_dir: str, seconds: float = 0.3, retry_seconds: float | None = None
) -> dict[str, object]:
    """Sleep ``seconds`` (``retry_seconds`` on a second attempt), recording start and end."""
    _record(log_dir, "start", ctx)
    pause = retry_seconds if retry_seconds is not None and ctx.attempt > 1 else seconds
    await asyncio.sleep(pause)
    _record(log_dir, "end", ctx)
    return {"job": ctx.job_id, "attempt": ctx.attempt, "pid": os.getpid()}
