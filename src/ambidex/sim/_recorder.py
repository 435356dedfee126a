"""Recording runs: per-step metrics and agent snapshots, buffered and written in batches.

A record is either an SQLite file (``*.sqlite``, ``*.db``) or a Parquet
directory (``*.parquet``, or ``format="parquet"``). Both hold the same three
tables:

* ``runs``: one row per run (model, params as JSON, seed, spawn key, steps,
  time, and for sweeps the grid point and replicate);
* ``metrics``: ``run_id, step, name, value`` (long form, so any model fits);
* ``agents``: ``run_id, step`` and one column per agent field (a vector
  field ``pos=(np.float64, 2)`` as ``pos_0, pos_1``: see ``_record_fields``),
  written only when snapshots are asked for.

Every run has a ``status`` (``RunStatus``): ``running`` until it ends, then
``done``, ``interrupted`` (Ctrl-C, a cancelled sweep) or ``failed``. A run
that stopped early keeps the metrics of the steps it did.

Rows are buffered in memory and written in one transaction (SQLite) or one
row group (Parquet) per flush: never a write per agent per step. ``flush``
happens when a buffer passes ``buffer_rows``, when a run ends at least
``flush_every_s`` (1 s) after the last flush, and on ``close``.
"""

from __future__ import annotations

import asyncio
import enum
import json
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ambidex._sqlite import open_sqlite
from ambidex.sim._record_fields import (
    Field,
    RecordError,
    check_fields,
    fields_from_meta,
    fields_to_meta,
    same_layout,
)
from ambidex.sim._table import MetricsTable

if TYPE_CHECKING:
    from ambidex.sim._model import Model
    from ambidex.sim._run import RunResult

__all__ = ["Record", "RecordError", "Recorder", "RunStatus", "open_record"]

Format = Literal["sqlite", "parquet"]
_SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


class RunStatus(enum.StrEnum):
    """Where a recorded run is in its life (the ``status`` column of ``runs``)."""

    RUNNING = "running"  # started; a record left like this was cut off (a kill, a crash)
    DONE = "done"  # ran every step asked, or stopped itself (``running = False``)
    INTERRUPTED = "interrupted"  # stopped by Ctrl-C or a cancelled sweep; its steps so far kept
    FAILED = "failed"  # the model raised; its steps so far kept


def _format_of(path: Path, fmt: Format | None) -> Format:
    if fmt is not None:
        if fmt not in ("sqlite", "parquet"):
            raise RecordError(f"record format must be 'sqlite' or 'parquet', got {fmt!r}")
        return fmt
    if path.suffix in _SQLITE_SUFFIXES:
        return "sqlite"
    if path.suffix == ".parquet" or path.is_dir():
        return "parquet"
    raise RecordError(
        f"cannot tell the record format of {path}: name it *.sqlite or *.parquet, "
        "or pass format='sqlite'|'parquet'"
    )


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    params TEXT NOT NULL,
    seed INTEGER NOT NULL,
    spawn_key TEXT NOT NULL,
    steps_asked INTEGER NOT NULL,
    steps INTEGER,
    started_at REAL NOT NULL,
    elapsed_s REAL,
    point INTEGER,
    replicate INTEGER,
    digest TEXT,
    status TEXT,
    compile_s REAL
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL,
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics (run_id, name, step);
"""
_RUN_COLUMNS = [
    *("run_id", "model", "params", "seed", "spawn_key", "steps_asked", "steps"),
    *("started_at", "elapsed_s", "point", "replicate", "digest", "status", "compile_s"),
]
_ADDED_COLUMNS = {"status": "TEXT", "compile_s": "REAL"}
"""Columns of ``runs`` that older records lack (added when such a record is opened)."""


class Recorder:
    """Writes runs to an SQLite file or a Parquet directory, in batches.

    Args:
        path: the record; created if missing, appended to if it exists.
        format: ``"sqlite"`` or ``"parquet"``; default from the path's suffix.
        buffer_rows: rows (metrics and agent rows together) kept before a flush.
        flush_every_s: a run that ends (done, failed or interrupted) at least this long
            after the last flush is written at once, so a killed process loses at most
            the runs of the last ``flush_every_s`` (a sweep of many short runs still
            writes in batches).

    Usable as a context manager; thread-safe.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        format: Format | None = None,
        buffer_rows: int = 200_000,
        flush_every_s: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.format: Format = _format_of(self.path, format)
        self.buffer_rows = max(1, int(buffer_rows))
        self.flush_every_s = float(flush_every_s)
        self._flushed_at = time.monotonic()
        self._lock = threading.Lock()
        self._metrics: list[tuple[int, int, str, float]] = []
        self._agents: list[tuple[int, int, Mapping[str, np.ndarray[Any, Any]]]] = []
        self._agent_rows = 0
        self._agent_fields: dict[str, Field] | None = None
        self._runs: dict[int, dict[str, Any]] = {}
        self._closed = False
        self.flushes = 0
        """How many batched writes have happened (for tests and the curious)."""
        if self.format == "sqlite":
            try:
                # The record's own transactions (a batch per flush); readers open it read-only.
                self._db = open_sqlite(self.path, wal=False, autocommit=False, timeout_s=5.0)
                self._db.executescript(_SCHEMA)
                have = {r[1] for r in self._db.execute("PRAGMA table_info(runs)")}
                for column, sql_type in _ADDED_COLUMNS.items():
                    if column not in have:
                        self._db.execute(f"ALTER TABLE runs ADD COLUMN {column} {sql_type}")
                self._db.commit()
            except sqlite3.DatabaseError as exc:
                raise RecordError(f"{self.path}: not a usable SQLite record ({exc})") from None
            self._next_run = 1 + (
                self._db.execute("SELECT MAX(run_id) FROM runs").fetchone()[0] or 0
            )
            row = self._db.execute("SELECT value FROM meta WHERE key = 'agent_fields'").fetchone()
            if row:
                self._agent_fields = fields_from_meta(json.loads(row[0])) or None
        else:
            if self.path.exists() and not self.path.is_dir():
                raise RecordError(f"{self.path} exists and is not a directory (a Parquet record)")
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise RecordError(
                    "Parquet records need pyarrow: pip install 'ambidex[sim]'"
                ) from None
            existing = _read_parquet_runs(self.path)
            self._next_run = 1 + max((r["run_id"] for r in existing), default=0)
            parts = [*self.path.glob("metrics-*.parquet"), *self.path.glob("agents-*.parquet")]
            self._part = 1 + max((int(p.stem.rpartition("-")[2]) for p in parts), default=-1)
            self._runs_existing = existing
            self._agent_fields = fields_from_meta(_read_json_meta(self.path).get("agent_fields"))
            self._agent_fields = self._agent_fields or None

    # -- writing -----------------------------------------------------------

    def set_meta(self, **values: Any) -> None:
        """Store JSON-able facts about the record (e.g. the sweep's grid)."""
        with self._lock:
            if self.format == "sqlite":
                self._db.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [(k, json.dumps(v)) for k, v in values.items()],
                )
                self._db.commit()
            else:
                meta = _read_json_meta(self.path)
                meta.update(values)
                (self.path / "meta.json").write_text(json.dumps(meta, indent=2))

    def describe_model(self, model: Model) -> None:
        """Store what a report draws with: the model's ``charts`` and its space's size.

        The space is the first ``Grid`` or ``ContinuousSpace`` among the model's
        attributes (its width, height and kind), so that the report can place
        recorded agents: a grid's ``cell`` field as ``x = cell // height``,
        ``y = cell % height``, a ``pos`` vector field as it is.
        """
        from ambidex.sim._continuous import ContinuousSpace
        from ambidex.sim._grid import Grid

        values: dict[str, Any] = {}
        charts = getattr(type(model), "charts", None)
        if charts:
            values["charts"] = _charts(charts, type(model).model_name())
        for value in vars(model).values():
            if isinstance(value, (Grid, ContinuousSpace)):
                kind = "grid" if isinstance(value, Grid) else "continuous"
                values["space"] = {
                    "kind": kind,
                    "width": value.width,
                    "height": value.height,
                    "torus": value.torus,
                }
                break
        if values:
            self.set_meta(**values)

    def start_run(
        self,
        model: str,
        params: Mapping[str, Any],
        seed: int,
        spawn_key: tuple[int, ...],
        steps: int,
        *,
        point: int | None = None,
        replicate: int | None = None,
    ) -> int:
        """Register a run; returns its id."""
        with self._lock:
            self._check_open()
            run_id = self._next_run
            self._next_run += 1
            self._runs[run_id] = {
                "run_id": run_id,
                "model": model,
                "params": json.dumps(dict(params), sort_keys=True, default=_json_default),
                "seed": int(seed),
                "spawn_key": json.dumps(list(spawn_key)),
                "steps_asked": int(steps),
                "steps": None,
                "started_at": time.time(),
                "elapsed_s": None,
                "point": point,
                "replicate": replicate,
                "digest": None,
                "status": RunStatus.RUNNING.value,
                "compile_s": None,
            }
            return run_id

    def snapshot(self, run_id: int, step: int, columns: Mapping[str, Any]) -> None:
        """Buffer one snapshot of the agents (columns of equal length).

        Raises:
            RecordError: a field a record cannot hold, or fields other than the
                record's (each named); nothing of the snapshot is buffered then,
                and what was recorded before stays.
        """
        if not isinstance(columns, Mapping):
            raise RecordError(
                f"a snapshot is a dict of per-agent arrays, got {type(columns).__name__}"
            )
        cols = {k: np.asarray(v) for k, v in columns.items()}
        fields, n = check_fields(cols, sqlite=self.format == "sqlite")
        with self._lock:
            self._check_open()
            if self._agent_fields is None:
                self._agent_fields = fields
            elif not same_layout(fields, self._agent_fields):
                theirs = [f"{f.name}: {f.describe()}" for f in self._agent_fields.values()]
                ours = [f"{f.name}: {f.describe()}" for f in fields.values()]
                raise RecordError(
                    f"{self.path}: snapshot fields {ours} differ from the record's "
                    f"{theirs}; keep each field's dtype from snapshot to snapshot (the record "
                    "reads it back with its first dtype), and record different models in "
                    "different files"
                )
            self._agents.append((run_id, step, cols))
            self._agent_rows += n
            if self._agent_rows + len(self._metrics) >= self.buffer_rows:
                self._flush_locked()

    def add_metrics(self, run_id: int, table: MetricsTable) -> None:
        """Buffer a run's whole metrics table."""
        steps = table["step"].tolist()
        rows: list[tuple[int, int, str, float]] = []
        for name in table.columns:
            if name == "step":
                continue
            values = table[name].astype(np.float64).tolist()
            rows.extend(zip([run_id] * len(steps), steps, [name] * len(steps), values, strict=True))
        with self._lock:
            self._check_open()
            self._metrics.extend(rows)
            if self._agent_rows + len(self._metrics) >= self.buffer_rows:
                self._flush_locked()

    def finish_run(
        self, run_id: int, result: RunResult, status: RunStatus = RunStatus.DONE
    ) -> None:
        """Write the run's metrics and close its row in ``runs``."""
        self.add_metrics(run_id, result.metrics)
        with self._lock:
            run = self._runs[run_id]
            run["steps"] = result.steps
            run["elapsed_s"] = result.elapsed_s
            run["digest"] = result.metrics.digest()
            run["status"] = status.value
            run["compile_s"] = result.compile_s
            self._flush_if_due()

    def stop_run(
        self,
        run_id: int,
        exc: BaseException,
        *,
        names: Sequence[str] = (),
        rows: Sequence[Sequence[Any]] = (),
        steps: int | None = None,
        elapsed_s: float | None = None,
        status: RunStatus | None = None,
    ) -> None:
        """Close the row of a run that ``exc`` stopped, keeping the metrics of its steps so far.

        ``rows`` are the metrics rows taken (``[step, *values]``, named by
        ``names``); a sweep's run that never came back has none, only the
        ``steps`` its worker reported. ``KeyboardInterrupt`` and cancellation
        mark the run ``interrupted``, anything else ``failed`` (unless ``status`` says).
        """
        if status is None:
            stopped = isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError))
            status = RunStatus.INTERRUPTED if stopped else RunStatus.FAILED
        table = MetricsTable.from_rows(["step", *names], rows) if rows else None
        if table is not None and len(table.columns) > 1:
            self.add_metrics(run_id, table)
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run["status"] != RunStatus.RUNNING.value:
                return
            run["steps"] = len(rows) - 1 if rows else steps
            run["elapsed_s"] = elapsed_s
            run["digest"] = table.digest() if table is not None else None
            run["status"] = status.value
            self._flush_if_due()

    def flush(self) -> None:
        """Write everything buffered."""
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        """Flush and close. Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                self._flush_locked()
            finally:
                if self.format == "sqlite":
                    self._db.close()
                self._closed = True

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RecordError(f"recorder for {self.path} is closed")

    def _flush_if_due(self) -> None:
        """``_flush_locked`` when ``flush_every_s`` has passed since the last flush."""
        if time.monotonic() - self._flushed_at >= self.flush_every_s:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._closed:
            return
        self._flushed_at = time.monotonic()
        agents, self._agents, self._agent_rows = self._agents, [], 0
        metrics, self._metrics = self._metrics, []
        self.flushes += 1
        # Runs and metrics go first, on their own: a snapshot that cannot be
        # written must not take the runs' rows and metrics with it.
        if self.format == "sqlite":
            self._flush_sqlite(metrics)
        else:
            self._flush_parquet(metrics)
        if not agents:
            return
        assert self._agent_fields is not None
        fields = self._agent_fields
        try:
            if self.format == "sqlite":
                self._flush_sqlite_agents(fields, agents)
            else:
                self._flush_parquet_agents(fields, agents)
        except RecordError:
            raise
        except Exception as exc:
            raise RecordError(
                f"{self.path}: writing agent snapshots failed ({type(exc).__name__}: {exc}); "
                "the runs and metrics recorded so far are kept"
            ) from exc

    def _flush_sqlite(self, metrics: list[tuple[int, int, str, float]]) -> None:
        db = self._db
        names = ", ".join(_RUN_COLUMNS)
        marks = ", ".join(f":{c}" for c in _RUN_COLUMNS)
        with db:
            db.executemany(
                f"INSERT OR REPLACE INTO runs ({names}) VALUES ({marks})", list(self._runs.values())
            )
            if metrics:
                db.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)", metrics)

    def _flush_sqlite_agents(self, fields: Mapping[str, Field], agents: list[_Snapshot]) -> None:
        db = self._db
        columns = [(f, c) for f in fields.values() for c in f.columns]
        with db:
            spec = ", ".join(f'"{c}" {_sql_type(f.dtype)}' for f, c in columns)
            db.execute(
                f"CREATE TABLE IF NOT EXISTS agents (run_id INTEGER NOT NULL, "
                f"step INTEGER NOT NULL, {spec})"
            )
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('agent_fields', ?)",
                (json.dumps(fields_to_meta(fields)),),
            )
            marks = ", ".join("?" * (len(columns) + 2))
            for run_id, step, snap in agents:
                n = len(next(iter(snap.values()))) if snap else 0
                lists: list[list[Any]] = []
                for field in fields.values():
                    flat = snap[field.name].reshape(n, field.size)
                    lists.extend(flat[:, i].tolist() for i in range(field.size))
                db.executemany(
                    f"INSERT INTO agents VALUES ({marks})",
                    zip([run_id] * n, [step] * n, *lists, strict=True),
                )

    def _flush_parquet(self, metrics: list[tuple[int, int, str, float]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        part = self._part
        self._part += 1
        if metrics:
            run_ids, steps, names, values = zip(*metrics, strict=True)
            table = pa.table(
                {
                    "run_id": pa.array(run_ids, pa.int64()),
                    "step": pa.array(steps, pa.int64()),
                    "name": pa.array(names, pa.string()),
                    "value": pa.array(values, pa.float64()),
                }
            )
            pq.write_table(table, self.path / f"metrics-{part:05d}.parquet")
        runs = {r["run_id"]: r for r in self._runs_existing}
        runs.update(self._runs)
        (self.path / "runs.json").write_text(json.dumps(list(runs.values()), indent=1))

    def _flush_parquet_agents(self, fields: Mapping[str, Field], agents: list[_Snapshot]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        chunks: dict[str, list[np.ndarray[Any, Any]]] = {"run_id": [], "step": []}
        for run_id, step, cols in agents:
            n = len(next(iter(cols.values()))) if cols else 0
            chunks["run_id"].append(np.full(n, run_id, dtype=np.int64))
            chunks["step"].append(np.full(n, step, dtype=np.int64))
            for k, v in cols.items():
                chunks.setdefault(k, []).append(v)
        arrays: dict[str, Any] = {}
        for name, parts in chunks.items():
            values = np.concatenate(parts)
            field = fields.get(name)
            if field is None or not field.shape:
                # pyarrow reads a numpy str array up to the first NUL ('a\0b' -> 'a');
                # as Python strings the whole text goes in, as it does into SQLite.
                arrays[name] = pa.array(
                    values.astype(object) if values.dtype.kind == "U" else values
                )
                continue
            # One plain column per element, as in SQLite (see _record_fields).
            flat = values.reshape(len(values), field.size)
            for i, column in enumerate(field.columns):
                arrays[column] = pa.array(flat[:, i])
        meta = _read_json_meta(self.path)
        meta["agent_fields"] = fields_to_meta(fields)
        (self.path / "meta.json").write_text(json.dumps(meta, indent=2))
        # No dictionary encoding for float columns: continuous values rarely repeat, and
        # pyarrow's attempt at one, made anew in every file, took two thirds of the write
        # (cProfile of benchmarks/sim_record.py: 0.18 s of 0.23 s in write_table; 0.10 s without).
        coded = [name for name, array in arrays.items() if not pa.types.is_floating(array.type)]
        pq.write_table(
            pa.table(arrays),
            self.path / f"agents-{self._part - 1:05d}.parquet",
            use_dictionary=coded,
        )


_Snapshot = tuple[int, int, Mapping[str, np.ndarray[Any, Any]]]


def _charts(charts: Any, model: str) -> dict[str, list[str]]:
    """A model's ``charts`` attribute checked: chart title to the metrics drawn on it."""
    ok = isinstance(charts, Mapping) and all(
        isinstance(k, str)
        and isinstance(v, (list, tuple))
        and v
        and all(isinstance(m, str) for m in v)
        for k, v in charts.items()
    )
    if not ok:
        raise RecordError(
            f"{model}.charts must map a chart's title to a non-empty list of metric names, "
            f"e.g. {{'population': ['sheep', 'wolves']}}; got {charts!r}"
        )
    return {str(k): list(v) for k, v in charts.items()}


def _read_json_meta(path: Path) -> dict[str, Any]:
    meta_path = path / "meta.json"
    if not meta_path.exists():
        return {}
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise RecordError(f"{meta_path}: not valid JSON ({exc})") from None
    return meta


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def _sql_type(dt: np.dtype[Any]) -> str:
    """The column type of a dtype (bool as INTEGER, read back as bool by the field's dtype)."""
    if dt.kind in "iub":
        return "INTEGER"
    if dt.kind == "f":
        return "REAL"
    return "TEXT"


def _read_parquet_runs(path: Path) -> list[dict[str, Any]]:
    runs_path = path / "runs.json"
    if not runs_path.exists():
        return []
    try:
        runs: list[dict[str, Any]] = json.loads(runs_path.read_text())
    except ValueError as exc:
        raise RecordError(f"{runs_path}: not valid JSON ({exc})") from None
    return runs


# -- reading -------------------------------------------------------------------


@dataclass
class RunRow:
    """One run of a record."""

    run_id: int
    model: str
    params: dict[str, Any]
    seed: int
    spawn_key: list[int]
    steps: int | None
    elapsed_s: float | None
    point: int | None
    replicate: int | None
    digest: str | None
    status: str = RunStatus.DONE.value
    """A ``RunStatus`` value (records written before statuses: ``done``, or
    ``running`` for a run that never finished)."""
    compile_s: float | None = None
    """Seconds of the run spent compiling numba kernels (``None``: not measured)."""
    steps_asked: int | None = None


class Record:
    """A record opened for reading (``open_record``): its runs, metrics and meta."""

    def __init__(self, path: Path, fmt: Format) -> None:
        self.path = path
        self.format = fmt
        self.runs: list[RunRow] = []
        self.meta: dict[str, Any] = {}
        self._metrics: dict[int, dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]] = {}
        if fmt == "sqlite":
            self._load_sqlite()
        else:
            self._load_parquet()

    def _add_runs(self, rows: list[dict[str, Any]]) -> None:
        for r in sorted(rows, key=lambda r: r["run_id"]):
            spawn = r["spawn_key"]
            self.runs.append(
                RunRow(
                    run_id=int(r["run_id"]),
                    model=r["model"],
                    params=json.loads(r["params"]) if isinstance(r["params"], str) else r["params"],
                    seed=int(r["seed"]),
                    spawn_key=json.loads(spawn) if isinstance(spawn, str) else list(spawn),
                    steps=r["steps"],
                    elapsed_s=r["elapsed_s"],
                    point=r["point"],
                    replicate=r["replicate"],
                    digest=r["digest"],
                    status=r.get("status")
                    or (RunStatus.DONE if r["steps"] is not None else RunStatus.RUNNING).value,
                    compile_s=r.get("compile_s"),
                    steps_asked=r.get("steps_asked"),
                )
            )

    def _add_metrics(self, run_ids: Any, steps: Any, names: Any, values: Any) -> None:
        run_ids = np.asarray(run_ids)
        steps = np.asarray(steps)
        names = np.asarray(names, dtype=object)
        values = np.asarray(values, dtype=np.float64)
        # Metrics were written column by column in the model's order: keep that order.
        rank = {name: i for i, name in enumerate(dict.fromkeys(names.tolist()))}
        name_rank = np.fromiter((rank[n] for n in names), dtype=np.int64, count=len(names))
        order = np.lexsort((steps, name_rank, run_ids))
        run_ids, steps, names, values = run_ids[order], steps[order], names[order], values[order]
        keys = list(zip(run_ids.tolist(), names.tolist(), strict=True))
        start = 0
        for i in range(1, len(keys) + 1):
            if i == len(keys) or keys[i] != keys[start]:
                rid, name = keys[start]
                self._metrics.setdefault(rid, {})[name] = (steps[start:i], values[start:i])
                start = i

    def _load_sqlite(self) -> None:
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            db.row_factory = sqlite3.Row
            self._add_runs([dict(r) for r in db.execute("SELECT * FROM runs")])
            self.meta = {r["key"]: json.loads(r["value"]) for r in db.execute("SELECT * FROM meta")}
            rows = db.execute(
                "SELECT run_id, step, name, value FROM metrics ORDER BY rowid"
            ).fetchall()
            db.close()
        except sqlite3.DatabaseError as exc:
            raise RecordError(f"{self.path}: not an ambidex SQLite record ({exc})") from None
        if rows:
            self._add_metrics(*zip(*rows, strict=True))

    def _load_parquet(self) -> None:
        import pyarrow.parquet as pq

        self._add_runs(_read_parquet_runs(self.path))
        self.meta = _read_json_meta(self.path)
        for part in sorted(self.path.glob("metrics-*.parquet")):
            t = pq.read_table(part)
            self._add_metrics(
                t["run_id"].to_numpy(),
                t["step"].to_numpy(),
                t["name"].to_pylist(),
                t["value"].to_numpy(),
            )

    def metric_names(self) -> list[str]:
        """Every metric name in the record, in first-seen order."""
        names: dict[str, None] = {}
        for per_run in self._metrics.values():
            names.update(dict.fromkeys(per_run))
        return list(names)

    def metrics(self, run_id: int) -> MetricsTable:
        """One run's metrics table (values as float64)."""
        per_run = self._metrics.get(run_id)
        if per_run is None:
            raise RecordError(f"{self.path}: no metrics for run {run_id}")
        steps = next(iter(per_run.values()))[0]
        cols: dict[str, Any] = {"step": steps}
        for name, (_, values) in per_run.items():
            cols[name] = values
        return MetricsTable(cols)

    def agent_fields(self) -> dict[str, Field]:
        """The recorded agent fields (dtype and per-agent shape), empty without snapshots."""
        return fields_from_meta(self.meta.get("agent_fields"))

    def snapshot_steps(self, run_id: int) -> list[int]:
        """The steps at which run ``run_id``'s agents were recorded, ascending."""
        if self.format == "sqlite":
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                rows = db.execute(
                    "SELECT DISTINCT step FROM agents WHERE run_id = ? ORDER BY step", (run_id,)
                ).fetchall()
            except sqlite3.OperationalError:
                return []
            finally:
                db.close()
            return [int(r[0]) for r in rows]
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        steps: set[int] = set()
        for part in sorted(self.path.glob("agents-*.parquet")):
            t = pq.read_table(part, columns=["run_id", "step"])
            steps.update(t.filter(pc.equal(t["run_id"], run_id))["step"].to_pylist())
        return sorted(steps)

    def agents(self, run_id: int, step: int | None = None) -> dict[str, np.ndarray[Any, Any]]:
        """Snapshot rows of one run (optionally one step), as columns.

        Every field comes back with the dtype and shape it was recorded with:
        ``pos=(np.float64, 2)`` as an ``(n, 2)`` float64 array, a bool field as
        bool. ``run_id`` and ``step`` are int64 columns.

        Raises:
            RecordError: the record holds no agent snapshots, or no run ``run_id``
                (a step without a snapshot gives no rows).
        """
        known = [r.run_id for r in self.runs]
        if run_id not in known:  # a typo'd run id read as "no agents", silently
            shown = ", ".join(map(str, known[:10])) + (", ..." if len(known) > 10 else "")
            raise RecordError(f"{self.path}: no run {run_id!r} (runs: {shown or 'none'})")
        fields = self.agent_fields()
        if self.format == "sqlite":
            raw = self._agents_sqlite(run_id, step)
        else:
            raw = self._agents_parquet(run_id, step)
        n = len(raw["run_id"])
        out = {k: np.asarray(raw[k], dtype=np.int64) for k in ("run_id", "step")}
        if not fields:  # no layout stored: the columns as they are
            out.update({k: np.asarray(v) for k, v in raw.items() if k not in out})
            return out
        for field in fields.values():
            values: Any
            if field.shape:
                values = np.column_stack([raw[c] for c in field.columns]) if n else []
            else:
                values = raw[field.name]
            out[field.name] = field.restore(values, n)
        return out

    def _agents_sqlite(self, run_id: int, step: int | None) -> dict[str, Any]:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            query = "SELECT * FROM agents WHERE run_id = ?"
            args: tuple[Any, ...] = (run_id,)
            if step is not None:
                query += " AND step = ?"
                args = (run_id, step)
            cur = db.execute(query + " ORDER BY rowid", args)
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        except sqlite3.OperationalError:
            raise RecordError(f"{self.path}: holds no agent snapshots") from None
        finally:
            db.close()
        if not rows:
            return {n: [] for n in names}
        return {n: list(c) for n, c in zip(names, zip(*rows, strict=True), strict=True)}

    def _agents_parquet(self, run_id: int, step: int | None) -> dict[str, Any]:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        parts = sorted(self.path.glob("agents-*.parquet"))
        if not parts:
            raise RecordError(f"{self.path}: holds no agent snapshots")
        out: dict[str, list[np.ndarray[Any, Any]]] = {}
        for part in parts:
            t = pq.read_table(part)
            mask = pc.equal(t["run_id"], run_id)
            if step is not None:
                mask = pc.and_(mask, pc.equal(t["step"], step))
            t = t.filter(mask)
            for name in t.column_names:
                out.setdefault(name, []).append(t[name].to_numpy())
        return {k: np.concatenate(v) for k, v in out.items()}


def open_record(path: str | Path) -> Record:
    """Open a record written by ``Recorder`` (an SQLite file or a Parquet directory).

    Raises:
        RecordError: the path does not exist or is not a record.
    """
    p = Path(path)
    if not p.exists():
        raise RecordError(f"no record at {p}")
    fmt: Format = "parquet" if p.is_dir() else "sqlite"
    return Record(p, fmt)
