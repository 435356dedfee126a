"""Workflow jobs keep their nodes in the job store and resume from the ones that finished.

The store's rows are fenced like every other write of a worker (the worker and
the attempt it holds), deleted with their job, and made in an older database;
a workflow job given back at shutdown, or retried after a failure, runs only
the nodes that had not finished. The kill -9 tests with real worker processes
are in ``tests/server/test_workflow_durability.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update

import ambidex as ax
from ambidex.jobs import JobManager, JobStatus, JobStore, WorkloadRegistry
from ambidex.jobs._calls import StoreCalls
from ambidex.jobs._store import jobs_table
from ambidex.jobs._wfnodes import JobCheckpoints, LeaseLostError
from ambidex.workflows import NodeRun, NodeStatus

LAPSED = -1.0


def row(node: str, status: str = "succeeded", output: bytes | None = b"x") -> dict[str, Any]:
    return {
        "node": node,
        "status": status,
        "output": output,
        "error": None,
        "attempts": 1,
        "started_at": time.time(),
        "finished_at": time.time() if status != "running" else None,
    }


def nodes_of(store: JobStore, job_id: str) -> dict[str, tuple[str, str, int]]:
    return {
        n.node: (n.status, n.worker or "", n.job_attempt or 0) for n in store.workflow_nodes(job_id)
    }


# -- the store -------------------------------------------------------------------------


def test_node_rows_are_written_only_by_the_worker_holding_that_attempt(store: JobStore) -> None:
    job = store.submit("wf", {})
    store.claim("w1", lease_s=LAPSED)
    assert store.save_workflow_nodes(job.id, "w1", 1, [row("a")])
    assert not store.save_workflow_nodes(job.id, "w2", 1, [row("b")])  # not its job
    assert not store.save_workflow_nodes(job.id, "w1", 2, [row("b")])  # not its attempt
    assert nodes_of(store, job.id) == {"a": ("succeeded", "w1", 1)}

    assert store.recover_expired() == ([job.id], [])  # w1's lease lapsed: requeued
    assert not store.save_workflow_nodes(job.id, "w1", 1, [row("b")])
    (again,) = store.claim("w2", lease_s=30)
    assert again.attempts == 2
    assert store.save_workflow_nodes(job.id, "w2", 2, [row("b", "running", None)])
    # w1 comes back to life: it can overwrite nothing of the new attempt's.
    assert not store.save_workflow_nodes(job.id, "w1", 1, [row("b"), row("c")])
    assert nodes_of(store, job.id) == {
        "a": ("succeeded", "w1", 1),
        "b": ("running", "w2", 2),
    }
    assert store.workflow_node_outputs(job.id) == [("a", "succeeded", b"x")]
    # The holder replaces a node's row (its start, then its end), and nothing once it ended.
    assert store.save_workflow_nodes(job.id, "w2", 2, [row("b", output=b"y")])
    assert sorted(store.workflow_node_outputs(job.id)) == [
        ("a", "succeeded", b"x"),
        ("b", "succeeded", b"y"),
    ]
    assert store.finish(job.id, "w2", 2, JobStatus.SUCCEEDED, result=None)
    assert not store.save_workflow_nodes(job.id, "w2", 2, [row("c")])


def test_prune_deletes_the_nodes_of_a_job_with_it(store: JobStore) -> None:
    old, kept = store.submit_many("wf", [{}, {}])
    store.claim("w1", lease_s=30, limit=2)
    for job in (old, kept):
        assert store.save_workflow_nodes(job.id, "w1", 1, [row("a")])
        assert store.finish(job.id, "w1", 1, JobStatus.SUCCEEDED, result=None)
    with store.engines.write.begin() as conn:
        conn.execute(
            update(jobs_table)
            .where(jobs_table.c.id == old.id)
            .values(finished_at=jobs_table.c.finished_at - 3600)
        )
    assert store.prune(older_than_s=60) == 1
    assert store.workflow_nodes(old.id) == []
    assert [n.node for n in store.workflow_nodes(kept.id)] == ["a"]


def test_a_database_made_before_the_nodes_table_gets_it(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite"
    with JobStore(db) as store:
        job = store.submit("wf", {})
        with store.engines.write.begin() as conn:
            conn.execute(text("DROP TABLE ambidex_workflow_nodes"))
    with JobStore(db) as store:  # upgraded in place
        store.claim("w1", lease_s=30)
        assert store.save_workflow_nodes(job.id, "w1", 1, [row("a")])
        assert [n.node for n in store.workflow_nodes(job.id)] == ["a"]


async def test_a_checkpoint_of_a_lost_attempt_raises(sqlite_store: JobStore) -> None:
    job = sqlite_store.submit("wf", {})
    sqlite_store.claim("w1", lease_s=30)
    calls = StoreCalls()
    mine = JobCheckpoints(sqlite_store, calls, job.id, "w1", 1, "wf")
    lost = JobCheckpoints(sqlite_store, calls, job.id, "w1", 0, "wf")
    done = NodeRun("a", status=NodeStatus.SUCCEEDED, output={"n": 1}, attempts=1)
    await mine.asave_node(job.id, done)
    with pytest.raises(LeaseLostError, match="no longer holds attempt 0"):
        await lost.asave_node(job.id, NodeRun("b", status=NodeStatus.SUCCEEDED, output=2))
    stored = await mine.aload_run(job.id)
    assert stored.outputs == {"a": {"n": 1}}
    assert stored.workflow == "wf"


# -- workflow jobs ---------------------------------------------------------------------

ran: Counter[str] = Counter()
keys: dict[str, set[str]] = {}
gate = asyncio.Event()


def _record(name: str) -> None:
    ran[name] += 1
    keys.setdefault(name, set()).add(ax.workflows.current_node_key())


async def step_a(x: int) -> int:
    _record("a")
    return x + 1


def step_b(x: int) -> int:  # on an I/O thread
    _record("b")
    return x * 10


async def step_c(a: int, b: int) -> int:
    _record("c")
    await gate.wait()
    return a + b


async def step_d(c: int) -> dict[str, int]:
    _record("d")
    return {"total": c}


def diamond() -> ax.Workflow:
    wf = ax.Workflow("diamond", inputs={"x": int})
    a = wf.node("a", step_a, input={"x": wf.inputs.x})
    b = wf.node("b", step_b, input={"x": wf.inputs.x})
    c = wf.node("c", step_c, input={"a": a.output, "b": b.output})
    wf.node("d", step_d, input={"c": c.output})
    return wf


@pytest.fixture
def registry() -> WorkloadRegistry:
    ran.clear()
    keys.clear()
    gate.clear()
    reg = WorkloadRegistry()
    reg.register_workflow(diamond())
    return reg


async def until(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_workflow_job_checkpoints_its_nodes_and_they_read_their_key(
    tmp_path: Path, registry: WorkloadRegistry
) -> None:
    gate.set()
    async with JobManager(tmp_path / "jobs.sqlite", registry=registry, lease_s=5) as m:
        job = await m.submit("diamond", {"x": 2})
        done = await m.wait(job.id, timeout_s=10)
        assert done.status is JobStatus.SUCCEEDED, done.error
        assert done.result["nodes"]["d"]["output"] == {"total": 23}
        nodes = await m.workflow_nodes(job.id)
    assert [n.node for n in nodes[:2]] in (["a", "b"], ["b", "a"])
    assert [(n.node, n.status, n.after) for n in nodes[2:]] == [
        ("c", "succeeded", ["a", "b"]),
        ("d", "succeeded", ["c"]),
    ]
    for n in nodes:
        assert (n.status, n.attempts, n.job_attempt) == ("succeeded", 1, 1)
        assert n.duration_s is not None
    assert dict(ran) == dict.fromkeys("abcd", 1)
    assert keys == {name: {f"{job.id}:{name}"} for name in "abcd"}


async def test_a_workflow_job_given_back_at_shutdown_resumes_from_its_finished_nodes(
    tmp_path: Path, registry: WorkloadRegistry
) -> None:
    db = tmp_path / "jobs.sqlite"
    async with JobManager(db, registry=registry, lease_s=5) as first:
        job = await first.submit("diamond", {"x": 2})
        await until(lambda: ran["c"] == 1)
        nodes = {n.node: n.status for n in await first.workflow_nodes(job.id)}
        assert nodes == {"a": "succeeded", "b": "succeeded", "c": "running", "d": "pending"}
    # Shut down with c running: the job went back to the queue.
    with JobStore(db) as store:
        back = store.get(job.id)
        assert back is not None
        assert back.status is JobStatus.QUEUED
        assert {n.node: n.status for n in store.workflow_nodes(job.id)} == {
            "a": "succeeded",
            "b": "succeeded",
            "c": "running",
        }
    gate.set()
    async with JobManager(db, registry=registry, lease_s=5) as second:
        done = await second.wait(job.id, timeout_s=10)
        assert done.status is JobStatus.SUCCEEDED, done.error
        nodes = {n.node: n for n in await second.workflow_nodes(job.id)}
    assert dict(ran) == {"a": 1, "b": 1, "c": 2, "d": 1}  # a and b were not run again
    assert done.result["nodes"]["d"]["output"] == {"total": 23}
    assert done.result["nodes"]["a"]["reason"] == "restored from the checkpoint"
    assert nodes["a"].worker != nodes["c"].worker  # a was done by the first manager's worker
    assert keys["c"] == {f"{job.id}:c"}  # the same key on both attempts


async def test_a_workflow_job_retried_after_a_failure_runs_only_what_failed(
    tmp_path: Path,
) -> None:
    calls: Counter[str] = Counter()

    async def first(x: int) -> int:
        calls["first"] += 1
        return x

    async def fragile(x: int) -> int:
        calls["fragile"] += 1
        if calls["fragile"] == 1:
            raise ConnectionError("flaky")
        return x * 2

    wf = ax.Workflow("fragile", inputs={"x": int})
    f = wf.node("first", first, input={"x": wf.inputs.x})
    wf.node("fragile", fragile, input={"x": f.output})
    reg = WorkloadRegistry()
    reg.register_workflow(wf, retries=1, retry_backoff_s=0.01)
    async with JobManager(tmp_path / "jobs.sqlite", registry=reg, lease_s=5) as m:
        job = await m.submit("fragile", {"x": 21})
        done = await m.wait(job.id, timeout_s=10)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.attempts == 2
    assert done.result["nodes"]["fragile"]["output"] == 42
    assert dict(calls) == {"first": 1, "fragile": 2}


async def test_a_committed_node_downstream_of_a_continued_failure_runs_again_with_it(
    tmp_path: Path,
) -> None:
    calls: Counter[str] = Counter()

    async def lookup() -> int:
        calls["lookup"] += 1
        if calls["lookup"] == 1:
            raise ConnectionError("flaky lookup")  # continued: notify gets None
        return 1

    async def notify(value: int | None) -> str:
        calls["notify"] += 1  # an outside effect: an email sent
        return f"sent {value}"

    async def last() -> int:
        calls["last"] += 1
        if calls["last"] == 1:
            raise RuntimeError("fails the first attempt of the job")
        return 0

    wf = ax.Workflow("continued")
    found = wf.node("lookup", lookup, on_failure="continue")
    sent = wf.node("notify", notify, input={"value": found.output})
    wf.node("last", last, after=[sent.name])
    reg = WorkloadRegistry()
    reg.register_workflow(wf, retries=1, retry_backoff_s=0.01)
    async with JobManager(tmp_path / "jobs.sqlite", registry=reg, lease_s=5) as m:
        job = await m.submit("continued", {})
        done = await m.wait(job.id, timeout_s=10)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.attempts == 2
    # The documented exception to "never again once committed": notify's stored output
    # was made from lookup's failure (None); lookup runs again on the retry, and so
    # does everything downstream of it, with the same idempotency key.
    assert calls == {"lookup": 2, "notify": 2, "last": 2}
    assert done.result["nodes"]["notify"]["output"] == "sent 1"
