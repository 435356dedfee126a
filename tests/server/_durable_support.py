"""Helpers of the durability tests: the runs log, waiting on conditions, throwaway PostgreSQL."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

WORKLOADS = str(Path(__file__).with_name("durable_workloads.py"))
"""The ``--workloads`` of every server and worker these tests start (it offers ``tick``)."""


def wait_until(probe: Callable[[], T | None], what: str, timeout_s: float = 20.0) -> T:
    """Call ``probe`` until it returns something truthy (returned); fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


@dataclass(frozen=True)
class Run:
    """One line of a runs log written by ``durable_workloads.tick``."""

    what: str  # "start" or "end"
    job_id: str
    attempt: int
    pid: int
    at: float


@dataclass(frozen=True)
class Execution:
    """One run of one attempt of a job in one process: its start and (if it got there) end."""

    job_id: str
    attempt: int
    pid: int
    start: float
    end: float | None


def read_runs(log_dir: Path) -> list[Run]:
    """Every start and end line recorded in ``log_dir``, oldest first."""
    runs = []
    for path in log_dir.glob("runs-*.log"):
        for line in path.read_text().splitlines():
            what, job_id, attempt, pid, at = line.split()
            runs.append(Run(what, job_id, int(attempt), int(pid), float(at)))
    return sorted(runs, key=lambda r: r.at)


def executions(log_dir: Path) -> dict[str, list[Execution]]:
    """The runs of each job, by job id, in the order they started."""
    starts: dict[tuple[str, int, int], float] = {}
    ends: dict[tuple[str, int, int], float] = {}
    for run in read_runs(log_dir):
        key = (run.job_id, run.attempt, run.pid)
        target = starts if run.what == "start" else ends
        assert key not in target, f"{run.what} of {key} recorded twice"
        target[key] = run.at
    by_job: dict[str, list[Execution]] = defaultdict(list)
    for (job_id, attempt, pid), start in sorted(starts.items(), key=lambda kv: kv[1]):
        by_job[job_id].append(
            Execution(job_id, attempt, pid, start, ends.get((job_id, attempt, pid)))
        )
    assert set(ends) <= set(starts), "a run ended that never started"
    return dict(by_job)


def worker_pid(worker: str | None) -> int:
    """The process id in a worker name (``host:pid:random``)."""
    assert worker is not None
    return int(worker.split(":")[-2])
