"""Job semantics that must hold across processes sharing one PostgreSQL database.

Real ``ambidex worker`` and ``ambidex serve --concurrency 0`` subprocesses run
``semantic_workloads`` on a database of their own (created on the ``test``
database's server, dropped afterwards); the tests are skipped when no
PostgreSQL answers at 127.0.0.1:5432. What the workers did is read from the
store and from the runs log the workloads write (one file per process).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import datetime
from functools import partial
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from _durable_support import Execution, executions, wait_until, worker_pid
from _server_support import ServerProcess

from _pg_support import fresh_pg_database
from ambidex.jobs import Job, JobStatus, JobStore

pytestmark = pytest.mark.timeout(60)

WORKLOADS = str(Path(__file__).with_name("semantic_workloads.py"))
"""The ``--workloads`` of every process these tests start (``stamp`` and ``limited``)."""


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def store(pg_url: str) -> Iterator[JobStore]:
    """The store on the fresh database (its tables made before any process starts)."""
    with JobStore(pg_url) as s:
        yield s


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """The directory the workloads record their runs in."""
    path = tmp_path / "runs"
    path.mkdir()
    return path


@contextmanager
def two(command: str, *args: str, logs: Path, ready: str) -> Iterator[list[ServerProcess]]:
    """Two ``ambidex <command> <args>`` processes started together, once both printed ``ready``."""
    with ExitStack() as stack:
        procs = []
        for n in (1, 2):
            proc = ServerProcess(command, *args, log=logs / f"{command}-{n}.log")
            stack.callback(proc.stop)
            procs.append(proc)
        for proc in procs:
            proc.wait_for_text(ready)
        yield procs


def workers(pg_url: str, logs: Path, *args: str) -> AbstractContextManager[list[ServerProcess]]:
    """Two ``ambidex worker`` processes on ``pg_url`` running ``semantic_workloads``."""
    return two(
        "worker",
        "--db",
        pg_url,
        "--workloads",
        WORKLOADS,
        *args,
        logs=logs,
        ready="ambidex worker ",
    )


def all_finished(store: JobStore, ids: list[str]) -> list[Job] | None:
    """The jobs, once every one has finished."""
    jobs = [j for j in map(store.get, ids) if j is not None and j.status.terminal]
    return jobs if len(jobs) == len(ids) else None


def tick_of(key: str | None) -> float:
    """The tick a schedule's job was fired for, from its key ``schedule:NAME:ISO-TIME``."""
    assert key is not None
    assert key.startswith("schedule:stamp:"), key
    return datetime.fromisoformat(key.removeprefix("schedule:stamp:")).timestamp()


def stamp_jobs(store: JobStore) -> list[Job]:
    return store.list(workload="stamp", limit=1000).jobs


def most_at_once(spans: list[Execution]) -> int:
    """The most runs in progress at one instant (an end at the instant of a start comes first)."""
    edges = sorted([(s.start, 1) for s in spans] + [(s.end, -1) for s in spans if s.end])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


# -- schedules -------------------------------------------------------------------------


def test_a_cron_schedule_given_to_two_workers_fires_every_tick_once(
    pg_url: str, store: JobStore, runs: Path, tmp_path: Path
) -> None:
    every_2_s = "stamp=* * * * * */2;" + json.dumps({"log_dir": str(runs)})
    with workers(pg_url, tmp_path, "--schedule", every_2_s) as procs:

        def four_ticks() -> bool:
            ticks = [tick_of(j.idempotency_key) for j in stamp_jobs(store)]
            return len(ticks) >= 2 and max(ticks) - min(ticks) >= 6.0

        wait_until(four_ticks, "ticks fired over 6 s", timeout_s=25)

    jobs = stamp_jobs(store)
    per_tick = Counter(tick_of(j.idempotency_key) for j in jobs)
    assert set(per_tick.values()) == {1}, per_tick
    ticks = sorted(per_tick)
    gaps = [round(b - a, 3) for a, b in pairwise(ticks)]
    assert gaps == [2.0] * len(gaps), f"a tick between the first and the last is missing: {ticks}"
    assert len(ticks) >= 4
    fired_by = [p.log_path.read_text().count("schedule stamp: tick") for p in procs]
    assert sum(fired_by) == len(ticks), f"ticks fired by each worker: {fired_by}"
    ran = executions(runs)
    for job in jobs:
        if job.status is JobStatus.SUCCEEDED:
            assert len(ran[job.id]) == 1, ran[job.id]


# -- concurrency limits ------------------------------------------------------------------


def test_a_workload_concurrency_limit_holds_across_two_workers(
    pg_url: str, store: JobStore, runs: Path, tmp_path: Path
) -> None:
    # Waves of 4 jobs, each submitted once the last has finished: a worker that
    # frees a slot claims the next job of its wave at once, so 20 jobs queued
    # together would all run on whichever worker claimed first; a new wave goes
    # to whichever worker looks first. Within a wave the other worker keeps
    # looking (every 0.25 s) while two run, and must be refused.
    with workers(pg_url, tmp_path, "--concurrency", "8") as procs:
        done: list[Job] = []
        for wave in range(5):
            ids = [
                store.submit("limited", {"log_dir": str(runs), "seconds": 0.2}).id for _ in range(4)
            ]
            done += wait_until(partial(all_finished, store, ids), f"wave {wave} to finish")
        pids = {p.proc.pid for p in procs}
    ids = [j.id for j in done]

    assert {j.status for j in done} == {JobStatus.SUCCEEDED}
    ran = executions(runs)
    spans = [run for job_id in ids for run in ran[job_id]]
    assert len(spans) == 20
    assert all(s.end is not None for s in spans)
    assert most_at_once(spans) == 2
    by_worker = Counter(worker_pid(j.worker) for j in done)
    assert set(by_worker) == pids, f"one worker ran everything: {by_worker}"


# -- idempotency -------------------------------------------------------------------------


def post_at_once(urls: list[str], key: str, callers: int) -> list[tuple[int, str]]:
    """POST one job with ``key`` from ``callers`` threads at once, alternating ``urls``.

    Returns each caller's (status code, job id or error text).
    """
    answers: list[tuple[int, str]] = []
    start = threading.Barrier(callers)
    body = {"workload": "echo", "input": {"value": 1}, "idempotency_key": key}

    def post(url: str) -> None:
        with httpx.Client(base_url=url, timeout=20) as client:
            start.wait()
            response = client.post("/v1/jobs", json=body)
        ok = response.status_code in (200, 202)
        answers.append((response.status_code, response.json()["id"] if ok else response.text))

    threads = [threading.Thread(target=post, args=(urls[n % 2],)) for n in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def test_one_idempotency_key_posted_at_once_to_two_front_desks_makes_one_job(
    pg_url: str, store: JobStore, tmp_path: Path
) -> None:
    callers = 16
    serve = ("serve", "--db", pg_url, "--concurrency", "0", "--port", "0")
    with two(*serve, logs=tmp_path, ready="ambidex job service on ") as desks:
        urls = [d.wait_for_url() for d in desks]
        for round_ in range(5):
            key = f"once-{round_}"
            answers = post_at_once(urls, key, callers)
            codes = Counter(code for code, _ in answers)
            assert codes == {202: 1, 200: callers - 1}, (key, answers)
            (job_id,) = {job_id for _, job_id in answers}
            stored = store.list(limit=1000).jobs
            assert [j.id for j in stored if j.idempotency_key == key] == [job_id]
    assert len(store.list(limit=1000).jobs) == 5
