"""Checkpoints: node results of a run stored in SQLite, so a crashed run can resume.

Every node that reaches a final state is written as it finishes (by one
writer, off the event loop). Outputs are stored with cloudpickle, so a resumed
run gets back exactly the objects the nodes returned; resuming needs the same
code. Inputs are stored as JSON.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import pydantic_core

from ambidex._sqlite import open_sqlite
from ambidex._text import describe_exception
from ambidex.workflows._spec import WorkflowDefinitionError

__all__ = ["CheckpointStore", "StoredRun"]

_SCHEMA = """
create table if not exists runs (
    run_id text primary key,
    workflow text not null,
    inputs text not null,
    status text not null,
    error text,
    created_at real not null,
    updated_at real not null
);
create table if not exists nodes (
    run_id text not null references runs(run_id),
    node text not null,
    status text not null,
    output blob,
    error text,
    attempts integer not null,
    finished_at real not null,
    primary key (run_id, node)
);
"""


@dataclass(frozen=True)
class StoredRun:
    """A run as stored: its workflow, inputs, status and the outputs of finished nodes."""

    run_id: str
    workflow: str
    inputs: dict[str, Any]
    status: str
    outputs: dict[str, Any]
    node_status: dict[str, str]


class CheckpointStore:
    """A SQLite file of runs and their node results (WAL mode; safe across threads)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_sqlite(self.path, timeout_s=5.0)
        self._db.executescript(_SCHEMA)

    def start_run(self, run_id: str, workflow: str, inputs: dict[str, Any]) -> None:
        """Record a new run."""
        now = time.time()
        text = json.dumps(pydantic_core.to_jsonable_python(inputs, fallback=repr))
        with self._lock:
            try:
                self._db.execute(
                    "insert into runs values (?, ?, ?, 'running', null, ?, ?)",
                    (run_id, workflow, text, now, now),
                )
            except sqlite3.IntegrityError:
                raise WorkflowDefinitionError(
                    [f"run id {run_id!r} already exists in {self.path}; resume it instead"]
                ) from None

    def save_node(
        self,
        run_id: str,
        node: str,
        status: str,
        output: Any,
        error: BaseException | None,
        attempts: int,
    ) -> None:
        """Store one node's final state (a later write for the same node replaces it)."""
        blob = None
        error_text: str | None = None
        if status == "succeeded":
            try:
                blob = cloudpickle.dumps(output)
            except Exception as exc:
                status = "failed"
                error_text = f"output could not be stored: {exc!r}"
        else:
            error_text = None if error is None else describe_exception(error)
        with self._lock:
            self._db.execute(
                "insert or replace into nodes values (?, ?, ?, ?, ?, ?, ?)",
                (run_id, node, status, blob, error_text, attempts, time.time()),
            )
            self._db.execute(
                "update runs set updated_at = ? where run_id = ?", (time.time(), run_id)
            )

    def finish_run(self, run_id: str, status: str, error: str | None) -> None:
        """Record how the run ended."""
        with self._lock:
            self._db.execute(
                "update runs set status = ?, error = ?, updated_at = ? where run_id = ?",
                (status, error, time.time(), run_id),
            )

    def load_run(self, run_id: str) -> StoredRun:
        """A stored run with the outputs of its succeeded nodes.

        Raises:
            WorkflowDefinitionError: there is no such run in this file.
        """
        with self._lock:
            row = self._db.execute(
                "select workflow, inputs, status from runs where run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                known = [
                    r[0]
                    for r in self._db.execute(
                        "select run_id from runs order by created_at desc limit 5"
                    )
                ]
                hint = f" (latest: {', '.join(known)})" if known else " (it holds no runs)"
                raise WorkflowDefinitionError([f"no run {run_id!r} in {self.path}{hint}"])
            nodes = self._db.execute(
                "select node, status, output from nodes where run_id = ?", (run_id,)
            ).fetchall()
        outputs = {n: cloudpickle.loads(blob) for n, status, blob in nodes if status == "succeeded"}
        return StoredRun(
            run_id=run_id,
            workflow=row[0],
            inputs=json.loads(row[1]),
            status=row[2],
            outputs=outputs,
            node_status={n: status for n, status, _ in nodes},
        )

    def list_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first."""
        with self._lock:
            rows = self._db.execute(
                "select run_id, workflow, status, created_at, updated_at, error from runs "
                "order by created_at desc limit ?",
                (limit,),
            ).fetchall()
        keys = ("run_id", "workflow", "status", "created_at", "updated_at", "error")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()
