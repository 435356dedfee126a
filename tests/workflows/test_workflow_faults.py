"""Faults around the nodes: a listener that raises, an agent shared by concurrent runs,
a blocking node that outlives its cancellation (issue 16).

A run that hangs must fail the test quickly: runs go through ``run_within``,
which gives up after a few seconds instead of pytest-timeout's minute.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import ambidex as ax
from _waiting import run_within
from ambidex.workflows import CheckpointStore

S = ax.NodeStatus
E = ax.EventKind
TERMINAL = {E.FINISHED, E.FAILED, E.SKIPPED, E.CANCELLED}


class Recorder:
    def __init__(self) -> None:
        self.events: list[ax.WorkflowEvent] = []

    def __call__(self, event: ax.WorkflowEvent) -> None:
        self.events.append(event)

    def of(self, node: str | None, kind: ax.EventKind) -> list[ax.WorkflowEvent]:
        return [e for e in self.events if e.node == node and e.kind is kind]

    def terminal(self, node: str) -> list[ax.EventKind]:
        return [e.kind for e in self.events if e.node == node and e.kind in TERMINAL]


# -- a listener that raises ------------------------------------------------------------


class BrokenListener(Recorder):
    """Records every event and raises on the first one of ``kind`` (for ``node``)."""

    def __init__(self, kind: ax.EventKind, node: str | None) -> None:
        super().__init__()
        self.kind = kind
        self.node = node
        self.raised = False

    def __call__(self, event: ax.WorkflowEvent) -> None:
        super().__call__(event)
        if not self.raised and event.kind is self.kind and event.node == self.node:
            self.raised = True
            raise ValueError("the listener broke")


async def first() -> int:
    return 1


async def second(x: int) -> int:
    await asyncio.sleep(0.01)
    return x + 1


async def slow() -> str:
    await asyncio.sleep(0.3)  # still running when the listener breaks early on
    return "slow"


def chain_and_slow() -> ax.Workflow:
    wf = ax.Workflow("listened")
    a = wf.node("a", first)
    wf.node("b", second, input=a.output)
    wf.node("slow", slow)
    return wf


@pytest.mark.parametrize(
    ("kind", "node"),
    [
        (E.RUN_STARTED, None),  # the first event
        (E.QUEUED, "a"),
        (E.STARTED, "a"),
        (E.FINISHED, "a"),  # a node finished
        (E.FINISHED, "slow"),  # the last node finished
        (E.RUN_FINISHED, None),  # the run finished
    ],
    ids=["run_started", "queued", "started", "finished-a", "finished-last", "run_finished"],
)
def test_a_listener_that_raises_fails_the_run_naming_its_error(
    kind: ax.EventKind, node: str | None
) -> None:
    listener = BrokenListener(kind, node)
    wf = chain_and_slow()
    err = run_within(10, lambda: wf.run(on_event=listener))

    assert isinstance(err, ax.WorkflowError), err
    assert listener.raised
    where = f"the {kind.value!r} event" + (f" of node {node!r}" if node else "")
    assert str(err) == (
        f"workflow 'listened' failed: its on_event listener raised "
        f"ValueError: the listener broke, given {where}"
    )
    assert isinstance(err.__cause__, ValueError)
    assert err.node is None
    result = err.result  # type: ignore[attr-defined]
    assert result.succeeded is False
    # the run stays coherent: every node reached exactly one final state, reported once
    for name, run in result.nodes.items():
        assert run.status in (S.SUCCEEDED, S.CANCELLED), (name, run.status)
        expected = E.FINISHED if run.status is S.SUCCEEDED else E.CANCELLED
        assert listener.terminal(name) == [expected], name
    # the listener still heard how the run ended
    (finished,) = listener.of(None, E.RUN_FINISHED)
    assert listener.events[-1] is finished
    if kind is E.RUN_FINISHED:
        assert all(run.status is S.SUCCEEDED for run in result.nodes.values())
    else:
        assert "on_event listener raised" in (finished.error or "")
    if kind in (E.RUN_STARTED, E.QUEUED, E.STARTED):  # before a could do anything
        assert result.nodes["a"].status is S.CANCELLED
        assert listener.of("a", E.STARTED) == [] or kind is E.STARTED


async def test_a_listener_that_raises_fails_the_run_from_async_code_too() -> None:
    listener = BrokenListener(E.FINISHED, "a")
    with pytest.raises(ax.WorkflowError, match="on_event listener raised") as info:
        await asyncio.wait_for(chain_and_slow().arun(on_event=listener), 10)
    assert info.value.result.nodes["slow"].status is S.CANCELLED  # type: ignore[attr-defined]


def test_a_run_failed_by_its_listener_is_stored_failed_and_resumes(tmp_path: Path) -> None:
    db = str(tmp_path / "runs.sqlite")
    wf = chain_and_slow()
    listener = BrokenListener(E.FINISHED, "a")
    err = run_within(10, lambda: wf.run(on_event=listener, checkpoint=db, run_id="l"))
    assert isinstance(err, ax.WorkflowError)
    store = CheckpointStore(db)
    try:
        stored = store.load_run("l")
    finally:
        store.close()
    assert stored.status == "failed"
    assert stored.node_status["a"] == "succeeded"  # what finished is kept

    rec = Recorder()
    result = run_within(10, lambda: wf.run(on_event=rec, checkpoint=db, resume="l"))
    assert result.succeeded
    assert rec.of("a", E.STARTED) == []  # restored
    assert (result["b"], result["slow"]) == (2, "slow")


def test_a_listener_that_raises_on_run_finished_marks_the_stored_run_failed(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "runs.sqlite")
    listener = BrokenListener(E.RUN_FINISHED, None)
    err = run_within(10, lambda: chain_and_slow().run(on_event=listener, checkpoint=db))
    assert isinstance(err, ax.WorkflowError)
    store = CheckpointStore(db)
    try:
        (row,) = store.runs()
    finally:
        store.close()
    assert row.status == "failed"
    assert row.error is not None
    assert "on_event listener raised" in row.error


def test_a_node_failure_stays_the_reason_when_the_listener_also_raises() -> None:
    async def boom() -> None:
        raise KeyError("boom")

    wf = ax.Workflow("both")
    wf.node("boom", boom)
    listener = BrokenListener(E.FAILED, "boom")
    err = run_within(10, lambda: wf.run(on_event=listener))
    assert isinstance(err, ax.WorkflowError)
    assert err.node == "boom"
    assert isinstance(err.__cause__, KeyError)
    assert any("on_event listener" in note for note in err.__notes__)


def test_a_node_failing_as_the_listener_stops_the_run_does_not_take_over_its_error() -> None:
    async def converts() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    wf = ax.Workflow("echo")
    wf.node("a", first)
    wf.node("converts", converts)
    listener = BrokenListener(E.FINISHED, "a")
    err = run_within(10, lambda: wf.run(on_event=listener))
    assert isinstance(err, ax.WorkflowError)
    assert err.node is None
    assert "on_event listener raised" in str(err)
    assert err.result.nodes["converts"].status is S.FAILED  # type: ignore[attr-defined]


# -- one agent instance, two runs at once ----------------------------------------------


class FragileAgent(ax.Agent[float, float]):
    """Sleeps ``input`` seconds; fails if it is not set up, before or after the sleep."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.ready = False

    async def setup(self) -> None:
        self.log.append("setup")
        await asyncio.sleep(0.01)  # a real setup takes a moment: runs overlap in it
        self.ready = True

    async def run(self, input: float) -> float:
        if not self.ready:
            raise RuntimeError("run before setup or after teardown")
        await asyncio.sleep(input)
        if not self.ready:
            raise RuntimeError("torn down while running")
        return input

    async def teardown(self) -> None:
        self.log.append("teardown")
        self.ready = False


async def test_an_agent_shared_by_overlapping_runs_stays_set_up_until_the_last_ends() -> None:
    agent = FragileAgent()
    short = ax.Workflow("short")
    short.node("quick", agent, input=0.01)
    long = ax.Workflow("long")
    first_call = long.node("first", agent, input=0.01)
    long.node("second", agent, input=0.3, after=[first_call.name])  # runs on after 'short' ends
    ended: list[str] = []

    async def run(wf: ax.Workflow) -> ax.WorkflowResult:
        result = await wf.arun()
        ended.append(wf.name)
        assert agent.log == ["setup"] or wf.name == "long", agent.log  # not torn down yet
        return result

    r_short, r_long = await asyncio.wait_for(asyncio.gather(run(short), run(long)), 10)
    assert ended == ["short", "long"]
    assert r_short.succeeded
    assert r_long.succeeded
    assert r_long["second"] == 0.3
    assert agent.log == ["setup", "teardown"]  # once, after the last run
    assert not agent.is_set_up


def test_an_agent_shared_by_overlapping_runs_from_threads_is_torn_down_once() -> None:
    agent = FragileAgent()
    wfs = []
    for i in range(4):
        wf = ax.Workflow(f"w{i}")
        wf.node("call", agent, input=0.05 * (i + 1))
        wfs.append(wf)
    results: list[Any] = [None] * len(wfs)

    def go(i: int) -> None:
        results[i] = run_within(10, wfs[i].run)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(wfs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert all(isinstance(r, ax.WorkflowResult) and r.succeeded for r in results), results
    assert agent.log == ["setup", "teardown"]


async def test_an_agent_the_caller_set_up_is_left_set_up() -> None:
    agent = FragileAgent()
    wf = ax.Workflow("borrowed")
    wf.node("call", agent, input=0.01)
    async with agent:
        await asyncio.gather(wf.arun(), wf.arun())
        assert agent.log == ["setup"]
        assert agent.is_set_up
    assert agent.log == ["setup", "teardown"]


# -- a blocking node that outlives its cancellation -------------------------------------


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_a_blocking_node_whose_thread_finishes_before_the_run_ends_is_kept_not_run_again(
    tmp_path: Path,
) -> None:
    # 'write' runs on an I/O thread when 'boom' fails. The thread cannot be
    # stopped; it finishes while 'lingers' is still cleaning up, before the run
    # ends: the run records 'write' as finished (once) and stores it, so a
    # resume does not write again.
    side = tmp_path / "side"
    started = threading.Event()
    wrote = threading.Event()

    def write() -> str:
        started.set()
        time.sleep(0.1)  # still running when boom fails
        with open(side, "a") as f:
            f.write("wrote\n")
        wrote.set()
        return "written"

    async def boom() -> None:
        if (tmp_path / "fixed").exists():
            return
        while not started.is_set():
            await asyncio.sleep(0.005)
        raise ValueError("boom")

    async def lingers() -> None:
        if (tmp_path / "fixed").exists():
            return
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            # An orderly cleanup, which the run waits for; it outlasts write's thread.
            for _ in range(500):
                if wrote.is_set():
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # time for write's outcome to reach the loop
            raise

    async def after(x: str) -> str:
        return x.upper()

    wf = ax.Workflow("late")
    w = wf.node("write", write)
    wf.node("boom", boom)
    wf.node("lingers", lingers, on_failure="continue")
    wf.node("after", after, input=w.output)
    db = str(tmp_path / "runs.sqlite")
    rec = Recorder()
    err = run_within(10, lambda: wf.run(on_event=rec, checkpoint=db, run_id="late"))

    assert isinstance(err, ax.WorkflowError)
    assert err.node == "boom"
    nodes = err.result.nodes  # type: ignore[attr-defined]
    assert nodes["write"].status is S.SUCCEEDED
    assert nodes["write"].output == "written"
    assert "after the run stopped" in (nodes["write"].reason or "")
    assert rec.terminal("write") == [E.FINISHED]  # reported once, never as cancelled
    assert nodes["after"].status is S.CANCELLED  # nothing new starts in a stopped run
    assert lines(side) == ["wrote"]
    store = CheckpointStore(db)
    try:
        assert store.load_run("late").node_status["write"] == "succeeded"
    finally:
        store.close()

    (tmp_path / "fixed").touch()
    resumed = run_within(10, lambda: wf.run(checkpoint=db, resume="late"))
    assert resumed["after"] == "WRITTEN"
    assert lines(side) == ["wrote"]  # not run again


def test_a_blocking_node_still_running_when_the_run_ends_is_cancelled_and_its_result_dropped(
    tmp_path: Path,
) -> None:
    side = tmp_path / "side"
    started = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    def write() -> str:
        started.set()
        release.wait(10)
        with open(side, "a") as f:
            f.write("wrote\n")
        finished.set()
        return "written"

    async def boom() -> None:
        while not started.is_set():
            await asyncio.sleep(0.005)
        raise ValueError("boom")

    wf = ax.Workflow("dropped")
    wf.node("write", write)
    wf.node("boom", boom)
    db = str(tmp_path / "runs.sqlite")
    rec = Recorder()
    err = run_within(10, lambda: wf.run(on_event=rec, checkpoint=db, run_id="d"))
    assert isinstance(err, ax.WorkflowError)
    run = err.result.nodes["write"]  # type: ignore[attr-defined]
    assert run.status is S.CANCELLED
    assert "cannot be interrupted" in (run.reason or "")
    seen = len(rec.events)

    release.set()  # the thread finishes its work after the run ended
    assert finished.wait(10)
    time.sleep(0.1)  # time for a late result to reach the loop, if anything sent it
    assert len(rec.events) == seen  # nothing more is reported
    assert rec.terminal("write") == [E.CANCELLED]
    assert lines(side) == ["wrote"]
    store = CheckpointStore(db)
    try:
        assert "write" not in store.load_run("d").node_status  # nothing stored
    finally:
        store.close()


def test_a_blocking_node_whose_call_had_not_started_never_runs(tmp_path: Path) -> None:
    side = tmp_path / "side"
    started = threading.Event()
    release = threading.Event()

    def hold() -> None:  # takes the only I/O thread
        started.set()
        release.wait(10)

    def write() -> None:  # waits for the thread when boom fails
        with open(side, "a") as f:
            f.write("wrote\n")

    async def boom() -> None:
        while not started.is_set():
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # 'write' is in the pool's queue by now
        raise ValueError("boom")

    wf = ax.Workflow("never")
    wf.node("hold", hold)
    wf.node("write", write)
    wf.node("boom", boom)
    rec = Recorder()
    # io_threads_max=1: the pool may not grow, so 'write' waits for the one thread
    # (a workflow's blocking nodes otherwise start threads beyond io_threads).
    with ax.Runtime(io_threads=1, io_threads_max=1):
        err = run_within(10, lambda: wf.run(on_event=rec))
        release.set()
        time.sleep(0.2)
    assert isinstance(err, ax.WorkflowError)
    nodes = err.result.nodes  # type: ignore[attr-defined]
    assert nodes["write"].status is S.CANCELLED
    assert rec.terminal("write") == [E.CANCELLED]
    assert not side.exists()  # its call never began, and never will


# -- a listener that raises a BaseException (review 16) ----------------------------------


class BaseExceptionListener(Recorder):
    """Raises ``exc`` on the first event of ``kind`` for ``node``."""

    def __init__(self, kind: ax.EventKind, node: str | None, exc: type[BaseException]) -> None:
        super().__init__()
        self.kind, self.node, self.exc = kind, node, exc

    def __call__(self, event: ax.WorkflowEvent) -> None:
        super().__call__(event)
        if event.kind is self.kind and event.node == self.node:
            raise self.exc("from the listener")


@pytest.mark.parametrize(
    "exc", [GeneratorExit, asyncio.CancelledError, KeyboardInterrupt, SystemExit]
)
@pytest.mark.parametrize(
    ("kind", "node"),
    [(E.RUN_STARTED, None), (E.STARTED, "a"), (E.FINISHED, "a"), (E.RUN_FINISHED, None)],
    ids=["run_started", "started-a", "finished-a", "run_finished"],
)
def test_a_listener_raising_a_base_exception_neither_hangs_the_run_nor_kills_the_runtime(
    tmp_path: Path, exc: type[BaseException], kind: ax.EventKind, node: str | None
) -> None:
    """Before: GeneratorExit or CancelledError from a listener given a node's "finished"
    event (a done-callback) left the run waiting forever; KeyboardInterrupt or SystemExit
    given "started" stopped the runtime's event loop thread, the caller got a bare
    CancelledError and the stored run stayed "running" for good."""
    db = str(tmp_path / "runs.sqlite")
    listener = BaseExceptionListener(kind, node, exc)
    err = run_within(10, lambda: chain_and_slow().run(on_event=listener, checkpoint=db, run_id="l"))
    if exc in (KeyboardInterrupt, SystemExit):
        assert type(err) is exc  # the listener's own, to the caller, once the run stopped
    else:
        assert isinstance(err, ax.WorkflowError), err
        assert f"on_event listener raised {exc.__name__}" in str(err)
    store = CheckpointStore(db)
    try:
        record = store.run_record("l")
    finally:
        store.close()
    assert record is not None
    assert record.status == ("cancelled" if exc is KeyboardInterrupt else "failed")
    # the runtime still runs workflows afterwards
    assert run_within(10, lambda: chain_and_slow().run()).succeeded


# -- node names no checkpoint can store (review 16) ---------------------------------------


@pytest.mark.parametrize("name", ["a\x00b", "a\udcffb"], ids=["nul", "lone-surrogate"])
def test_a_node_name_no_checkpoint_can_store_is_refused_at_definition(
    tmp_path: Path, name: str
) -> None:
    """Before: the workflow was accepted, then every checkpointed run failed at the node's
    first write, blamed on the node ("node 'a\\x00b' raised DataError: PostgreSQL text
    fields cannot contain NUL" on every attempt of a workflow job on PostgreSQL;
    "raised UnicodeEncodeError" for a lone surrogate, on SQLite too)."""

    def ok() -> int:
        return 1

    wf = ax.Workflow("names")
    with pytest.raises(ax.WorkflowDefinitionError, match="is not a usable node name"):
        wf.node(name, ok)
    escaped = name.replace("\x00", "\\0").replace("\udcff", "\\udcff")
    (tmp_path / "w.yaml").write_text(
        f"name: names\nnodes:\n  ok:\n    function: json:dumps\n    input: {{obj: 1}}\n"
        f'  "{escaped}":\n    function: json:dumps\n    input: {{obj: 2}}\n'
    )
    with pytest.raises(ax.WorkflowDefinitionError) as info:
        ax.Workflow.from_yaml(str(tmp_path / "w.yaml"))
    assert "line 6" in str(info.value), info.value
    assert "is not a usable node name" in str(info.value)


@pytest.mark.parametrize("option", ["run_id", "resume"])
def test_a_run_id_no_checkpoint_can_store_is_a_definition_error(
    tmp_path: Path, option: str
) -> None:
    """Before: run_id="a\\udcff" with a checkpoint raised a bare UnicodeEncodeError from
    SQLite (and run_id=5 was taken, the result's run_id an int)."""

    def ok() -> int:
        return 1

    wf = ax.Workflow("ids")
    wf.node("n", ok)
    db = str(tmp_path / "runs.sqlite")
    with pytest.raises(ax.WorkflowDefinitionError, match="checkpoint can store"):
        wf.run(checkpoint=db, **{option: "a\udcff"})
    with pytest.raises(ax.WorkflowDefinitionError, match="must be text"):
        wf.run(**{option: 5})  # type: ignore[arg-type]
    assert wf.run(run_id="a\udcff").run_id == "a\udcff"  # no checkpoint: nothing to store
