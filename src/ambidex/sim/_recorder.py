"""Recording runs: per-step metrics and agent snapshots, buffered and written in batches.

A record is either an SQLite file (``*.sqlite``, ``*.db``) or a Parquet
directory (``*.parquet``, or ``format="parquet"``). Both hold the same three
tables:

* ``runs``: one row per run (model, params as JSON, seed, spawn key, steps,
  time, and for sweeps the grid point and replicate);
* ``metrics``: ``run_id, step, name, value`` (long form, so any model fits);
* ``agents``: ``run_id, step`` and one column per agent field, written only
  when snapshots are asked for.

Rows are buffered in memory and written in one transaction (SQLite) or one
row group (Parquet) per flush: never a write per agent per step. ``flush``
happens when a buffer passes ``buffer_rows``, at the end of each run's
metrics, and on ``close``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ambidex._sqlite import open_sqlite
from ambidex.exceptions import AmbidexError
from ambidex.sim._table import MetricsTable

if TYPE_CHECKING:
    from ambidex.sim._run import RunResult

__all__ = ["Record", "RecordError", "Recorder", "open_record"]

Format = Literal["sqlite", "parquet"]
_SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


class RecordError(AmbidexError, ValueError):
    """A record cannot be written or read: wrong path, format or contents."""


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
    digest TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL,
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics (run_id, name, step);
"""


class Recorder:
    """Writes runs to an SQLite file or a Parquet directory, in batches.

    Args:
        path: the record; created if missing, appended to if it exists.
        format: ``"sqlite"`` or ``"parquet"``; default from the path's suffix.
        buffer_rows: rows (metrics and agent rows together) kept before a flush.

    Usable as a context manager; thread-safe.
    """

    def __init__(
        self, path: str | Path, *, format: Format | None = None, buffer_rows: int = 200_000
    ) -> None:
        self.path = Path(path)
        self.format: Format = _format_of(self.path, format)
        self.buffer_rows = max(1, int(buffer_rows))
        self._lock = threading.Lock()
        self._metrics: list[tuple[int, int, str, float]] = []
        self._agents: list[tuple[int, int, Mapping[str, np.ndarray[Any, Any]]]] = []
        self._agent_rows = 0
        self._agent_fields: dict[str, np.dtype[Any]] | None = None
        self._runs: dict[int, dict[str, Any]] = {}
        self._closed = False
        self.flushes = 0
        """How many batched writes have happened (for tests and the curious)."""
        if self.format == "sqlite":
            try:
                # The record's own transactions (a batch per flush); readers open it read-only.
                self._db = open_sqlite(self.path, wal=False, autocommit=False, timeout_s=5.0)
                self._db.executescript(_SCHEMA)
            except sqlite3.DatabaseError as exc:
                raise RecordError(f"{self.path}: not a usable SQLite record ({exc})") from None
            self._next_run = 1 + (
                self._db.execute("SELECT MAX(run_id) FROM runs").fetchone()[0] or 0
            )
            row = self._db.execute("SELECT value FROM meta WHERE key = 'agent_fields'").fetchone()
            if row:
                self._agent_fields = {k: np.dtype(v) for k, v in json.loads(row[0]).items()}
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
            self._part = len(list(self.path.glob("metrics-*.parquet")))
            self._runs_existing = existing

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
                meta_path = self.path / "meta.json"
                meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
                meta.update(values)
                meta_path.write_text(json.dumps(meta, indent=2))

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
            }
            return run_id

    def snapshot(self, run_id: int, step: int, columns: Mapping[str, Any]) -> None:
        """Buffer one snapshot of the agents (columns of equal length)."""
        cols = {k: np.asarray(v) for k, v in columns.items()}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise RecordError(f"snapshot columns differ in length: {sorted(lengths)}")
        fields = {k: v.dtype for k, v in cols.items()}
        with self._lock:
            self._check_open()
            if self._agent_fields is None:
                for reserved in ("run_id", "step"):
                    if reserved in fields:
                        raise RecordError(f"a snapshot field may not be called {reserved!r}")
                self._agent_fields = fields
            elif list(fields) != list(self._agent_fields):
                raise RecordError(
                    f"{self.path}: snapshot fields {list(fields)} differ from the record's "
                    f"{list(self._agent_fields)}; record different models in different files"
                )
            self._agents.append((run_id, step, cols))
            self._agent_rows += lengths.pop() if lengths else 0
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

    def finish_run(self, run_id: int, result: RunResult) -> None:
        """Write the run's metrics and close its row in ``runs``."""
        self.add_metrics(run_id, result.metrics)
        with self._lock:
            run = self._runs[run_id]
            run["steps"] = result.steps
            run["elapsed_s"] = result.elapsed_s
            run["digest"] = result.metrics.digest()

    def flush(self) -> None:
        """Write everything buffered."""
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        """Flush and close. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._flush_locked()
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

    def _flush_locked(self) -> None:
        if self._closed:
            return
        if self.format == "sqlite":
            self._flush_sqlite()
        else:
            self._flush_parquet()
        self._metrics = []
        self._agents = []
        self._agent_rows = 0
        self.flushes += 1

    def _flush_sqlite(self) -> None:
        db = self._db
        with db:
            if self._agent_fields is not None:
                cols = ", ".join(f'"{k}" {_sql_type(dt)}' for k, dt in self._agent_fields.items())
                db.execute(
                    f"CREATE TABLE IF NOT EXISTS agents (run_id INTEGER NOT NULL, "
                    f"step INTEGER NOT NULL, {cols})"
                )
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('agent_fields', ?)",
                    (json.dumps({k: v.str for k, v in self._agent_fields.items()}),),
                )
            db.executemany(
                "INSERT OR REPLACE INTO runs VALUES (:run_id, :model, :params, :seed, "
                ":spawn_key, :steps_asked, :steps, :started_at, :elapsed_s, :point, "
                ":replicate, :digest)",
                list(self._runs.values()),
            )
            if self._metrics:
                db.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)", self._metrics)
            if self._agents:
                assert self._agent_fields is not None
                names = list(self._agent_fields)
                marks = ", ".join("?" * (len(names) + 2))
                for run_id, step, snap in self._agents:
                    n = len(next(iter(snap.values()))) if snap else 0
                    lists = [snap[k].tolist() for k in names]
                    db.executemany(
                        f"INSERT INTO agents VALUES ({marks})",
                        zip([run_id] * n, [step] * n, *lists, strict=True),
                    )

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        part = self._part
        if self._metrics:
            run_ids, steps, names, values = zip(*self._metrics, strict=True)
            table = pa.table(
                {
                    "run_id": pa.array(run_ids, pa.int64()),
                    "step": pa.array(steps, pa.int64()),
                    "name": pa.array(names, pa.string()),
                    "value": pa.array(values, pa.float64()),
                }
            )
            pq.write_table(table, self.path / f"metrics-{part:05d}.parquet")
        if self._agents:
            chunks: dict[str, list[np.ndarray[Any, Any]]] = {"run_id": [], "step": []}
            for run_id, step, cols in self._agents:
                n = len(next(iter(cols.values()))) if cols else 0
                chunks["run_id"].append(np.full(n, run_id, dtype=np.int64))
                chunks["step"].append(np.full(n, step, dtype=np.int64))
                for k, v in cols.items():
                    chunks.setdefault(k, []).append(v)
            pq.write_table(
                pa.table({k: np.concatenate(v) for k, v in chunks.items()}),
                self.path / f"agents-{part:05d}.parquet",
            )
        runs = {r["run_id"]: r for r in self._runs_existing}
        runs.update(self._runs)
        (self.path / "runs.json").write_text(json.dumps(list(runs.values()), indent=1))
        self._part += 1


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def _sql_type(dt: np.dtype[Any]) -> str:
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
        meta_path = self.path / "meta.json"
        if meta_path.exists():
            self.meta = json.loads(meta_path.read_text())
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

    def agents(self, run_id: int, step: int | None = None) -> dict[str, np.ndarray[Any, Any]]:
        """Snapshot rows of one run (optionally one step), as columns."""
        if self.format == "sqlite":
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                query = "SELECT * FROM agents WHERE run_id = ?"
                args: tuple[Any, ...] = (run_id,)
                if step is not None:
                    query += " AND step = ?"
                    args = (run_id, step)
                cur = db.execute(query, args)
                names = [d[0] for d in cur.description]
                rows = cur.fetchall()
            except sqlite3.OperationalError:
                raise RecordError(f"{self.path}: holds no agent snapshots") from None
            finally:
                db.close()
            if not rows:
                return {n: np.array([]) for n in names}
            return {n: np.asarray(c) for n, c in zip(names, zip(*rows, strict=True), strict=True)}
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
