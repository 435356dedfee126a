"""Resume tells the truth: a restored node never runs again, a node that was not restored
runs again with everything downstream of it, and a run is reported succeeded only if
every node really finished (issue 16).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import ambidex as ax
from ambidex.workflows import CheckpointStore

S = ax.NodeStatus
E = ax.EventKind
HERE = Path(__file__).resolve().parent
TERMINAL = {E.FINISHED, E.FAILED, E.SKIPPED, E.CANCELLED}


class Recorder:
    def __init__(self) -> None:
        self.events: list[ax.WorkflowEvent] = []

    def __call__(self, event: ax.WorkflowEvent) -> None:
        self.events.append(event)

    def of(self, node: str, kind: ax.EventKind) -> list[ax.WorkflowEvent]:
        return [e for e in self.events if e.node == node and e.kind is kind]

    def terminal(self, node: str) -> list[ax.EventKind]:
        return [e.kind for e in self.events if e.node == node and e.kind in TERMINAL]


def stored_status(db: Path, run_id: str) -> tuple[str, dict[str, str]]:
    store = CheckpointStore(db)
    try:
        stored = store.load_run(run_id)
    finally:
        store.close()
    return stored.status, stored.node_status


def diamond(tmp_path: Path, calls: list[str]) -> ax.Workflow:
    """root -> (flaky -> after, side); flaky fails under 'continue' until ``fixed`` exists."""

    async def root() -> int:
        calls.append("root")
        return 1

    async def flaky(x: int) -> int:
        calls.append("flaky")
        if not (tmp_path / "fixed").exists():
            raise RuntimeError("not fixed yet")
        return x + 1

    async def after(x: int | None) -> str:
        calls.append("after")
        await asyncio.sleep(0.05)  # still running when a run that stops early ends
        return f"after {x}"

    async def side(x: int) -> int:
        calls.append("side")
        return x * 10

    wf = ax.Workflow("diamond")
    r = wf.node("root", root)
    f = wf.node("flaky", flaky, input=r.output, on_failure="continue")
    wf.node("after", after, input=f.output)
    wf.node("side", side, input=r.output)
    return wf


def test_resume_reruns_a_continued_failure_and_its_dependants_and_never_a_restored_node(
    tmp_path: Path,
) -> None:
    calls: list[str] = []
    wf = diamond(tmp_path, calls)
    db = tmp_path / "runs.sqlite"
    first = wf.run(checkpoint=str(db), run_id="r")
    assert first.succeeded  # 'continue': the failure is recorded, the run goes on
    assert first.nodes["flaky"].status is S.FAILED
    assert first["after"] == "after None"
    assert sorted(calls) == ["after", "flaky", "root", "side"]

    (tmp_path / "fixed").touch()
    calls.clear()
    rec = Recorder()
    result = wf.run(checkpoint=str(db), resume="r", on_event=rec)

    # flaky runs again, and so does after: its stored output was made from flaky's None
    assert sorted(calls) == ["after", "flaky"]
    assert result["flaky"] == 2
    assert result["after"] == "after 2"
    # root and side are restored, never started
    for name in ("root", "side"):
        assert rec.of(name, E.STARTED) == []
        assert result.nodes[name].reason == "restored from the checkpoint"
    assert result["side"] == 10
    # every node reaches exactly one final state, and none is cancelled
    for name in ("root", "flaky", "after", "side"):
        assert rec.terminal(name) == [E.FINISHED], name
        assert result.nodes[name].status is S.SUCCEEDED, name
    assert result.succeeded
    assert stored_status(db, "r") == ("succeeded", dict.fromkeys(wf.nodes, "succeeded"))


def test_resume_reruns_a_node_whose_output_could_not_be_stored_and_its_dependants(
    tmp_path: Path,
) -> None:
    calls: list[str] = []

    async def make_lock() -> Any:
        calls.append("make_lock")
        return threading.Lock()  # cloudpickle cannot store a lock

    async def use(lock: Any) -> str:
        calls.append("use")
        await asyncio.sleep(0.05)
        return type(lock).__name__

    wf = ax.Workflow("unstorable")
    lock = wf.node("make_lock", make_lock)
    wf.node("use", use, input=lock.output)
    db = tmp_path / "runs.sqlite"
    assert wf.run(checkpoint=str(db), run_id="u")["use"] == "lock"
    _, nodes = stored_status(db, "u")
    assert nodes == {"make_lock": "failed", "use": "succeeded"}

    calls.clear()
    rec = Recorder()
    result = wf.run(checkpoint=str(db), resume="u", on_event=rec)
    assert calls == ["make_lock", "use"]
    assert result["use"] == "lock"
    assert rec.terminal("use") == [E.FINISHED]
    assert rec.of("use", E.FINISHED)[0].reason is None  # it ran: not restored
    assert result.succeeded


@pytest.mark.timeout(20)
@pytest.mark.parametrize("policy", ["fail", "continue"])
def test_a_node_cancelled_by_something_else_than_its_run_is_a_failure_not_a_hang(
    policy: str,
) -> None:
    # The node awaits a future that some other code cancels: its task ends
    # cancelled although the run never cancelled it. The run used to wait for it
    # forever; the node failed, and says so.
    async def waits() -> None:
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, fut.cancel)
        await fut

    async def then(x: Any) -> Any:
        return x

    wf = ax.Workflow("cancelled-inside")
    w = wf.node("waits", waits, on_failure=policy)
    wf.node("then", then, input=w.output)
    rec = Recorder()
    done: list[Any] = []

    def run() -> None:
        try:
            done.append(wf.run(on_event=rec))
        except ax.WorkflowError as exc:
            done.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the run hangs"
    (outcome,) = done
    if policy == "fail":
        assert isinstance(outcome, ax.WorkflowError)
        assert outcome.node == "waits"
        assert isinstance(outcome.__cause__, asyncio.CancelledError)
        result = outcome.result  # type: ignore[attr-defined]
    else:
        result = outcome
        assert result["then"] is None
    assert result.nodes["waits"].status is S.FAILED
    assert "not by its run" in (result.nodes["waits"].reason or "")
    assert rec.terminal("waits") == [E.FAILED]


def ambidex_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AMBIDEX_HOME": str(cwd / "home"), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "ambidex", "run", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )


def test_ambidex_run_resume_reruns_the_continued_failure_and_its_dependant(
    tmp_path: Path,
) -> None:
    flow = str(HERE / "resume_flow.yaml")
    db = str(tmp_path / "runs.sqlite")
    first = ambidex_run(flow, "-i", f"workdir={tmp_path}", "--db", db, "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["nodes"]["flaky"]["status"] == "failed"
    assert report["nodes"]["after"]["output"] == "after None"

    (tmp_path / "fixed").touch()
    again = ambidex_run(flow, "--resume", report["run_id"], "--db", db, "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    resumed = json.loads(again.stdout)
    assert resumed["succeeded"] is True
    assert {n: r["status"] for n, r in resumed["nodes"].items()} == {
        "flaky": "succeeded",
        "after": "succeeded",
    }
    assert resumed["nodes"]["after"]["output"] == "after fixed"
    assert (tmp_path / "calls").read_text().split() == ["flaky", "after", "flaky", "after"]


@pytest.mark.timeout(20)
def test_a_node_raising_while_it_is_cancelled_does_not_hang_the_failed_run() -> None:
    async def boom() -> None:
        await asyncio.sleep(0.05)
        raise ValueError("boom")

    async def converts() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    async def later(x: Any) -> Any:
        return x

    wf = ax.Workflow("raises-when-cancelled")
    wf.node("boom", boom)
    c = wf.node("converts", converts)
    wf.node("later", later, input=c.output)
    done: list[BaseException] = []

    def run() -> None:
        try:
            wf.run()
        except ax.WorkflowError as exc:
            done.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the run hangs"
    (err,) = done
    assert isinstance(err, ax.WorkflowError)
    assert err.node == "boom"  # the first failure ended the run; the other is its echo
    nodes = err.result.nodes  # type: ignore[attr-defined]
    assert nodes["converts"].status is S.FAILED
    assert nodes["later"].status is S.CANCELLED
