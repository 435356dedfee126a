"""What job options mean: retries, delays, priorities, idempotency keys, re-runs, limits, schedules.

Each test runs an in-process ``JobManager`` on a SQLite file of its own, with a
fresh ``WorkloadRegistry``; each asserts what would break if its feature were
removed. The workloads live at module level: a cpu worker process imports this
module by name (``test_semantics``) to find ``spin``. Timing assertions lean
only on lower bounds the store guarantees (a job never starts before its
``run_at``), never on how fast a loaded machine is.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import ambidex as ax
from ambidex._job_model import iso
from ambidex.jobs import (
    Job,
    JobConflictError,
    JobContext,
    JobManager,
    JobOptionError,
    JobStatus,
    JobStore,
    WorkloadRegistry,
)
from ambidex.jobs._schema import schedules_table

LEASE_S = 2.0
POLL_S = 0.05


class TransientError(ConnectionError):
    """A failure worth retrying; a ``ConnectionError`` (and so an ``OSError``) too."""


QUALIFIED = f"{TransientError.__module__}.{TransientError.__qualname__}"

# -- files as gates and markers (sync helpers: a file check never blocks for long) -----


def exists(path: str | Path) -> bool:
    return Path(path).exists()


def touch(path: str | Path) -> None:
    Path(path).write_text("")


# -- workloads -------------------------------------------------------------------------

spans: list[tuple[float, float]] = []
"""(start, end) of each run of ``overlap``, in ``time.monotonic()`` seconds."""
ticked: list[str] = []
"""The id of each job ``tock`` ran."""


async def add(a: int, b: int = 1) -> dict[str, int]:
    return {"sum": a + b}


async def flaky(fail_times: int, ctx: JobContext) -> dict[str, int]:
    """Raise ``TransientError`` on the first ``fail_times`` attempts, then succeed."""
    if ctx.attempt <= fail_times:
        raise TransientError(f"attempt {ctx.attempt} failed")
    return {"attempt": ctx.attempt}


async def hang(marker: str) -> None:
    """Write the file ``marker``, then sleep far longer than any test waits."""
    touch(marker)
    await asyncio.sleep(30)


async def gated(gate: str) -> str:
    """Wait until the file ``gate`` exists."""
    while not exists(gate):
        await asyncio.sleep(0.01)
    return "opened"


@ax.cpu
def spin(pid_path: str) -> int:
    """Write this worker process's pid, then keep a CPU busy (up to 30 s)."""
    Path(f"{pid_path}.tmp").write_text(str(os.getpid()))
    os.replace(f"{pid_path}.tmp", pid_path)
    deadline = time.monotonic() + 30
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return n


async def overlap(seconds: float) -> None:
    """Sleep ``seconds``, recording when the run started and ended in ``spans``."""
    start = time.monotonic()
    await asyncio.sleep(seconds)
    spans.append((start, time.monotonic()))


async def fail_at_gate(marker: str, gate: str, ctx: JobContext) -> None:
    """Write the file ``marker``, wait until the file ``gate`` exists, then fail."""
    touch(marker)
    while not exists(gate):
        await asyncio.sleep(0.01)
    raise TransientError(f"attempt {ctx.attempt} failed")


async def tock(ctx: JobContext) -> None:
    """Record that this job ran (the workload the schedules fire)."""
    ticked.append(ctx.job_id)


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
def registry() -> WorkloadRegistry:
    reg = WorkloadRegistry()
    for fn in (add, flaky, hang, gated, spin, fail_at_gate, tock):
        reg.register(fn)
    return reg


@pytest.fixture(autouse=True)
def _no_records_yet() -> None:
    """What the workloads recorded in earlier tests is gone."""
    spans.clear()
    ticked.clear()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "jobs.sqlite"


def manager(store: JobStore | Path, registry: WorkloadRegistry, **options: Any) -> JobManager:
    options.setdefault("lease_s", LEASE_S)
    options.setdefault("poll_s", POLL_S)
    return JobManager(store, registry=registry, **options)


async def until(predicate: Callable[[], Any], what: str, timeout_s: float = 10.0) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something true (returned)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


async def finished(m: JobManager, job_id: str, timeout_s: float = 10.0) -> Job:
    job = await m.wait(job_id, timeout_s=timeout_s)
    assert job.status.terminal, f"job still {job.status.value} after {timeout_s} s"
    return job


async def started_order(m: JobManager, jobs: dict[str, Job]) -> list[str]:
    """The names of ``jobs`` in the order their attempts started (a name per start)."""
    starts = [
        (event.seq, name)
        for name, job in jobs.items()
        for event in await m.events(job.id)
        if event.kind == "started"
    ]
    return [name for _, name in sorted(starts)]


def most_at_once(runs: list[tuple[float, float]]) -> int:
    """The most runs in progress at one instant (an end at the instant of a start comes first)."""
    edges = sorted([(start, 1) for start, _ in runs] + [(end, -1) for _, end in runs])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


# -- retries ---------------------------------------------------------------------------


async def test_a_job_that_fails_twice_with_two_retries_succeeds_on_its_third_attempt(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry) as m:
        job = await m.submit("flaky", {"fail_times": 2}, retries=2, retry_backoff_s=0.05)
        done = await finished(m, job.id)
        attempts = await m.attempts(job.id)

    assert (done.status, done.result) == (JobStatus.SUCCEEDED, {"attempt": 3})
    assert (done.attempts, done.retried, done.error, done.traceback) == (3, 2, None, None)
    assert [a.number for a in attempts] == [1, 2, 3]
    assert [a.outcome for a in attempts] == ["retrying", "retrying", "succeeded"]
    assert [a.error for a in attempts] == [
        "TransientError: attempt 1 failed",
        "TransientError: attempt 2 failed",
        None,
    ]
    for attempt in attempts[:2]:
        assert attempt.traceback is not None
        assert "in flaky" in attempt.traceback
        assert attempt.error is not None
        assert attempt.error in attempt.traceback


async def test_retries_wait_a_backoff_with_equal_jitter_that_doubles_up_to_its_cap(
    db: Path, registry: WorkloadRegistry
) -> None:
    # Ceilings 0.2, 0.4, then 0.5 (the cap, not 0.8); each wait is within [ceiling / 2, ceiling].
    ceilings = [0.2, 0.4, 0.5]
    async with manager(db, registry) as m:
        job = await m.submit(
            "flaky",
            {"fail_times": 3},
            retries=3,
            retry_backoff_s=0.2,
            retry_max_backoff_s=0.5,
        )
        done = await finished(m, job.id)
        attempts = await m.attempts(job.id)
        events = await m.events(job.id)

    assert (done.status, done.attempts, done.retried) == (JobStatus.SUCCEEDED, 4, 3)
    delays = [e.data["delay_s"] for e in events if e.kind == "retrying"]
    assert len(delays) == 3
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 - 1e-3 <= delay <= ceiling + 1e-3, (delays, ceilings)
    gaps = [later.started_at - (failed.ended_at or 0.0) for failed, later in pairwise(attempts)]
    for gap, ceiling in zip(gaps, ceilings, strict=True):
        assert gap >= ceiling / 2 - 1e-6, (gaps, ceilings)  # the lower bounds grow: 0.1, 0.2, 0.25


async def test_a_job_waiting_for_its_retry_is_queued_with_its_last_error_and_can_be_cancelled(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry) as m:
        job = await m.submit("flaky", {"fail_times": 1}, retries=1, retry_backoff_s=60)

        async def waiting() -> Job | None:
            now = await m.get(job.id)
            return now if now.retried == 1 else None

        queued = await until(waiting, "the first attempt to fail")
        assert queued.status is JobStatus.QUEUED
        assert queued.error == "TransientError: attempt 1 failed"
        assert queued.run_at is not None
        assert queued.run_at >= time.time() + 25
        cancelled = await m.cancel(job.id)
    assert (cancelled.status, cancelled.attempts, cancelled.retried) == (JobStatus.CANCELLED, 1, 1)


@pytest.mark.parametrize(
    "retry_on",
    [
        "TransientError",
        QUALIFIED,
        "ConnectionError",
        "OSError",
        "builtins.ConnectionError",
        TransientError,
        [KeyError, "ConnectionError"],
    ],
    ids=["plain", "qualified", "base", "base-of-base", "qualified-base", "type", "list"],
)
async def test_a_failure_that_retry_on_names_is_retried(
    db: Path, registry: WorkloadRegistry, retry_on: Any
) -> None:
    async with manager(db, registry) as m:
        job = await m.submit(
            "flaky", {"fail_times": 1}, retries=1, retry_on=retry_on, retry_backoff_s=0.01
        )
        done = await finished(m, job.id)
    assert (done.status, done.attempts, done.retried) == (JobStatus.SUCCEEDED, 2, 1)


@pytest.mark.parametrize(
    "retry_on",
    ["KeyError", "ConnectionRefusedError", "other_module.TransientError", [ValueError]],
    ids=["unrelated", "subclass", "other-module", "type"],
)
async def test_a_failure_that_retry_on_does_not_name_fails_at_once(
    db: Path, registry: WorkloadRegistry, retry_on: Any
) -> None:
    async with manager(db, registry) as m:
        job = await m.submit(
            "flaky", {"fail_times": 1}, retries=3, retry_on=retry_on, retry_backoff_s=0.01
        )
        done = await finished(m, job.id)
        kinds = [e.kind for e in await m.events(job.id)]
    assert (done.status, done.attempts, done.retried) == (JobStatus.FAILED, 1, 0)
    assert done.error == "TransientError: attempt 1 failed"
    assert kinds == ["submitted", "started", "failed"]


async def test_a_job_out_of_retries_fails_with_its_last_error_and_traceback(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry) as m:
        job = await m.submit("flaky", {"fail_times": 99}, retries=2, retry_backoff_s=0.01)
        done = await finished(m, job.id)
        attempts = await m.attempts(job.id)
    assert (done.status, done.attempts, done.retried) == (JobStatus.FAILED, 3, 2)
    assert done.error == "TransientError: attempt 3 failed"
    assert done.traceback is not None
    assert "in flaky" in done.traceback
    assert "TransientError: attempt 3 failed" in done.traceback
    assert [a.outcome for a in attempts] == ["retrying", "retrying", "failed"]


@pytest.mark.parametrize("kind", ["io", "cpu"])
async def test_a_cancelled_job_is_never_retried(
    db: Path, registry: WorkloadRegistry, tmp_path: Path, kind: str
) -> None:
    marker = tmp_path / "started"
    workload, data = (
        ("hang", {"marker": str(marker)}) if kind == "io" else ("spin", {"pid_path": str(marker)})
    )
    async with manager(db, registry) as m:
        job = await m.submit(workload, data, retries=3, retry_backoff_s=0.01)
        await until(marker.exists, "the job to start", timeout_s=20)
        await m.cancel(job.id)
        done = await finished(m, job.id)
        kinds = [e.kind for e in await m.events(job.id)]
    assert (done.status, done.attempts, done.retried) == (JobStatus.CANCELLED, 1, 0)
    assert "retrying" not in kinds


async def test_retries_are_counted_apart_from_max_attempts(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry) as m:
        job = await m.submit(
            "flaky", {"fail_times": 2}, max_attempts=1, retries=2, retry_backoff_s=0.01
        )
        done = await finished(m, job.id)
    assert (done.status, done.attempts, done.retried) == (JobStatus.SUCCEEDED, 3, 2)


async def test_a_job_whose_cancel_was_requested_elsewhere_is_not_retried_when_it_fails(
    db: Path, registry: WorkloadRegistry, tmp_path: Path
) -> None:
    # The worker learns of a cancel made by another manager at its next heartbeat
    # (within a second); a failure before then must not put the job back in the queue.
    marker, gate = tmp_path / "started", tmp_path / "gate"
    async with manager(db, registry, concurrency=0) as desk, manager(db, registry, lease_s=30):
        job = await desk.submit(
            "fail_at_gate",
            {"marker": str(marker), "gate": str(gate)},
            retries=2,
            retry_backoff_s=0.01,
        )
        await until(marker.exists, "the job to start")
        asked = await desk.cancel(job.id)
        assert (asked.status, asked.cancel_requested) == (JobStatus.RUNNING, True)
        touch(gate)
        done = await finished(desk, job.id)
        kinds = [e.kind for e in await desk.events(job.id)]
    assert done.status in {JobStatus.CANCELLED, JobStatus.FAILED}, done
    assert (done.attempts, done.retried) == (1, 0), kinds
    assert "retrying" not in kinds


@pytest.mark.parametrize("retry_on", [None, "TimeoutError", "OSError"])
async def test_a_timeout_counts_as_a_timeout_error_for_retries(
    db: Path, registry: WorkloadRegistry, tmp_path: Path, retry_on: str | None
) -> None:
    async with manager(db, registry) as m:
        job = await m.submit(
            "hang",
            {"marker": str(tmp_path / "started")},
            timeout_s=0.2,
            retries=1,
            retry_on=retry_on,
            retry_backoff_s=0.01,
        )
        done = await finished(m, job.id)
        attempts = await m.attempts(job.id)
    assert (done.status, done.attempts, done.retried) == (JobStatus.FAILED, 2, 1)
    assert [a.outcome for a in attempts] == ["retrying", "failed"]
    assert all(a.error is not None and "timed out after 0.2 s" in a.error for a in attempts)


async def test_a_timeout_is_not_retried_when_retry_on_names_other_errors(
    db: Path, registry: WorkloadRegistry, tmp_path: Path
) -> None:
    async with manager(db, registry) as m:
        job = await m.submit(
            "hang",
            {"marker": str(tmp_path / "started")},
            timeout_s=0.2,
            retries=1,
            retry_on="ValueError",
        )
        done = await finished(m, job.id)
    assert (done.status, done.attempts, done.retried) == (JobStatus.FAILED, 1, 0)
    assert done.error is not None
    assert "timed out" in done.error


async def test_options_of_a_submit_override_those_of_its_workload(
    db: Path, registry: WorkloadRegistry
) -> None:
    registry.register(flaky, name="strict", retries=3, retry_on=["KeyError"], retry_backoff_s=0.01)
    async with manager(db, registry) as m:
        as_declared = await m.submit("strict", {"fail_times": 1})
        other_errors = await m.submit("strict", {"fail_times": 1}, retry_on=["TransientError"])
        fewer = await m.submit("strict", {"fail_times": 2}, retry_on="ConnectionError", retries=1)
        none = await m.submit("strict", {"fail_times": 1}, retry_on="ConnectionError", retries=0)
        done = {
            name: await finished(m, job.id)
            for name, job in [
                ("as_declared", as_declared),
                ("other_errors", other_errors),
                ("fewer", fewer),
                ("none", none),
            ]
        }
    assert (as_declared.retry.retries, as_declared.retry.on) == (3, ("KeyError",))
    assert (other_errors.retry.retries, other_errors.retry.on) == (3, ("TransientError",))
    assert (fewer.retry.retries, fewer.retry.on) == (1, ("ConnectionError",))
    assert none.retry.retries == 0
    outcomes = {name: (job.status, job.attempts) for name, job in done.items()}
    assert outcomes == {
        "as_declared": (JobStatus.FAILED, 1),
        "other_errors": (JobStatus.SUCCEEDED, 2),
        "fewer": (JobStatus.FAILED, 2),
        "none": (JobStatus.FAILED, 1),
    }


# -- delays ----------------------------------------------------------------------------

DELAY_S = 0.6


@pytest.mark.parametrize(
    "when",
    [
        lambda now: {"delay_s": DELAY_S},
        lambda now: {"run_at": now + DELAY_S},
        lambda now: {"run_at": datetime.fromtimestamp(now + DELAY_S, UTC)},
        lambda now: {
            "run_at": datetime.fromtimestamp(now + DELAY_S, timezone(timedelta(hours=-7)))
        },
    ],
    ids=["delay_s", "run_at-epoch", "run_at-utc", "run_at-other-zone"],
)
async def test_a_delayed_job_does_not_start_before_its_time(
    db: Path, registry: WorkloadRegistry, when: Callable[[float], dict[str, Any]]
) -> None:
    async with manager(db, registry) as m:
        now = time.time()
        job = await m.submit("add", {"a": 1}, **when(now))
        done = await finished(m, job.id)
        submitted = (await m.events(job.id))[0]
    assert job.run_at is not None
    assert job.run_at == pytest.approx(now + DELAY_S, abs=0.05)
    assert submitted.data["run_at"] == iso(job.run_at)
    assert done.status is JobStatus.SUCCEEDED
    assert done.started_at is not None
    assert done.started_at >= job.run_at


async def test_a_job_delayed_far_ahead_stays_queued_and_can_be_cancelled(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry) as m:
        job = await m.submit("add", {"a": 1}, delay_s=3600)
        still = await m.wait(job.id, timeout_s=10 * POLL_S)
        assert (still.status, still.attempts) == (JobStatus.QUEUED, 0)
        cancelled = await m.cancel(job.id)
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.attempts == 0


@pytest.mark.parametrize(
    ("options", "option", "words"),
    [
        ({"delay_s": -1}, "delay_s", "delay_s"),
        ({"delay_s": float("nan")}, "delay_s", "delay_s"),
        ({"delay_s": 1, "run_at": time.time() + 5}, None, "delay_s or run_at"),
        ({"run_at": datetime(2030, 1, 1)}, "run_at", "time zone"),
        ({"run_at": time.time() * 1000}, "run_at", "milliseconds"),
    ],
    ids=["negative-delay", "nan-delay", "both", "naive-datetime", "milliseconds"],
)
async def test_a_bad_delay_is_refused_naming_the_option(
    db: Path, registry: WorkloadRegistry, options: dict[str, Any], option: str | None, words: str
) -> None:
    async with manager(db, registry, concurrency=0) as m:
        with pytest.raises(JobOptionError, match=words) as caught:
            await m.submit("add", {"a": 1}, **options)
        assert set((await m.counts()).values()) == {0}
    if option is None:  # both given: either may be named
        assert caught.value.option in {"delay_s", "run_at"}
    else:
        assert caught.value.option == option


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"retries": -1}, "retries"),
        ({"retry_on": [42]}, "retry_on"),
        ({"retry_backoff_s": -1.0}, "retry_backoff_s"),
        ({"retry_max_backoff_s": float("nan")}, "retry_max_backoff_s"),
        ({"priority": 10**9}, "priority"),
    ],
    ids=["retries", "retry_on", "retry_backoff_s", "retry_max_backoff_s", "priority"],
)
async def test_a_bad_retry_or_priority_option_is_refused_naming_the_option(
    db: Path, registry: WorkloadRegistry, options: dict[str, Any], option: str
) -> None:
    async with manager(db, registry, concurrency=0) as m:
        with pytest.raises(JobOptionError) as caught:
            await m.submit("add", {"a": 1}, **options)
        assert set((await m.counts()).values()) == {0}
    assert caught.value.option == option, str(caught.value)


# -- priorities ------------------------------------------------------------------------


async def test_higher_priorities_start_first_with_one_worker_slot(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry, concurrency=0) as desk:
        jobs = {
            "low": await desk.submit("add", {"a": 1}, priority=-5),
            "high": await desk.submit("add", {"a": 2}, priority=10),
            "mid": await desk.submit("add", {"a": 3}),
        }
    async with manager(db, registry, concurrency=1) as m:
        for job in jobs.values():
            assert (await finished(m, job.id)).status is JobStatus.SUCCEEDED
        assert await started_order(m, jobs) == ["high", "mid", "low"]


async def test_jobs_of_equal_priority_start_oldest_first(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry, concurrency=0) as desk:
        jobs = {f"job{n}": await desk.submit("add", {"a": n}, priority=3) for n in range(5)}
    async with manager(db, registry, concurrency=1) as m:
        for job in jobs.values():
            await finished(m, job.id)
        assert await started_order(m, jobs) == list(jobs)


async def test_a_retried_job_keeps_its_priority(db: Path, registry: WorkloadRegistry) -> None:
    async with manager(db, registry, concurrency=0) as desk:
        jobs = {
            "older": await desk.submit("add", {"a": 1}),
            "old": await desk.submit("add", {"a": 2}),
            "urgent": await desk.submit(
                "flaky", {"fail_times": 1}, priority=5, retries=1, retry_backoff_s=0
            ),
        }
    async with manager(db, registry, concurrency=1) as m:
        for job in jobs.values():
            assert (await finished(m, job.id)).status is JobStatus.SUCCEEDED
        retried = await m.get(jobs["urgent"].id)
        assert (retried.priority, retried.retried) == (5, 1)
        assert await started_order(m, jobs) == ["urgent", "urgent", "older", "old"]


# -- idempotency -----------------------------------------------------------------------


async def test_a_submit_with_a_known_idempotency_key_returns_the_same_job(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry, concurrency=0) as m:
        first = await m.submit_detailed("add", {"a": 1}, idempotency_key="k-1")
        again = await m.submit_detailed("add", {"a": 1}, idempotency_key="k-1")
        plain = await m.submit("add", {"a": 1}, idempotency_key="k-1")
        other = await m.submit_detailed("add", {"a": 1}, idempotency_key="k-2")
        counts = await m.counts()
    assert (first.created, again.created, other.created) == (True, False, True)
    assert again.job.id == plain.id == first.job.id != other.job.id
    assert first.job.idempotency_key == "k-1"
    assert counts[JobStatus.QUEUED] == 2


@pytest.mark.parametrize(
    ("workload", "data"),
    [("add", {"a": 2}), ("flaky", {"fail_times": 0})],
    ids=["input", "workload"],
)
async def test_an_idempotency_key_reused_for_another_job_is_a_conflict(
    db: Path, registry: WorkloadRegistry, workload: str, data: dict[str, Any]
) -> None:
    async with manager(db, registry, concurrency=0) as m:
        first = await m.submit("add", {"a": 1}, idempotency_key="k")
        with pytest.raises(JobConflictError, match="'k'") as caught:
            await m.submit(workload, data, idempotency_key="k")
        counts = await m.counts()
    assert caught.value.job is not None
    assert caught.value.job.id == first.id
    assert counts[JobStatus.QUEUED] == 1


async def test_an_idempotency_key_is_forgotten_when_its_job_is_pruned(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry) as m:
        first = await m.submit("add", {"a": 1}, idempotency_key="k")
        await finished(m, first.id)
        await until(lambda: m.store.prune(0.0), "the finished job to be pruned")
        again = await m.submit_detailed("add", {"a": 2}, idempotency_key="k")
        done = await finished(m, again.job.id)
    assert again.created
    assert again.job.id != first.id
    assert done.result == {"sum": 3}


# -- re-run and retry by request -------------------------------------------------------


async def test_a_rerun_of_a_succeeded_job_is_a_new_job_with_its_input(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry) as m:
        original = await finished(m, (await m.submit("add", {"a": 2, "b": 3})).id)
        rerun = await m.rerun(original.id)
        done = await finished(m, rerun.id)
        kept = await m.get(original.id)
    assert rerun.id != original.id
    assert (rerun.workload, rerun.input, rerun.rerun_of) == ("add", {"a": 2, "b": 3}, original.id)
    assert (done.status, done.result, done.attempts) == (JobStatus.SUCCEEDED, {"sum": 5}, 1)
    assert kept == original


async def test_a_rerun_of_a_running_job_is_a_conflict(
    db: Path, registry: WorkloadRegistry, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    async with manager(db, registry) as m:
        job = await m.submit("gated", {"gate": str(gate)})
        await until(lambda: _status_is(m, job.id, JobStatus.RUNNING), "the job to run", timeout_s=5)
        with pytest.raises(JobConflictError, match="running"):
            await m.rerun(job.id)
        gate.write_text("")
        assert (await finished(m, job.id)).status is JobStatus.SUCCEEDED
        assert (await m.list()).jobs == [await m.get(job.id)]


async def _status_is(m: JobManager, job_id: str, status: JobStatus) -> bool:
    return (await m.get(job_id)).status is status


async def test_a_retry_of_a_failed_job_runs_it_again_in_place(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry) as m:
        job = await m.submit("flaky", {"fail_times": 1})
        failed = await finished(m, job.id)
        assert (failed.status, failed.attempts) == (JobStatus.FAILED, 1)
        queued = await m.retry(job.id)
        assert (queued.id, queued.status, queued.error) == (job.id, JobStatus.QUEUED, None)
        done = await finished(m, job.id)
        attempts = await m.attempts(job.id)
        total = sum((await m.counts()).values())
    assert (done.status, done.attempts, done.result) == (JobStatus.SUCCEEDED, 2, {"attempt": 2})
    assert [a.outcome for a in attempts] == ["failed", "succeeded"]
    assert total == 1


async def test_a_retry_of_a_succeeded_job_is_a_conflict(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry) as m:
        done = await finished(m, (await m.submit("add", {"a": 1})).id)
        with pytest.raises(JobConflictError, match="succeeded"):
            await m.retry(done.id)
        assert await m.get(done.id) == done


# -- concurrency limits ----------------------------------------------------------------


async def test_a_workload_concurrency_limit_is_never_exceeded(
    db: Path, registry: WorkloadRegistry
) -> None:
    registry.register(overlap, concurrency=2)
    async with manager(db, registry, concurrency=8) as m:
        jobs = [await m.submit("overlap", {"seconds": 0.2}) for _ in range(6)]
        for job in jobs:
            assert (await finished(m, job.id)).status is JobStatus.SUCCEEDED
    assert len(spans) == 6
    assert most_at_once(spans) == 2


# -- schedules -------------------------------------------------------------------------


def tick_of(job: Job, name: str) -> float:
    """The tick a schedule fired ``job`` for, from its key ``schedule:NAME:ISO-TIME``."""
    key = job.idempotency_key
    assert key is not None
    assert key.startswith(f"schedule:{name}:"), key
    return datetime.fromisoformat(key.removeprefix(f"schedule:{name}:")).timestamp()


def assert_every_tick_once(jobs: list[Job], name: str, step_s: float) -> None:
    per_tick = Counter(tick_of(job, name) for job in jobs)
    assert set(per_tick.values()) == {1}, per_tick
    ticks = sorted(per_tick)
    gaps = [round(b - a, 3) for a, b in pairwise(ticks)]
    assert gaps == [step_s] * len(gaps), f"a tick is missing: {ticks}"
    assert len(set(ticked)) == len(ticked), "a job ran twice"


async def test_a_schedule_every_second_fires_once_per_tick(
    db: Path, registry: WorkloadRegistry
) -> None:
    registry.register(tock, schedule="* * * * * *")
    async with manager(db, registry) as m:
        await until(lambda: _at_least(m, "tock", 4), "four ticks to be fired", timeout_s=15)
    with JobStore(db) as store:
        jobs = store.list(workload="tock", limit=1000).jobs
    assert len(jobs) >= 4
    assert_every_tick_once(jobs, "tock", 1.0)


async def test_a_schedule_shared_by_two_managers_fires_once_per_tick(
    db: Path, registry: WorkloadRegistry
) -> None:
    registry.schedule("tock", "* * * * * *", name="shared")
    async with manager(db, registry) as one, manager(db, registry):
        await until(lambda: _at_least(one, "tock", 4), "four ticks to be fired", timeout_s=15)
    with JobStore(db) as store:
        jobs = store.list(workload="tock", limit=1000).jobs
    assert len(jobs) >= 4
    assert_every_tick_once(jobs, "shared", 1.0)


async def _at_least(m: JobManager, workload: str, n: int) -> bool:
    return len((await m.list(workload=workload, limit=1000)).jobs) >= n


def daily_tick_minutes_ago(minutes: float) -> tuple[str, float]:
    """A daily cron whose latest tick was about ``minutes`` ago, and that tick."""
    then = datetime.now(UTC) - timedelta(minutes=minutes)
    tick = then.replace(second=0, microsecond=0)
    return f"{tick.minute} {tick.hour} * * *", tick.timestamp()


def last_tick(store: JobStore, name: str) -> float | None:
    with store.engines.read.connect() as conn:
        st = schedules_table
        return conn.execute(select(st.c.last_tick).where(st.c.name == name)).scalar()


async def test_a_schedule_without_misfire_grace_still_fires_the_ticks_it_is_on_time_for(
    db: Path, registry: WorkloadRegistry
) -> None:
    # misfire_grace_s=0: a tick missed while no manager ran is skipped; one that
    # comes while a manager runs is on time, and fires.
    registry.schedule("tock", "* * * * * *", name="strict", misfire_grace_s=0)
    async with manager(db, registry) as m:
        await until(lambda: _at_least(m, "tock", 2), "two ticks to be fired", timeout_s=6)


@pytest.mark.parametrize(("grace_s", "fired"), [(3600.0, True), (300.0, False)])
async def test_a_missed_tick_is_fired_once_at_start_only_within_the_misfire_grace(
    db: Path, registry: WorkloadRegistry, grace_s: float, fired: bool
) -> None:
    # The daily tick of 10 minutes ago, and the three before it, passed while no
    # manager ran: within the grace they make one run, beyond it none.
    cron, tick = daily_tick_minutes_ago(10)
    with JobStore(db) as store:
        store.register_schedule("daily", "tock", cron, {}, tick - 4 * 86400)
        registry.schedule("tock", cron, name="daily", misfire_grace_s=grace_s)
        async with manager(db, registry) as m:
            await until(lambda: last_tick(store, "daily") == tick, "the missed tick to be handled")
            jobs = (await m.list(workload="tock")).jobs
            if fired:
                await finished(m, jobs[0].id)
    assert [tick_of(job, "daily") for job in jobs] == ([tick] if fired else [])
    assert len(ticked) == (1 if fired else 0)


@pytest.mark.parametrize(
    ("declare", "words"),
    [
        (lambda r: r.schedule("missing", "* * * * *"), "workload 'missing'"),
        (lambda r: r.schedule("add", "* * * * *", input={"a": "x"}), r"schedule 'add'.*\ba: "),
        (lambda r: r.schedule("add", "* * * * *", input={"a": 1, "c": 1}), r"'add'.*\bc: "),
    ],
    ids=["unknown-workload", "bad-input", "unknown-field"],
)
async def test_a_schedule_that_cannot_run_is_refused_when_the_manager_starts(
    db: Path,
    registry: WorkloadRegistry,
    declare: Callable[[WorkloadRegistry], Any],
    words: str,
) -> None:
    declare(registry)
    m = manager(db, registry)
    try:
        with pytest.raises(ValueError, match=words):
            await m.start()
    finally:
        await m.aclose()
    with JobStore(db) as store:
        assert store.list().jobs == []


def test_a_bad_cron_expression_is_refused_when_declared(registry: WorkloadRegistry) -> None:
    with pytest.raises(ValueError, match="invalid cron expression 'every minute'"):
        registry.schedule("add", "every minute")
    with pytest.raises(ValueError, match="invalid cron expression"):
        registry.register(tock, name="tock2", schedule="61 * * * *")
