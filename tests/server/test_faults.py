r"""A job's fault stays its own: real servers and workers running jobs that misbehave.

Each test submits one faulty job (``faulty_workloads``) with a batch of good
ones to a real ``ambidex serve`` subprocess (SQLite, ``--lease-s 2``; one
server for the module, and one of its own for a test whose fault could
outlive it), waits until every job of the batch runs, then creates the gate
file they all wait on, so that they all finish at once. The faulty job must
end ``failed`` with its real reason and its traceback, after one run; every
good job must succeed after one run; and the server must go on: alive,
``/healthz`` 200 and ok, an io job and a cpu job submitted afterwards run.

Where the jobs are async, their outcomes reach the group commit in one turn
of the event loop, so the faulty outcome shares its transaction with the
good ones: the tests check that too (their ``finished_at`` is the same
instant), since that is how one unstorable outcome used to make every job of
its batch run again. Every run is recorded in a log per process, so "exactly
once" is checked across processes (and across a restart).

The faults PostgreSQL alone refuses (a NUL in text) are tested with a real
``ambidex worker`` on a fresh PostgreSQL database, behind a
``serve --concurrency 0`` front desk.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from _durable_support import executions, wait_until
from _server_support import ServerProcess, server_process

from _pg_support import fresh_pg_database
from ambidex.jobs import JobStore

pytestmark = pytest.mark.timeout(60)

WORKLOADS = str(Path(__file__).with_name("faulty_workloads.py"))
GOOD_JOBS = 6
FINISH_S = 10.0  # the jobs of a batch end within milliseconds of their gate: this is ample
TERMINAL = {"succeeded", "failed", "cancelled"}


def serve_args(db: str | Path, *, concurrency: int = 16) -> list[str]:
    return [
        "serve",
        "--port",
        "0",
        "--db",
        str(db),
        "--lease-s",
        "2",
        "--concurrency",
        str(concurrency),
        "--workloads",
        WORKLOADS,
    ]


@dataclass
class Service:
    """A running ``ambidex serve`` (or front desk), a client of it, and where runs are logged."""

    proc: ServerProcess
    client: httpx.Client
    store: JobStore
    runs: Path
    worker: ServerProcess | None = None
    """The ``ambidex worker`` that runs the jobs, when the front desk does not."""

    @property
    def runner(self) -> ServerProcess:
        """The process that runs the jobs."""
        return self.worker or self.proc


@contextmanager
def sqlite_service(tmp: Path, name: str) -> Iterator[Service]:
    """``ambidex serve`` on the SQLite file ``tmp/jobs.sqlite``, its runs logged in ``tmp/runs``."""
    runs = tmp / "runs"
    runs.mkdir(exist_ok=True)
    with (
        server_process(*serve_args(tmp / "jobs.sqlite"), log=tmp / f"{name}.log") as proc,
        httpx.Client(base_url=proc.wait_for_url(), timeout=10) as client,
        JobStore(tmp / "jobs.sqlite") as store,
    ):
        yield Service(proc, client, store, runs)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One server for the module's SQLite tests (each test's jobs finish within the test)."""
    with sqlite_service(tmp_path_factory.mktemp("faults"), "serve") as svc:
        yield svc


@pytest.fixture
def fresh_service(tmp_path: Path) -> Iterator[Service]:
    """A server of the test's own (for faults that could outlive their test)."""
    with sqlite_service(tmp_path, "serve") as svc:
        yield svc


@dataclass
class Batch:
    """The jobs of one batch once all have finished: by id, with the tag each one logs under."""

    jobs: dict[str, dict[str, Any]]
    tags: dict[str, str]
    faulty: list[str]

    @property
    def good(self) -> list[str]:
        return [job_id for job_id in self.jobs if job_id not in self.faulty]


def run_batch(
    svc: Service, faulty: list[tuple[str, dict[str, Any]]], *, good: int = GOOD_JOBS
) -> Batch:
    """Submit the faulty jobs and ``good`` good ones, let them all run, then finish them at once."""
    gate = svc.runs / f"gate-{secrets.token_hex(4)}"
    tags: dict[str, str] = {}

    def submit(workload: str, extra: dict[str, Any]) -> str:
        tag = f"{workload}-{secrets.token_hex(4)}"
        body = {"log_dir": str(svc.runs), "gate": str(gate), "tag": tag, **extra}
        r = svc.client.post("/v1/jobs", json={"workload": workload, "input": body})
        assert r.status_code == 202, r.text
        tags[r.json()["id"]] = tag
        return str(r.json()["id"])

    faulty_ids = [submit(workload, extra) for workload, extra in faulty]
    for _ in range(good):
        submit("good", {})

    def jobs_now() -> dict[str, dict[str, Any]]:
        try:
            return {job_id: svc.client.get(f"/v1/jobs/{job_id}").json() for job_id in tags}
        except httpx.TransportError:
            assert_alive(svc, wait_s=5)
            raise

    def all_started() -> bool:
        """Every job runs (or one has already finished: the checks will say why)."""
        if set(tags.values()) <= set(executions(svc.runs)):
            return True
        return any(j["status"] in TERMINAL for j in jobs_now().values())

    wait_until(all_started, "every job of the batch to start")
    gate.touch()

    def finished() -> dict[str, dict[str, Any]] | None:
        jobs = jobs_now()
        return jobs if all(j["status"] in TERMINAL for j in jobs.values()) else None

    try:
        jobs = wait_until(finished, "every job of the batch to finish", FINISH_S)
    except AssertionError as exc:  # say where each job is, and what /healthz says
        left = {tags[i]: (j["status"], j["error"]) for i, j in jobs_now().items()}
        health = svc.client.get("/healthz").text
        raise AssertionError(f"{exc}: {left}; /healthz: {health}") from None
    return Batch(jobs, tags, faulty_ids)


def assert_alive(svc: Service, wait_s: float = 0.0) -> None:
    """The server (and worker) still run; else fail with how they ended."""
    for proc in {svc.proc, svc.runner}:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.proc.wait(wait_s)  # (a process that is going down: let it finish)
        code = proc.proc.poll()
        tail = "\n".join(proc.output().splitlines()[-15:])
        assert code is None, f"{proc.proc.args[2:4]} exited ({code}); its output ends:\n{tail}"


def event_kinds(svc: Service, job_id: str) -> list[str]:
    r = svc.client.get(f"/v1/jobs/{job_id}/events", params={"follow": "false"})
    assert r.status_code == 200, r.text
    return [e["kind"] for e in r.json()["events"]]


def assert_good_jobs_succeeded_once(svc: Service, batch: Batch) -> None:
    ran = executions(svc.runs)
    for job_id in batch.good:
        job, tag = batch.jobs[job_id], batch.tags[job_id]
        assert (job["status"], job["attempts"], job["error"]) == ("succeeded", 1, None), job
        assert job["result"] == {"tag": tag, "attempt": 1, "pid": svc.runner.proc.pid}
        kinds = [k for k in event_kinds(svc, job_id) if k != "progress"]
        assert kinds == ["submitted", "started", "succeeded"]
        (only,) = ran[tag]  # one run, no extra attempt
        assert (only.attempt, only.pid, only.end is not None) == (1, svc.runner.proc.pid, True)


def assert_failed_once(
    svc: Service, batch: Batch, job_id: str, error: str, *, raised_in: str | None
) -> None:
    """The job failed with ``error`` after one run; with its traceback when ``raised_in`` names
    the workload function that raised."""
    job = batch.jobs[job_id]
    assert (job["status"], job["error"], job["attempts"], job["result"]) == (
        "failed",
        error,
        1,
        None,
    ), job
    if raised_in is None:
        assert job["traceback"] is None
    else:
        assert "Traceback (most recent call last):" in job["traceback"], job["traceback"]
        assert f"in {raised_in}\n" in job["traceback"]  # (a cpu job's: its worker's traceback)
        last_line = job["traceback"].rstrip().splitlines()[-1]
        assert error.split(":")[0] in last_line, last_line
    assert event_kinds(svc, job_id) == ["submitted", "started", "failed"]
    r = svc.client.get(f"/v1/jobs/{job_id}/attempts")
    assert r.status_code == 200, r.text
    (attempt,) = r.json()
    assert (attempt["number"], attempt["outcome"], attempt["error"]) == (1, "failed", error)
    assert attempt["traceback"] == job["traceback"]
    assert len(executions(svc.runs)[batch.tags[job_id]]) == 1  # one run, no extra attempt


def assert_one_group_commit(svc: Service, batch: Batch, faulty: list[str]) -> None:
    """The outcomes of ``faulty`` and of the good jobs were written in one transaction.

    (A group commit stamps every outcome it writes with one ``finished_at``, to the
    microsecond: the store is read for it, the API shows milliseconds.)
    """
    finished_at = {}
    for job_id in [*faulty, *batch.good]:
        job = svc.store.get(job_id)
        assert job is not None
        finished_at[batch.tags[job_id]] = job.finished_at
    assert len(set(finished_at.values())) == 1, f"not one group commit: {finished_at}"


def assert_still_serving(svc: Service) -> None:
    """The processes are alive, /healthz is 200 and says ok, and new jobs run (io and cpu)."""
    assert_alive(svc)
    health = svc.client.get("/healthz")
    assert health.status_code == 200, health.text
    assert (health.json()["status"], health.json()["problems"]) == ("ok", [])
    r = svc.client.post("/v1/run/echo", json={"value": "after"}, params={"wait_s": 20})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["result"]) == ("succeeded", "after")
    r = svc.client.post("/v1/run/primes", json={"n": 100}, params={"wait_s": 20})  # a cpu job
    assert r.status_code == 200, r.text
    done = r.json()
    assert (done["status"], done["error"], done["result"]) == (
        "succeeded",
        None,
        {"n": 100, "primes": 25},
    ), f"a cpu job after the batch: {done['error']}"


# -- exceptions that are hard to describe or to catch ------------------------------------


def test_an_exception_whose_str_raises_fails_only_its_job(service: Service) -> None:
    batch = run_batch(service, [("unprintable", {})])

    (faulty,) = batch.faulty
    assert_failed_once(
        service,
        batch,
        faulty,
        "Unprintable: <unprintable Unprintable object>",
        raised_in="unprintable",
    )
    assert_good_jobs_succeeded_once(service, batch)
    assert_one_group_commit(service, batch, [faulty])
    assert_still_serving(service)


def test_an_exception_whose_traceback_cannot_be_formatted_fails_only_its_job(
    fresh_service: Service,
) -> None:
    svc = fresh_service
    batch = run_batch(svc, [("unformattable", {})])

    (faulty,) = batch.faulty
    job = batch.jobs[faulty]
    assert (job["status"], job["error"], job["attempts"]) == (
        "failed",
        "Unformattable: its notes cannot be read",
        1,
    ), job
    assert event_kinds(svc, faulty) == ["submitted", "started", "failed"]
    assert len(executions(svc.runs)[batch.tags[faulty]]) == 1
    assert_good_jobs_succeeded_once(svc, batch)
    assert_still_serving(svc)


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("exit", "SystemExit: 3"),
        ("interrupt", "KeyboardInterrupt: interrupted by the job"),
        ("generator_exit", "GeneratorExit: closed by the job"),
        ("cancelled", "CancelledError: cancelled by the job itself"),
    ],
)
def test_a_base_exception_raised_by_an_async_workload_fails_only_its_job(
    service: Service, how: str, error: str
) -> None:
    batch = run_batch(service, [("escape", {"how": how})])

    (faulty,) = batch.faulty
    assert_failed_once(service, batch, faulty, error, raised_in="escape")
    assert_good_jobs_succeeded_once(service, batch)
    assert_one_group_commit(service, batch, [faulty])
    assert_still_serving(service)


def test_system_exit_in_a_task_an_async_workload_awaits_fails_only_its_job(
    fresh_service: Service,
) -> None:
    svc = fresh_service
    batch = run_batch(svc, [("escape_in_a_child_task", {"how": "exit"})])

    (faulty,) = batch.faulty
    assert_failed_once(
        svc, batch, faulty, "SystemExit: 3 (raised in a task the job started)", raised_in="child"
    )
    assert_good_jobs_succeeded_once(svc, batch)
    assert_still_serving(svc)


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("exit", "SystemExit: 3"),
        ("interrupt", "KeyboardInterrupt: interrupted by the job"),
        # next() at the end raises StopIteration, which no future can carry: as in a
        # generator (PEP 479) it becomes a RuntimeError that names it
        ("stop_iteration", "RuntimeError: StopIteration: nothing left"),
    ],
)
def test_an_exception_raised_by_a_blocking_workload_fails_only_its_job(
    service: Service, how: str, error: str
) -> None:
    batch = run_batch(service, [("blocking_escape", {"how": how})])

    (faulty,) = batch.faulty
    assert_failed_once(service, batch, faulty, error, raised_in="blocking_escape")
    assert_good_jobs_succeeded_once(service, batch)
    assert_still_serving(service)


@pytest.mark.parametrize(
    ("how", "error"),
    [("exit", "SystemExit: 3"), ("interrupt", "KeyboardInterrupt: interrupted by the job")],
)
def test_a_base_exception_raised_by_a_cpu_workload_fails_only_its_job(
    fresh_service: Service, how: str, error: str
) -> None:
    svc = fresh_service
    batch = run_batch(svc, [("cpu_escape", {"how": how})])

    (faulty,) = batch.faulty
    assert_failed_once(svc, batch, faulty, error, raised_in="cpu_escape")
    (run,) = executions(svc.runs)[batch.tags[faulty]]
    assert run.pid != svc.proc.proc.pid  # it really ran in a cpu worker process
    assert_good_jobs_succeeded_once(svc, batch)
    assert_still_serving(svc)  # a cpu job among them


def test_a_job_that_called_sys_exit_does_not_run_again_after_a_restart(tmp_path: Path) -> None:
    with sqlite_service(tmp_path, "first") as first:
        batch = run_batch(first, [("escape", {"how": "exit"})], good=3)
        (faulty,) = batch.faulty
        assert_failed_once(first, batch, faulty, "SystemExit: 3", raised_in="escape")
        assert_good_jobs_succeeded_once(first, batch)
        assert_still_serving(first)
        runs_before = executions(first.runs)

    with sqlite_service(tmp_path, "second") as second:
        # The restarted server recovers lapsed leases first, then claims the oldest
        # queued jobs first: had the faulty job been put back, it would run before this.
        assert_still_serving(second)
        for job_id, job in batch.jobs.items():
            again = second.client.get(f"/v1/jobs/{job_id}").json()
            assert (again["status"], again["attempts"]) == (job["status"], 1), again
            assert again["error"] == job["error"]
        assert event_kinds(second, faulty) == ["submitted", "started", "failed"]
        assert executions(second.runs) == runs_before  # nothing ran again


# -- outcomes the database cannot store -------------------------------------------------


@pytest.mark.parametrize(
    ("which", "error"),
    [("surrogate", "ValueError: a\\udc80b"), ("nul", "ValueError: a\\x00b")],
)
def test_an_error_message_sqlite_cannot_store_is_stored_escaped_and_fails_only_its_job(
    service: Service, which: str, error: str
) -> None:
    batch = run_batch(service, [("odd_error", {"which": which})])

    (faulty,) = batch.faulty
    assert_failed_once(service, batch, faulty, error, raised_in="odd_error")
    assert batch.jobs[faulty]["traceback"].rstrip().endswith(error)
    assert_good_jobs_succeeded_once(service, batch)
    assert_one_group_commit(service, batch, [faulty])
    assert_still_serving(service)


RESULT_ERRORS = {
    "surrogate": "the result is not storable JSON: result.text: holds a lone surrogate "
    "(\\udc80), which is not valid Unicode text",
    "nan": "the result is not storable JSON: result.score: nan is not a JSON number "
    "(no NaN or infinity)",
    "infinity": "the result is not storable JSON: result.score: -inf is not a JSON number "
    "(no NaN or infinity)",
    "deep": "the result is not storable JSON: result.tree."
    + ".".join(["0"] * 99)
    + ": nested deeper than 100 levels",
}


@pytest.mark.parametrize("which", sorted(RESULT_ERRORS))
def test_a_result_that_is_not_storable_json_fails_only_its_job_saying_where(
    service: Service, which: str
) -> None:
    batch = run_batch(service, [("odd_result", {"which": which})])

    (faulty,) = batch.faulty
    assert_failed_once(service, batch, faulty, RESULT_ERRORS[which], raised_in=None)
    assert_good_jobs_succeeded_once(service, batch)
    assert_one_group_commit(service, batch, [faulty])
    assert_still_serving(service)


def test_a_progress_message_with_a_nul_and_a_lone_surrogate_is_stored_escaped(
    service: Service,
) -> None:
    batch = run_batch(service, [("chatty", {})])

    (chatty,) = batch.faulty
    job = batch.jobs[chatty]
    shown = "nul \\x00 and surrogate \\ud800"
    assert (job["status"], job["attempts"], job["message"]) == ("succeeded", 1, shown), job
    events = service.client.get(f"/v1/jobs/{chatty}/events", params={"follow": "false"}).json()
    progress = [e for e in events["events"] if e["kind"] == "progress"]
    assert [(e["progress"], e["message"]) for e in progress] == [(0.5, shown)]
    assert service.client.get(f"/jobs/{chatty}").status_code == 200  # its page shows it
    batch.faulty.clear()  # it is a good job too
    assert_good_jobs_succeeded_once(service, batch)
    assert_still_serving(service)


# -- PostgreSQL: a worker process behind a front desk -----------------------------------


@pytest.fixture
def pg_service(tmp_path: Path) -> Iterator[Service]:
    """``serve --concurrency 0`` and one ``ambidex worker`` on a fresh PostgreSQL database."""
    runs = tmp_path / "runs"
    runs.mkdir()
    with fresh_pg_database() as url:
        JobStore(url).close()  # the tables, made before either process starts
        worker_args = ["worker", "--db", url, "--workloads", WORKLOADS]
        with (
            server_process(
                *worker_args, "--concurrency", "16", "--lease-s", "2", log=tmp_path / "worker.log"
            ) as worker,
            server_process(*serve_args(url, concurrency=0), log=tmp_path / "desk.log") as desk,
            httpx.Client(base_url=desk.wait_for_url(), timeout=10) as client,
            JobStore(url) as store,
        ):
            worker.wait_for_text("ambidex worker ")
            yield Service(desk, client, store, runs, worker)


PG_FAULTS: list[tuple[str, dict[str, Any], str, str | None]] = [
    ("odd_error", {"which": "nul"}, "ValueError: a\\x00b", "odd_error"),
    ("odd_error", {"which": "surrogate"}, "ValueError: a\\udc80b", "odd_error"),
    ("odd_result", {"which": "surrogate"}, RESULT_ERRORS["surrogate"], None),
    ("odd_result", {"which": "nan"}, RESULT_ERRORS["nan"], None),
    ("odd_result", {"which": "deep"}, RESULT_ERRORS["deep"], None),
    ("unprintable", {}, "Unprintable: <unprintable Unprintable object>", "unprintable"),
    ("escape", {"how": "exit"}, "SystemExit: 3", "escape"),
]


def test_outcomes_postgresql_cannot_store_fail_only_their_jobs_on_a_worker(
    pg_service: Service,
) -> None:
    svc = pg_service
    faults = [(workload, extra) for workload, extra, _, _ in PG_FAULTS]
    batch = run_batch(svc, [*faults, ("chatty", {})])

    *faulty, chatty = batch.faulty
    for job_id, (_, _, error, raised_in) in zip(faulty, PG_FAULTS, strict=True):
        assert_failed_once(svc, batch, job_id, error, raised_in=raised_in)
    assert batch.jobs[faulty[0]]["traceback"].rstrip().endswith("ValueError: a\\x00b")
    assert_one_group_commit(svc, batch, faulty)
    # The progress message with a NUL is stored escaped, and its job succeeds like the others.
    assert batch.jobs[chatty]["message"] == "nul \\x00 and surrogate \\ud800"
    batch.faulty.remove(chatty)
    assert_good_jobs_succeeded_once(svc, batch)
    assert_still_serving(svc)
    workers = svc.client.get("/v1/workers").json()
    assert workers["alive"] == 1, workers
    page = svc.client.get("/v1/jobs", params={"limit": 500})
    assert page.status_code == 200, page.text
    assert {j["id"] for j in page.json()["jobs"]} >= set(batch.jobs)
