"""Nothing accepted is lost: ``kill -9`` of a real ``ambidex serve`` while its jobs run.

The kill tests start the service as a subprocess on a SQLite file, with a
short lease (2 s) so that a dead server's jobs are requeued quickly after a
restart. The workload (``durable_workloads.tick``) writes a line when each
run starts and ends, so the tests see which attempts really ran, and where.
After them: a lease renewal must not take a just-claimed job for lost (in
process, timed by events), and ``serve`` refuses to listen off loopback
without a token.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from _durable_support import WORKLOADS, executions, wait_until
from _server_support import ROOT, ServerProcess, server_process

from _waiting import await_for
from ambidex.jobs import JobManager, JobStatus, JobStore, LeaseReport, WorkloadRegistry

pytestmark = pytest.mark.timeout(90)

TERMINAL = {"succeeded", "failed", "cancelled"}


def serve_args(db: Path, *, concurrency: int = 4) -> list[str]:
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


@contextmanager
def service(
    db: Path, log: Path, *, concurrency: int = 4
) -> Iterator[tuple[ServerProcess, httpx.Client]]:
    """``ambidex serve`` on ``db`` as a subprocess, and a client of it."""
    with (
        server_process(*serve_args(db, concurrency=concurrency), log=log) as proc,
        httpx.Client(base_url=proc.wait_for_url(), timeout=10) as client,
    ):
        yield proc, client


def submit_ticks(client: httpx.Client, log_dir: Path, seconds: list[float]) -> list[str]:
    """Submit one ``tick`` job per duration; return the ids of those answered 202."""
    ids = []
    for s in seconds:
        r = client.post(
            "/v1/jobs", json={"workload": "tick", "input": {"log_dir": str(log_dir), "seconds": s}}
        )
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def statuses(client: httpx.Client) -> dict[str, str]:
    """Every job's status, in one request (one consistent snapshot)."""
    r = client.get("/v1/jobs", params={"limit": 500})
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None
    return {j["id"]: j["status"] for j in r.json()["jobs"]}


def sse_kinds(client: httpx.Client, job_id: str) -> list[str]:
    """The kinds of a finished job's server-sent events."""
    r = client.get(f"/v1/jobs/{job_id}/events")
    assert r.status_code == 200
    return [
        line.removeprefix("event: ") for line in r.text.splitlines() if line.startswith("event: ")
    ]


def all_finished(client: httpx.Client, ids: list[str]) -> dict[str, str] | None:
    now = statuses(client)
    return now if all(now.get(i) in TERMINAL for i in ids) else None


def test_every_accepted_job_succeeds_exactly_once_after_kill_9_and_restart(tmp_path: Path) -> None:
    db, runs = tmp_path / "jobs.sqlite", tmp_path / "runs"
    runs.mkdir()

    with service(db, tmp_path / "first.log") as (first, client):
        accepted = submit_ticks(client, runs, [0.2 + 0.1 * (i % 4) for i in range(40)])

        def mid_flight() -> bool:
            """8 jobs done, and one that started under 0.1 s ago (so it is mid-run)."""
            done = Counter(statuses(client).values())["succeeded"]
            now = time.time()
            fresh = [r for r in executions(runs).values() if now - r[-1].start < 0.1]
            return done >= 8 and any(r[-1].end is None for r in fresh)

        wait_until(mid_flight, "8 jobs done and one just started")
        first.kill9()

    # The store, read directly: every accepted job is there, as the kill left it.
    with JobStore(db) as store:
        at_kill = {j.id: j for j in store.list(limit=500)[0]}
    assert set(accepted) == set(at_kill)
    running_at_kill = {i for i, j in at_kill.items() if j.status is JobStatus.RUNNING}
    done_at_kill = {i for i, j in at_kill.items() if j.status is JobStatus.SUCCEEDED}
    assert len(done_at_kill) >= 8
    assert all(at_kill[i].attempts == 1 for i in running_at_kill | done_at_kill)
    ran_at_kill = executions(runs)
    assert set(ran_at_kill) - done_at_kill <= running_at_kill
    # The jobs the kill interrupted mid-run: started, not ended, not recorded.
    mid_run = sorted(
        i for i in running_at_kill if i in ran_at_kill and ran_at_kill[i][-1].end is None
    )
    assert mid_run
    in_progress = mid_run[0]

    with service(db, tmp_path / "second.log") as (_, client):
        wait_until(lambda: all_finished(client, accepted), "every job to finish", 30)
        jobs: dict[str, dict[str, Any]] = {i: client.get(f"/v1/jobs/{i}").json() for i in accepted}
        assert sse_kinds(client, in_progress) == [
            "submitted",
            "started",
            "requeued",
            "started",
            "succeeded",
        ]

    ran = executions(runs)
    with JobStore(db) as store:
        for job_id in accepted:
            job = jobs[job_id]
            again = job_id in running_at_kill
            assert job["status"] == "succeeded", job
            assert job["attempts"] == (2 if again else 1), job
            assert job["result"] == {
                "job": job_id,
                "attempt": job["attempts"],
                "pid": job["result"]["pid"],
            }
            kinds = [e.kind for e in store.events(job_id)]
            assert kinds.count("succeeded") == 1, kinds
            if again:
                assert kinds == ["submitted", "started", "requeued", "started", "succeeded"]
            else:
                assert kinds == ["submitted", "started", "succeeded"]
            # The recorded result is that of the last attempt, which ran to its end, in
            # the process (the restarted server) that recorded it. A job claimed just
            # before the kill may not have begun its first run, so [2] is possible.
            last = ran[job_id][-1]
            assert (last.attempt, last.pid, last.end is not None) == (
                job["attempts"],
                job["result"]["pid"],
                True,
            )
            attempts_run = [e.attempt for e in ran[job_id]]
            if again:
                assert attempts_run in ([1, 2], [2])
            else:
                assert attempts_run == [1]

    # Each job the kill caught mid-run: its first run never ended; it ran again, to the end.
    for job_id in mid_run:
        first_run, second_run = ran[job_id]
        assert (first_run.attempt, first_run.end) == (1, None)
        assert second_run.attempt == 2
        assert second_run.end is not None
        assert second_run.pid != first_run.pid


def test_jobs_submitted_during_and_after_a_restart_run_normally(tmp_path: Path) -> None:
    db, runs = tmp_path / "jobs.sqlite", tmp_path / "runs"
    runs.mkdir()

    with service(db, tmp_path / "first.log", concurrency=2) as (first, client):
        url = str(client.base_url)
        old = submit_ticks(client, runs, [1.0] * 4)
        wait_until(lambda: len(executions(runs)) >= 2, "two jobs to be running")
        first.kill9()

    # While the service is down nothing is accepted: the client is refused, not answered.
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{url}/v1/jobs", json={"workload": "echo"}, timeout=5)

    with service(db, tmp_path / "second.log", concurrency=2) as (_, client):
        # At once, while the dead server's leases have not lapsed yet.
        answer = client.post("/v1/run/echo", json={"value": "hello"}, params={"wait_s": 10})
        assert answer.status_code == 200, answer.text
        assert (answer.json()["status"], answer.json()["result"]) == ("succeeded", "hello")
        new = submit_ticks(client, runs, [0.05] * 6)
        wait_until(lambda: all_finished(client, old + new), "every job to finish", 30)
        jobs = {i: client.get(f"/v1/jobs/{i}").json() for i in old + new}

    assert all(jobs[i]["status"] == "succeeded" for i in old + new), jobs
    assert all(jobs[i]["attempts"] == 1 for i in new)
    assert sorted(jobs[i]["attempts"] for i in old) == [1, 1, 2, 2]


def test_serve_off_loopback_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AMBIDEX_TOKEN"}
    db = tmp_path / "jobs.sqlite"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ambidex",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--db",
            str(db),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "refusing to serve on 0.0.0.0 without a token" in done.stderr
    assert "--token" in done.stderr
    assert "Traceback" not in done.stderr
    assert "ambidex job service on" not in done.stdout
    assert not db.exists()


class SlowRenewals(JobStore):
    """A store whose first lease renewal is answered late: made (``renewed``), then held back."""

    def __init__(self, db: Path) -> None:
        super().__init__(db)
        self.renewed = threading.Event()
        self.answer = threading.Event()

    def heartbeat(self, *args: Any, **kwargs: Any) -> LeaseReport:
        report = super().heartbeat(*args, **kwargs)
        if not self.renewed.is_set():
            self.renewed.set()
            self.answer.wait(10)
        return report


async def test_a_job_claimed_while_a_renewal_is_in_flight_is_not_taken_for_lost(
    tmp_path: Path,
) -> None:
    registry = WorkloadRegistry()

    @registry.register
    async def hold(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "held"

    store = SlowRenewals(tmp_path / "jobs.sqlite")
    manager = JobManager(store, registry, concurrency=2, lease_s=0.6, poll_s=0.02)
    async with manager:  # renews every 0.2 s
        first = await manager.submit("hold", {"seconds": 1.5})
        assert await asyncio.to_thread(store.renewed.wait, 10)  # renewed, answer held back
        second = await manager.submit("hold", {"seconds": 0.2})
        assert await await_for(lambda: manager.running_here == 2), manager.running_here
        store.answer.set()  # the answer names the first job only: the second was claimed later
        done = [await manager.wait(j.id, 5) for j in (first, second)]
    store.close()
    assert [(j.status, j.attempts) for j in done] == [(JobStatus.SUCCEEDED, 1)] * 2
