"""The program database: every candidate in SQLite, MAP-Elites grids per island.

Each island keeps a grid over the user's feature dimensions (``name -> (low,
high, bins)``); a cell holds its elite, the best successful program that landed
there. A program's feature value is the evaluator's metric of that name when
it returned one, else a built-in computed from the code (``length``:
characters, ``lines``: non-blank lines). With no features a grid has one cell,
so an island keeps just its best program.

Sampling (``sample``) picks a parent for the next candidate of an island:

- with probability ``EXPLOIT_RATE`` (10 %) the island's best elite;
- with probability ``CROSSOVER_RATE`` (10 %) a random elite of another island
  (when there are several islands with elites);
- otherwise a uniformly random elite of the island.

An island without elites borrows from all islands, and with no elite anywhere
the latest program stands in (so a failing start can still be fixed).
Inspirations are the island's best elite, then random other elites of the
island, then the island's top programs, never the parent and never the same
code twice.

Migration (``migrate``), run automatically after every ``migration_interval``
successful additions: each island's best elite is offered to the next island
(ring: 0 -> 1 -> ... -> 0), taking the cell it falls in there if it beats that
cell's elite. Migrants are the same program (same id) in another grid; every
offer is recorded in the ``migrations`` table.

Everything lives in one SQLite file (WAL): ``programs``, ``elites (island,
cell, program_id)``, ``migrations`` and ``meta`` (JSON values). Each ``add``
commits (with any meta values given to it), so a killed run loses only its
in-flight candidates; opening the file again restores the grids and counters.
Nothing here depends on time or on a random source: the same programs added
in the same order give the same ids, grids, migrations and samples (given the
same ``rng``); only the ``created_at`` columns differ.
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from ambidex._sqlite import open_sqlite
from ambidex._text import plain_text
from ambidex.exceptions import AmbidexError

__all__ = [
    "BUILTIN_FEATURES",
    "CROSSOVER_RATE",
    "EXPLOIT_RATE",
    "DatabaseError",
    "Program",
    "ProgramDatabase",
]

#: Share of ``sample`` calls whose parent is the island's best elite.
EXPLOIT_RATE = 0.1
#: Share of ``sample`` calls whose parent is a random elite of another island.
CROSSOVER_RATE = 0.1

_STDERR_TAIL_CHARS = 600
_STDERR_TAIL_LINES = 8

#: Meta keys the database owns (``set_meta`` refuses them).
_RESERVED_META = frozenset({"metric", "maximize", "islands", "features", "seed", "schema"})
_SCHEMA_VERSION = 1
_MISSING: Any = object()


def _length(code: str) -> float:
    return float(len(code))


def _lines(code: str) -> float:
    return float(sum(1 for line in code.splitlines() if line.strip()))


#: Features computed from the code when the evaluator returns no metric of that name.
BUILTIN_FEATURES = {"length": _length, "lines": _lines}


class DatabaseError(AmbidexError, ValueError):
    """The database cannot be opened as asked (settings differ from the stored ones, ...)."""


@dataclass
class Program:
    """One candidate: its code, how it evaluated and where it came from."""

    code: str
    """The function's source (``def name(...): ...``, no decorators)."""
    metrics: dict[str, float]
    score: float | None
    """``metrics[metric]`` if ``ok``, else None (``add`` sets it)."""
    ok: bool
    error: str | None = None
    """A one-line failure reason (evaluation or proposal)."""
    stderr: str = ""
    parent_id: int | None = None
    island: int = 0
    features: dict[str, float] = field(default_factory=dict)
    """The feature values it was placed by (``add`` sets them)."""
    iteration: int = 0
    proposer: str = ""
    note: str = ""
    """E.g. what the proposer changed."""
    id: int | None = None
    """Set by the database."""
    created_at: float = 0.0


_COLUMNS = (
    "id, code, metrics, score, ok, error, stderr, parent_id, island, features, "
    "iteration, proposer, note, created_at"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS programs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    code TEXT NOT NULL,
    metrics TEXT NOT NULL,
    score REAL,
    ok INTEGER NOT NULL,
    error TEXT,
    stderr TEXT NOT NULL,
    parent_id INTEGER,
    island INTEGER NOT NULL,
    features TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    proposer TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS programs_island_ok ON programs (island, ok, id);
CREATE INDEX IF NOT EXISTS programs_ok_score ON programs (ok, score);
CREATE TABLE IF NOT EXISTS elites (
    island INTEGER NOT NULL,
    cell TEXT NOT NULL,
    program_id INTEGER NOT NULL REFERENCES programs (id),
    PRIMARY KEY (island, cell)
);
CREATE TABLE IF NOT EXISTS migrations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    source_island INTEGER NOT NULL,
    target_island INTEGER NOT NULL,
    program_id INTEGER NOT NULL,
    placed INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

FeatureSpec = dict[str, tuple[float, float, int]]


def _normalize_features(
    features: Mapping[str, tuple[float, float, int]] | None,
) -> FeatureSpec:
    """Check ``name -> (low, high, bins)`` and return it with floats and an int, sorted by name."""
    out: FeatureSpec = {}
    for name in sorted(features or {}):
        spec = (features or {})[name]
        try:
            low, high, bins = spec
            low, high = float(low), float(high)
            ok = math.isfinite(low) and math.isfinite(high) and low < high
            ok = ok and not isinstance(bins, bool) and int(bins) == bins and int(bins) >= 1
        except (TypeError, ValueError):
            ok = False
        if not isinstance(name, str) or not name or not ok:
            raise DatabaseError(
                f"feature {name!r} must be (low, high, bins) with finite low < high and an "
                f"integer bins >= 1, got {spec!r}"
            )
        out[name] = (low, high, int(bins))
    return out


def _bin(value: float, low: float, high: float, bins: int) -> int:
    """The equal-width bin of ``value`` clipped into [low, high] (NaN: bin 0)."""
    if math.isnan(value):
        return 0
    clipped = min(max(value, low), high)
    return min(int((clipped - low) / (high - low) * bins), bins - 1)


def _float_metrics(metrics: Mapping[str, Any]) -> tuple[dict[str, float], str | None]:
    """The metrics as floats (those that are numbers) and what was wrong with the others."""
    out: dict[str, float] = {}
    bad: list[str] = []
    for key, value in metrics.items():
        try:
            if isinstance(value, str):
                raise TypeError(value)
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            bad.append(f"{key}={value!r}")
    return out, (f"not numbers: {', '.join(bad)}" if bad else None)


def _copy(program: Program) -> Program:
    """A copy the caller may change without touching the database's grids."""
    return replace(program, metrics=dict(program.metrics), features=dict(program.features))


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _stderr_tail(stderr: str) -> str:
    lines = stderr.rstrip().splitlines()[-_STDERR_TAIL_LINES:]
    tail = "\n".join(lines)
    return tail if len(tail) <= _STDERR_TAIL_CHARS else "..." + tail[-_STDERR_TAIL_CHARS:]


class ProgramDatabase:
    """Programs in SQLite, with a MAP-Elites grid per island.

    Every program it returns is a copy: changing it changes nothing stored.
    Its calls block (SQLite, on disk), so async code makes them on other
    threads (the coordinator: the runtime's I/O threads, through
    ``ax.to_thread``, one at a time); a lock guards every call, so any thread
    may make one.

    Args:
        path: the SQLite file (created with its directory; reopened if it exists).
        metric: the metric that is the score.
        maximize: higher scores are better (False: lower).
        islands: the number of islands (separate grids, joined by migration).
        features: MAP-Elites dimensions, ``name -> (low, high, bins)``; a value
            is the evaluator's metric of that name, else a built-in
            (``length``, ``lines``).
        migration_interval: migrate after every this many successful additions
            (0: never automatically).
        seed: stored for the coordinator (``db.seed``); the database draws no
            random numbers of its own.

    Raises:
        DatabaseError: bad settings, or a database stored with a different
            metric, direction, number of islands or features.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        metric: str,
        maximize: bool = True,
        islands: int = 4,
        features: Mapping[str, tuple[float, float, int]] | None = None,
        migration_interval: int = 25,
        seed: int = 0,
    ) -> None:
        if not isinstance(metric, str) or not metric:
            raise DatabaseError(f"metric must be a non-empty string, got {metric!r}")
        if isinstance(islands, bool) or not isinstance(islands, int) or islands < 1:
            raise DatabaseError(f"islands must be an integer >= 1, got {islands!r}")
        if (
            isinstance(migration_interval, bool)
            or not isinstance(migration_interval, int)
            or migration_interval < 0
        ):
            raise DatabaseError(
                f"migration_interval must be an integer >= 0, got {migration_interval!r}"
            )
        self.path = Path(path)
        self.metric = metric
        self.maximize = bool(maximize)
        self.islands = islands
        self.features = _normalize_features(features)
        self.migration_interval = migration_interval
        self.seed = seed
        self._lock = threading.RLock()
        self._conn = open_sqlite(self.path, timeout_s=5.0)
        self._closed = False
        try:
            self._conn.executescript(_SCHEMA)
            self._check_or_store_settings()
            self._grids: list[dict[str, Program]] = [{} for _ in range(islands)]
            self._load_elites()
            row = self._conn.execute("SELECT COUNT(*) FROM programs WHERE ok = 1").fetchone()
            self._successes = int(row[0])
        except BaseException:
            self._conn.close()
            self._closed = True
            raise

    # -- opening -------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "maximize": self.maximize,
            "islands": self.islands,
            "features": {k: list(v) for k, v in self.features.items()},
        }

    def _check_or_store_settings(self) -> None:
        stored = {key: self._read_meta(key) for key in ("metric", "maximize", "islands")}
        stored["features"] = self._read_meta("features")
        given = self._settings()
        if stored["metric"] is _MISSING:
            with self._transaction():
                self._write_meta(schema=_SCHEMA_VERSION, seed=self.seed, **given)
            return
        different = [k for k in given if stored[k] != given[k]]
        if different:
            shown = "; ".join(f"{k}: stored {stored[k]!r}, given {given[k]!r}" for k in different)
            raise DatabaseError(
                f"{self.path} holds a run with other settings ({shown}); open it with the "
                "stored settings, or use another path (or delete the file) to start over"
            )
        with self._transaction():
            self._write_meta(seed=self.seed)

    def _load_elites(self) -> None:
        rows = self._conn.execute(
            f"SELECT e.island, e.cell, {', '.join('p.' + c.strip() for c in _COLUMNS.split(','))} "
            "FROM elites e JOIN programs p ON p.id = e.program_id"
        ).fetchall()
        for row in rows:
            island, cell = row[0], row[1]
            if 0 <= island < self.islands:
                self._grids[island][cell] = self._program(row[2:])

    # -- plumbing ------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    def _read_meta(self, key: str) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return _MISSING if row is None else json.loads(row[0])

    def _write_meta(self, **values: Any) -> None:
        self._conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(k, json.dumps(v)) for k, v in values.items()],
        )

    @staticmethod
    def _program(row: Iterable[Any]) -> Program:
        (pid, code, metrics, score, ok, error, stderr, parent_id, island, features,
         iteration, proposer, note, created_at) = row  # fmt: skip
        return Program(
            code=code,
            metrics=json.loads(metrics),
            score=score,
            ok=bool(ok),
            error=error,
            stderr=stderr,
            parent_id=parent_id,
            island=island,
            features=json.loads(features),
            iteration=iteration,
            proposer=proposer,
            note=note,
            id=pid,
            created_at=created_at,
        )

    def _query(self, where: str = "", params: tuple[Any, ...] = ()) -> list[Program]:
        sql = f"SELECT {_COLUMNS} FROM programs {where}"
        return [self._program(row) for row in self._conn.execute(sql, params).fetchall()]

    def _check_open(self) -> None:
        if self._closed:
            raise DatabaseError(f"the program database {self.path} is closed")

    def _check_island(self, island: int) -> None:
        if isinstance(island, bool) or not isinstance(island, int):
            raise TypeError(f"island must be an int, got {island!r}")
        if not 0 <= island < self.islands:
            raise ValueError(f"island must be in [0, {self.islands}), got {island}")

    def _better(self, a: Program, b: Program) -> bool:
        """``a`` scores strictly better than ``b`` (both successful)."""
        assert a.score is not None
        assert b.score is not None
        return a.score > b.score if self.maximize else a.score < b.score

    def _rank_key(self, program: Program) -> tuple[float, int]:
        """Sort key: best score first, then the earlier program."""
        score = program.score if program.score is not None else math.nan
        return (-score if self.maximize else score, program.id or 0)

    # -- features ------------------------------------------------------------

    def feature_values(self, program: Program) -> dict[str, float]:
        """The program's feature values: its metrics where present, else built-ins.

        Raises:
            KeyError: a feature that is neither among the metrics nor built in.
        """
        values: dict[str, float] = {}
        for name in self.features:
            if name in program.metrics:
                values[name] = float(program.metrics[name])
            elif name in BUILTIN_FEATURES:
                values[name] = BUILTIN_FEATURES[name](program.code)
            else:
                raise KeyError(
                    f"feature {name!r} is not a built-in ({', '.join(BUILTIN_FEATURES)}) and "
                    f"the evaluator returned no metric of that name "
                    f"(metrics: {', '.join(sorted(program.metrics)) or 'none'})"
                )
        return values

    def cell_of(self, features: Mapping[str, float]) -> str:
        """The grid cell (a JSON list of bin indices, ``[]`` with no features) of these values."""
        bins = [_bin(features[name], *spec) for name, spec in self.features.items()]
        return json.dumps(bins)

    # -- adding --------------------------------------------------------------

    def _prepare(self, program: Program) -> Program:
        """A copy of ``program`` to store: its score, features and time set, bad ones failed."""
        if program.id is not None:
            raise ValueError(f"program #{program.id} is already stored")
        self._check_island(program.island)
        metrics, problem = _float_metrics(program.metrics)
        prog = replace(
            program,
            metrics=metrics,
            created_at=program.created_at or time.time(),
            score=None,
            # Text from proposers and candidates: SQLite refuses lone surrogates.
            code=plain_text(program.code),
            error=None if program.error is None else plain_text(program.error),
            stderr=plain_text(program.stderr),
            note=plain_text(program.note),
            proposer=plain_text(program.proposer),
        )
        if prog.ok and problem is None:
            problem = self._score_problem(prog)
        if prog.ok and problem is not None:
            prog.ok, prog.error = False, f"bad metrics: {problem}"
            prog.note = f"bad_metrics: {prog.note}"
        if prog.ok:
            prog.score = prog.metrics[self.metric]
            prog.features = self.feature_values(prog)
        else:
            prog.features = self._known_features(prog)
        return prog

    def _score_problem(self, program: Program) -> str | None:
        """Why a program reported ok cannot be ranked, or None."""
        score = program.metrics.get(self.metric)
        if score is None:
            return f"no metric {self.metric!r} in {sorted(program.metrics)}"
        if not math.isfinite(score):
            return f"the metric {self.metric!r} is {score}"
        try:
            self.feature_values(program)
        except KeyError as exc:
            return str(exc.args[0])
        return None

    def _known_features(self, program: Program) -> dict[str, float]:
        values = {}
        for name in self.features:
            if name in program.metrics:
                values[name] = program.metrics[name]
            elif name in BUILTIN_FEATURES:
                values[name] = BUILTIN_FEATURES[name](program.code)
        return values

    def add(self, program: Program, *, meta: Mapping[str, Any] | None = None) -> Program:
        """Store a program (failures too) and place it in its island's grid if it is an elite.

        The stored copy is returned: with its ``id``, ``created_at``, ``score``
        (``metrics[metric]``, None for a failure) and ``features``. A program
        marked ok whose metrics lack the metric, a non-finite score, or a
        feature that is neither a metric nor built in is stored as a failure
        (``error`` says why). Every ``migration_interval`` successful
        additions, ``migrate()`` runs in the same transaction. Ids come from
        SQLite in the order of the calls, so the same programs added in the
        same order get the same ids.

        Args:
            program: the program to store (without an id).
            meta: values to ``set_meta`` in the same transaction (e.g. the
                count of iterations done, so a kill never leaves the program
                stored without it or the count without the program).

        Raises:
            ValueError: the program already has an id, its island is out of
                range, or ``meta`` names a key the database owns.
            TypeError: a ``meta`` value that is not JSON-serializable.
        """
        encoded = self._encode_meta(dict(meta or {}))
        with self._lock:
            self._check_open()
            prog = self._prepare(program)
            saved = [dict(grid) for grid in self._grids]
            try:
                self._insert(prog, encoded)
            except BaseException:
                self._grids = saved  # the transaction was rolled back
                prog.id = None
                raise
            return _copy(prog)

    def _insert(self, prog: Program, meta: Mapping[str, Any]) -> None:
        with self._transaction():
            cur = self._conn.execute(
                f"INSERT INTO programs ({_COLUMNS.removeprefix('id, ')}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    prog.code,
                    json.dumps(prog.metrics),
                    prog.score,
                    int(prog.ok),
                    prog.error,
                    prog.stderr,
                    prog.parent_id,
                    prog.island,
                    json.dumps(prog.features),
                    prog.iteration,
                    prog.proposer,
                    prog.note,
                    prog.created_at,
                ),
            )
            prog.id = cur.lastrowid
            if prog.ok:
                self._place(prog.island, prog)
                successes = self._successes + 1
                if self.migration_interval and successes % self.migration_interval == 0:
                    self._migrate()
            if meta:
                self._write_meta(**meta)
        if prog.ok:
            self._successes += 1

    def _place(self, island: int, program: Program) -> bool:
        """Make ``program`` its cell's elite on ``island`` if it beats the current one."""
        cell = self.cell_of(program.features)
        current = self._grids[island].get(cell)
        if current is not None and (current.id == program.id or not self._better(program, current)):
            return False
        self._conn.execute(
            "INSERT INTO elites (island, cell, program_id) VALUES (?, ?, ?) "
            "ON CONFLICT (island, cell) DO UPDATE SET program_id = excluded.program_id",
            (island, cell, program.id),
        )
        self._grids[island][cell] = program
        return True

    # -- migration -----------------------------------------------------------

    def migrate(self) -> list[tuple[int, int, int, bool]]:
        """Offer each island's best elite to the next island (ring); returns what happened.

        Returns:
            ``(source island, target island, program id, placed)`` per offer.
        """
        with self._lock:
            self._check_open()
            with self._transaction():
                return self._migrate()

    def _migrate(self) -> list[tuple[int, int, int, bool]]:
        if self.islands < 2:
            return []
        bests = [self._island_best(i) for i in range(self.islands)]  # before any move
        now = time.time()
        done: list[tuple[int, int, int, bool]] = []
        for source, best in enumerate(bests):
            if best is None or best.id is None:
                continue
            target = (source + 1) % self.islands
            placed = self._place(target, best)
            self._conn.execute(
                "INSERT INTO migrations (created_at, source_island, target_island, program_id, "
                "placed) VALUES (?, ?, ?, ?, ?)",
                (now, source, target, best.id, int(placed)),
            )
            done.append((source, target, best.id, placed))
        return done

    def migrations(self) -> list[dict[str, Any]]:
        """Every migration offer so far, oldest first."""
        with self._lock:
            self._check_open()
            rows = self._conn.execute(
                "SELECT created_at, source_island, target_island, program_id, placed "
                "FROM migrations ORDER BY id"
            ).fetchall()
        keys = ("created_at", "source", "target", "program_id", "placed")
        return [dict(zip(keys, (*row[:4], bool(row[4])), strict=True)) for row in rows]

    # -- reading -------------------------------------------------------------

    def _island_best(self, island: int) -> Program | None:
        elites = list(self._grids[island].values())
        return min(elites, key=self._rank_key) if elites else None

    def get(self, program_id: int) -> Program:
        """The program with this id.

        Raises:
            KeyError: no such program.
        """
        with self._lock:
            self._check_open()
            found = self._query("WHERE id = ?", (program_id,))
        if not found:
            raise KeyError(f"no program #{program_id} in {self.path}")
        return found[0]

    def iterations(self) -> list[int]:
        """The iteration numbers stored, each once, ascending (0: the program as written)."""
        with self._lock:
            self._check_open()
            rows = self._conn.execute(
                "SELECT DISTINCT iteration FROM programs ORDER BY iteration"
            ).fetchall()
        return [int(row[0]) for row in rows]

    def __len__(self) -> int:
        with self._lock:
            self._check_open()
            return int(self._conn.execute("SELECT COUNT(*) FROM programs").fetchone()[0])

    def best(self) -> Program | None:
        """The best successful program of all (the earliest on a tie), or None."""
        order = "DESC" if self.maximize else "ASC"
        with self._lock:
            self._check_open()
            found = self._query(f"WHERE ok = 1 ORDER BY score {order}, id ASC LIMIT 1")
        return found[0] if found else None

    def history(self, limit: int | None = None, *, newest: bool = False) -> list[Program]:
        """Programs in the order added, failures included.

        Args:
            limit: at most this many: the first ``limit`` (the initial
                program first), or with ``newest=True`` the last ``limit``
                (still oldest first).
            newest: take the last programs instead of the first.
        """
        with self._lock:
            self._check_open()
            if limit is None:
                return self._query("ORDER BY id")
            if newest:
                return self._query("ORDER BY id DESC LIMIT ?", (limit,))[::-1]
            return self._query("ORDER BY id LIMIT ?", (limit,))

    def lineage(self, program_id: int) -> list[Program]:
        """The ancestors of a program and itself, root first.

        Raises:
            KeyError: no such program.
        """
        chain = [self.get(program_id)]
        seen = {program_id}
        while chain[-1].parent_id is not None and chain[-1].parent_id not in seen:
            seen.add(chain[-1].parent_id)
            try:
                chain.append(self.get(chain[-1].parent_id))
            except KeyError:
                break
        return chain[::-1]

    def elites(self, island: int | None = None) -> list[Program]:
        """The elites of one island (or of all, each program once), best first."""
        with self._lock:
            self._check_open()
            if island is not None:
                self._check_island(island)
                found = list(self._grids[island].values())
            else:
                unique = {p.id: p for grid in self._grids for p in grid.values()}
                found = list(unique.values())
        return [_copy(p) for p in sorted(found, key=self._rank_key)]

    def grid(self, island: int) -> dict[str, Program]:
        """The island's grid: cell (a JSON list of bin indices) -> elite."""
        with self._lock:
            self._check_open()
            self._check_island(island)
            return {cell: _copy(p) for cell, p in self._grids[island].items()}

    def stats(self) -> dict[str, Any]:
        """Counts and bests of the whole database and of each island.

        Keys: ``programs``, ``successes``, ``failures``, ``migrations``,
        ``best_id``, ``best_score`` and ``islands``: per island ``island``,
        ``elites``, ``programs``, ``best_id``, ``best_score``.
        """
        with self._lock:
            self._check_open()
            total, ok = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(ok), 0) FROM programs"
            ).fetchone()
            per_island = dict(
                self._conn.execute("SELECT island, COUNT(*) FROM programs GROUP BY island")
            )
            migrations = self._conn.execute("SELECT COUNT(*) FROM migrations").fetchone()[0]
            islands = []
            for i in range(self.islands):
                best = self._island_best(i)
                islands.append(
                    {
                        "island": i,
                        "elites": len(self._grids[i]),
                        "programs": int(per_island.get(i, 0)),
                        "best_id": None if best is None else best.id,
                        "best_score": None if best is None else best.score,
                    }
                )
        overall = self.best()
        return {
            "programs": int(total),
            "successes": int(ok),
            "failures": int(total) - int(ok),
            "migrations": int(migrations),
            "best_id": None if overall is None else overall.id,
            "best_score": None if overall is None else overall.score,
            "islands": islands,
        }

    def recent_errors(self, island: int, n: int = 3) -> list[str]:
        """The island's last ``n`` failures, oldest first: the one-line error and a stderr tail."""
        with self._lock:
            self._check_open()
            self._check_island(island)
            failed = self._query(
                "WHERE island = ? AND ok = 0 ORDER BY id DESC LIMIT ?", (island, max(n, 0))
            )
        out = []
        for prog in reversed(failed):
            text = _one_line(prog.error or "failed (no reason given)")
            tail = _stderr_tail(prog.stderr) if prog.stderr.strip() else ""
            out.append(f"{text}\nstderr (last lines):\n{tail}" if tail else text)
        return out

    # -- sampling ------------------------------------------------------------

    def sample(
        self, island: int, rng: random.Random, n_inspirations: int = 3
    ) -> tuple[Program, list[Program]]:
        """A parent and up to ``n_inspirations`` other programs for the next candidate.

        The parent is the island's best elite with probability ``EXPLOIT_RATE``,
        a random elite of another island with probability ``CROSSOVER_RATE``,
        else a random elite of the island. Inspirations: the island's best
        elite, random other elites of the island, then its top programs;
        never the parent, never the same code twice. Deterministic given ``rng``.

        Raises:
            LookupError: the database holds no program at all.
        """
        with self._lock:
            self._check_open()
            self._check_island(island)
            parent = self._pick_parent(island, rng)
            inspirations = self._inspirations(island, parent, rng, n_inspirations)
            return _copy(parent), [_copy(p) for p in inspirations]

    def _sorted_grid(self, island: int) -> list[Program]:
        return sorted(self._grids[island].values(), key=lambda p: p.id or 0)

    def _pick_parent(self, island: int, rng: random.Random) -> Program:
        own = self._sorted_grid(island)
        others = [p for i in range(self.islands) if i != island for p in self._sorted_grid(i)]
        r = rng.random()
        if own and r < EXPLOIT_RATE:
            return min(own, key=self._rank_key)
        if others and r < EXPLOIT_RATE + CROSSOVER_RATE:
            return rng.choice(others)
        if own:
            return rng.choice(own)
        if others:
            return rng.choice(others)
        latest = self._query("ORDER BY id DESC LIMIT 1")
        if not latest:
            raise LookupError(f"the program database {self.path} is empty: add a program first")
        return latest[0]

    def _inspirations(
        self, island: int, parent: Program, rng: random.Random, n: int
    ) -> list[Program]:
        if n <= 0:
            return []
        chosen: list[Program] = []
        seen_codes = {parent.code}

        def take(candidates: Iterable[Program]) -> None:
            for prog in candidates:
                if len(chosen) >= n:
                    return
                if prog.id != parent.id and prog.code not in seen_codes:
                    seen_codes.add(prog.code)
                    chosen.append(prog)

        own = self._sorted_grid(island)
        take(sorted(own, key=self._rank_key)[:1])
        rest = [p for p in own if p.code not in seen_codes]
        take(rng.sample(rest, min(len(rest), n)))
        if len(chosen) < n:
            order = "DESC" if self.maximize else "ASC"
            take(
                self._query(
                    f"WHERE island = ? AND ok = 1 ORDER BY score {order}, id ASC LIMIT ?",
                    (island, 4 * n + 4),
                )
            )
        return chosen

    # -- meta ----------------------------------------------------------------

    def set_meta(self, key: str | None = None, value: Any = _MISSING, /, **values: Any) -> None:
        """Store JSON values: ``set_meta("iterations_done", 12)`` or ``set_meta(a=1, b=2)``.

        Raises:
            ValueError: a key the database owns (metric, maximize, islands, features, seed).
            TypeError: a value that is not JSON-serializable.
        """
        if key is not None:
            if value is _MISSING:
                raise TypeError("set_meta(key, value) needs a value")
            values = {key: value, **values}
        encoded = self._encode_meta(values)
        with self._lock:
            self._check_open()
            with self._transaction():
                self._write_meta(**encoded)

    @staticmethod
    def _encode_meta(values: dict[str, Any]) -> dict[str, Any]:
        """``values`` as they will read back (JSON round trip); refuses the database's keys."""
        reserved = sorted(_RESERVED_META & values.keys())
        if reserved:
            raise ValueError(f"meta key(s) {', '.join(reserved)} belong to the database")
        return {k: json.loads(json.dumps(v)) for k, v in values.items()}

    def get_meta(self, key: str, default: Any = None) -> Any:
        """A stored meta value (settings included), or ``default``."""
        with self._lock:
            self._check_open()
            value = self._read_meta(key)
        return default if value is _MISSING else value

    # -- closing -------------------------------------------------------------

    def close(self) -> None:
        """Close the file (idempotent); later calls raise ``DatabaseError``."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> ProgramDatabase:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"ProgramDatabase({str(self.path)!r}, metric={self.metric!r}, "
            f"maximize={self.maximize}, islands={self.islands})"
        )

    def failure_kinds(self) -> list[tuple[str, int, str]]:
        """Failures by kind, most frequent first: ``(kind, count, the latest one's error)``.

        The kind is the word the coordinator puts before the first ``:`` of a
        failure's note (``crash``, ``timeout``, ``memory``, ``proposal``, ...);
        a failure whose note has none is ``bad_metrics`` when the database
        failed it for its metrics, else ``failed``.
        """
        with self._lock:
            self._check_open()
            rows = self._conn.execute(
                "SELECT note, error FROM programs WHERE ok = 0 ORDER BY id"
            ).fetchall()
        kinds: dict[str, tuple[int, str]] = {}
        for note, error in rows:
            head, colon, _ = (note or "").partition(":")
            if colon and head.isidentifier() and head.islower():
                kind = head
            elif (error or "").startswith("bad metrics"):
                kind = "bad_metrics"
            else:
                kind = "failed"
            count, example = kinds.get(kind, (0, ""))
            kinds[kind] = (count + 1, _one_line(error) if error else example)
        return sorted(
            ((kind, n, example) for kind, (n, example) in kinds.items()),
            key=lambda row: (-row[1], row[0]),
        )


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
