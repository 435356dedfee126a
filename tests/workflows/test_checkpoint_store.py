"""The SQLite checkpoint store keeps a run exactly, and says how it ended.

Regression tests of four bugs of ``checkpoint=``: inputs came back from JSON
(a ``datetime`` as a string, a tuple as a list), a resume with new inputs ran
with them but kept the old ones for the next resume, ``bytes`` inputs failed
the run before anything ran, and a cancelled or Ctrl-C'd run was recorded as
``succeeded``. Then: the checkpoint backend is pluggable (a write that fails
fails the run before any dependent starts), and nodes read their idempotency
key.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pydantic
import pytest

import ambidex as ax
from ambidex import workflows
from ambidex.workflows import CheckpointStore, NodeRun, StoredRun


def stored(db: Path, run_id: str) -> StoredRun:
    store = CheckpointStore(db)
    try:
        return store.load_run(run_id)
    finally:
        store.close()


def test_inputs_come_back_exactly_on_resume(tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    seen: list[dict[str, Any]] = []

    async def first(meta: dict[str, Any]) -> int:
        return 1

    async def fragile(meta: dict[str, Any], n: int) -> str:
        seen.append(meta)
        if not fixed.exists():
            raise RuntimeError("not yet")
        return "ok"

    wf = ax.Workflow("exact", inputs={"meta": dict})
    f = wf.node("first", first, input={"meta": wf.inputs.meta})
    wf.node("fragile", fragile, input={"meta": wf.inputs.meta, "n": f.output})
    meta = {"when": datetime.datetime(2024, 5, 1, 12, 30), "pair": (1, 2)}
    db = tmp_path / "runs.sqlite"
    with pytest.raises(ax.WorkflowError):
        wf.run({"meta": meta}, checkpoint=str(db), run_id="r")
    assert stored(db, "r").inputs == {"meta": meta}

    fixed.touch()
    result = wf.run(checkpoint=str(db), resume="r")  # the inputs come from the store
    assert result["fragile"] == "ok"
    again = seen[-1]
    assert again == meta
    assert type(again["when"]) is datetime.datetime  # not '2024-05-01T12:30:00'
    assert type(again["pair"]) is tuple  # not [1, 2]
    assert result.inputs == {"meta": meta}


def test_a_resume_with_new_inputs_stores_them_for_the_next_resume(tmp_path: Path) -> None:
    flaky_fixed = tmp_path / "flaky-fixed"
    calls: list[tuple[str, int]] = []

    async def check(x: int) -> int:
        calls.append(("check", x))
        if x < 10:
            raise ValueError(f"x must be at least 10, got {x}")
        return x

    async def flaky(x: int, checked: int) -> int:
        calls.append(("flaky", x))
        if not flaky_fixed.exists():
            raise ConnectionError("down")
        return x + checked

    wf = ax.Workflow("inputs-change", inputs={"x": int})
    c = wf.node("check", check, input={"x": wf.inputs.x})
    wf.node("flaky", flaky, input={"x": wf.inputs.x, "checked": c.output})
    db = str(tmp_path / "runs.sqlite")
    with pytest.raises(ax.WorkflowError, match="at least 10"):
        wf.run({"x": 1}, checkpoint=db, run_id="r")
    with pytest.raises(ax.WorkflowError, match="down"):
        wf.run({"x": 20}, checkpoint=db, resume="r")  # the input fixed: check passes
    assert stored(db, "r").inputs == {"x": 20}
    flaky_fixed.touch()
    result = wf.run(checkpoint=db, resume="r")  # no inputs given: the ones stored last
    assert result["flaky"] == 40
    assert calls == [("check", 1), ("check", 20), ("flaky", 20), ("flaky", 20)]
    assert stored(db, "r").status == "succeeded"


def test_bytes_inputs_do_not_break_the_checkpoint(tmp_path: Path) -> None:
    async def size(data: bytes) -> int:
        return len(data)

    wf = ax.Workflow("bytes-in", inputs={"data": bytes})
    wf.node("size", size, input={"data": wf.inputs.data})
    db = tmp_path / "runs.sqlite"
    result = wf.run({"data": b"\xff\x00\xfe"}, checkpoint=str(db), run_id="b")
    assert result["size"] == 3
    run = stored(db, "b")
    assert run.inputs == {"data": b"\xff\x00\xfe"}
    assert run.status == "succeeded"


def test_inputs_cloudpickle_cannot_store_are_refused_before_anything_runs(tmp_path: Path) -> None:
    import threading

    ran: list[str] = []

    async def use(lock: Any) -> None:
        ran.append("use")

    wf = ax.Workflow("lock-in", inputs={"lock": Any})
    wf.node("use", use, input={"lock": wf.inputs.lock})
    with pytest.raises(ax.WorkflowDefinitionError, match="input 'lock' cannot be checkpointed"):
        wf.run({"lock": threading.Lock()}, checkpoint=str(tmp_path / "runs.sqlite"))
    assert ran == []


async def test_a_cancelled_run_is_recorded_as_cancelled(tmp_path: Path) -> None:
    db = tmp_path / "runs.sqlite"

    async def quick() -> int:
        return 1

    async def forever(n: int) -> None:
        await asyncio.sleep(3600)

    wf = ax.Workflow("cancelled")
    q = wf.node("quick", quick)
    wf.node("forever", forever, input={"n": q.output})

    started = asyncio.Event()

    def on_event(event: ax.WorkflowEvent) -> None:
        if event.node == "forever" and event.kind is ax.EventKind.STARTED:
            started.set()

    task = asyncio.ensure_future(wf.arun(checkpoint=str(db), run_id="c", on_event=on_event))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    run = stored(db, "c")
    assert run.status == "cancelled"  # was "succeeded"
    assert run.node_status == {"quick": "succeeded"}


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import asyncio, pathlib, sys
    import ambidex as ax

    flag = pathlib.Path(sys.argv[2])

    async def quick() -> int:
        return 1

    async def forever(n: int) -> None:
        flag.touch()
        await asyncio.sleep(3600)

    wf = ax.Workflow("ctrl-c")
    q = wf.node("quick", quick)
    wf.node("forever", forever, input={"n": q.output})
    wf.run(checkpoint=sys.argv[1], run_id="k")
    """
)


def test_a_run_stopped_with_ctrl_c_is_recorded_as_cancelled(tmp_path: Path) -> None:
    db, flag = tmp_path / "runs.sqlite", tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT, str(db), str(flag)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not flag.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the node never started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=20)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "KeyboardInterrupt" in output, output
    run = stored(db, "k")
    assert run.status == "cancelled", output  # was "succeeded"
    assert run.node_status == {"quick": "succeeded"}


class _Refusing:
    """A checkpoint backend that cannot store node ``a``."""

    def __init__(self) -> None:
        self.saved: list[str] = []
        self.finished: tuple[str, str | None] | None = None

    async def aload_run(self, run_id: str) -> StoredRun:
        raise AssertionError("not resumed")

    async def astart_run(
        self, run_id: str, workflow: str, inputs: dict[str, Any], *, resume: bool, **_: Any
    ) -> None:
        assert not resume

    async def asave_node(self, run_id: str, run: NodeRun) -> None:
        await asyncio.sleep(0)
        if run.name == "a":
            raise OSError("disk full")
        self.saved.append(run.name)

    async def afinish_run(self, run_id: str, status: str, error: str | None) -> None:
        self.finished = (status, error)


def test_a_node_whose_checkpoint_fails_releases_no_dependent() -> None:
    ran: list[str] = []

    async def step(name: str) -> str:
        ran.append(name)
        return name

    wf = ax.Workflow("refused")
    a = wf.node("a", step, input={"name": "a"})
    wf.node("b", step, input={"name": a.output})
    wf.node("c", step, input={"name": "c"})
    backend = _Refusing()
    with pytest.raises(ax.WorkflowError, match="disk full") as info:
        wf.run(checkpoint=backend)
    assert info.value.node == "a"
    assert "b" not in ran  # its input was never stored
    assert backend.finished is not None
    assert backend.finished[0] == "failed"


def test_checkpoint_takes_a_path_or_a_backend(tmp_path: Path) -> None:
    async def one() -> int:
        return 1

    wf = ax.Workflow("paths")
    wf.node("one", one)
    assert wf.run(checkpoint=tmp_path / "runs.sqlite", run_id="p")["one"] == 1
    assert stored(tmp_path / "runs.sqlite", "p").status == "succeeded"
    with pytest.raises(ax.WorkflowDefinitionError, match="CheckpointBackend"):
        wf.run(checkpoint=42)  # type: ignore[arg-type]


class KeyIn(pydantic.BaseModel):
    x: int = 0


class KeyAgent(ax.Agent[KeyIn, str]):
    async def run(self, input: KeyIn) -> str:
        return workflows.current_node_key()


def blocking_key() -> str:  # a plain def: runs on an I/O thread
    return workflows.current_node_key()


async def async_key(after: str) -> str:
    await asyncio.sleep(0)
    return workflows.current_node_key()


def test_nodes_read_their_idempotency_key(tmp_path: Path) -> None:
    wf = ax.Workflow("keys")
    t = wf.node("thread", blocking_key)
    wf.node("loop", async_key, input={"after": t.output})
    wf.node("agent", KeyAgent, input={"x": 1})
    key_in_input = lambda o: {"after": workflows.current_node_key()}  # noqa: E731
    wf.node("callable", async_key, input=key_in_input, after=[])
    result = wf.run(run_id="run-7")
    assert result["thread"] == "run-7:thread"
    assert result["loop"] == "run-7:loop"
    assert result["agent"] == "run-7:agent"
    assert result["callable"] == "run-7:callable"
    with pytest.raises(LookupError, match="outside a workflow node"):
        workflows.current_node_key()
    # The same key when the run is resumed.
    db = str(tmp_path / "runs.sqlite")
    first = wf.run(checkpoint=db, run_id="again")
    assert first["loop"] == "again:loop"
    assert os.path.exists(db)
