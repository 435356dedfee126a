"""The job tools: a throwaway store, a manager over one, drain, leases on the fake clock."""

from __future__ import annotations

import asyncio
import time
import warnings
from pathlib import Path

import pytest

import ambidex as ax
from ambidex.jobs import JobStatus, WorkloadRegistry
from ambidex.testing import FakeClock, drain, drain_sync, open_job_manager, temporary_store


def _registry(calls: list[str]) -> WorkloadRegistry:
    registry = WorkloadRegistry()

    @registry.register
    async def shout(text: str) -> str:
        calls.append(text)
        return text.upper()

    @registry.register(retries=3, retry_on=ConnectionError, retry_backoff_s=60)
    def flaky(fail_times: int) -> int:
        calls.append("flaky")
        if calls.count("flaky") <= fail_times:
            raise ConnectionError("transient")
        return calls.count("flaky")

    return registry


async def test_drain_runs_every_queued_job_to_completion_in_this_process() -> None:
    calls: list[str] = []
    async with open_job_manager(_registry(calls)) as manager:
        submitted = [await manager.submit("shout", {"text": t}) for t in ("a", "b", "c")]
        assert {(await manager.get(j.id)).status for j in submitted} == {JobStatus.QUEUED}
        jobs = await drain(manager)
        assert sorted(job.id for job in jobs) == sorted(j.id for j in submitted)
        assert {job.status for job in jobs} == {JobStatus.SUCCEEDED}
        assert sorted(job.result for job in jobs) == ["A", "B", "C"]
        assert sorted(calls) == ["a", "b", "c"]
        assert await drain(manager) == []  # nothing left


async def test_drain_runs_a_retried_job_through_its_backoff_on_the_fake_clock() -> None:
    calls: list[str] = []
    async with open_job_manager(_registry(calls)) as manager:
        job = await manager.submit("flaky", {"fail_times": 2})
        with FakeClock() as clock:
            start = time.perf_counter()
            [done] = await drain(manager)
            wall_s = time.perf_counter() - start
        attempts = await manager.attempts(job.id)
    assert done.status is JobStatus.SUCCEEDED
    assert done.result == 3
    assert len(attempts) == 3
    # Two retry waits of 30-60 s and 60-120 s (half to all of 60 s, doubling), in virtual time.
    assert 90 <= clock.elapsed_s <= 180
    assert wall_s < 10


async def test_drain_leaves_a_delayed_job_queued_on_the_real_clock() -> None:
    calls: list[str] = []
    async with open_job_manager(_registry(calls)) as manager:
        job = await manager.submit("shout", {"text": "later"}, delay_s=3600)
        assert await drain(manager) == []
        assert (await manager.get(job.id)).status is JobStatus.QUEUED
        with FakeClock() as clock:  # the clock moves to the job's start
            [done] = await drain(manager)
    assert done.status is JobStatus.SUCCEEDED
    assert clock.elapsed_s == pytest.approx(3600, abs=5)


async def test_lease_lapses_on_the_fake_clock_and_drain_runs_the_job_again() -> None:
    calls: list[str] = []
    async with open_job_manager(_registry(calls)) as manager:
        job = await manager.submit("shout", {"text": "orphan"})
        with FakeClock() as clock:
            # A worker claims the job, then dies without a word.
            [claimed] = manager.store.claim("dead-worker", lease_s=30)
            assert claimed.id == job.id
            assert manager.store.recover_expired() == ([], [])
            clock.advance(29)
            assert manager.store.recover_expired() == ([], [])  # the lease still holds
            clock.advance(2)
            [done] = await drain(manager)  # recovers the lapsed lease first
    assert done.id == job.id
    assert done.status is JobStatus.SUCCEEDED
    assert done.attempts == 2
    assert calls == ["orphan"]


async def test_drain_leaves_jobs_it_cannot_run_queued_and_moves_no_time_for_them() -> None:
    calls: list[str] = []
    async with open_job_manager(_registry(calls)) as manager:
        # Jobs of a workload this registry lacks (submitted by another service), one due
        # now, one a day from now; and one this registry runs.
        stranger = manager.store.submit("whisper", {"text": "psst"})
        later = manager.store.submit("whisper", {"text": "psst"}, run_at=time.time() + 86400)
        job = await manager.submit("shout", {"text": "here"})
        with FakeClock() as clock:
            [done] = await asyncio.wait_for(drain(manager), timeout=30)
        statuses = [(await manager.get(other.id)).status for other in (stranger, later)]
    assert done.id == job.id
    assert done.status is JobStatus.SUCCEEDED
    assert statuses == [JobStatus.QUEUED, JobStatus.QUEUED]
    assert clock.elapsed_s == 0


async def test_a_job_whose_sleeps_jump_virtual_time_past_its_lease_runs_once() -> None:
    runs: list[int] = []
    registry = WorkloadRegistry()

    @registry.register
    async def crawl(pages: int) -> int:
        runs.append(pages)
        for _ in range(pages):
            await ax.current_clock().asleep(5)  # a rate-limited call: 5 virtual s
            await asyncio.sleep(0.05)  # real work: the lease recovery runs meanwhile
        return pages

    async with open_job_manager(registry) as manager:
        job = await manager.submit("crawl", {"pages": 50})
        with FakeClock() as clock:
            # A short lease: the worker's own recovery looks every second (real time),
            # and every look falls between a jump of virtual time and the next renewal.
            [done] = await drain(manager, lease_s=2.0)
        attempts = await manager.attempts(job.id)
    assert done.status is JobStatus.SUCCEEDED, [a.error for a in attempts]
    assert len(attempts) == 1
    assert runs == [50]
    assert clock.elapsed_s == pytest.approx(250)


async def test_drain_sync_refuses_a_running_loop_and_names_the_async_drain() -> None:
    with temporary_store() as store, warnings.catch_warnings():
        warnings.simplefilter("error")  # no coroutine is made only to be dropped
        with pytest.raises(RuntimeError, match=r"await ambidex\.testing\.drain"):
            drain_sync(store)


def test_drain_sync_runs_a_store_queue_from_sync_code() -> None:
    calls: list[str] = []
    registry = _registry(calls)
    with temporary_store() as store:
        directory = Path(store.url.removeprefix("sqlite:///")).parent
        store.submit("shout", {"text": "sync"})
        [done] = drain_sync(store, registry)
        assert done.result == "SYNC"
        assert directory.is_dir()
    assert not directory.exists()  # the temporary store deletes its files


async def test_drain_refuses_a_manager_that_runs_jobs_itself() -> None:
    async with open_job_manager(concurrency=2) as manager:
        with pytest.raises(ValueError, match="concurrency=0"):
            await drain(manager)


async def test_delay_counts_from_the_fake_clock_when_submitted_under_it() -> None:
    calls: list[str] = []
    async with open_job_manager(_registry(calls)) as manager:
        with FakeClock() as clock:
            clock.advance(1000)  # far ahead of the real clock
            job = await manager.submit("shout", {"text": "soon"}, delay_s=60)
            assert job.run_at == pytest.approx(clock.time() + 60)
            [done] = await drain(manager)
    assert done.status is JobStatus.SUCCEEDED
    assert clock.elapsed_s == pytest.approx(1060)
