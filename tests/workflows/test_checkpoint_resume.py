"""Checkpoints: a run killed mid-way resumes without re-running the nodes that finished."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ckpt_flow
import pytest

import ambidex as ax
from ambidex.workflows import CheckpointStore

S = ax.NodeStatus
E = ax.EventKind
HERE = Path(__file__).resolve().parent
ROOTS = [f"root{i}" for i in range(20)]


class Recorder:
    def __init__(self) -> None:
        self.events: list[ax.WorkflowEvent] = []

    def __call__(self, event: ax.WorkflowEvent) -> None:
        self.events.append(event)

    def of(self, node: str, kind: ax.EventKind) -> list[ax.WorkflowEvent]:
        return [e for e in self.events if e.node == node and e.kind is kind]


def counter(workdir: Path) -> list[str]:
    path = workdir / "counter"
    return path.read_text().split() if path.exists() else []


def crash_in_subprocess(
    db: Path, workdir: Path, run_id: str, crash_delay_s: float = 0.0, shape: str = "abcd"
) -> None:
    """Run ckpt_flow in a fresh interpreter; node c (or sink) kills it with os._exit(1)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ckpt_flow; ckpt_flow.main()",
            shape,
            str(db),
            str(workdir),
            run_id,
            str(crash_delay_s),
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr  # died in c, not a Python error
    expected = ["a", "b", "c"] if shape == "abcd" else [*ROOTS, "sink"]
    assert sorted(counter(workdir)) == sorted(expected), proc.stderr


def resume(db: Path, run_id: str, workdir: Path) -> tuple[ax.WorkflowResult, Recorder]:
    (workdir / "allow_c").touch()
    rec = Recorder()
    result = ckpt_flow.build().run(checkpoint=str(db), resume=run_id, on_event=rec)
    return result, rec


def assert_resumed_without_rerunning_a_and_b(
    result: ax.WorkflowResult, rec: Recorder, workdir: Path, run_id: str
) -> None:
    # a and b did not run again
    assert sorted(counter(workdir)) == ["a", "b", "c", "c", "d"]
    for name in ("a", "b"):
        assert rec.of(name, E.STARTED) == []
        (finished,) = rec.of(name, E.FINISHED)
        assert finished.reason == "restored from the checkpoint"
        assert result.nodes[name].status is S.SUCCEEDED
    # their outputs are the objects the crashed process stored
    assert result["a"] == ckpt_flow.Part(value=2, pid=result["a"].pid)
    assert result["b"].value == 3
    assert result["a"].pid != os.getpid()
    assert result["a"].pid == result["b"].pid
    # c and d ran, with the restored outputs
    assert len(rec.of("c", E.STARTED)) == 1
    assert result["c"] == {"total": 5}
    assert result["d"] == 50
    assert result.run_id == run_id
    assert result.succeeded
    # the stored run is now complete
    store = CheckpointStore(str(workdir / "runs.sqlite"))
    try:
        stored = store.load_run(run_id)
    finally:
        store.close()
    assert stored.status == "succeeded"
    assert stored.node_status == dict.fromkeys("abcd", "succeeded")


def test_resume_after_a_crash_skips_the_nodes_that_finished(tmp_path: Path) -> None:
    db = tmp_path / "runs.sqlite"
    # c crashes 0.3 s after it starts: a and b have long finished by then
    crash_in_subprocess(db, tmp_path, "run-1", crash_delay_s=0.3)

    store = CheckpointStore(str(db))
    try:
        stored = store.load_run("run-1")
    finally:
        store.close()
    assert stored.workflow == ckpt_flow.NAME
    assert stored.status == "running"  # it never finished
    assert stored.inputs == {"workdir": str(tmp_path), "crash_delay_s": 0.3}
    assert stored.node_status == {"a": "succeeded", "b": "succeeded"}

    result, rec = resume(db, "run-1", tmp_path)
    assert_resumed_without_rerunning_a_and_b(result, rec, tmp_path, "run-1")


def test_finished_nodes_are_checkpointed_before_their_dependents_start(tmp_path: Path) -> None:
    # The sink kills its process the moment it starts. It starts only after all
    # twenty roots finished, so resuming must run none of them again.
    db = tmp_path / "runs.sqlite"
    crash_in_subprocess(db, tmp_path, "run-2", shape="fan-in")
    (tmp_path / "allow_c").touch()
    rec = Recorder()
    result = ckpt_flow.build_fan_in().run(checkpoint=str(db), resume="run-2", on_event=rec)
    assert result["sink"] == sum(range(20))
    rerun = [name for name in ROOTS if rec.of(name, E.STARTED)]
    assert rerun == [], f"finished before the crash, yet run again: {rerun}"
    assert sorted(counter(tmp_path)) == sorted([*ROOTS, "sink", "sink"])


def test_resume_after_a_failed_node(tmp_path: Path) -> None:
    calls: list[str] = []

    async def first(x: int) -> int:
        calls.append("first")
        return x + 1

    async def fragile(x: int) -> int:
        calls.append("fragile")
        if not (tmp_path / "fixed").exists():
            raise RuntimeError("not yet")
        return x * 2

    wf = ax.Workflow("fragile", inputs={"x": int})
    f = wf.node("first", first, input=wf.inputs.x)
    wf.node("fragile", fragile, input=f.output)
    db = str(tmp_path / "runs.sqlite")
    with pytest.raises(ax.WorkflowError) as info:
        wf.run({"x": 1}, checkpoint=db, run_id="r")
    assert info.value.run_id == "r"
    (tmp_path / "fixed").touch()
    result = wf.run(checkpoint=db, resume="r")  # the inputs come from the store
    assert result["fragile"] == 4
    assert calls == ["first", "fragile", "fragile"]

    # resuming a finished run runs nothing
    again = wf.run(checkpoint=db, resume="r")
    assert again["fragile"] == 4
    assert calls == ["first", "fragile", "fragile"]


def finished_run(tmp_path: Path, run_id: str) -> Path:
    (tmp_path / "allow_c").touch()
    db = tmp_path / "runs.sqlite"
    inputs = {"workdir": str(tmp_path), "crash_delay_s": 0.0}
    ckpt_flow.build().run(inputs, checkpoint=str(db), run_id=run_id)
    return db


def test_resuming_an_unknown_run_lists_the_latest_runs(tmp_path: Path) -> None:
    db = finished_run(tmp_path, "first-run")
    before = counter(tmp_path)
    with pytest.raises(ax.WorkflowDefinitionError) as info:
        ckpt_flow.build().run(checkpoint=str(db), resume="no-such-run")
    message = str(info.value)
    assert "no run 'no-such-run'" in message
    assert str(db) in message
    assert "latest: first-run" in message
    assert counter(tmp_path) == before  # nothing ran


def test_resuming_from_an_empty_store_says_so(tmp_path: Path) -> None:
    db = tmp_path / "empty.sqlite"
    with pytest.raises(ax.WorkflowDefinitionError, match="holds no runs"):
        ckpt_flow.build().run(checkpoint=str(db), resume="x")


def test_resuming_a_run_of_another_workflow_is_refused(tmp_path: Path) -> None:
    db = finished_run(tmp_path, "theirs")
    before = counter(tmp_path)
    with pytest.raises(ax.WorkflowDefinitionError) as info:
        ckpt_flow.build(name="other").run(checkpoint=str(db), resume="theirs")
    message = str(info.value)
    assert f"belongs to workflow '{ckpt_flow.NAME}'" in message
    assert "not 'other'" in message
    assert counter(tmp_path) == before


def test_resume_needs_a_checkpoint_and_run_ids_are_unique(tmp_path: Path) -> None:
    db = finished_run(tmp_path, "once")
    with pytest.raises(ax.WorkflowDefinitionError, match="resume needs checkpoint="):
        ckpt_flow.build().run(resume="once")
    inputs = {"workdir": str(tmp_path), "crash_delay_s": 0.0}
    with pytest.raises(ax.WorkflowDefinitionError, match="already exists"):
        ckpt_flow.build().run(inputs, checkpoint=str(db), run_id="once")
