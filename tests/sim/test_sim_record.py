"""Records: vector fields, run statuses, runs stopped midway, ``to_pandas``, numba compile time."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import ambidex.sim as sim
from ambidex.sim._recorder import RunStatus


class Swarm(sim.Model):
    """Agents in the plane with vector fields of every recordable kind."""

    defaults = {"n": 30, "stop_at": -1, "bad_at": -1}

    def setup(self, params: sim.Params) -> None:
        self.space = sim.ContinuousSpace(10.0, 5.0, torus=True)
        self.agents = sim.Agents(
            params.n,
            pos=(np.float64, 2),
            cell=(np.int32, 3),
            flags=(np.bool_, 2),
            tile=(np.int16, (2, 2)),
            alive=np.bool_,
            energy=np.float32,
        )
        n = params.n
        self.agents.add(
            n,
            pos=self.rng.random((n, 2)) * [10.0, 5.0],
            cell=self.rng.integers(-5, 5, (n, 3)),
            flags=self.rng.random((n, 2)) < 0.5,
            tile=self.rng.integers(0, 100, (n, 2, 2)),
            alive=True,
            energy=self.rng.random(n),
        )

    def step(self) -> None:
        a = self.agents
        if self.step_index + 1 == self.params.stop_at:
            raise KeyboardInterrupt
        a.pos = (a.pos + self.rng.normal(0, 0.5, a.pos.shape)) % [10.0, 5.0]
        a.cell += self.rng.integers(-1, 2, a.cell.shape).astype(np.int32)
        a.flags ^= self.rng.random(a.flags.shape) < 0.3
        a.alive = self.rng.random(len(a)) < 0.9

    def metrics(self) -> dict[str, float]:
        return {"x": float(self.agents.pos[:, 0].sum()), "alive": int(self.agents.alive.sum())}

    def snapshot(self) -> dict[str, np.ndarray[Any, Any]]:
        snap = self.agents.snapshot()
        if self.step_index == self.params.bad_at:
            snap["energy"] = snap["energy"].astype(np.complex128)
        return snap


@pytest.mark.parametrize("suffix", [".sqlite", ".parquet"])
def test_vector_fields_round_trip_with_their_dtype_and_shape(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"swarm{suffix}"
    result = sim.run(Swarm, steps=6, seed=4, record=path, snapshot_every=3)
    record = sim.open_record(path)
    assert record.snapshot_steps(1) == [0, 3, 6]
    back = record.agents(1, 6)
    assert result.final is not None
    live = result.final.agents.snapshot()
    assert list(back) == ["run_id", "step", *live]
    for name, values in live.items():
        assert back[name].dtype == values.dtype, name
        assert back[name].shape == values.shape, name
        assert np.array_equal(back[name], values), name
    assert (back["step"] == 6).all()
    assert back["step"].dtype == np.int64
    every = record.agents(1)
    assert every["pos"].shape == (3 * 30, 2)
    assert record.agent_fields()["tile"].shape == (2, 2)
    space = {"kind": "continuous", "width": 10.0, "height": 5.0, "torus": True}
    assert record.meta["space"] == space


@pytest.mark.parametrize("suffix", [".sqlite", ".parquet"])
def test_a_vector_is_stored_as_one_column_per_element(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"swarm{suffix}"
    sim.run(Swarm, {"n": 3}, steps=1, seed=1, record=path, snapshot_every=1)
    if suffix == ".sqlite":
        db = sqlite3.connect(path)
        columns = [r[1] for r in db.execute("PRAGMA table_info(agents)")]
        db.close()
    else:
        import pyarrow.parquet as pq

        (part,) = path.glob("agents-*.parquet")
        columns = pq.read_schema(part).names
    assert columns[:8] == ["run_id", "step", "id", "pos_0", "pos_1", "cell_0", "cell_1", "cell_2"]
    vectors = [*(f"flags_{i}" for i in range(2)), *(f"tile_{i}" for i in range(4))]
    assert columns[8:] == [*vectors, "alive", "energy"]


def test_an_empty_snapshot_keeps_its_dtypes_and_shapes(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    sim.run(Swarm, {"n": 0}, steps=1, seed=1, record=path, snapshot_every=1)
    back = sim.open_record(path).agents(1, 1)
    assert back["pos"].shape == (0, 2)
    assert back["pos"].dtype == np.float64
    assert back["flags"].shape == (0, 2)
    assert back["flags"].dtype == np.bool_


@pytest.mark.parametrize("suffix", [".sqlite", ".parquet"])
def test_a_field_a_record_cannot_hold_is_named_and_what_was_recorded_stays(
    tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"bad{suffix}"
    with pytest.raises(sim.RecordError, match=r"snapshot field 'energy' has dtype complex128"):
        sim.run(Swarm, {"bad_at": 4}, steps=8, seed=2, record=path, snapshot_every=2)
    record = sim.open_record(path)
    (run,) = record.runs
    assert (run.status, run.steps, run.steps_asked) == ("failed", 4, 8)
    assert record.metrics(1)["step"].tolist() == [0, 1, 2, 3, 4]
    assert record.snapshot_steps(1) == [0, 2]


def test_a_write_that_fails_keeps_the_runs_and_metrics(tmp_path: Path) -> None:
    path = tmp_path / "clash.sqlite"
    db = sqlite3.connect(path)  # an agents table of another layout: every insert fails
    db.execute("CREATE TABLE agents (run_id INTEGER, step INTEGER, other REAL)")
    db.commit()
    db.close()
    with pytest.raises(sim.RecordError, match=r"writing agent snapshots failed.*runs and metrics"):
        sim.run(Swarm, steps=3, seed=1, record=path, snapshot_every=1)
    record = sim.open_record(path)
    assert record.runs[0].status == "done"
    assert len(record.metrics(1)) == 4


def test_fields_that_would_share_a_column_are_refused(tmp_path: Path) -> None:
    with sim.Recorder(tmp_path / "r.sqlite") as rec:
        run_id = rec.start_run("M", {}, 0, (), 1)
        with pytest.raises(sim.RecordError, match="'pos' and 'pos_1' would both be stored"):
            rec.snapshot(run_id, 0, {"pos": np.zeros((2, 2)), "pos_1": np.zeros(2)})
        with pytest.raises(sim.RecordError, match="'big' holds uint64 values past SQLite"):
            rec.snapshot(run_id, 0, {"big": np.array([2**64 - 1], dtype=np.uint64)})
        with pytest.raises(sim.RecordError, match="at least one field"):
            rec.snapshot(run_id, 0, {})
        with pytest.raises(sim.RecordError, match="a dict of per-agent arrays, got list"):
            rec.snapshot(run_id, 0, [np.zeros(2)])  # type: ignore[arg-type]
        with pytest.raises(sim.RecordError, match="name 'x\" y' is not an identifier"):
            rec.snapshot(run_id, 0, {'x" y': np.zeros(2)})
        rec.snapshot(run_id, 0, {"pos": np.zeros((2, 2))})
        with pytest.raises(sim.RecordError, match=r"pos: float64 vector of shape \(3,\)"):
            rec.snapshot(run_id, 1, {"pos": np.zeros((2, 3))})


@pytest.mark.parametrize("suffix", [".sqlite", ".parquet"])
def test_an_interrupted_run_keeps_its_steps_and_says_so(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"stopped{suffix}"
    with pytest.raises(KeyboardInterrupt):
        sim.run(Swarm, {"stop_at": 5}, steps=50, seed=1, record=path, snapshot_every=2)
    record = sim.open_record(path)
    (run,) = record.runs
    assert run.status == RunStatus.INTERRUPTED == "interrupted"
    assert run.steps == 4
    assert run.elapsed_s is not None
    table = record.metrics(1)
    assert table["step"].tolist() == [0, 1, 2, 3, 4]
    assert run.digest == sim.run(Swarm, steps=4, seed=1).metrics.digest()  # its 4 steps' digest
    assert record.snapshot_steps(1) == [0, 2, 4]


def test_records_from_before_statuses_open_and_append(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    sim.run(Swarm, {"n": 2}, steps=1, record=path)
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE runs DROP COLUMN status")
    db.execute("ALTER TABLE runs DROP COLUMN compile_s")
    db.commit()
    db.close()
    assert sim.open_record(path).runs[0].status == "done"
    sim.run(Swarm, {"n": 2}, steps=1, seed=1, record=path)
    assert [r.status for r in sim.open_record(path).runs] == ["done", "done"]


class Breaks(sim.Model):
    """Raises at step 2 for ``n == 3``."""

    defaults = {"n": 1}

    def setup(self, params: sim.Params) -> None:
        self.t = 0

    def step(self) -> None:
        self.t += 1
        if self.params.n == 3 and self.t == 2:
            raise ValueError("broken on purpose")

    def metrics(self) -> dict[str, int]:
        return {"t": self.t}


def test_a_sweep_that_fails_keeps_its_finished_runs_and_names_the_failed_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sweep.sqlite"
    with pytest.raises(sim.SweepError, match="broken on purpose"):
        sim.sweep(Breaks, {"n": [1, 2, 3]}, steps=5, seed=1, record=path, workers=1)
    record = sim.open_record(path)
    statuses = {r.params["n"]: r.status for r in record.runs}
    assert statuses == {1: "done", 2: "done", 3: "failed"}
    assert record.metrics(1)["t"].tolist() == [0, 1, 2, 3, 4, 5]


def test_to_pandas_of_a_run_and_a_sweep() -> None:
    pd = pytest.importorskip("pandas")
    run = sim.run(Breaks, steps=3, seed=1)
    frame = run.to_pandas()
    assert list(frame.columns) == ["step", "t"]
    assert len(frame) == 4
    sweep = sim.sweep(Breaks, {"n": [1, 2]}, replicates=2, steps=3, seed=1)
    frame = sweep.to_pandas()
    assert list(frame.columns) == ["point", "n", "replicate", "run", "seed", "step", "t"]
    assert len(frame) == 4 * 4
    assert frame["n"].dtype == np.int64
    last = frame[frame["step"] == 3]
    assert last["run"].tolist() == [0, 1, 2, 3]
    assert last["n"].tolist() == [1, 1, 2, 2]
    assert last["replicate"].tolist() == [0, 1, 0, 1]
    assert isinstance(frame, pd.DataFrame)


def test_to_pandas_without_pandas_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    run = sim.run(Breaks, steps=1)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"^to_pandas\(\) needs pandas: pip install pandas$"):
        run.to_pandas()


def test_a_runs_numba_compile_time_is_measured_and_recorded(tmp_path: Path) -> None:
    numba = pytest.importorskip("numba")

    @numba.njit(cache=False)
    def bump(x: np.ndarray[Any, Any]) -> None:  # a new function: compiled in this test
        for i in range(len(x)):
            x[i] += 1.0

    class Compiled(sim.Model):
        defaults = {"n": 4}

        def setup(self, params: sim.Params) -> None:
            self.x = np.zeros(params.n)

        def step(self) -> None:
            bump(self.x)

        def metrics(self) -> dict[str, float]:
            return {"sum": float(self.x.sum())}

    path = tmp_path / "jit.sqlite"
    first = sim.run(Compiled, steps=3, record=path)
    second = sim.run(Compiled, steps=3, record=path)
    assert first.compile_s is not None
    assert first.compile_s > 0.0
    assert second.compile_s == 0.0
    assert [r.compile_s for r in sim.open_record(path).runs] == [first.compile_s, 0.0]


class BadSetup(sim.Model):
    """Raises in setup: the run is registered before, so the record says it failed."""

    defaults = {"n": 1}

    def setup(self, params: sim.Params) -> None:
        raise ValueError("no setup today")

    def step(self) -> None:
        pass

    def metrics(self) -> dict[str, int]:
        return {"n": self.params.n}


def test_a_run_that_fails_in_setup_is_recorded_as_failed_and_reported(tmp_path: Path) -> None:
    from ambidex.sim._report import report

    path = tmp_path / "setup.sqlite"
    with pytest.raises(ValueError, match="no setup today"):
        sim.run(BadSetup, steps=5, record=path)
    (run,) = sim.open_record(path).runs
    assert (run.status, run.steps, run.digest) == ("failed", None, None)
    page = report(path).read_text(encoding="utf-8")
    assert "This run failed before its first step of 5." in page


def test_a_bad_charts_attribute_is_named(tmp_path: Path) -> None:
    class Charted(Breaks):
        charts: ClassVar[Any] = {"population": "sheep"}

    with pytest.raises(sim.RecordError, match=r"Charted\.charts must map a chart's title"):
        sim.run(Charted, steps=1, record=tmp_path / "c.sqlite")
    with pytest.raises(sim.RecordError, match=r"Charted\.charts must map"):
        sim.sweep(Charted, {"n": [1]}, steps=1, record=tmp_path / "s.sqlite")


def test_a_record_that_cannot_take_the_stop_does_not_hide_why_the_run_stopped(
    tmp_path: Path,
) -> None:
    recorder = sim.Recorder(tmp_path / "closed.sqlite")

    class ClosesItsRecord(Breaks):
        def step(self) -> None:
            recorder.close()  # the record is gone when the interrupt comes
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sim.run(ClosesItsRecord, steps=3, record=recorder)
