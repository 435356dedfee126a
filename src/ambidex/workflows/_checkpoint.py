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

A run also records what ``ambidex runs`` lists and resumes by: the workflow's
YAML file and the directory it ran in, its node names, and each node's
duration. Files written before those columns existed gain them when opened
(empty for their old runs).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
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

__all__ = ["CheckpointBackend", "CheckpointStore", "NodeRecord", "RunRecord", "StoredRun"]

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
# Columns added after the first files were written: (table, column, type). Every
# file gains those it lacks when opened, so old runs read as "not recorded".
_ADDED_COLUMNS = (
    ("runs", "inputs_pickle", "blob"),  # the inputs as cloudpickle, read back exactly
    ("runs", "source", "text"),  # the workflow's YAML file, absolute; null when built in Python
    ("runs", "workdir", "text"),  # the directory the run started in
    ("runs", "node_names", "text"),  # a JSON list of the workflow's nodes, in order
    ("nodes", "duration_s", "real"),  # from the node's first start to its final state
)


# The columns of the first files: a table of these names without them is another program's.
_BASE_COLUMNS = {
    "runs": {"run_id", "workflow", "inputs", "status", "error", "created_at", "updated_at"},
    "nodes": {"run_id", "node", "status", "output", "error", "attempts", "finished_at"},
}


def _check_foreign_tables(path: Path) -> None:
    """Raise ``sqlite3.DatabaseError`` if ``path`` has a ``runs`` or ``nodes`` table not ours.

    Read through a read-only connection, so a file that is not a checkpoint file
    (``--db`` naming another program's database by mistake) is left as it was.
    """
    from urllib.parse import quote

    uri = f"file:{quote(os.fsencode(path.absolute()))}?mode=ro"  # (bytes: any file name)
    probe = sqlite3.connect(uri, uri=True, timeout=5.0)
    try:
        for table, needed in _BASE_COLUMNS.items():
            present = {row[1] for row in probe.execute(f"pragma table_info({table})")}
            missing = sorted(needed - present)
            if present and missing:
                raise sqlite3.DatabaseError(
                    f"its table {table!r} is another program's (it has no column {missing[0]!r})"
                )
    finally:
        probe.close()


def _add_missing_columns(db: sqlite3.Connection) -> None:
    for table, column, kind in _ADDED_COLUMNS:
        present = {row[1] for row in db.execute(f"pragma table_info({table})")}
        if column in present:
            continue
        try:
            db.execute(f"alter table {table} add column {column} {kind}")
        except sqlite3.OperationalError:  # another process added it first
            present = {row[1] for row in db.execute(f"pragma table_info({table})")}
            if column not in present:
                raise


@dataclass(frozen=True)
class StoredRun:
    """A run as stored: its workflow, inputs, status and the outputs of finished nodes."""

    run_id: str
    workflow: str
    inputs: dict[str, Any]
    status: str
    outputs: dict[str, Any]
    node_status: dict[str, str]


@dataclass(frozen=True)
class RunRecord:
    """A run as ``CheckpointStore.runs`` lists it: no output is loaded.

    Attributes:
        source: the workflow's YAML file (absolute), None for a workflow built
            in Python or a run recorded before ambidex kept it.
        workdir: the directory the run started in (YAML import paths resolve
            from it), None when not recorded.
        nodes: the workflow's node names in order; empty when not recorded.
        finished: how many nodes finished: succeeded (a resume keeps their
            outputs) or skipped. A failed node is not counted: it runs again.
    """

    run_id: str
    workflow: str
    status: str
    started_at: float
    updated_at: float
    error: str | None
    source: str | None
    workdir: str | None
    nodes: tuple[str, ...]
    finished: int

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``ambidex runs list --json``); ``total`` is null when not recorded."""
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "status": self.status,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "error": self.error,
            "source": self.source,
            "workdir": self.workdir,
            "nodes_finished": self.finished,
            "nodes_total": len(self.nodes) if self.nodes else None,
        }


@dataclass(frozen=True)
class NodeRecord:
    """One node's stored final state (``CheckpointStore.node_records``); no output is loaded.

    ``duration_s`` runs from the node's first start to its final state, retries
    included; None for a node stored before durations were kept.
    """

    node: str
    status: str
    attempts: int
    duration_s: float | None
    error: str | None
    finished_at: float

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``ambidex runs show --json``)."""
        return {
            "node": self.node,
            "status": self.status,
            "attempts": self.attempts,
            "duration_s": self.duration_s,
            "error": self.error,
            "finished_at": self.finished_at,
        }


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
        self,
        run_id: str,
        workflow: str,
        inputs: dict[str, Any],
        *,
        resume: bool,
        source: str | None = None,
        nodes: Sequence[str] = (),
    ) -> None:
        """Record a new run (``resume=False``) or a resumed run's inputs.

        ``source`` (the workflow's YAML file, None when built in Python) and
        ``nodes`` (its node names in order) are for listings; a backend may
        ignore them.
        """
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


def _path_column(path: str | None) -> str | bytes | None:
    """A path as stored: its text, or its bytes when not UTF-8 (SQLite text cannot hold it)."""
    if path is None:
        return None
    try:
        path.encode()
    except UnicodeEncodeError:  # a file name of undecodable bytes (surrogate-escaped)
        return os.fsencode(path)
    return path


def _path_read(value: str | bytes | None) -> str | None:
    """A stored path back as Python names it."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


class CheckpointStore:
    """A SQLite file of runs and their node results (WAL mode; safe across threads).

    A ``CheckpointBackend``: its ``a*`` methods run the blocking ones on the
    runtime's I/O threads.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open (or make) the file.

        Raises:
            sqlite3.DatabaseError: not an SQLite file, or one whose ``runs`` or
                ``nodes`` table is another program's (checked before anything is
                written to it: its tables are never altered, its journal mode
                never changed).
        """
        self.path = Path(path)
        self._lock = threading.Lock()
        if self.path.is_file():
            _check_foreign_tables(self.path)
        self._db = open_sqlite(self.path, timeout_s=5.0)
        self._db.executescript(_SCHEMA)
        _add_missing_columns(self._db)

    def start_run(
        self,
        run_id: str,
        workflow: str,
        inputs: dict[str, Any],
        *,
        source: str | None = None,
        nodes: Sequence[str] = (),
    ) -> None:
        """Record a new run: its workflow's name, inputs, YAML file and node names.

        ``source`` (the workflow's file) is recorded as an absolute path, with
        the current directory, from which the file's import paths resolve.

        Raises:
            WorkflowDefinitionError: the run id is taken, or an input cannot be
                stored (nothing is written).
        """
        now = time.time()
        blob = _inputs_pickle(inputs)
        workdir = os.getcwd()
        source = None if source is None else os.path.abspath(source)
        with self._lock:
            try:
                self._db.execute(
                    "insert into runs (run_id, workflow, inputs, status, error, created_at, "
                    "updated_at, inputs_pickle, source, workdir, node_names) "
                    "values (?, ?, ?, 'running', null, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        workflow,
                        _inputs_json(inputs),
                        now,
                        now,
                        blob,
                        _path_column(source),
                        _path_column(workdir),
                        json.dumps(list(nodes)),
                    ),
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
        duration_s: float | None = None,
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
                "insert or replace into nodes (run_id, node, status, output, error, attempts, "
                "finished_at, duration_s) values (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, node, status, blob, error_text, attempts, time.time(), duration_s),
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
            WorkflowDefinitionError: there is no such run in this file, or its
                inputs or a stored output cannot be read back (the code changed,
                or the file is damaged).
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
        problems = []
        outputs = {}
        for n, status, blob in nodes:
            if status == "succeeded":
                try:
                    outputs[n] = cloudpickle.loads(blob)
                except Exception as exc:
                    problems.append(
                        f"the stored output of node {n!r} cannot be read: {describe_exception(exc)}"
                    )
        inputs: dict[str, Any] = {}
        try:  # runs stored before inputs_pickle existed have JSON inputs only
            inputs = json.loads(row[1]) if row[3] is None else cloudpickle.loads(row[3])
        except Exception as exc:
            problems.insert(0, f"the stored inputs cannot be read: {describe_exception(exc)}")
        if problems:  # (code changed since the run, or a damaged file): never a half resume
            raise WorkflowDefinitionError(
                [
                    f"run {run_id!r} in {self.path} cannot be resumed: {problem} "
                    "(resuming needs the code the run ran with)"
                    for problem in problems
                ]
            )
        return StoredRun(
            run_id=run_id,
            workflow=row[0],
            inputs=inputs,
            status=row[2],
            outputs=outputs,
            node_status={n: status for n, status, _ in nodes},
        )

    def runs(self, limit: int | None = 20) -> list[RunRecord]:
        """The latest ``limit`` runs (all with None), newest first, without their outputs."""
        return self._records("", (), limit)

    def run_record(self, run_id: str) -> RunRecord | None:
        """Run ``run_id`` without its outputs, or None when this file has no such run."""
        found = self._records("where r.run_id = ?", (run_id,), 1)
        return found[0] if found else None

    def _records(self, where: str, args: tuple[Any, ...], limit: int | None) -> list[RunRecord]:
        query = (
            "select r.run_id, r.workflow, r.status, r.created_at, r.updated_at, r.error, "
            "r.source, r.workdir, r.node_names, "
            "(select count(*) from nodes n where n.run_id = r.run_id "
            "and n.status in ('succeeded', 'skipped')) "
            f"from runs r {where} order by r.created_at desc, r.rowid desc limit ?"
        )
        with self._lock:
            rows = self._db.execute(query, (*args, -1 if limit is None else limit)).fetchall()
        return [
            RunRecord(
                run_id=row[0],
                workflow=row[1],
                status=row[2],
                started_at=row[3],
                updated_at=row[4],
                error=row[5],
                source=_path_read(row[6]),
                workdir=_path_read(row[7]),
                nodes=tuple(json.loads(row[8])) if row[8] else (),
                finished=row[9],
            )
            for row in rows
        ]

    def node_records(self, run_id: str) -> list[NodeRecord]:
        """The stored final states of run ``run_id``'s nodes, in the order they were reached."""
        with self._lock:
            rows = self._db.execute(
                "select node, status, attempts, duration_s, error, finished_at from nodes "
                "where run_id = ? order by finished_at, rowid",
                (run_id,),
            ).fetchall()
        return [NodeRecord(*row) for row in rows]

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    # -- CheckpointBackend: the blocking calls above, on the runtime's I/O threads --

    async def aload_run(self, run_id: str) -> StoredRun:
        """``load_run`` off the event loop."""
        return await current_runtime().run_in_thread(self.load_run, (run_id,), {})

    async def astart_run(
        self,
        run_id: str,
        workflow: str,
        inputs: dict[str, Any],
        *,
        resume: bool,
        source: str | None = None,
        nodes: Sequence[str] = (),
    ) -> None:
        """``start_run`` (or, for a resume, ``resume_run``) off the event loop."""
        if resume:
            await current_runtime().run_in_thread(self.resume_run, (run_id, inputs), {})
        else:
            where = {"source": source, "nodes": nodes}
            await current_runtime().run_in_thread(self.start_run, (run_id, workflow, inputs), where)

    async def asave_node(self, run_id: str, run: NodeRun) -> None:
        """``save_node`` of a node's final state, off the event loop."""
        args = (run_id, run.name, run.status.value, run.output, run.error, run.attempts)
        timing = {"duration_s": run.duration_s}
        await current_runtime().run_in_thread(self.save_node, args, timing)

    async def afinish_run(self, run_id: str, status: str, error: str | None) -> None:
        """``finish_run`` off the event loop."""
        await current_runtime().run_in_thread(self.finish_run, (run_id, status, error), {})
