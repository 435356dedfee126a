"""What a checkpoint file tells of its runs without loading outputs (``ambidex runs`` reads it)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

import ambidex as ax
from ambidex.workflows import CheckpointStore

WORKFLOW = """
name: pair
inputs:
  n: int
nodes:
  first:
    function: pair_nodes:double
    input: {n: "${inputs.n}"}
  second:
    function: pair_nodes:boom
    input: {n: "${first.output}"}
"""

NODES = """
import time

def double(n: int) -> int:
    time.sleep(0.05)
    return 2 * n

def boom(n: int) -> int:
    raise ValueError(f"no good: {n}")
"""


def _store(path: Path) -> CheckpointStore:
    return CheckpointStore(path)


def test_a_yaml_run_records_its_file_directory_nodes_and_node_durations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pair.yaml").write_text(WORKFLOW)
    (tmp_path / "pair_nodes.py").write_text(NODES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    wf = ax.Workflow.from_yaml("pair.yaml")  # a relative path: recorded absolute
    with pytest.raises(ax.WorkflowError):
        wf.run({"n": 4}, checkpoint="runs.sqlite", run_id="one")
    store = _store(tmp_path / "runs.sqlite")
    try:
        record = store.run_record("one")
        nodes = {n.node: n for n in store.node_records("one")}
        assert store.run_record("nosuch") is None
    finally:
        store.close()
    assert record is not None
    assert (record.workflow, record.status, record.finished) == ("pair", "failed", 1)
    assert record.source == str(tmp_path / "pair.yaml")
    assert record.workdir == str(tmp_path)
    assert record.nodes == ("first", "second")
    assert record.started_at <= record.updated_at
    assert "no good: 8" in (record.error or "")
    first, second = nodes["first"], nodes["second"]
    assert (first.status, first.attempts, first.error) == ("succeeded", 1, None)
    assert first.duration_s is not None
    assert first.duration_s >= 0.04
    assert (second.status, second.attempts) == ("failed", 1)
    assert "ValueError: no good: 8" in (second.error or "")
    assert record.as_dict()["nodes_total"] == 2
    assert json.dumps([record.as_dict(), first.as_dict()])  # JSON as they are


def test_runs_are_listed_newest_first_and_a_python_workflow_has_no_file(tmp_path: Path) -> None:
    wf = ax.Workflow("solo")
    wf.node("only", lambda: 1)
    db = str(tmp_path / "runs.sqlite")
    for run_id in ("r1", "r2", "r3"):
        wf.run(checkpoint=db, run_id=run_id)
        time.sleep(0.01)
    store = _store(tmp_path / "runs.sqlite")
    try:
        listed = store.runs()
        assert [r.run_id for r in store.runs(limit=2)] == ["r3", "r2"]
        assert len(store.runs(limit=None)) == 3
    finally:
        store.close()
    assert [r.run_id for r in listed] == ["r3", "r2", "r1"]
    assert all(r.source is None and r.nodes == ("only",) for r in listed)
    assert all((r.status, r.finished) == ("succeeded", 1) for r in listed)
    assert listed[0].workdir == os.getcwd()


def test_a_file_of_an_older_ambidex_gains_the_new_columns_and_reads_as_unrecorded(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        """
        create table runs (run_id text primary key, workflow text not null, inputs text not null,
            status text not null, error text, created_at real not null, updated_at real not null);
        create table nodes (run_id text not null references runs(run_id), node text not null,
            status text not null, output blob, error text, attempts integer not null,
            finished_at real not null, primary key (run_id, node));
        insert into runs values ('old', 'wf', '{"n": 1}', 'failed', 'x', 1.0, 2.0);
        insert into nodes values ('old', 'a', 'succeeded', null, null, 1, 1.5);
        """
    )
    old.commit()
    old.close()
    store = _store(path)
    try:
        (record,) = store.runs()
        (node,) = store.node_records("old")
        store.start_run("new", "wf", {"n": 2}, source="/x/wf.yaml", nodes=["a"])
        assert store.run_record("new") is not None
    finally:
        store.close()
    assert (record.run_id, record.source, record.workdir, record.nodes) == ("old", None, None, ())
    assert record.finished == 1
    assert record.as_dict()["nodes_total"] is None
    assert (node.node, node.duration_s) == ("a", None)
    _store(path).close()  # opening it again adds nothing twice
