"""Two real ``ambidex worker`` processes sharing one PostgreSQL database.

Each test gets a database of its own (created on the ``test`` database's
server, dropped afterwards) and is skipped when no PostgreSQL answers at
127.0.0.1:5432. Jobs are submitted through a ``JobStore`` in the test
process; the workers run ``durable_workloads.tick``, which records each
run's start and end (job, attempt, pid, time) in a file per process.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _durable_support import WORKLOADS, executions, wait_until, worker_pid
from _server_support import ServerProcess

from _pg_support import fresh_pg_database
from ambidex.jobs import Job, JobStatus, JobStore

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def store(pg_url: str) -> Iterator[JobStore]:
    """The store on the fresh database (its tables made before any worker starts)."""
    with JobStore(pg_url) as s:
        yield s


@pytest.fixture
def workers(pg_url: str, store: JobStore, tmp_path: Path) -> Iterator[dict[int, ServerProcess]]:
    """Two workers on the store's database, by pid, both ready to claim."""
    procs = [
        ServerProcess(
            "worker",
            "--db",
            pg_url,
            "--workloads",
            WORKLOADS,
            "--concurrency",
            "4",
            "--lease-s",
            "2",
            log=tmp_path / f"worker-{n}.log",
        )
        for n in (1, 2)
    ]
    try:
        for proc in procs:
            proc.wait_for_text("ambidex worker ")
        yield {proc.proc.pid: proc for proc in procs}
    finally:
        for proc in procs:
            proc.stop()


def tick_input(
    log_dir: Path, seconds: float, retry_seconds: float | None = None
) -> dict[str, object]:
    return {"log_dir": str(log_dir), "seconds": seconds, "retry_seconds": retry_seconds}


def all_finished(store: JobStore, ids: list[str]) -> list[Job] | None:
    """The jobs, once every one has finished."""
    jobs = [j for j in map(store.get, ids) if j is not None and j.status.terminal]
    return jobs if len(jobs) == len(ids) else None


def test_two_workers_never_run_one_job_at_the_same_time(
    store: JobStore, workers: dict[int, ServerProcess], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    ids = [j.id for j in store.submit_many("tick", [tick_input(runs, 0.1)] * 60)]

    jobs = wait_until(lambda: all_finished(store, ids), "all 60 jobs to finish", 40)

    ran = executions(runs)
    assert set(ran) == set(ids)
    for job in jobs:
        assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1), job
        kinds = [e.kind for e in store.events(job.id)]
        assert kinds == ["submitted", "started", "succeeded"], kinds
        (only,) = ran[job.id]  # one run, by one worker: never two at once
        assert only.end is not None
        assert only.pid == worker_pid(job.worker) == job.result["pid"]
    by_worker = {pid: sum(r[0].pid == pid for r in ran.values()) for pid in workers}
    assert all(n > 0 for n in by_worker.values()), by_worker


def test_a_job_whose_worker_is_killed_is_finished_by_the_other(
    store: JobStore, workers: dict[int, ServerProcess], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    job = store.submit("tick", tick_input(runs, seconds=60, retry_seconds=0.1))

    def holder() -> int | None:
        now = store.get(job.id)
        started = executions(runs).get(job.id)
        if now is None or now.status is not JobStatus.RUNNING or not started:
            return None
        return worker_pid(now.worker)

    victim_pid = wait_until(holder, "a worker to be running the job")
    (survivor_pid,) = set(workers) - {victim_pid}
    workers[victim_pid].kill9()

    done = wait_until(lambda: all_finished(store, [job.id]), "the other worker to finish it")[0]
    assert done.status is JobStatus.SUCCEEDED, done
    assert done.attempts == 2
    assert worker_pid(done.worker) == survivor_pid
    assert done.result == {"job": job.id, "attempt": 2, "pid": survivor_pid}
    kinds = [e.kind for e in store.events(job.id)]
    assert kinds == ["submitted", "started", "requeued", "started", "succeeded"]
    first, second = executions(runs)[job.id]
    assert (first.attempt, first.pid, first.end) == (1, victim_pid, None)
    assert (second.attempt, second.pid) == (2, survivor_pid)
    assert second.end is not None
    assert workers[survivor_pid].proc.poll() is None


# A store whose __init__ fails leaks its engine's connections (a second, smaller bug):
# collect them here, so their ResourceWarning cannot land in a later test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_stores_opened_at_once_on_an_empty_database_all_open() -> None:
    errors: list[str] = []
    for _ in range(3):  # three empty databases, four stores opened at once on each
        with fresh_pg_database() as url:
            start = threading.Barrier(4)

            def open_store(url: str = url, start: threading.Barrier = start) -> None:
                start.wait()
                try:
                    JobStore(url).close()
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")

            threads = [threading.Thread(target=open_store) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            gc.collect()
    assert errors == []
