"""Helpers of the durability tests: the runs log, waiting on conditions, throwaway PostgreSQL."""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

WORKLOADS = str(Path(__file__).with_name("durable_workloads.py"))
"""The ``--workloads`` of every server and worker these tests start (it offers ``tick``)."""

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_BASE_URL = "postgresql://postgres@127.0.0.1:5432"


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


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """The URL of a new PostgreSQL database, dropped (connections and all) afterwards.

    Skips the test when no server answers at 127.0.0.1:5432.
    """
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN_URL, connect_timeout=3, autocommit=True)
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    name = f"ambidex_t_{secrets.token_hex(6)}"
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{PG_BASE_URL}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()
