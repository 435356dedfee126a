"""Anchors of benchmarks/jobs_throughput.py beside huey (issue 15).

Each ``run_*`` function takes the benchmark's shape (N echo jobs, S submitters making one
call a job, W workers, one in-order checker reading every result back) and returns the
same record as the ambidex and huey runs: jobs/s and CPU ms a job over the timed window.

* :func:`run_sqlite_lease` - a plain ``sqlite3`` lease queue with ambidex's guarantees:
  a submit returns after its commit, a claim takes a lease (token, expiry, renewed by a
  heartbeat thread; an expired lease is claimable again), a finish is fenced on the
  token and the running status so an outcome is written once, and every state change
  writes an event row (submitted, started, succeeded) in the same transaction.
  Threads in this process; one writer thread committing every write pending at its
  turn in one transaction (group commit; callers answered after the commit), each
  worker thread leasing up to 4 jobs a claim and finishing them in one call, WAL,
  ``synchronous=NORMAL``. The floor reference of issue 15.
* :func:`run_asyncpg_lease` - the same queue on PostgreSQL with asyncpg and
  ``FOR UPDATE SKIP LOCKED``: each state change and its event row in one statement.
* :func:`run_pgqueuer` / :func:`run_procrastinate` - those libraries' own worker in this
  process, their default (logged) tables; completion read from their own status.
* :func:`run_ambidex_workers` - this process submits through ``JobManager(concurrency=0)``
  (a front desk) and reads results back; K ``ambidex worker`` processes run the jobs.
  CPU counts this process and the K workers (not the PostgreSQL server, for any system).

``DELIVERY`` states each system's promise: the figures mean nothing without it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

LEASE_S = 15.0
CLAIM_BATCH = 4  # jobs a worker thread of the plain sqlite3 queue leases at once

DELIVERY: dict[str, str] = {
    "ambidex": "at least once: a submit is committed before it is acknowledged; kill -9 of a "
    "worker loses nothing, its running jobs run again after the lease (15 s); an outcome is "
    "written once (fenced)",
    "huey": "at most once: a task is dequeued (deleted) before it runs; kill -9 of the "
    "consumer loses the tasks it was running",
    "sqlite3-lease": "at least once (as ambidex): commit before acknowledging, leases, fenced "
    "finish; kill -9 loses nothing, running jobs run again after the lease",
    "asyncpg-lease": "at least once (as ambidex): commit before acknowledging, SKIP LOCKED "
    "leases, fenced finish; kill -9 loses nothing, running jobs run again after the lease",
    "pgqueuer": "at least once: a picked job held by a dead worker is re-picked after its "
    "heartbeat timeout (30 s); kill -9 loses nothing committed",
    "procrastinate": "at most once unless the application sweeps: kill -9 loses no committed "
    "job, but the worker's running jobs stay 'doing' and run again only if something calls "
    "retry_stalled_jobs (nothing does by default)",
}


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _record(
    n: int,
    t0: float,
    cpu_s: float,
    submitted: float,
    first_done: float,
    last_done: float,
) -> dict[str, Any]:
    elapsed = last_done - t0
    return {
        "jobs": n,
        "elapsed_s": elapsed,
        "jobs_per_s": n / elapsed,
        "process_cpu_s": cpu_s,
        "cpu_ms_per_job": cpu_s / n * 1000,
        "submit_phase_s": submitted - t0,
        "submit_jobs_per_s": n / (submitted - t0),
        "first_result_read_s": first_done - t0,
        "drain_after_last_submit_s": last_done - submitted,
    }


class AnchorStalled(Exception):
    """The checker waited ``stall_s`` for one job."""


# -- plain sqlite3 ------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    workload TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    result TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    lease_token TEXT,
    lease_until REAL,
    created_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (status, id);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL
);
"""


class _Pending:
    """One write waiting for the writer thread's commit."""

    __slots__ = ("done", "error", "fn", "value")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class SqliteLeaseQueue:
    """A lease queue on one SQLite file, with ambidex's guarantees, for threads.

    Every write (submit, claim, finish, renew) goes to one writer thread, which runs all
    the writes pending at each turn in one transaction and answers them after its commit:
    a caller is answered only once what it asked for is committed. Reads use each
    thread's own connection (WAL: they never wait for the writer).
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._local = threading.local()
        self._wake = threading.Condition()
        self._all: list[sqlite3.Connection] = []
        self._pending: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self.conn().executescript(_SQLITE_SCHEMA)
        self._writer = threading.Thread(target=self._write_loop, daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA busy_timeout=5000")
        self._all.append(c)
        return c

    def conn(self) -> sqlite3.Connection:
        c: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = self._connect()
        return c

    def _write_loop(self) -> None:
        c = self._connect()
        while True:
            first = self._pending.get()
            if first is None:
                return
            batch = [first]
            while True:
                try:
                    more = self._pending.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._pending.put(None)
                    break
                batch.append(more)
            try:
                c.execute("BEGIN IMMEDIATE")
                for op in batch:
                    op.value = op.fn(c)
                c.execute("COMMIT")
            except BaseException as exc:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                for op in batch:
                    op.error = exc
            for op in batch:
                op.done.set()

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        op = _Pending(fn)
        self._pending.put(op)
        op.done.wait()
        if op.error is not None:
            raise op.error
        return op.value

    def close(self) -> None:
        self._pending.put(None)
        self._writer.join(10)
        for c in self._all:
            c.close()

    def submit(self, workload: str, value: Any) -> int:
        now = self._clock()
        body = json.dumps({"value": value})

        def write(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "INSERT INTO jobs (workload, status, input, created_at) VALUES (?, 'queued', ?, ?)",
                (workload, body, now),
            )
            jid = cur.lastrowid
            assert jid is not None
            c.execute(
                "INSERT INTO events (job_id, kind, at) VALUES (?, 'submitted', ?)", (jid, now)
            )
            return jid

        jid: int = self._write(write)
        with self._wake:
            self._wake.notify()
        return jid

    def claim(self, token: str, limit: int) -> list[tuple[int, str]]:
        """Lease up to ``limit`` queued (or lease-expired) jobs to ``token``."""

        def write(c: sqlite3.Connection) -> list[tuple[int, str]]:
            now = self._clock()
            rows = c.execute(
                "UPDATE jobs SET status = 'running', attempt = attempt + 1, lease_token = ?, "
                "lease_until = ? WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' "
                "OR (status = 'running' AND lease_until < ?) ORDER BY id LIMIT ?) "
                "RETURNING id, input",
                (token, now + LEASE_S, now, limit),
            ).fetchall()
            c.executemany(
                "INSERT INTO events (job_id, kind, at) VALUES (?, 'started', ?)",
                [(row[0], now) for row in rows],
            )
            return [(int(row[0]), str(row[1])) for row in rows]

        got: list[tuple[int, str]] = self._write(write)
        return got

    def finish(self, token: str, outcomes: list[tuple[int, Any]]) -> int:
        """Record the outcomes of the jobs ``token`` still holds; how many were recorded."""
        bodies = [(json.dumps(result), jid) for jid, result in outcomes]

        def write(c: sqlite3.Connection) -> int:
            now = self._clock()
            won = 0
            for body, jid in bodies:
                cur = c.execute(
                    "UPDATE jobs SET status = 'succeeded', result = ?, finished_at = ?, "
                    "lease_token = NULL WHERE id = ? AND status = 'running' AND lease_token = ?",
                    (body, now, jid, token),
                )
                if cur.rowcount == 1:
                    won += 1
                    c.execute(
                        "INSERT INTO events (job_id, kind, at) VALUES (?, 'succeeded', ?)",
                        (jid, now),
                    )
            return won

        won: int = self._write(write)
        return won

    def renew(self, tokens: list[str]) -> None:
        if not tokens:
            return

        def write(c: sqlite3.Connection) -> None:
            c.execute(
                f"UPDATE jobs SET lease_until = ? WHERE status = 'running' AND lease_token IN "
                f"({','.join('?' * len(tokens))})",
                (self._clock() + LEASE_S, *tokens),
            )

        self._write(write)

    def get(self, jid: int) -> tuple[str, Any]:
        row = self.conn().execute("SELECT status, result FROM jobs WHERE id = ?", (jid,)).fetchone()
        return str(row[0]), None if row[1] is None else json.loads(row[1])

    def wait_for_work(self, timeout: float) -> None:
        with self._wake:
            self._wake.wait(timeout)


def _confirm(
    ids: list[Any],
    errors: list[BaseException],
    i: int,
    expected: int,
    check_poll_s: float,
    stall_s: float,
    get: Callable[[Any], tuple[str, Any]],
) -> None:
    """Poll job ``i`` until it has succeeded; check its stored result."""
    since = time.perf_counter()
    while True:
        if errors:
            raise errors[0]
        if ids[i] is not None:
            status, result = get(ids[i])
            if status == "succeeded":
                if result != expected:
                    raise AssertionError(f"job {i}: {result!r}")
                return
        if time.perf_counter() - since > stall_s:
            raise AnchorStalled(f"job #{i} not finished after {stall_s} s")
        time.sleep(check_poll_s)


def _threads_run(
    n: int,
    submitters: int,
    first_value: int,
    check_poll_s: float,
    stall_s: float,
    submit: Callable[[int], Any],
    get: Callable[[Any], tuple[str, Any]],
) -> dict[str, Any]:
    """S submitter threads, an in-order checker (this thread); workers already run."""
    ids: list[Any] = [None] * n
    counter = itertools.count()
    lock = threading.Lock()
    submitted_at = [0.0]
    done = [0]
    errors: list[BaseException] = []

    def submitter() -> None:
        try:
            while (i := next(counter)) < n:
                ids[i] = submit(first_value + i)
        except BaseException as exc:
            errors.append(exc)
        with lock:
            done[0] += 1
            if done[0] == submitters:
                submitted_at[0] = time.perf_counter()

    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=submitter, daemon=True) for _ in range(submitters)]
    for t in threads:
        t.start()
    first_done = 0.0
    for i in range(n):
        _confirm(ids, errors, i, first_value + i, check_poll_s, stall_s, get)
        if i == 0:
            first_done = time.perf_counter()
    t1 = time.perf_counter()
    cpu = _cpu_s() - cpu0
    for t in threads:
        t.join()
    return _record(n, t0, cpu, submitted_at[0], first_done, t1)


def run_sqlite_lease(
    tmp: Path,
    n: int,
    submitters: int,
    workers: int,
    check_poll_s: float,
    stall_s: float,
    warmup: int,
) -> dict[str, Any]:
    q = SqliteLeaseQueue(tmp / f"lease-{secrets.token_hex(4)}.sqlite")
    stop = threading.Event()
    held: set[str] = set()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            while not stop.is_set():
                token = secrets.token_hex(8)
                got = q.claim(token, CLAIM_BATCH)
                if not got:
                    q.wait_for_work(0.05)
                    continue
                held.add(token)
                # The echo workload: the input's value is the result.
                q.finish(token, [(jid, json.loads(raw)["value"]) for jid, raw in got])
                held.discard(token)
        except BaseException as exc:
            errors.append(exc)

    def heartbeat() -> None:
        while not stop.wait(LEASE_S / 3):
            q.renew(list(held))

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    pool.append(threading.Thread(target=heartbeat, daemon=True))
    for t in pool:
        t.start()

    def submit(value: int) -> int:
        if errors:
            raise errors[0]
        return q.submit("echo", value)

    try:
        _threads_run(warmup, submitters, -warmup, check_poll_s, stall_s, submit, q.get)
        return _threads_run(n, submitters, 0, check_poll_s, stall_s, submit, q.get)
    finally:
        stop.set()
        with q._wake:
            q._wake.notify_all()
        for t in pool:
            t.join(5)
        q.close()


# -- asyncio shape (PostgreSQL anchors) ----------------------------------------------------


async def _async_run(
    n: int,
    submitters: int,
    first_value: int,
    check_poll_s: float,
    stall_s: float,
    submit: Callable[[int], Awaitable[Any]],
    done: Callable[[Any, int], Awaitable[bool]],
    extra_cpu: Callable[[], float] = lambda: 0.0,
) -> dict[str, Any]:
    """S submitter tasks, one in-order checker; ``done(id, expected)`` checks a result."""
    ids: list[Any] = [None] * n
    counter = itertools.count()
    submitted_at = [0.0]
    finished = [0]

    async def submitter() -> None:
        while (i := next(counter)) < n:
            ids[i] = await submit(first_value + i)
        finished[0] += 1
        if finished[0] == submitters:
            submitted_at[0] = time.perf_counter()

    cpu0 = _cpu_s() + extra_cpu()
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(submitter()) for _ in range(submitters)]
    first_done = 0.0
    try:
        for i in range(n):
            since = time.perf_counter()
            while True:
                for t in tasks:
                    if t.done() and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
                if ids[i] is not None and await done(ids[i], first_value + i):
                    break
                if time.perf_counter() - since > stall_s:
                    raise AnchorStalled(f"job #{i} not finished after {stall_s} s")
                await asyncio.sleep(check_poll_s)
            if i == 0:
                first_done = time.perf_counter()
        t1 = time.perf_counter()
        cpu = _cpu_s() + extra_cpu() - cpu0
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return _record(n, t0, cpu, submitted_at[0], first_done, t1)


# -- plain asyncpg, SKIP LOCKED --------------------------------------------------------------

_PG_SCHEMA = """
CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY,
    workload TEXT NOT NULL,
    status TEXT NOT NULL,
    input JSONB NOT NULL,
    result JSONB,
    attempt INT NOT NULL DEFAULT 0,
    lease_token TEXT,
    lease_until TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ
);
CREATE INDEX jobs_claim ON jobs (status, id);
CREATE TABLE events (
    seq BIGSERIAL PRIMARY KEY,
    job_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""

_PG_SUBMIT = """
WITH j AS (INSERT INTO jobs (workload, status, input) VALUES ($1, 'queued', $2::jsonb)
           RETURNING id)
INSERT INTO events (job_id, kind) SELECT id, 'submitted' FROM j RETURNING job_id
"""
_PG_CLAIM = f"""
WITH c AS (SELECT id FROM jobs WHERE status = 'queued'
              OR (status = 'running' AND lease_until < now())
           ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED),
u AS (UPDATE jobs j SET status = 'running', attempt = attempt + 1, lease_token = $1,
             lease_until = now() + interval '{LEASE_S} seconds'
      FROM c WHERE j.id = c.id RETURNING j.id, j.input),
e AS (INSERT INTO events (job_id, kind) SELECT id, 'started' FROM u)
SELECT id, input FROM u
"""
_PG_FINISH = """
WITH u AS (UPDATE jobs SET status = 'succeeded', result = $3::jsonb, finished_at = now(),
                  lease_token = NULL
           WHERE id = $1 AND status = 'running' AND lease_token = $2 RETURNING id)
INSERT INTO events (job_id, kind) SELECT id, 'succeeded' FROM u RETURNING job_id
"""
_PG_RENEW = f"""
UPDATE jobs SET lease_until = now() + interval '{LEASE_S} seconds'
WHERE status = 'running' AND lease_token = ANY($1::text[])
"""


def run_asyncpg_lease(
    url: str,
    n: int,
    submitters: int,
    workers: int,
    check_poll_s: float,
    stall_s: float,
    warmup: int,
) -> dict[str, Any]:
    import asyncpg

    async def main() -> dict[str, Any]:
        pool = await asyncpg.create_pool(url, min_size=2, max_size=submitters + workers + 2)
        await pool.execute(_PG_SCHEMA)
        wake = asyncio.Event()
        held: set[str] = set()
        stop = asyncio.Event()

        async def worker() -> None:
            async with pool.acquire() as conn:
                while not stop.is_set():
                    token = secrets.token_hex(8)
                    row = await conn.fetchrow(_PG_CLAIM, token)
                    if row is None:
                        wake.clear()
                        with _suppress_timeout():
                            await asyncio.wait_for(wake.wait(), 0.05)
                        continue
                    held.add(token)
                    result = json.loads(row["input"])["value"]
                    await conn.fetchval(_PG_FINISH, row["id"], token, json.dumps(result))
                    held.discard(token)

        async def heartbeat() -> None:
            while not stop.is_set():
                await asyncio.sleep(LEASE_S / 3)
                await pool.execute(_PG_RENEW, list(held))

        async def submit(value: int) -> int:
            jid: int = await pool.fetchval(_PG_SUBMIT, "echo", json.dumps({"value": value}))
            wake.set()
            return jid

        async def done(jid: int, expected: int) -> bool:
            row = await pool.fetchrow("SELECT status, result FROM jobs WHERE id = $1", jid)
            if row["status"] != "succeeded":
                return False
            if json.loads(row["result"]) != expected:
                raise AssertionError(f"job {jid}: {row['result']!r}")
            return True

        tasks = [asyncio.create_task(worker()) for _ in range(workers)]
        tasks.append(asyncio.create_task(heartbeat()))
        try:
            await _async_run(warmup, submitters, -warmup, check_poll_s, stall_s, submit, done)
            return await _async_run(n, submitters, 0, check_poll_s, stall_s, submit, done)
        finally:
            stop.set()
            wake.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await pool.close()

    return asyncio.run(main())


class _suppress_timeout:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, *_: object) -> bool:
        return kind is asyncio.TimeoutError or kind is TimeoutError


# -- pgqueuer -------------------------------------------------------------------------------


def run_pgqueuer(
    url: str,
    n: int,
    submitters: int,
    workers: int,
    check_poll_s: float,
    stall_s: float,
    warmup: int,
) -> dict[str, Any]:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries

    async def main() -> dict[str, Any]:
        admin = await asyncpg.connect(url)
        await Queries(AsyncpgDriver(admin)).install()
        worker_conn = await asyncpg.connect(url)
        qm = QueueManager(Queries(AsyncpgDriver(worker_conn)))

        @qm.entrypoint("echo")
        async def echo(job: Job) -> None:
            json.loads(job.payload or b"null")  # the echo workload: nothing stores a result

        submit_conns = [await asyncpg.connect(url) for _ in range(submitters)]
        queries = [Queries(AsyncpgDriver(c)) for c in submit_conns]
        pick = itertools.cycle(queries)
        check = Queries(AsyncpgDriver(await asyncpg.connect(url)))

        async def submit(value: int) -> Any:
            ids = await next(pick).enqueue("echo", json.dumps({"value": value}).encode())
            return ids[0]

        async def done(jid: Any, expected: int) -> bool:
            rows = await check.job_status([jid])
            return bool(rows) and rows[0][1] == "successful"

        runner = asyncio.create_task(qm.run(batch_size=workers, max_concurrent_tasks=2 * workers))
        try:
            await _async_run(warmup, submitters, -warmup, check_poll_s, stall_s, submit, done)
            return await _async_run(n, submitters, 0, check_poll_s, stall_s, submit, done)
        finally:
            qm.shutdown.set()
            await asyncio.wait_for(runner, 30)
            for c in [admin, worker_conn, *submit_conns]:
                await c.close()

    return asyncio.run(main())


# -- procrastinate --------------------------------------------------------------------------


def run_procrastinate(
    url: str,
    n: int,
    submitters: int,
    workers: int,
    check_poll_s: float,
    stall_s: float,
    warmup: int,
) -> dict[str, Any]:
    import procrastinate

    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=url, min_size=2, max_size=submitters + workers + 2
        )
    )

    @app.task(name="echo")
    async def echo(value: int) -> int:
        return value

    async def main() -> dict[str, Any]:
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

            async def submit(value: int) -> int:
                return await echo.defer_async(value=value)

            async def done(jid: int, expected: int) -> bool:
                status = await app.job_manager.get_job_status_async(jid)
                return bool(status == procrastinate.jobs.Status.SUCCEEDED)

            worker = asyncio.create_task(
                app.run_worker_async(concurrency=workers, install_signal_handlers=False)
            )
            try:
                await _async_run(warmup, submitters, -warmup, check_poll_s, stall_s, submit, done)
                return await _async_run(n, submitters, 0, check_poll_s, stall_s, submit, done)
            finally:
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)

    return asyncio.run(main())


# -- ambidex: K worker processes --------------------------------------------------------------


def run_ambidex_workers(
    url: str,
    processes: int,
    n: int,
    submitters: int,
    workers: int,
    check_poll_s: float,
    stall_s: float,
    warmup: int,
) -> dict[str, Any]:
    """A front desk here, ``processes`` x ``ambidex worker --concurrency W`` as children."""
    import psutil

    from ambidex.jobs import JobManager, JobStatus, JobStore

    store = JobStore(url)  # creates the schema before the workers start
    cli = Path(sys.executable).with_name("ambidex")
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "ambidex"]
    children = [
        subprocess.Popen(
            [
                *command,
                "worker",
                "--db",
                url,
                "--concurrency",
                str(workers),
                "--retention-days",
                "0",
                "--log-level",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    procs = [psutil.Process(c.pid) for c in children]

    def children_cpu() -> float:
        total = 0.0
        for p in procs:
            t = p.cpu_times()
            total += t.user + t.system
        return total

    async def main() -> dict[str, Any]:
        async with JobManager(store, concurrency=0) as m:

            async def submit(value: int) -> str:
                return (await m.submit("echo", {"value": value})).id

            async def done(jid: str, expected: int) -> bool:
                job = await m.get(jid)
                if not job.status.terminal:
                    return False
                if job.status is not JobStatus.SUCCEEDED or job.result != expected:
                    raise AssertionError(f"job {jid}: {job.status.value} {job.result!r}")
                return True

            # The warm-up also waits for every worker to start (importing takes a while).
            await _async_run(warmup, submitters, -warmup, check_poll_s, 60.0, submit, done)
            return await _async_run(
                n, submitters, 0, check_poll_s, stall_s, submit, done, children_cpu
            )

    try:
        rec = asyncio.run(main())
    finally:
        for c in children:
            c.terminate()
        for c in children:
            try:
                c.wait(30)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
        store.close()
    failed = [c.returncode for c in children if c.returncode not in (0, -15)]
    if failed:
        raise RuntimeError(f"ambidex worker exited with {failed}")
    rec["worker_processes"] = processes
    return rec
