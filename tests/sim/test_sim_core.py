"""The simulation engine's parts: agents as columns, the grid, params, run, recorder."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sim_toy_models import Exchange, Stops

import ambidex as ax
import ambidex.sim as sim

# -- agents ------------------------------------------------------------------------


def test_agents_add_remove_keep_order_and_ids() -> None:
    a = sim.Agents(2, wealth=np.int64, x=np.float32)
    a.add(3, wealth=[5, 6, 7], x=1.5)
    a.add(2)
    assert len(a) == 5
    assert a.capacity >= 5
    assert a.id.tolist() == [0, 1, 2, 3, 4]
    assert a.wealth.tolist() == [5, 6, 7, 0, 0]
    assert a.x.dtype == np.float32
    assert a.remove(a.wealth == 6) == 1
    assert a.id.tolist() == [0, 2, 3, 4]
    a.remove([0, 2])
    assert a.id.tolist() == [2, 4]
    a.add(1, wealth=9)
    assert a.id.tolist() == [2, 4, 5]  # ids are never reused
    a.wealth += 1
    assert a["wealth"].tolist() == [8, 1, 10]


def test_agents_reject_bad_fields_and_lengths() -> None:
    with pytest.raises(ValueError, match="reserved"):
        sim.Agents(id=np.int64)
    with pytest.raises(ValueError, match="at least one field"):
        sim.Agents()
    a = sim.Agents(wealth=np.int64)
    with pytest.raises(ValueError, match="2 values for 3 new agents"):
        a.add(3, wealth=[1, 2])
    with pytest.raises(KeyError, match="height"):
        a.add(1, height=3)
    with pytest.raises(AttributeError, match="no field 'wealthy'"):
        _ = a.wealthy
    with pytest.raises(ValueError, match="mask of shape"):
        a.remove(np.zeros(5, dtype=bool))


def test_agents_kernel_protocol_reserve_column_set_count() -> None:
    a = sim.Agents(wealth=np.int64)
    a.add(2, wealth=1)
    a.reserve(3)
    wealth, ids = a.column("wealth"), a.column("id")
    wealth[2:5] = [7, 8, 9]
    ids[2:5] = [a.next_id, a.next_id + 1, a.next_id + 2]
    a.set_count(5, next_id=a.next_id + 3)
    assert a.wealth.tolist() == [1, 1, 7, 8, 9]
    assert a.add(1).start == 5
    assert a.id[-1] == 5


# -- grid --------------------------------------------------------------------------


def _brute_neighbors(g: sim.Grid, radius: int) -> list[set[int]]:
    out = []
    for c in range(g.size):
        x, y = divmod(c, g.height)
        found = set()
        for dx, dy in g.offsets(radius):
            nx, ny = x + dx, y + dy
            if g.torus:
                nx, ny = nx % g.width, ny % g.height
            elif not (0 <= nx < g.width and 0 <= ny < g.height):
                continue
            if (nx, ny) != (x, y):
                found.add(nx * g.height + ny)
        out.append(found)
    return out


@pytest.mark.parametrize("torus", [False, True])
@pytest.mark.parametrize("kind", ["moore", "von_neumann"])
@pytest.mark.parametrize("radius", [1, 2])
def test_grid_neighbors_match_brute_force(torus: bool, kind: Any, radius: int) -> None:
    g = sim.Grid(7, 5, torus=torus, neighborhood=kind)
    table, counts = g.neighbors(radius)
    expected = _brute_neighbors(g, radius)
    for c in range(g.size):
        row = table[c, : counts[c]].tolist()
        assert len(row) == len(set(row))
        assert set(row) == expected[c]
        assert (table[c, counts[c] :] == -1).all()
    if not torus:
        corner = 8 if kind == "moore" and radius == 2 else (3 if kind == "moore" else 2)
        assert counts[0] == (corner if radius == 1 or kind == "moore" else 5)


def test_grid_members_index_and_empty_cells() -> None:
    g = sim.Grid(3, 3)
    cells = np.array([4, 0, 4, 8, 4])
    start, order = g.members(cells)
    assert order[start[4] : start[5]].tolist() == [0, 2, 4]
    assert order[start[0] : start[1]].tolist() == [1]
    assert g.occupancy(cells)[4] == 3
    assert g.empty_cells(cells).tolist() == [1, 2, 3, 5, 6, 7]
    assert g.xy(g.cell(2, 1)) == (2, 1)


def test_grid_one_agent_per_cell() -> None:
    g = sim.Grid(4, 3)
    occupant = g.occupants([5, 0, 11])
    assert occupant[5] == 0
    assert occupant[11] == 2
    assert (occupant == -1).sum() == 9
    with pytest.raises(ValueError, match=r"cell 5 \(1, 2\) holds 2 agents"):
        g.occupants([5, 1, 5])


# -- params ------------------------------------------------------------------------


def test_params_are_checked_and_coerced() -> None:
    p = sim.resolve_params(Exchange, {"n": "50", "p": 1})
    assert p == {"n": 50, "p": 1.0, "label": "x"}
    with pytest.raises(sim.ModelError, match=r"unknown parameter\(s\) q; the model takes: n=200"):
        sim.resolve_params(Exchange, {"q": 1})
    with pytest.raises(sim.ModelError, match="parameter 'n' expects int, got 'many'"):
        sim.resolve_params(Exchange, {"n": "many"})
    with pytest.raises(sim.ModelError, match=r"parameter 'n' expects int, got 2\.5"):
        sim.resolve_params(Exchange, {"n": 2.5})
    with pytest.raises(sim.ModelError, match="parameter 'p' expects float"):
        sim.resolve_params(Exchange, {"p": True})


# -- run ---------------------------------------------------------------------------


def test_same_seed_is_bit_identical_and_ignores_global_random_state() -> None:
    np.random.seed(1)
    random.seed(1)
    a = sim.run(Exchange, {"n": 300}, steps=40, seed=5)
    np.random.seed(2)
    random.seed(2)
    np.random.random(100)
    b = sim.run(Exchange, {"n": 300}, steps=40, seed=5)
    c = sim.run(Exchange, {"n": 300}, steps=40, seed=6)
    assert a.metrics.equals(b.metrics)
    assert a.metrics.digest() == b.metrics.digest()
    assert not a.metrics.equals(c.metrics)
    assert len(a.metrics) == 41
    assert a.metrics["step"].tolist() == list(range(41))
    assert (a.metrics["total"] == 300).all()  # wealth is conserved
    assert a.steps == 40
    assert a.final is not None
    assert len(a.final.agents) == 300


def test_run_stops_when_the_model_says_so() -> None:
    r = sim.run(Stops, {"until": 3}, steps=10)
    assert r.steps == 3
    assert r.metrics["count"].tolist() == [0, 1, 2, 3]


def test_run_reports_progress_and_rejects_bad_arguments() -> None:
    seen: list[tuple[int, int]] = []
    sim.run(Exchange, steps=3, progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (1, 3)
    assert seen[-1] == (3, 3)
    assert [d for d, _ in seen] == sorted({d for d, _ in seen})
    with pytest.raises(sim.ModelError, match="seed must be a non-negative integer"):
        sim.run(Exchange, seed=-1)
    with pytest.raises(sim.ModelError, match="steps must be"):
        sim.run(Exchange, steps=-2)


def test_run_reports_progress_ten_times_a_second_at_most_when_steps_are_fast() -> None:
    seen: list[tuple[int, int]] = []
    result = sim.run(Counts, steps=20_000, progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (1, 20_000)
    assert seen[-1] == (20_000, 20_000)
    assert len(seen) <= 2 + result.elapsed_s / 0.1 + 1


def test_run_reports_the_last_step_once_when_the_model_stops_itself() -> None:
    seen: list[tuple[int, int]] = []
    sim.run(Stops, {"until": 4}, steps=10, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (4, 10)
    assert [d for d, _ in seen].count(4) == 1


class Counts(sim.Model):
    """Does nearly nothing a step: the run's own cost is all there is."""

    def setup(self, params: sim.Params) -> None:
        self.k = 0

    def step(self) -> None:
        self.k += 1

    def metrics(self) -> dict[str, int]:
        return {"k": self.k}


def test_bad_metrics_are_named() -> None:
    class Bad(sim.Model):
        def setup(self, params: sim.Params) -> None:
            self.k = 0

        def step(self) -> None:
            self.k += 1

        def metrics(self) -> dict[str, Any]:
            return {"k": self.k} if self.k < 2 else {"k": "two"}

    with pytest.raises(sim.ModelError, match=r"Bad.metrics\(\)\['k'\] at step 2 is str"):
        sim.run(Bad, steps=3)


@pytest.mark.parametrize("key", [1, None, b"k", ""])
def test_a_metric_name_that_is_not_text_is_named(key: Any) -> None:
    class Keys(sim.Model):
        def setup(self, params: sim.Params) -> None:
            pass

        def step(self) -> None:
            pass

        def metrics(self) -> dict[Any, int]:
            return {"k": 1, key: 2}

    with pytest.raises(sim.ModelError, match=r"Keys.metrics\(\) at step 0 has the key .*"):
        sim.run(Keys, steps=1)


class Mixed(sim.Model):
    """Metrics whose types change from step to step, as careless models' do."""

    def setup(self, params: sim.Params) -> None:
        self.k = 0

    def step(self) -> None:
        self.k += 1

    def metrics(self) -> dict[str, Any]:
        k = self.k
        return {
            "flag": k % 2 == 0 if k < 3 else np.bool_(k % 3 == 0),
            "ratio": k if k < 2 else k / 3,
            "small": np.float32(k) / np.float32(7),
            "count": np.int32(k) if k % 2 else k,
        }


def test_run_table_is_what_the_rows_make_when_metric_types_change() -> None:
    result = sim.run(Mixed, steps=6)
    model = Mixed()
    model.setup(model.params)
    rows = []
    for step in range(7):
        if step:
            model.step()
        m = model.metrics()
        rows.append([step, *(int(v) if isinstance(v, (bool, np.bool_)) else v for v in m.values())])
    expected = sim.MetricsTable.from_rows(["step", "flag", "ratio", "small", "count"], rows)
    assert result.metrics.equals(expected)
    assert result.metrics["flag"].dtype == np.int64
    assert result.metrics["small"].dtype == np.float32


def test_run_names_a_metric_key_that_changes_after_fast_steps() -> None:
    class Renames(sim.Model):
        def setup(self, params: sim.Params) -> None:
            self.k = 0

        def step(self) -> None:
            self.k += 1

        def metrics(self) -> dict[str, int]:
            return {"a": self.k, "b": 0} if self.k < 5 else {"b": 0, "a": self.k}

    with pytest.raises(sim.ModelError, match=r"at step 5 returned \['b', 'a'\]"):
        sim.run(Renames, steps=8)


def test_run_takes_any_mapping_of_numbers_as_metrics() -> None:
    class Frozen(sim.Model):
        def setup(self, params: sim.Params) -> None:
            self.k = 0

        def step(self) -> None:
            self.k += 1

        def metrics(self) -> Any:
            import types

            return types.MappingProxyType({"k": self.k})

    assert sim.run(Frozen, steps=3).metrics["k"].tolist() == [0, 1, 2, 3]


def test_inputs_are_read_only_in_the_model() -> None:
    class Writes(sim.Model):
        def setup(self, params: sim.Params) -> None:
            self.inputs["data"][0] = 1.0

        def step(self) -> None: ...

        def metrics(self) -> dict[str, Any]:
            return {}

    with pytest.raises(ValueError, match="read-only"):
        sim.run(Writes, inputs={"data": np.zeros(3)})


def test_load_model_from_file_and_module(tmp_path: Path) -> None:
    f = tmp_path / "two_models.py"
    f.write_text(
        "import ambidex.sim as sim\n"
        "class A(sim.Model):\n    pass\n"
        "class B(sim.Model):\n"
        "    def setup(self, params): pass\n"
        "    def step(self): pass\n"
        "    def metrics(self): return {}\n"
    )
    with pytest.raises(sim.ModelError, match="defines 2 Model classes"):
        sim.load_model(str(f))
    assert sim.load_model(f"{f}:B").__name__ == "B"
    with pytest.raises(sim.ModelError, match=r"two_models.py:2: A must define setup"):
        sim.load_model(f"{f}:A")  # found when loaded, not after the first steps
    with pytest.raises(sim.ModelError, match=r"has no Model class 'C' \(models: A, B\)"):
        sim.load_model(f"{f}:C")
    with pytest.raises(sim.ModelError, match="model file not found"):
        sim.load_model(str(tmp_path / "missing.py"))
    assert sim.load_model("sim_toy_models:Stops") is Stops


# -- recorder ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".sqlite", ".parquet"])
def test_recorder_writes_in_batches_and_reads_back(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"run{suffix}"
    with sim.Recorder(path, buffer_rows=1_000_000) as rec:
        r = sim.run(Exchange, {"n": 500}, steps=20, seed=3, record=rec, snapshot_every=5)
        # 20 steps x 500 agents were snapshotted 5 times, metrics 21 x 3: one write at the end
        assert rec.flushes == 0
    assert rec.flushes == 1
    back = sim.open_record(path)
    assert [x.run_id for x in back.runs] == [r.run_id]
    row = back.runs[0]
    assert row.model == "Exchange"
    assert row.params["n"] == 500
    assert row.steps == 20
    assert row.digest == r.metrics.digest()
    table = back.metrics(row.run_id)
    assert np.array_equal(table["gini"], r.metrics["gini"])
    assert np.array_equal(table["total"], r.metrics["total"].astype(float))
    snap = back.agents(row.run_id, 10)
    assert len(snap["wealth"]) == 500
    assert set(snap) >= {"run_id", "step", "id", "wealth", "energy"}
    assert int(np.sum(snap["wealth"])) == 500


def test_a_finished_run_is_written_once_flush_every_s_has_passed(tmp_path: Path) -> None:
    """So a process killed mid-sweep loses only its last second's runs (docs/sim.md)."""
    path = tmp_path / "now.sqlite"
    with sim.Recorder(path, flush_every_s=0) as rec:
        r = sim.run(Exchange, {"n": 50}, steps=5, seed=1, record=rec)
        other = sqlite3.connect(path)  # another reader, while the recorder is still open
        (status,) = other.execute("SELECT status FROM runs").fetchone()
        (rows,) = other.execute("SELECT COUNT(*) FROM metrics").fetchone()
        other.close()
        assert status == "done"
        assert rows == 6 * (len(r.metrics.columns) - 1)
        sim.run(Exchange, {"n": 50}, steps=5, seed=2, record=rec)
        assert rec.flushes == 2
    path = tmp_path / "later.sqlite"
    with sim.Recorder(path) as rec:  # default: 1 s; two quick runs are one write, at close
        sim.run(Exchange, {"n": 50}, steps=5, seed=1, record=rec)
        sim.run(Exchange, {"n": 50}, steps=5, seed=2, record=rec)
        assert rec.flushes == 0
    assert rec.flushes == 1


def test_recorder_flushes_when_the_buffer_fills(tmp_path: Path) -> None:
    path = tmp_path / "small-buffer.sqlite"
    with sim.Recorder(path, buffer_rows=1000) as rec:
        sim.run(Exchange, {"n": 400}, steps=10, seed=1, record=rec, snapshot_every=1)
        flushes = rec.flushes
    # 11 snapshots of 400 rows with a 1,000-row buffer: a handful of batched writes
    assert 3 <= flushes <= 6
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM agents").fetchone()[0] == 11 * 400
    db.close()


def test_recorder_appends_runs_and_rejects_bad_paths(tmp_path: Path) -> None:
    path = tmp_path / "many.sqlite"
    sim.run(Exchange, steps=2, record=path)
    sim.run(Exchange, steps=2, seed=1, record=path)
    assert [r.run_id for r in sim.open_record(path).runs] == [1, 2]
    with pytest.raises(sim.RecordError, match="cannot tell the record format"):
        sim.Recorder(tmp_path / "run.txt")
    with pytest.raises(sim.RecordError, match="no record at"):
        sim.open_record(tmp_path / "nothing.sqlite")
    (tmp_path / "junk.sqlite").write_text("not a database")
    with pytest.raises(sim.RecordError, match=r"junk\.sqlite"):
        sim.Recorder(tmp_path / "junk.sqlite")


def test_gini() -> None:
    assert sim.gini([1, 1, 1, 1]) == pytest.approx(0.0)
    assert sim.gini([0, 0, 0, 10]) == pytest.approx(0.75)
    assert sim.gini([]) == 0.0


def test_gini_gives_the_bits_of_its_plain_numpy_formula() -> None:
    def plain(values: Any) -> float:
        x = np.sort(np.asarray(values, dtype=np.float64))
        n, total = len(x), x.sum()
        if n == 0 or total == 0 or not np.isfinite(total):
            return 0.0
        cum = np.arange(n, 0, -1, dtype=np.float64)
        return 1.0 + 1.0 / n - 2.0 * float((x * cum).sum() / (n * total))

    rng = np.random.default_rng(17)
    for n in (1, 2, 7, 100, 513, 10_000):
        for values in (rng.integers(0, 9, n), rng.pareto(1.2, n) * 1e6, list(rng.random(n))):
            original = np.array(values, copy=True)
            assert sim.gini(values) == plain(values)
            assert np.array_equal(np.asarray(values), original)  # not sorted in place


def test_sim_is_reachable_from_ax() -> None:
    import ambidex

    assert ax is ambidex
    assert sim.run is ambidex.sim.run


def test_a_record_keeps_the_models_metric_order(tmp_path: Path) -> None:
    for suffix in (".sqlite", ".parquet"):
        path = tmp_path / f"order{suffix}"
        sim.run(Exchange, steps=2, record=path)
        rec = sim.open_record(path)
        assert rec.metric_names() == ["gini", "total", "energy"]
        assert rec.metrics(1).columns == ["step", "gini", "total", "energy"]


def test_a_one_run_sweep_with_plain_seed_gives_what_run_gives() -> None:
    alone = sim.run(Exchange, {"n": 60}, steps=8, seed=5)
    plain = sim.sweep(Exchange, params={"n": 60}, steps=8, seed=5, plain_seed=True, progress=False)
    child = sim.sweep(Exchange, params={"n": 60}, steps=8, seed=5, progress=False)
    assert plain.runs[0].metrics.digest() == alone.metrics.digest()
    assert child.runs[0].metrics.digest() != alone.metrics.digest()  # the sweep's child k = 0
