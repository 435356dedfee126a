"""Checkpoints: node results of a run stored as they finish, so a crashed run can resume.

``checkpoint=`` of ``Workflow.arun`` takes a ``CheckpointBackend``: where a
run's finished nodes are kept and found again. Two implement it: the SQLite
file of ``CheckpointStore`` (``checkpoint="runs.sqlite"``), and the job
store's own database when a workflow runs as a job (``ambidex.jobs``).

In ``CheckpointStore`` every node that reaches a final state is written as it
finishes (off the event loop). Outputs and inputs are stored with
cloudpickle, so a resumed run gets back exactly the objects the nodes returned
and the inputs it was given (a ``datetime`` stays a ``datetime``, a tuple a
tuple, ``bytes`` bytes); resuming needs the same code. The inputs are also
kept as JSON (``runs.inputs``) for people reading the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import cloudpickle
import pydantic_core

from ambidex._sqlite import open_sqlite
from ambidex._text import describe_exception
from ambidex.runtime import current_runtime
from ambidex.workflows._spec import WorkflowDefinitionError

if TYPE_CHECKING:
    from ambidex.workflows._scheduler import NodeRun

__all__ = ["CheckpointBackend", "CheckpointStore", "StoredRun"]

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
# Added after the first release (``CheckpointStore`` adds it to an older file):
# the inputs as cloudpickle, read back exactly (``inputs`` holds them as JSON).
_INPUTS_PICKLE = "alter table runs add column inputs_pickle blob"


@dataclass(frozen=True)
class StoredRun:
    """A run as stored: its workflow, inputs, status and the outputs of finished nodes."""

    run_id: str
    workflow: str
    inputs: dict[str, Any]
    status: str
    outputs: dict[str, Any]
    node_status: dict[str, str]


@runtime_checkable
class CheckpointBackend(Protocol):
    """Where a run's finished nodes are kept, and found again by a resume.

    ``Workflow.arun(checkpoint=...)`` takes one (or the path of a
    ``CheckpointStore`` file). The scheduler calls, on its event loop:

    * ``aload_run(run_id)`` once, for ``resume=``: the stored run (its inputs
      and the outputs of its succeeded nodes, which are not run again);
    * ``astart_run(run_id, workflow, inputs, resume=...)`` once, before any node
      starts: a new run is recorded, or a resumed run's inputs (the stored ones
      with those given over them) replace the stored ones;
    * ``asave_node(run_id, run)`` for each node that reaches a final state
      (succeeded, failed, skipped), **before its dependents start**: the
      dependents start once it returns. If it raises, the run fails (no node
      starts after a result that could not be stored);
    * ``afinish_run(run_id, status, error)`` once at the end, with ``status``
      ``succeeded``, ``failed`` or ``cancelled``.
    """

    async def aload_run(self, run_id: str) -> StoredRun:
        """The stored run (raise ``WorkflowDefinitionError`` when there is none)."""
        ...

    async def astart_run(
        self, run_id: str, workflow: str, inputs: dict[str, Any], *, resume: bool
    ) -> None:
        """Record a new run (``resume=False``) or a resumed run's inputs."""
        ...

    async def asave_node(self, run_id: str, run: NodeRun) -> None:
        """Store one node's final state; durable when this returns."""
        ...

    async def afinish_run(self, run_id: str, status: str, error: str | None) -> None:
        """Record how the run ended."""
        ...


def _inputs_json(inputs: dict[str, Any]) -> str:
    """The inputs as JSON text for people reading the file (never raises)."""
    try:
        return json.dumps(
            pydantic_core.to_jsonable_python(inputs, fallback=repr, bytes_mode="base64")
        )
    except Exception:
        return json.dumps({key: repr(value) for key, value in inputs.items()})


def _inputs_pickle(inputs: dict[str, Any]) -> bytes:
    """The inputs as cloudpickle.

    Raises:
        WorkflowDefinitionError: naming each input cloudpickle cannot store.
    """
    try:
        return bytes(cloudpickle.dumps(inputs))
    except Exception:
        problems = []
        for key, value in inputs.items():
            try:
                cloudpickle.dumps(value)
            except Exception as exc:
                problems.append(
                    f"input {key!r} cannot be checkpointed (cloudpickle): {describe_exception(exc)}"
                )
        raise WorkflowDefinitionError(problems or ["the inputs cannot be checkpointed"]) from None


class CheckpointStore:
    """A SQLite file of runs and their node results (WAL mode; safe across threads).

    A ``CheckpointBackend``: its ``a*`` methods run the blocking ones on the
    runtime's I/O threads.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_sqlite(self.path, timeout_s=5.0)
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("pragma table_info(runs)")}
        if "inputs_pickle" not in columns:
            with contextlib.suppress(sqlite3.OperationalError):  # another process just did
                self._db.execute(_INPUTS_PICKLE)

    def start_run(self, run_id: str, workflow: str, inputs: dict[str, Any]) -> None:
        """Record a new run.

        Raises:
            WorkflowDefinitionError: the run id is taken, or an input cannot be
                stored (nothing is written).
        """
        now = time.time()
        blob = _inputs_pickle(inputs)
        with self._lock:
            try:
                self._db.execute(
                    "insert into runs (run_id, workflow, inputs, status, error, created_at, "
                    "updated_at, inputs_pickle) values (?, ?, ?, 'running', null, ?, ?, ?)",
                    (run_id, workflow, _inputs_json(inputs), now, now, blob),
                )
            except sqlite3.IntegrityError:
                raise WorkflowDefinitionError(
                    [f"run id {run_id!r} already exists in {self.path}; resume it instead"]
                ) from None

    def resume_run(self, run_id: str, inputs: dict[str, Any]) -> None:
        """Record that a stored run runs again, with these inputs (a later resume reads them).

        Raises:
            WorkflowDefinitionError: an input cannot be stored (nothing is written).
        """
        blob = _inputs_pickle(inputs)
        with self._lock:
            self._db.execute(
                "update runs set inputs = ?, inputs_pickle = ?, status = 'running', error = null, "
                "updated_at = ? where run_id = ?",
                (_inputs_json(inputs), blob, time.time(), run_id),
            )

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
                "select workflow, inputs, status, inputs_pickle from runs where run_id = ?",
                (run_id,),
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
            # Runs stored before inputs_pickle existed have JSON inputs only.
            inputs=json.loads(row[1]) if row[3] is None else cloudpickle.loads(row[3]),
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

    # -- CheckpointBackend: the blocking calls above, on the runtime's I/O threads --

    async def aload_run(self, run_id: str) -> StoredRun:
        """``load_run`` off the event loop."""
        return await current_runtime().run_in_thread(self.load_run, (run_id,), {})

    async def astart_run(
        self, run_id: str, workflow: str, inputs: dict[str, Any], *, resume: bool
    ) -> None:
        """``start_run`` (or, for a resume, ``resume_run``) off the event loop."""
        if resume:
            await current_runtime().run_in_thread(self.resume_run, (run_id, inputs), {})
        else:
            await current_runtime().run_in_thread(self.start_run, (run_id, workflow, inputs), {})

    async def asave_node(self, run_id: str, run: NodeRun) -> None:
        """``save_node`` of a node's final state, off the event loop."""
        args = (run_id, run.name, run.status.value, run.output, run.error, run.attempts)
        await current_runtime().run_in_thread(self.save_node, args, {})

    async def afinish_run(self, run_id: str, status: str, error: str | None) -> None:
        """``finish_run`` off the event loop."""
        await current_runtime().run_in_thread(self.finish_run, (run_id, status, error), {})
