"""The program database: MAP-Elites grids per island, migration, sampling, SQLite persistence."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ambidex.evolve._database import (
    CROSSOVER_RATE,
    EXPLOIT_RATE,
    DatabaseError,
    Program,
    ProgramDatabase,
)

FEATURES = {"x": (0.0, 10.0, 5)}


def prog(
    score: float,
    *,
    x: float | None = 1.0,
    island: int = 0,
    ok: bool = True,
    parent: int | None = None,
    tag: str = "",
) -> Program:
    metrics = {"score": score}
    if x is not None:
        metrics["x"] = x
    code = f"def f():\n    return {score!r}  # {tag}{x}{island}\n"
    return Program(code=code, metrics=metrics, score=None, ok=ok, island=island, parent_id=parent)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[ProgramDatabase]:
    database = ProgramDatabase(
        tmp_path / "db.sqlite", metric="score", islands=2, features=FEATURES, migration_interval=0
    )
    yield database
    database.close()


def test_add_assigns_id_time_score_and_features_when_stored(db: ProgramDatabase) -> None:
    given = prog(3.0, x=4.0)
    stored = db.add(given)
    assert stored.id == 1
    assert stored.created_at > 0
    assert stored.score == 3.0
    assert stored.features == {"x": 4.0}
    assert given.id is None  # the caller's object is left alone
    assert db.get(1) == stored
    with pytest.raises(ValueError, match="already stored"):
        db.add(stored)


def test_elite_takes_its_cell_when_better_only(db: ProgramDatabase) -> None:
    a = db.add(prog(1.0, x=1.0))  # bin 0 (width 2)
    b = db.add(prog(0.5, x=1.5))  # same bin, worse: not an elite
    c = db.add(prog(2.0, x=0.5))  # same bin, better: replaces a
    d = db.add(prog(0.1, x=9.0))  # bin 4: its own cell
    grid = db.grid(0)
    assert grid == {"[0]": c, "[4]": d}
    assert a.id not in {p.id for p in db.elites()}
    assert b.id not in {p.id for p in db.elites()}
    same = db.add(prog(2.0, x=0.2, tag="tie"))  # a tie keeps the incumbent
    assert db.grid(0)["[0]"].id == c.id
    assert same.ok


def test_feature_values_are_clipped_into_the_range_when_outside(db: ProgramDatabase) -> None:
    low = db.add(prog(1.0, x=-50.0))
    high = db.add(prog(1.0, x=50.0))
    edge = db.add(prog(1.0, x=10.0, tag="edge"))
    assert db.cell_of(low.features) == "[0]"
    assert db.cell_of(high.features) == "[4]"
    assert db.cell_of(edge.features) == "[4]"


def test_lower_scores_win_when_minimizing(tmp_path: Path) -> None:
    with ProgramDatabase(tmp_path / "min.sqlite", metric="score", maximize=False) as db:
        db.add(prog(5.0))
        best = db.add(prog(2.0))
        db.add(prog(3.0))
        assert db.best() == best
        assert db.elites(0) == [best]


def test_grid_has_one_cell_when_there_are_no_features(tmp_path: Path) -> None:
    with ProgramDatabase(tmp_path / "one.sqlite", metric="score", islands=1) as db:
        for score in (1.0, 3.0, 2.0):
            db.add(prog(score, x=score))
        assert list(db.grid(0)) == ["[]"]
        assert [p.score for p in db.elites()] == [3.0]


def test_builtin_features_come_from_code_unless_metrics_give_them(tmp_path: Path) -> None:
    features = {"lines": (0.0, 10.0, 10), "length": (0.0, 1000.0, 4)}
    with ProgramDatabase(tmp_path / "b.sqlite", metric="score", features=features) as db:
        code = "def f():\n\n    a = 1\n    return a\n"
        p = db.add(Program(code=code, metrics={"score": 1.0}, score=None, ok=True))
        assert p.features == {"length": float(len(code)), "lines": 3.0}
        q = db.add(Program(code=code, metrics={"score": 1.0, "lines": 7.0}, score=None, ok=True))
        assert q.features["lines"] == 7.0
        assert db.cell_of(q.features) == "[0, 7]"  # dimensions sorted by name


def test_feature_without_metric_or_builtin_makes_a_failure_when_added(
    db: ProgramDatabase,
) -> None:
    p = db.add(prog(1.0, x=None))
    assert not p.ok
    assert p.score is None
    assert "feature 'x' is not a built-in" in (p.error or "")
    assert db.elites() == []


def test_bad_metrics_are_stored_as_failures_when_ok_claimed(db: ProgramDatabase) -> None:
    missing = db.add(Program(code="def f(): pass\n", metrics={"x": 1.0}, score=None, ok=True))
    nan = db.add(prog(float("nan")))
    text = db.add(Program(code="x", metrics={"score": "high"}, score=None, ok=True))  # type: ignore[dict-item]
    assert (missing.ok, nan.ok, text.ok) == (False, False, False)
    assert "no metric 'score'" in (missing.error or "")
    assert "nan" in (nan.error or "")
    assert "not numbers" in (text.error or "")
    assert db.stats()["failures"] == 3


def test_failures_are_stored_and_reported_when_added(db: ProgramDatabase) -> None:
    db.add(prog(1.0))
    err = "Traceback (most recent call last):\n" + "".join(f"  line {i}\n" for i in range(30))
    failed = db.add(
        Program(
            code="def f():\n    return 1 / 0\n",
            metrics={},
            score=3.0,  # ignored: a failure has no score
            ok=False,
            error="ZeroDivisionError: division by zero",
            stderr=err + "ZeroDivisionError: division by zero\n",
        )
    )
    db.add(Program(code="def f(): ...", metrics={}, score=None, ok=False, error="timeout"))
    assert failed.score is None
    assert [p.id for p in db.history()] == [1, 2, 3]
    assert db.elites() == [db.get(1)]
    stats = db.stats()
    assert (stats["programs"], stats["successes"], stats["failures"]) == (3, 1, 2)
    errors = db.recent_errors(0, 5)
    assert errors[-1] == "timeout"
    assert errors[0].startswith("ZeroDivisionError: division by zero\nstderr")
    assert "line 29" in errors[0]
    assert "line 2\n" not in errors[0]  # only the tail of stderr
    assert db.recent_errors(0, 1) == ["timeout"]
    assert db.recent_errors(1, 5) == []


def test_islands_keep_separate_grids_when_added(db: ProgramDatabase) -> None:
    a = db.add(prog(1.0, island=0))
    b = db.add(prog(2.0, island=1))
    assert db.elites(0) == [a]
    assert db.elites(1) == [b]
    assert db.elites() == [b, a]
    stats = db.stats()
    assert [i["best_id"] for i in stats["islands"]] == [a.id, b.id]
    assert stats["best_id"] == b.id
    with pytest.raises(ValueError, match="island"):
        db.add(prog(1.0, island=2))
    with pytest.raises(ValueError, match="island"):
        db.elites(5)


def test_migrate_copies_each_best_to_the_next_island_when_better(tmp_path: Path) -> None:
    with ProgramDatabase(
        tmp_path / "m.sqlite", metric="score", islands=3, migration_interval=0
    ) as db:
        a = db.add(prog(5.0, island=0))
        b = db.add(prog(1.0, island=1))
        c = db.add(prog(3.0, island=2))
        moves = db.migrate()
        # decided on the bests before any move: 0 -> 1 places a, 1 -> 2 offers b (worse than c),
        # 2 -> 0 offers c (worse than a)
        assert moves == [(0, 1, a.id, True), (1, 2, b.id, False), (2, 0, c.id, False)]
        assert db.elites(1) == [a]
        assert db.elites(2) == [c]
        assert db.elites(0) == [a]
        assert db.elites() == [a, c]  # each program once
        assert [m["placed"] for m in db.migrations()] == [True, False, False]
        assert db.stats()["migrations"] == 3
        assert len(db) == 3  # migrants are not new programs


def test_migration_runs_every_interval_of_successes_when_automatic(tmp_path: Path) -> None:
    with ProgramDatabase(
        tmp_path / "auto.sqlite", metric="score", islands=2, migration_interval=3
    ) as db:
        db.add(prog(1.0, island=0))
        db.add(prog(9.0, island=0))
        db.add(prog(0.0, island=1, ok=False))  # failures do not count
        assert db.migrations() == []
        db.add(prog(2.0, island=1))  # third success: migrate
        assert [(m["source"], m["target"]) for m in db.migrations()] == [(0, 1), (1, 0)]
        assert db.elites(1)[0].score == 9.0


def test_single_island_never_migrates_when_asked(tmp_path: Path) -> None:
    with ProgramDatabase(tmp_path / "s.sqlite", metric="score", islands=1) as db:
        db.add(prog(1.0))
        assert db.migrate() == []


def test_sample_keeps_mostly_to_the_island_when_drawn_many_times(tmp_path: Path) -> None:
    with ProgramDatabase(
        tmp_path / "s.sqlite",
        metric="score",
        islands=2,
        features={"x": (0.0, 10.0, 10)},
        migration_interval=0,
    ) as db:
        own = [db.add(prog(float(i), x=float(i), island=0)) for i in range(6)]
        other = [db.add(prog(float(i), x=float(i), island=1, tag="o")) for i in range(3)]
        own_ids, other_ids = {p.id for p in own}, {p.id for p in other}
        rng = random.Random(1)
        draws = [db.sample(0, rng) for _ in range(2000)]
        parents = Counter(parent.id for parent, _ in draws)
        from_other = sum(n for pid, n in parents.items() if pid in other_ids)
        assert set(parents) <= own_ids | other_ids
        assert abs(from_other / 2000 - CROSSOVER_RATE) < 0.03
        best_share = parents[own[-1].id] / 2000  # exploit + its uniform share
        expected = EXPLOIT_RATE + (1 - EXPLOIT_RATE - CROSSOVER_RATE) / len(own)
        assert abs(best_share - expected) < 0.04
        for parent, inspirations in draws[:200]:
            assert parent.id not in {p.id for p in inspirations}
            assert {p.id for p in inspirations} <= own_ids
            assert len(inspirations) == 3
            assert len({p.code for p in inspirations}) == 3
        again = [db.sample(0, random.Random(1)) for _ in range(3)]
        assert again[0] == again[1] == again[2]
        assert again[0] == draws[0]


def test_sample_borrows_from_other_islands_when_the_island_is_empty(
    db: ProgramDatabase,
) -> None:
    with pytest.raises(LookupError, match="empty"):
        db.sample(0, random.Random(0))
    failed = db.add(prog(1.0, ok=False))
    parent, inspirations = db.sample(0, random.Random(0))
    assert parent == failed  # nothing succeeded yet: the latest program stands in
    assert inspirations == []
    elite = db.add(prog(2.0, island=1))
    assert db.sample(0, random.Random(0))[0] == elite


def test_best_history_and_lineage_follow_the_additions(db: ProgramDatabase) -> None:
    root = db.add(prog(1.0))
    child = db.add(prog(2.0, parent=root.id, x=5.0))
    db.add(prog(0.0, parent=child.id, ok=False))
    grandchild = db.add(prog(3.0, parent=child.id, x=9.0))
    assert db.best() == grandchild
    assert [p.id for p in db.history()] == [1, 2, 3, 4]
    assert [p.id for p in db.history(limit=2)] == [1, 2]
    assert [p.id for p in db.history(limit=2, newest=True)] == [3, 4]
    assert [p.id for p in db.lineage(grandchild.id or 0)] == [root.id, child.id, grandchild.id]
    assert db.lineage(root.id or 0) == [root]
    with pytest.raises(KeyError):
        db.lineage(99)


def test_meta_stores_json_values_when_set(db: ProgramDatabase) -> None:
    db.set_meta("iterations_done", 12)
    db.set_meta(target_file="/x.py", extra={"a": [1, 2]})
    assert db.get_meta("iterations_done") == 12
    assert db.get_meta("extra") == {"a": [1, 2]}
    assert db.get_meta("missing") is None
    assert db.get_meta("missing", 0) == 0
    assert db.get_meta("metric") == "score"
    with pytest.raises(ValueError, match="belong to the database"):
        db.set_meta(islands=3)
    with pytest.raises(TypeError):
        db.set_meta("key", object())


def test_reopening_restores_everything_when_killed_and_started_again(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    settings = {"metric": "score", "islands": 2, "features": FEATURES, "migration_interval": 3}
    db = ProgramDatabase(path, **settings)
    db.add(prog(1.0, island=0))
    db.add(prog(7.0, island=0, x=9.0))
    db.add(prog(0.0, island=1, ok=False, parent=1))
    db.set_meta(iterations_done=3)
    before = (db.stats(), db.elites(0), db.elites(1), db.history())
    db.close()  # (a kill loses nothing committed either: every add commits)
    with pytest.raises(DatabaseError, match="closed"):
        db.best()

    with ProgramDatabase(path, **settings) as again:
        assert (again.stats(), again.elites(0), again.elites(1), again.history()) == before
        assert again.get_meta("iterations_done") == 3
        again.add(prog(4.0, island=1))  # the third success overall: migration is due
        assert len(again.migrations()) == 2
        assert again.elites(1)[0].score == 7.0
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert {"programs", "elites", "meta", "migrations"} <= tables


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"metric": "other"}, "metric: stored 'score', given 'other'"),
        ({"islands": 3}, "islands: stored 2, given 3"),
        ({"maximize": False}, "maximize: stored True, given False"),
        ({"features": {"x": (0.0, 10.0, 6)}}, "features: stored"),
        ({"features": None}, "given {}"),
    ],
)
def test_reopening_with_other_settings_fails_when_they_differ(
    tmp_path: Path, change: dict[str, object], named: str
) -> None:
    path = tmp_path / "run.sqlite"
    settings: dict[str, object] = {"metric": "score", "islands": 2, "features": FEATURES}
    ProgramDatabase(path, **settings).close()  # type: ignore[arg-type]
    with pytest.raises(DatabaseError, match="other settings") as info:
        ProgramDatabase(path, **{**settings, **change})  # type: ignore[arg-type]
    assert named in str(info.value)
    # the same settings (in another order, ints for floats) open it again
    ProgramDatabase(path, metric="score", islands=2, features={"x": (0, 10, 5)}, seed=3).close()


@pytest.mark.parametrize(
    "features",
    [{"x": (1.0, 1.0, 3)}, {"x": (0.0, 1.0, 0)}, {"x": (0.0, 1.0)}, {"x": (0.0, 1.0, 2.5)}],
)
def test_bad_feature_specs_fail_when_opened(tmp_path: Path, features: dict[str, object]) -> None:
    with pytest.raises(DatabaseError, match="feature 'x'"):
        ProgramDatabase(tmp_path / "bad.sqlite", metric="score", features=features)  # type: ignore[arg-type]


def test_returned_programs_are_copies_when_changed_by_the_caller(db: ProgramDatabase) -> None:
    stored = db.add(prog(2.0))
    stored.metrics["score"] = -1.0
    stored.score = -1.0
    parent, _ = db.sample(0, random.Random(0))
    parent.features["x"] = 99.0
    db.elites()[0].code = "changed"
    assert db.elites(0)[0].score == 2.0
    assert db.elites(0)[0].metrics["score"] == 2.0
    assert db.grid(0)["[0]"].features == {"x": 1.0}
    assert db.best() == db.get(stored.id or 0)
    assert db.get(stored.id or 0).code.startswith("def f()")
