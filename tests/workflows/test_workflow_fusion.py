"""Chain fusion and batching of short plain ``def`` nodes (issue 16, speed).

A chain of short plain def nodes runs many nodes per I/O thread job, and a wide
layer of them runs in batches, a thread job per batch. These tests pin what must
not change: each node's events, in order, at consistent times; its own
``current_node_key``; a stop that halts a fused job between nodes without
reporting a node that ran as cancelled-before-it-began; sleeping nodes still in
parallel; no fusion with a checkpoint.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest

import ambidex as ax
from _waiting import run_within
from ambidex.workflows import _scheduler, current_node_key

S = ax.NodeStatus
E = ax.EventKind
ORDER = [E.QUEUED, E.STARTED, E.FINISHED]


class Recorder:
    def __init__(self) -> None:
        self.events: list[ax.WorkflowEvent] = []

    def __call__(self, event: ax.WorkflowEvent) -> None:
        self.events.append(event)

    def of(self, node: str) -> list[ax.WorkflowEvent]:
        return [e for e in self.events if e.node == node]


@pytest.fixture
def thread_jobs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls handed to the I/O thread pool (one per thread job)."""
    pool = ax.current_runtime().threads
    real = pool.run
    calls: list[int] = []

    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await real(*args, **kwargs)

    monkeypatch.setattr(pool, "run", counting)
    return calls


def inc(x: int) -> int:
    return x + 1


def check_events(rec: Recorder, result: ax.WorkflowResult, names: list[str]) -> None:
    """Each node: queued, started, finished, once each and in order, at consistent times."""
    for name in names:
        events = rec.of(name)
        assert [e.kind for e in events] == ORDER, name
        queued, started, finished = events
        assert queued.elapsed_s <= started.elapsed_s <= finished.elapsed_s, name
        run = result.nodes[name]
        assert run.status is S.SUCCEEDED
        assert run.attempts == 1
        # (the ordinary path sets started_s as it creates the task, before the event)
        assert run.started_s is not None
        assert run.started_s <= started.elapsed_s
        assert run.finished_s == finished.elapsed_s
        assert finished.duration_s == pytest.approx(run.duration_s)
        assert run.duration_s is not None
        assert run.duration_s >= 0


def test_fused_chain_keeps_every_nodes_events_in_order(thread_jobs: list[int]) -> None:
    n = 300
    wf = ax.Workflow("fused")
    prev = wf.node("n0", inc, input=0)
    for i in range(1, n):
        prev = wf.node(f"n{i}", inc, input=prev.output)
    rec = Recorder()
    result = run_within(10, lambda: wf.run(on_event=rec))
    assert result[f"n{n - 1}"] == n
    names = [f"n{i}" for i in range(n)]
    check_events(rec, result, names)
    for a, b in itertools.pairwise(names):  # each starts after the one before
        assert result.nodes[b].started_s >= result.nodes[a].finished_s  # type: ignore[operator]
        # ... and is queued after it finished, in the order the listener sees them
        kinds = [(e.node, e.kind) for e in rec.events]
        assert kinds.index((a, E.FINISHED)) < kinds.index((b, E.QUEUED))
    assert len(thread_jobs) < n // 10, "the chain was not fused"


def test_fused_and_batched_nodes_see_their_own_node_key(thread_jobs: list[int]) -> None:
    def key(x: Any) -> str:
        return current_node_key() or ""

    wf = ax.Workflow("keys")
    src = wf.node("src", key, input=0)
    chain = wf.node("c0", key, input=src.output)
    for i in range(1, 20):
        chain = wf.node(f"c{i}", key, input=chain.output)
    for i in range(50):
        wf.node(f"m{i}", key, input=src.output)
    result = run_within(10, lambda: wf.run(run_id="k"))
    for name in ["src", *[f"c{i}" for i in range(20)], *[f"m{i}" for i in range(50)]]:
        assert result[name] == f"k:{name}"
    assert len(thread_jobs) < 71


def test_batched_fan_out_events_and_results(thread_jobs: list[int]) -> None:
    n = 500
    wf = ax.Workflow("fan")
    src = wf.node("src", inc, input=0)
    mids = [wf.node(f"m{i}", inc, input=src.output) for i in range(n)]
    wf.node("sink", sum, input=[m.output for m in mids])
    rec = Recorder()
    result = run_within(10, lambda: wf.run(on_event=rec))
    assert result["sink"] == 2 * n
    check_events(rec, result, ["src", *[f"m{i}" for i in range(n)], "sink"])
    src_end = result.nodes["src"].finished_s
    assert all(result.nodes[f"m{i}"].started_s >= src_end for i in range(n))
    assert len(thread_jobs) < n // 10, "the fan-out was not batched"


def test_a_failing_node_in_a_fused_chain_fails_as_usual() -> None:
    def step(x: int) -> int:
        if x == 50:
            raise ValueError("fifty")
        return x + 1

    wf = ax.Workflow("chainfail")
    prev = wf.node("n0", step, input=0)
    for i in range(1, 100):
        prev = wf.node(f"n{i}", step, input=prev.output)
    rec = Recorder()
    err = run_within(10, lambda: wf.run(on_event=rec))
    assert isinstance(err, ax.WorkflowError)
    assert "fifty" in str(err)
    nodes = err.result.nodes  # type: ignore[attr-defined]
    assert all(nodes[f"n{i}"].status is S.SUCCEEDED for i in range(50))
    assert nodes["n50"].status is S.FAILED
    assert nodes["n50"].attempts == 1
    assert [e.kind for e in rec.of("n50")] == [E.QUEUED, E.STARTED, E.FAILED]
    assert all(nodes[f"n{i}"].status is S.CANCELLED for i in range(51, 100))
    for i in range(51, 100):
        assert [e.kind for e in rec.of(f"n{i}")] == [E.CANCELLED]


def test_a_sibling_failure_halts_a_fused_chain_between_nodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The chain stops at once; a node that ran is never reported cancelled-before-start.

    Each step is short (so fused) and the sibling fails while the chain
    is in the middle of a fused job: the job must stop before its next node,
    and the nodes it ran must be reported as having run.
    """
    # No time budget, and every call counts as short (a call that waited for the GIL
    # while the loop stops the run may take > 100 µs): only the halt can stop a fused
    # job before its 256 nodes.
    monkeypatch.setattr(_scheduler, "_FUSE_BUDGET_S", 60.0)
    monkeypatch.setattr(_scheduler, "_SHORT_S", 60.0)
    n = 3_000  # above the 2,000 the assertion allows: a chain that never halts fails it
    ran: list[int] = []

    def step(x: int) -> int:
        ran.append(x)
        time.sleep(0)  # lets the loop thread in (short: the chain stays fused)
        return x + 1

    async def boom() -> None:
        while len(ran) < 300:
            await asyncio.sleep(0.0005)
        raise RuntimeError("boom")

    wf = ax.Workflow("halt")
    wf.node("boom", boom)
    prev = wf.node("n0", step, input=0)
    for i in range(1, n):
        prev = wf.node(f"n{i}", step, input=prev.output)
    rec = Recorder()
    err = run_within(20, lambda: wf.run(on_event=rec))
    assert isinstance(err, ax.WorkflowError)
    assert "boom" in str(err)
    time.sleep(0.2)  # a thread that ran on has finished by now
    assert max(ran) < 2000, "the chain did not stop"
    done = set(ran)
    nodes = err.result.nodes  # type: ignore[attr-defined]
    for i in range(n):
        run, events = nodes[f"n{i}"], rec.of(f"n{i}")
        terminal = [e for e in events if e.kind in (E.FINISHED, E.FAILED, E.CANCELLED)]
        assert len(terminal) == 1, (i, events)
        if i in done:  # it ran: finished (perhaps late), or dropped when the run ended
            assert run.status is S.SUCCEEDED or (
                run.status is S.CANCELLED and "it may still finish" in (run.reason or "")
            ), (i, run)
            assert [e.kind for e in events][:2] == [E.QUEUED, E.STARTED]
        else:
            assert run.status is S.CANCELLED, (i, run)
            assert "boom" in (run.reason or ""), (i, run)


def test_sleeping_def_fan_out_still_runs_in_parallel() -> None:
    def nap(s: float) -> float:
        time.sleep(s)
        return s

    wf = ax.Workflow("naps")
    warm = wf.node("warm", nap, input=0.0)  # a short call of nap: it now looks short
    for i in range(8):
        wf.node(f"nap{i}", nap, input=0.2, after=[warm])
    t0 = time.perf_counter()
    result = run_within(10, wf.run)
    elapsed = time.perf_counter() - t0
    assert all(result[f"nap{i}"] == 0.2 for i in range(8))
    # Serially: 1.6 s. A batch stops after its first long call (the rest go in parallel):
    # 0.4 s at most, whatever the batch.
    assert elapsed < 0.8, elapsed
    starts = sorted(result.nodes[f"nap{i}"].started_s for i in range(8))
    assert starts[-1] - starts[0] < 0.35  # none waited for more than one nap


def test_no_fusion_with_a_checkpoint(tmp_path: Path, thread_jobs: list[int]) -> None:
    n = 40
    wf = ax.Workflow("ckpt")
    prev = wf.node("n0", inc, input=0)
    for i in range(1, n):
        prev = wf.node(f"n{i}", inc, input=prev.output)
    rec = Recorder()
    db = tmp_path / "runs.sqlite"
    result = run_within(20, lambda: wf.run(on_event=rec, checkpoint=db, run_id="c"))
    assert result[f"n{n - 1}"] == n
    check_events(rec, result, [f"n{i}" for i in range(n)])
    node_jobs = len(thread_jobs)
    assert node_jobs >= n, "a node ran inside another's thread job despite checkpoint="
    store = ax.workflows.CheckpointStore(db)
    try:
        assert set(store.load_run("c").node_status.values()) == {"succeeded"}
    finally:
        store.close()


def test_no_fusion_with_max_parallel(thread_jobs: list[int]) -> None:
    wf = ax.Workflow("limited")
    prev = wf.node("n0", inc, input=0)
    for i in range(1, 30):
        prev = wf.node(f"n{i}", inc, input=prev.output)
    result = run_within(10, lambda: wf.run(max_parallel=2))
    assert result["n29"] == 30
    assert len(thread_jobs) >= 30


def test_a_node_added_after_a_run_has_its_inputs_checked() -> None:
    """check_inputs keeps the inputs the nodes refer to between runs, until a node is added."""
    wf = ax.Workflow("grows")
    wf.node("a", inc, input=wf.inputs.x)
    assert run_within(10, lambda: wf.run({"x": 1}))["a"] == 2
    wf.node("b", inc, input=wf.inputs.y)
    err = run_within(10, lambda: wf.run({"x": 1}))
    assert isinstance(err, ax.WorkflowDefinitionError)
    assert "missing input 'y'" in str(err)
    assert run_within(10, lambda: wf.run({"x": 1, "y": 5}))["b"] == 6
