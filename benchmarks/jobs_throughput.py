"""Job throughput: N trivial jobs submitted and completed, ambidex jobs vs huey.

Every system gets the same work and the same shape of client:

* N trivial jobs (``echo``: the input value comes back as the result), each submitted
  by its own call, from S concurrent submitters (default 8) that share one counter;
* W workers run them (default 8): ambidex ``JobManager(concurrency=W)``, huey's
  ``Consumer(workers=W, worker_type="thread")``, in this process;
* results are stored, and completion is confirmed by reading each job's stored
  result back, in submission order, by one checker that polls the store every
  ``--check-poll-ms`` (default 5) while a job is not finished yet; every result is
  checked against its input;
* the clock runs from the first submit to the moment the last result has been read
  back. jobs/s = N / that time. "CPU ms/job" is this process's CPU time (every thread:
  submitters, workers, checker) over the same window, divided by N.

Systems (a fresh store for every run; a few warm-up jobs run before the clock starts):

* ambidex on SQLite: ``JobManager(<fresh temp file>, concurrency=W)`` with its default
  lease and poll settings; submitters are asyncio tasks calling ``await m.submit(...)``
  on the manager's loop, the checker ``await m.get(id)``.
* ambidex on PostgreSQL: the same on a throwaway database created for the run and
  dropped after it (skipped, with the reason printed, if the server is unreachable).
* huey ``SqliteHuey`` (anchor): ``results=True, immediate=False``, defaults otherwise,
  except ``PRAGMA synchronous=NORMAL``, ambidex's durability setting (committed work
  survives a process crash); huey's default leaves SQLite at ``synchronous=FULL``, an
  fsync per commit. Submitters are threads calling the task (``task(i)``), the checker
  reads ``Result.get(preserve=True)``. An idle huey worker polls the queue every 0.1 s
  or more (its default), which shows as huey's ~0.1 s "first result".
* huey ``SqliteHuey`` with its defaults (``synchronous=FULL``): extra row, no target.
* ambidex with its queue features in use (SQLite, and PostgreSQL when reachable): the
  same jobs, each submitted with a priority (4 for the first fifth down to 0 for the
  last, so that claims order by priority yet the in-order checker is not made to wait
  on a low-priority job while later ones finish), its own idempotency key
  and a retry policy (``retries=2, retry_on=["ConnectionError"]``), of a workload with
  a concurrency limit above W (so every claim takes the limited path: count the
  running jobs, then claim, under a lock). The ratio to plain ambidex is the cost of
  the features (target: within 10%).

Anchors of issue 15 (``_jobs_anchors.py``), in the same rounds:

* a plain ``sqlite3`` lease queue with ambidex's guarantees (commit before acknowledging,
  leases renewed by a heartbeat, fenced finish, outcome written once, the same event rows):
  the floor reference on SQLite;
* on PostgreSQL, each in a fresh database dropped after it: the same lease queue with
  asyncpg and ``FOR UPDATE SKIP LOCKED``; pgqueuer; procrastinate (the last two, and
  asyncpg, are the ``bench`` extra: rows whose package is missing are left out with a
  line saying so);
* ambidex on PostgreSQL with 1, 2 and 4 ``ambidex worker`` processes (``--concurrency W``
  each) sharing the store, this process submitting through ``JobManager(concurrency=0)``;
  their CPU counts this process and the workers.

Every system's delivery promise (at most / at least once, what kill -9 loses) is printed
with the figures. CPU never counts the PostgreSQL server.

Systems take turns in a rotating order in every round; the median over rounds is
reported. A run in which one job stays unfinished for ``--stall-s`` (5 s; a trivial
job takes milliseconds) is recorded as stalled, with the state of the store and the
manager at that moment, and run again up to ``--retries`` times (default 0); stalled
runs give no jobs/s (the rate up to the stall is recorded for information).

    .venv/bin/python benchmarks/jobs_throughput.py          # full run (~1.5-3 min), writes
                                                            # results/jobs_throughput.json
    .venv/bin/python benchmarks/jobs_throughput.py --quick  # 100 jobs, one round: smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import itertools
import logging
import os
import secrets
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import _jobs_anchors as anchors
from _common import machine_info, print_ratios, verdict, write_json
from ambidex.jobs import JobManager, JobStatus, JobStore, WorkloadRegistry, default_registry

console = Console(width=int(os.environ.get("COLUMNS", "150")))

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
WARMUP_JOBS = 40

AX_SQLITE = "ambidex JobManager, SQLite"
AX_PG = "ambidex JobManager, PostgreSQL"
AX_SQLITE_FEATURES = "ambidex JobManager, SQLite, features in use"
AX_PG_FEATURES = "ambidex JobManager, PostgreSQL, features in use"
FEATURE_OPTIONS: dict[str, Any] = {"retries": 2, "retry_on": ["ConnectionError"]}
HUEY = "huey SqliteHuey, synchronous=NORMAL (as ambidex)"
HUEY_DEFAULT = "huey SqliteHuey, defaults (synchronous=FULL)"
SQLITE_LEASE = "plain sqlite3 lease queue (floor reference)"
PG_LEASE = "plain asyncpg SKIP LOCKED lease queue"
PGQUEUER = "pgqueuer (asyncpg)"
PROCRASTINATE = "procrastinate (psycopg)"


def ax_workers_name(k: int) -> str:
    return f"ambidex PostgreSQL, {k} `ambidex worker` process{'es' if k > 1 else ''}"


def delivery_of(system: str) -> str:
    """The delivery promise of a system, by the row's name."""
    if system.startswith("ambidex"):
        return anchors.DELIVERY["ambidex"]
    if system.startswith("huey"):
        return anchors.DELIVERY["huey"]
    key = {
        SQLITE_LEASE: "sqlite3-lease",
        PG_LEASE: "asyncpg-lease",
        PGQUEUER: "pgqueuer",
        PROCRASTINATE: "procrastinate",
    }[system]
    return anchors.DELIVERY[key]


def missing_packages(names: list[str]) -> list[str]:
    missing = []
    for name in names:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    return missing


# -- the measurement record ---------------------------------------------------------------


class Stalled(Exception):
    """The checker waited ``stall_s`` for one job without it finishing."""

    def __init__(self, index: int, since: float) -> None:
        waited_s = time.perf_counter() - since
        super().__init__(f"job #{index} not finished after {waited_s:.1f} s")
        self.index = index
        self.since = since
        self.waited_s = waited_s
        self.rate_until_stall: float | None = None
        self.diagnosis: dict[str, Any] = {}


class _LeaseLostCounter(logging.Handler):
    """Counts (and keeps off the terminal) ambidex's "lease lost" warnings during a run."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lease_lost = 0
        self.other: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "lease lost" in message:
            self.lease_lost += 1
        elif len(self.other) < 20:
            self.other.append(message)


@contextlib.contextmanager
def _count_ambidex_warnings() -> Iterator[_LeaseLostCounter]:
    logger = logging.getLogger("ambidex.jobs")
    counter = _LeaseLostCounter()
    saved = logger.propagate
    logger.addHandler(counter)
    logger.propagate = False
    try:
        yield counter
    finally:
        logger.removeHandler(counter)
        logger.propagate = saved


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _run_record(
    n: int, t0: float, cpu0: float, submitted: float, first_done: float, last_done: float
) -> dict[str, Any]:
    elapsed = last_done - t0
    cpu = _cpu_s() - cpu0
    return {
        "jobs": n,
        "elapsed_s": elapsed,
        "jobs_per_s": n / elapsed,
        "process_cpu_s": cpu,
        "cpu_ms_per_job": cpu / n * 1000,
        "submit_phase_s": submitted - t0,
        "submit_jobs_per_s": n / (submitted - t0),
        "first_result_read_s": first_done - t0,
        "drain_after_last_submit_s": last_done - submitted,
    }


# -- ambidex ------------------------------------------------------------------------------


async def _ambidex_confirm(
    manager: JobManager,
    ids: list[str | None],
    i: int,
    expected: int,
    check_poll_s: float,
    stall_s: float,
) -> None:
    """Poll job ``i`` until it has finished; check its stored result."""
    since = time.perf_counter()
    while True:
        jid = ids[i]
        if jid is not None:
            job = await manager.get(jid)
            if job.status.terminal:
                if job.status is not JobStatus.SUCCEEDED or job.result != expected:
                    raise AssertionError(
                        f"job {i}: {job.status.value} {job.result!r} {job.error!r}"
                    )
                return
        if time.perf_counter() - since > stall_s:
            raise Stalled(i, since)
        await asyncio.sleep(check_poll_s)


async def _ambidex_jobs(
    manager: JobManager,
    n: int,
    submitters: int,
    check_poll_s: float,
    first_value: int,
    stall_s: float,
    features: bool = False,
) -> dict[str, Any]:
    """Submit ``n`` echo jobs from ``submitters`` tasks; read every result back, in order."""
    ids: list[str | None] = [None] * n
    counter = itertools.count()
    submitted_at = [0.0]
    done_submitting = [0]
    run_key = secrets.token_hex(4)

    async def submitter() -> None:
        while True:
            i = next(counter)
            if i >= n:
                break
            if features:
                job = await manager.submit(
                    "echo",
                    {"value": first_value + i},
                    priority=4 - 5 * i // n,  # 4..0: claimed by priority, yet in order
                    idempotency_key=f"{run_key}-{i}",
                    **FEATURE_OPTIONS,
                )
            else:
                job = await manager.submit("echo", {"value": first_value + i})
            ids[i] = job.id
        done_submitting[0] += 1
        if done_submitting[0] == submitters:
            submitted_at[0] = time.perf_counter()

    async def checker() -> float:
        first = 0.0
        for i in range(n):
            await _ambidex_confirm(manager, ids, i, first_value + i, check_poll_s, stall_s)
            if i == 0:
                first = time.perf_counter()
        return first

    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(submitter()) for _ in range(submitters)]
    try:
        first_done = await checker()
    except Stalled as exc:
        exc.rate_until_stall = exc.index / (exc.since - t0) if exc.since > t0 else None
        raise
    finally:
        t1 = time.perf_counter()
        await asyncio.gather(*tasks)
    return _run_record(n, t0, cpu0, submitted_at[0], first_done, t1)


async def _diagnose(manager: JobManager, stalled: Stalled) -> None:
    """What the manager and the store looked like when a run stalled."""
    counts = await manager.counts()
    worker = manager.worker
    running = worker.running if worker is not None else {}
    rate = stalled.rate_until_stall
    stalled.diagnosis = {
        "stalled_at_job": stalled.index,
        "jobs_per_s_until_stall": None if rate is None else round(rate, 1),
        "waited_s": round(stalled.waited_s, 2),
        "store_counts": {k.value: v for k, v in counts.items() if v},
        "manager_running_here": manager.running_here,
        # Entries of the manager's running set whose task has already ended: each
        # holds a concurrency slot for good.
        "running_entries_with_task_done": sum(
            1 for r in running.values() if r.task is not None and r.task.done()
        ),
    }


def _limited_registry(workers: int) -> WorkloadRegistry:
    """The built-in workloads, ``echo`` with a concurrency limit that never binds (4 W)."""
    registry = WorkloadRegistry()
    for wl in default_registry():
        registry.add(wl.with_options(concurrency=4 * workers) if wl.name == "echo" else wl)
    return registry


def run_ambidex(
    url: str,
    n: int,
    submitters: int,
    workers: int,
    check_poll_s: float,
    stall_s: float,
    features: bool = False,
) -> dict[str, Any]:
    store = JobStore(url)
    registry = _limited_registry(workers) if features else default_registry()

    async def main() -> dict[str, Any]:
        async with JobManager(store, registry=registry, concurrency=workers) as m:
            try:
                await _ambidex_jobs(
                    m, WARMUP_JOBS, submitters, check_poll_s, -WARMUP_JOBS, stall_s, features
                )
                return await _ambidex_jobs(m, n, submitters, check_poll_s, 0, stall_s, features)
            except Stalled as exc:
                await _diagnose(m, exc)
                raise

    with _count_ambidex_warnings() as warnings:
        try:
            rec = asyncio.run(main())
        except Stalled as exc:
            exc.diagnosis["lease_lost_warnings"] = warnings.lease_lost
            raise
        finally:
            store.close()
    # ambidex.jobs logs "lease lost; stopping it without recording" when a heartbeat
    # does not list a job it runs (warm-up included).
    rec["lease_lost_warnings"] = warnings.lease_lost
    if warnings.other:
        rec["other_warnings"] = warnings.other
    return rec


class _PgDatabase:
    """A throwaway PostgreSQL database: created on enter, dropped (forcibly) on exit."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"ambidex_bench_{secrets.token_hex(4)}"
        base = admin_url.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def __enter__(self) -> str:
        self._admin(f'CREATE DATABASE "{self.name}"')
        return self.url

    def __exit__(self, *exc: object) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def postgres_unreachable(admin_url: str) -> str | None:
    """None if ``admin_url`` accepts connections and databases can be created, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'ambidex[postgres]')"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except Exception as exc:
        return f"cannot connect to {admin_url}: {type(exc).__name__}: {exc}".strip()
    if not row or not row[0]:
        return f"the user of {admin_url} may not create databases"
    return None


def postgres_version(admin_url: str) -> str | None:
    try:
        import psycopg

        with psycopg.connect(admin_url, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return None if row is None else str(row[0])
    except Exception:
        return None


# -- huey ---------------------------------------------------------------------------------


def _huey_class(synchronous: str | None) -> type[Any]:
    from huey import SqliteHuey  # type: ignore[import-untyped]
    from huey.storage import SqliteStorage  # type: ignore[import-untyped]

    if synchronous is None:
        return SqliteHuey  # type: ignore[no-any-return]

    class _Storage(SqliteStorage):  # type: ignore[misc]
        def _create_connection(self) -> sqlite3.Connection:
            conn: sqlite3.Connection = super()._create_connection()
            conn.execute(f"pragma synchronous={synchronous}")
            return conn

    class _Huey(SqliteHuey):  # type: ignore[misc]
        storage_class = _Storage

    return _Huey


def _huey_confirm(
    task: Any,
    results: list[Any],
    errors: list[BaseException],
    i: int,
    expected: int,
    check_poll_s: float,
    stall_s: float,
) -> None:
    """Poll task ``i``'s result until it is stored; check it."""
    since = time.perf_counter()
    while True:
        if errors:
            raise errors[0]
        handle = results[i]
        if handle is not None:
            value = handle.get(preserve=True)
            if value is not None:
                if value != expected:
                    raise AssertionError(f"huey task {i}: got {value!r}")
                return
        if time.perf_counter() - since > stall_s:
            exc = Stalled(i, since)
            exc.diagnosis = {"stalled_at_job": i, "huey_pending": task.huey.pending_count()}
            raise exc
        time.sleep(check_poll_s)


def _huey_jobs(
    task: Any,
    n: int,
    submitters: int,
    check_poll_s: float,
    first_value: int,
    stall_s: float,
) -> dict[str, Any]:
    results: list[Any] = [None] * n
    counter = itertools.count()
    lock = threading.Lock()
    submitted_at = [0.0]
    done_submitting = [0]
    errors: list[BaseException] = []

    def submitter() -> None:
        try:
            while True:
                with lock:
                    i = next(counter)
                if i >= n:
                    break
                results[i] = task(first_value + i)
        except BaseException as exc:  # reported by the checker
            errors.append(exc)
        with lock:
            done_submitting[0] += 1
            if done_submitting[0] == submitters:
                submitted_at[0] = time.perf_counter()

    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=submitter, daemon=True) for _ in range(submitters)]
    for t in threads:
        t.start()
    first_done = 0.0
    for i in range(n):
        _huey_confirm(task, results, errors, i, first_value + i, check_poll_s, stall_s)
        if i == 0:
            first_done = time.perf_counter()
    t1 = time.perf_counter()
    for t in threads:
        t.join()
    return _run_record(n, t0, cpu0, submitted_at[0], first_done, t1)


def run_huey(
    tmp: Path,
    n: int,
    submitters: int,
    workers: int,
    check_poll_s: float,
    stall_s: float,
    synchronous: str | None,
) -> dict[str, Any]:
    from huey.consumer import Consumer  # type: ignore[import-untyped]

    path = tmp / f"huey-{secrets.token_hex(4)}.db"
    huey = _huey_class(synchronous)("bench", filename=str(path), results=True, immediate=False)

    def echo(value: int) -> int:
        return value

    task = huey.task()(echo)

    # Consumer.start() installs signal handlers in the main thread; put ours back after.
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    consumer = Consumer(huey, workers=workers, worker_type="thread")
    consumer.start()
    try:
        _huey_jobs(task, WARMUP_JOBS, submitters, check_poll_s, -WARMUP_JOBS, stall_s)
        return _huey_jobs(task, n, submitters, check_poll_s, 0, stall_s)
    finally:
        consumer.stop(graceful=True)
        huey.storage.close()
        for s, handler in saved.items():
            signal.signal(s, handler)


# -- the run ------------------------------------------------------------------------------


def _rotations(names: list[str], rounds: int) -> list[list[str]]:
    return [names[r % len(names) :] + names[: r % len(names)] for r in range(rounds)]


def _ratio(
    name: str, value: float, target: float | None, higher: bool, note: str
) -> dict[str, Any]:
    if target is None:
        return {"ratio": name, "value": value, "target": "-", "met": None, "note": note}
    return {
        "ratio": name,
        "value": value,
        "target": f"{'≥' if higher else '≤'} {target:g}",
        "met": verdict(value, target, higher),
        "note": note,
    }


def _summary(
    name: str, role: str, runs: list[dict[str, Any]], stalls: list[dict[str, Any]]
) -> dict[str, Any]:
    row: dict[str, Any] = {"system": name, "role": role, "stalled_runs": stalls}
    if not runs:
        row["median_jobs_per_s"] = None
        row["runs"] = []
        return row

    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    rates = [r["jobs_per_s"] for r in runs]
    row.update(
        {
            "median_jobs_per_s": statistics.median(rates),
            "min_jobs_per_s": min(rates),
            "max_jobs_per_s": max(rates),
            "median_elapsed_s": med("elapsed_s"),
            "median_cpu_ms_per_job": med("cpu_ms_per_job"),
            "median_submit_jobs_per_s": med("submit_jobs_per_s"),
            "median_first_result_read_s": med("first_result_read_s"),
            "median_drain_after_last_submit_s": med("drain_after_last_submit_s"),
            "runs": [
                {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in runs
            ],
        }
    )
    return row


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 jobs, one round: a smoke test")
    parser.add_argument("--jobs", type=int, default=None, help="N jobs per run (default 5000)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3; 1 quick)")
    parser.add_argument("--submitters", type=int, default=8, help="concurrent submitters (8)")
    parser.add_argument("--workers", type=int, default=8, help="worker concurrency (8)")
    parser.add_argument(
        "--check-poll-ms", type=float, default=5.0, help="checker's poll interval (5 ms)"
    )
    parser.add_argument(
        "--stall-s",
        type=float,
        default=5.0,
        help="a run whose checker waits this long for one job is recorded as stalled (5 s)",
    )
    parser.add_argument(
        "--retries", type=int, default=0, help="new runs after a stalled one, per round (0)"
    )
    parser.add_argument("--pg-url", default=PG_ADMIN_URL, help="PostgreSQL server (admin) URL")
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated systems to leave out: pg, huey-default, features, "
        "sqlite-lease, asyncpg-lease, pgqueuer, procrastinate, workers",
    )
    parser.add_argument(
        "--worker-processes",
        default=None,
        help="comma-separated counts of `ambidex worker` processes on PostgreSQL "
        "(default 1,2,4; 1 with --quick)",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="results file name under benchmarks/results/ (default: jobs_throughput, or "
        "jobs_throughput-quick with --quick)",
    )
    args = parser.parse_args(argv)
    args.jobs = args.jobs or (100 if args.quick else 5000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    wp = args.worker_processes or ("1" if args.quick else "1,2,4")
    args.worker_processes = [int(x) for x in wp.split(",") if x.strip()]
    return args


Method = tuple[str, Callable[[], dict[str, Any]]]


def _methods(
    args: argparse.Namespace, tmp: Path, pg_skip: str | None, notes: list[str]
) -> dict[str, Method]:
    n, s, w = args.jobs, args.submitters, args.workers
    poll_s, stall_s = args.check_poll_ms / 1000, args.stall_s

    # Priorities may still hold a job back behind later ones for a while.
    features_stall_s = max(stall_s, 60.0)

    def ax_sqlite(features: bool) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            path = tmp / f"ax-{secrets.token_hex(4)}.sqlite"
            stall = features_stall_s if features else stall_s
            return run_ambidex(str(path), n, s, w, poll_s, stall, features)

        return run

    def ax_pg(features: bool) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            stall = features_stall_s if features else stall_s
            with _PgDatabase(args.pg_url) as url:
                return run_ambidex(url, n, s, w, poll_s, stall, features)

        return run

    def huey(synchronous: str | None) -> Callable[[], dict[str, Any]]:
        return lambda: run_huey(tmp, n, s, w, poll_s, stall_s, synchronous)

    methods: dict[str, Method] = {
        AX_SQLITE: ("ambidex", ax_sqlite(False)),
        HUEY: ("anchor", huey("NORMAL")),
    }
    if "features" not in args.skip:
        methods[AX_SQLITE_FEATURES] = ("ambidex", ax_sqlite(True))
    if not pg_skip:
        methods[AX_PG] = ("ambidex", ax_pg(False))
        if "features" not in args.skip:
            methods[AX_PG_FEATURES] = ("ambidex", ax_pg(True))
    if "huey-default" not in args.skip:
        methods[HUEY_DEFAULT] = ("extra", huey(None))
    methods.update(_anchor_methods(args, tmp, pg_skip, notes))
    return methods


def _anchor_methods(
    args: argparse.Namespace, tmp: Path, pg_skip: str | None, notes: list[str]
) -> dict[str, Method]:
    """Issue 15's anchors and ambidex's worker processes; notes say what is left out."""
    n, s, w = args.jobs, args.submitters, args.workers
    poll_s, stall_s = args.check_poll_ms / 1000, args.stall_s
    methods: dict[str, Method] = {}

    def fresh_pg(run: Callable[..., dict[str, Any]], *extra: Any) -> Callable[[], dict[str, Any]]:
        def go() -> dict[str, Any]:
            with _PgDatabase(args.pg_url) as url:
                return run(url, *extra, n, s, w, poll_s, stall_s, WARMUP_JOBS)

        return go

    if "sqlite-lease" not in args.skip:
        methods[SQLITE_LEASE] = (
            "anchor",
            lambda: anchors.run_sqlite_lease(tmp, n, s, w, poll_s, stall_s, WARMUP_JOBS),
        )
    if pg_skip:
        return methods
    if "workers" not in args.skip:
        for k in args.worker_processes:
            methods[ax_workers_name(k)] = ("ambidex", fresh_pg(anchors.run_ambidex_workers, k))
    for key, name, run, packages in (
        ("asyncpg-lease", PG_LEASE, anchors.run_asyncpg_lease, ["asyncpg"]),
        ("pgqueuer", PGQUEUER, anchors.run_pgqueuer, ["asyncpg", "pgqueuer"]),
        ("procrastinate", PROCRASTINATE, anchors.run_procrastinate, ["procrastinate"]),
    ):
        if key in args.skip:
            continue
        missing = missing_packages(packages)
        if missing:
            notes.append(
                f"{name}: left out, not installed ({', '.join(missing)}; "
                "pip install 'ambidex\\[bench]')"
            )
            continue
        methods[name] = ("anchor", fresh_pg(run))
    return methods


def _run_rounds(
    methods: dict[str, Method], rounds: int, retries: int
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """Every system once per round, in a rotating order; a stalled run is run again."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    stalls: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    for r, order in enumerate(_rotations(list(methods), rounds)):
        for name in order:
            for _attempt in range(1 + retries):
                try:
                    rec = methods[name][1]()
                except anchors.AnchorStalled as exc:
                    stalls[name].append({"round": r + 1, "stalled": str(exc)})
                    console.print(f"  round {r + 1}: {name}: [red]stalled[/] ({exc})")
                    continue
                except Stalled as exc:
                    stalls[name].append({"round": r + 1, **exc.diagnosis})
                    console.print(
                        f"  round {r + 1}: {name}: [red]stalled[/] ({exc}): {exc.diagnosis}"
                    )
                    continue
                runs[name].append(rec)
                console.print(
                    f"  round {r + 1}: {name}: {rec['jobs_per_s']:.0f} jobs/s "
                    f"({rec['elapsed_s']:.2f} s, {rec['cpu_ms_per_job']:.2f} ms CPU a job)"
                )
                break
    return runs, stalls


def _print_table(rows: list[dict[str, Any]], huey_rate: float | None, title: str) -> None:
    table = Table(title=title)
    columns = (
        "system",
        "role",
        "jobs/s (median)",
        "min",
        "max",
        "CPU ms/job",
        "submit jobs/s",
        "first result s",
        "drain s",
        "stalled runs",
        "÷ huey",
    )
    for col in columns:
        table.add_column(col, justify="left" if col in {"system", "role"} else "right")
    for row in rows:
        rate = row["median_jobs_per_s"]
        stalled = str(len(row["stalled_runs"]))
        if rate is None:
            table.add_row(row["system"], row["role"], *["-"] * 7, stalled, "-")
            continue
        table.add_row(
            row["system"],
            row["role"],
            f"{rate:.0f}",
            f"{row['min_jobs_per_s']:.0f}",
            f"{row['max_jobs_per_s']:.0f}",
            f"{row['median_cpu_ms_per_job']:.2f}",
            f"{row['median_submit_jobs_per_s']:.0f}",
            f"{row['median_first_result_read_s']:.3f}",
            f"{row['median_drain_after_last_submit_s']:.3f}",
            stalled,
            f"{rate / huey_rate:.2f}" if huey_rate else "-",
        )
    console.print(table)


def _rate(by: dict[str, dict[str, Any]], name: str) -> float | None:
    row = by.get(name)
    return None if row is None else row["median_jobs_per_s"]


def _anchor_ratios(by: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 15's targets against the anchors, and the worker-process scaling."""
    out = []
    ax, floor = _rate(by, AX_SQLITE), _rate(by, SQLITE_LEASE)
    if ax and floor:
        name = "ambidex SQLite / plain sqlite3 lease queue"
        out.append(_ratio(name, ax / floor, 0.5, True, "same guarantees, raw sqlite3"))
    pg = _rate(by, AX_PG)
    for name, target, note in (
        (PGQUEUER, 2.0, "at least once, its default (logged) tables"),
        (PG_LEASE, 1.0, "same guarantees, raw asyncpg"),
        (PROCRASTINATE, None, "beside them"),
    ):
        other = _rate(by, name)
        if pg and other:
            out.append(_ratio(f"ambidex PostgreSQL / {name}", pg / other, target, True, note))
    one = _rate(by, ax_workers_name(1))
    for k in (2, 4):
        more = _rate(by, ax_workers_name(k))
        if one and more:
            out.append(
                _ratio(
                    f"ambidex PostgreSQL: {k} worker processes / 1",
                    more / one,
                    None,
                    True,
                    "scaling on 2 cores shared with the server",
                )
            )
    return out


def compute_ratios(by: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    huey_rate = by[HUEY]["median_jobs_per_s"]
    ax_rate = by[AX_SQLITE]["median_jobs_per_s"]
    if not huey_rate:
        return []
    out = []
    if ax_rate is not None:
        note = "huey at ambidex's synchronous=NORMAL"
        out.append(_ratio("ambidex SQLite / huey (jobs/s)", ax_rate / huey_rate, 3.0, True, note))
    pg_rate = by[AX_PG]["median_jobs_per_s"] if AX_PG in by else None
    if pg_rate is not None:
        note = "different database: informative"
        out.append(
            _ratio("ambidex PostgreSQL / huey (jobs/s)", pg_rate / huey_rate, None, True, note)
        )
    default_rate = by[HUEY_DEFAULT]["median_jobs_per_s"] if HUEY_DEFAULT in by else None
    if ax_rate is not None and default_rate:
        out.append(
            _ratio(
                "(extra) ambidex SQLite / huey defaults (jobs/s)",
                ax_rate / default_rate,
                None,
                True,
                "huey fsyncs every commit (synchronous=FULL)",
            )
        )
    for plain, featured, engine in (
        (AX_SQLITE, AX_SQLITE_FEATURES, "SQLite"),
        (AX_PG, AX_PG_FEATURES, "PostgreSQL"),
    ):
        base = by[plain]["median_jobs_per_s"] if plain in by else None
        used = by[featured]["median_jobs_per_s"] if featured in by else None
        if base and used:
            out.append(
                _ratio(
                    f"ambidex {engine}: features in use / not (jobs/s)",
                    used / base,
                    0.9,
                    True,
                    "priorities, idempotency keys, retry policy, a concurrency limit",
                )
            )
    out.extend(_anchor_ratios(by))
    huey_cpu = by[HUEY]["median_cpu_ms_per_job"]
    # A --quick run can be shorter than one tick of the process clock: no CPU ratio then.
    if ax_rate is not None and huey_cpu:
        out.append(
            _ratio(
                "(extra) CPU per job: ambidex SQLite / huey",
                by[AX_SQLITE]["median_cpu_ms_per_job"] / huey_cpu,
                None,
                False,
                "process CPU (all threads) over the timed window",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    n, s, w = args.jobs, args.submitters, args.workers

    info = machine_info()
    info["huey"] = importlib.metadata.version("huey")
    info["sqlalchemy"] = importlib.metadata.version("sqlalchemy")
    info["sqlite"] = sqlite3.sqlite_version
    for package in ("asyncpg", "pgqueuer", "procrastinate"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            info[package] = importlib.metadata.version(package)
    pg_skip = "left out with --skip pg" if "pg" in args.skip else postgres_unreachable(args.pg_url)
    info["postgresql"] = None if pg_skip else postgres_version(args.pg_url)
    console.print(
        f"[bold]jobs_throughput[/] {info['date_utc']}  nproc={info['nproc']}  "
        f"python {info['python']}  huey {info['huey']}  sqlite {info['sqlite']}  "
        f"postgresql {info['postgresql']}  N={n}  S={s} submitters  W={w} workers  "
        f"rounds={args.rounds}  load {info['loadavg_at_start']}"
    )
    if pg_skip:
        console.print(f"[yellow]skipping ambidex on PostgreSQL:[/] {pg_skip}")

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="ambidex-jobs-bench-"))
    notes: list[str] = []
    methods = _methods(args, tmp, pg_skip, notes)
    for note in notes:
        console.print(f"[yellow]{note}[/]")
    try:
        runs, stalls = _run_rounds(methods, args.rounds, args.retries)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [_summary(name, role, runs[name], stalls[name]) for name, (role, _) in methods.items()]
    for row in rows:
        row["delivery"] = delivery_of(row["system"])
    by = {row["system"]: row for row in rows}
    _print_table(
        rows,
        by[HUEY]["median_jobs_per_s"],
        f"{n} trivial jobs, {s} submitters (one submit call a job), {w} workers; "
        "clock: first submit -> last result read back",
    )
    if pg_skip:
        console.print(f"ambidex and the anchors on PostgreSQL: skipped ({pg_skip})")
    for note in notes:
        console.print(note)
    console.print("[bold]delivery promises[/] (the figures mean nothing without them):")
    for row in rows:
        console.print(f"  {row['system']}: {row['delivery']}")
    for row in rows:
        until = [
            st["jobs_per_s_until_stall"]
            for st in row["stalled_runs"]
            if st.get("jobs_per_s_until_stall") is not None
        ]
        if until:
            row["median_jobs_per_s_until_stall"] = statistics.median(until)
            console.print(
                f"{row['system']}: {len(row['stalled_runs'])} stalled run(s); before they "
                f"stalled, jobs were confirmed at {statistics.median(until):.0f} jobs/s (median)"
            )
    ratios = compute_ratios(by)
    print_ratios(console, ratios, title="ratios (medians over rounds)")
    n_stalls = {name: len(v) for name, v in stalls.items() if v}
    if n_stalls:
        console.print(
            f"[red]stalled runs[/] (a job never finished; the run was repeated): {n_stalls}. "
            "The state at each stall is in the JSON (systems[].stalled_runs)."
        )
    elapsed = time.perf_counter() - started
    console.print(f"elapsed {elapsed:.1f} s")

    data = {
        "benchmark": "jobs_throughput",
        "machine": info,
        "settings": {
            "quick": args.quick,
            "jobs": n,
            "rounds": args.rounds,
            "submitters": s,
            "workers": w,
            "check_poll_ms": args.check_poll_ms,
            "stall_s": args.stall_s,
            "retries": args.retries,
            "warmup_jobs": WARMUP_JOBS,
            "ambidex": "JobManager(store, concurrency=W), default lease_s/poll_s; "
            "submit/get from asyncio tasks on the manager's loop",
            "huey": "SqliteHuey(results=True, immediate=False) with PRAGMA synchronous=NORMAL "
            "(anchor) or defaults (extra), Consumer(workers=W, worker_type='thread') in this "
            "process; submit from S threads, Result.get(preserve=True)",
            "postgresql_skipped": pg_skip,
            "worker_processes": args.worker_processes,
            "left_out": notes,
            "anchors": "plain sqlite3 / asyncpg lease queues with ambidex's guarantees "
            "(_jobs_anchors.py); pgqueuer QueueManager(batch_size=W, "
            "max_concurrent_tasks=2W) and procrastinate run_worker_async(concurrency=W) in "
            "this process, default tables; CPU excludes the PostgreSQL server",
        },
        "systems": rows,
        "ratios": ratios,
        "elapsed_s": elapsed,
    }
    name = args.output or ("jobs_throughput-quick" if args.quick else "jobs_throughput")
    path = write_json(name, data)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
