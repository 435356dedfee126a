"""Batch submits in the Python API: all of a batch stored in one transaction, or none of it.

``JobStore.submit_all`` on both engines (a refused job leaves no job and no
event row behind; idempotency keys act as in submits one after another), and
``JobDesk.submit_batch`` / ``JobManager.submit_batch``: each job checked as
``submit`` checks it, every refused one named by its index.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from ambidex.jobs import (
    MAX_BATCH_JOBS,
    JobBatchError,
    JobConflictError,
    JobDesk,
    JobInputError,
    JobManager,
    JobOptionError,
    JobStatus,
    JobStore,
    UnknownWorkloadError,
)
from ambidex.jobs._store import BatchRefused, IdempotencyConflict, NewJob


def _stored(store: JobStore) -> int:
    return sum(store.counts().values())


def _event_rows(store: JobStore, job_ids: list[str]) -> int:
    return sum(len(store.events(j)) for j in job_ids)


def test_submit_all_stores_every_job_with_its_submitted_event(store: JobStore) -> None:
    answers = store.submit_all([NewJob("echo", {"value": i}, priority=i) for i in range(50)])
    assert [a.created for a in answers] == [True] * 50
    assert [a.job.input for a in answers] == [{"value": i} for i in range(50)]
    for answer in answers[:3]:
        job = store.get(answer.job.id)
        assert job is not None
        assert job.status is JobStatus.QUEUED
        assert job.priority == answer.job.priority
        assert [e.kind for e in store.events(answer.job.id)] == ["submitted"]
    assert _stored(store) == 50


def test_submit_all_with_one_unstorable_input_stores_nothing_and_names_it(store: JobStore) -> None:
    batch = [NewJob("echo", {"value": i}) for i in range(5)]
    batch[3] = NewJob("echo", {"value": float("nan")})
    with pytest.raises(BatchRefused) as refused:
        store.submit_all(batch)
    assert [i for i, _ in refused.value.failures] == [3]
    assert "not storable JSON" in str(refused.value.failures[0][1])
    assert _stored(store) == 0


def test_submit_all_with_a_key_conflict_rolls_back_the_jobs_already_inserted(
    store: JobStore,
) -> None:
    kept = store.submit("echo", {"value": "first"}, idempotency_key="taken")
    batch = [
        NewJob("echo", {"value": 1}),
        NewJob("echo", {"value": 2}, idempotency_key="fresh"),
        NewJob("echo", {"value": "other"}, idempotency_key="taken"),
    ]
    with pytest.raises(BatchRefused) as refused:
        store.submit_all(batch)
    ((index, error),) = refused.value.failures
    assert index == 2
    assert isinstance(error, IdempotencyConflict)
    assert error.job.id == kept.id
    assert error.earlier is None
    # the plain job and the keyed one went in before the conflict was known: rolled back
    assert _stored(store) == 1
    assert store.submit("echo", {"value": 2}, idempotency_key="fresh").id != kept.id
    assert _stored(store) == 2


def test_a_key_twice_in_one_batch_acts_as_two_submits_one_after_the_other(
    store: JobStore,
) -> None:
    same = [
        NewJob("echo", {"v": 1}, idempotency_key="k"),
        NewJob("echo", {"v": 1}, idempotency_key="k"),
    ]
    first, again = store.submit_all(same)
    assert first.created
    assert not again.created
    assert again.job.id == first.job.id
    assert _event_rows(store, [first.job.id]) == 1
    # the same batch again: every job answered by its key, nothing stored
    replay = store.submit_all(same)
    assert [a.created for a in replay] == [False, False]
    assert {a.job.id for a in replay} == {first.job.id}
    assert _stored(store) == 1
    # one key, two inputs in one batch: refused, naming the earlier job of the batch
    clash = [
        NewJob("echo", {"v": 1}, idempotency_key="new"),
        NewJob("echo", {"v": 2}, idempotency_key="new"),
    ]
    with pytest.raises(BatchRefused) as refused:
        store.submit_all(clash)
    ((index, error),) = refused.value.failures
    assert index == 1
    assert isinstance(error, IdempotencyConflict)
    assert error.earlier == 0
    assert "job 0 of the batch" in str(error)
    assert _stored(store) == 1


def _desk(store: JobStore) -> JobDesk:
    return JobDesk(store, poll_s=0.05)


async def test_a_desk_batch_with_bad_jobs_names_each_by_index_and_stores_nothing(
    store: JobStore,
) -> None:
    batch: list[dict[str, object]] = [{"workload": "echo", "input": {"value": i}} for i in range(6)]
    batch[1] = {"workload": "sleep", "input": {"seconds": "soon"}}
    batch[2] = {"workload": "no-such-workload"}
    batch[4] = {"workload": "echo", "priority": 10**9}
    batch[5] = {"workload": "echo", "input": {"value": 1}, "colour": "red"}
    async with _desk(store) as desk:
        with pytest.raises(JobBatchError) as refused:
            await desk.submit_batch(batch)
    failures = dict(refused.value.failures)
    assert sorted(failures) == [1, 2, 4, 5]
    assert refused.value.index == 1
    assert isinstance(failures[1], JobInputError)
    assert failures[1].errors[0]["loc"] == ["seconds"]
    assert isinstance(failures[2], UnknownWorkloadError)
    assert isinstance(failures[4], JobOptionError)
    assert failures[4].option == "priority"
    assert isinstance(failures[5], JobOptionError)
    assert failures[5].option == "colour"
    assert "job 1:" in str(refused.value)
    copy = pickle.loads(pickle.dumps(refused.value))  # crosses process boundaries whole
    assert [(i, type(e), str(e)) for i, e in copy.failures] == [
        (i, type(e), str(e)) for i, e in refused.value.failures
    ]
    assert _stored(store) == 0


async def test_a_desk_batch_refuses_nan_in_one_input_before_the_store(store: JobStore) -> None:
    batch = [{"workload": "echo", "input": {"value": [1, {"x": float("nan")}]}}]
    async with _desk(store) as desk:
        with pytest.raises(JobBatchError) as refused:
            await desk.submit_batch([{"workload": "echo"}, *batch])
    ((index, error),) = refused.value.failures
    assert index == 1
    assert isinstance(error, JobInputError)
    assert error.errors[0]["loc"][:2] == ["value", 1]
    assert _stored(store) == 0


async def test_a_desk_batch_conflict_is_a_job_conflict_error_at_its_index(
    store: JobStore,
) -> None:
    async with _desk(store) as desk:
        first = await desk.submit("echo", {"value": 1}, idempotency_key="k")
        with pytest.raises(JobBatchError) as refused:
            await desk.submit_batch(
                [{"workload": "echo"}, {"workload": "echo", "idempotency_key": "k"}]
            )
        ((index, error),) = refused.value.failures
        assert index == 1
        assert isinstance(error, JobConflictError)
        assert error.job is not None
        assert error.job.id == first.id
        same = await desk.submit_batch(
            [{"workload": "echo", "input": {"value": 1}, "idempotency_key": "k"}]
        )
        assert [(s.job.id, s.created) for s in same] == [(first.id, False)]
    assert _stored(store) == 1


async def test_a_desk_batch_of_more_than_the_maximum_is_refused_whole(store: JobStore) -> None:
    async with _desk(store) as desk:
        with pytest.raises(ValueError, match="at most 1000 jobs"):
            await desk.submit_batch([{"workload": "echo"}] * (MAX_BATCH_JOBS + 1))
        with pytest.raises(TypeError):
            await desk.submit_batch({"workload": "echo"})  # type: ignore[arg-type]
        assert await desk.submit_batch([]) == []
    assert _stored(store) == 0


async def test_a_manager_batch_runs_every_job_with_its_options(tmp_path: Path) -> None:
    async with JobManager(tmp_path / "jobs.sqlite", concurrency=4) as jm:
        submitted = await jm.submit_batch(
            [
                {"workload": "echo", "input": {"value": i}, "max_attempts": 1 + i % 3}
                for i in range(20)
            ]
        )
        assert [s.job.max_attempts for s in submitted] == [1 + i % 3 for i in range(20)]
        done = [await jm.wait(s.job.id, timeout_s=20) for s in submitted]
    assert [j.status for j in done] == [JobStatus.SUCCEEDED] * 20
    assert [j.result for j in done] == list(range(20))
