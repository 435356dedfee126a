"""Sweeps on the real process pool: seeds by position, shared inputs, progress, failures."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from sim_toy_models import Exchange, Fails, Slow

import ambidex as ax
import ambidex.sim as sim
from _waiting import await_for
from ambidex.sim._transport import RunSpec

GRID = {"n": [50, 200], "p": [0.2, 0.8]}


def test_results_do_not_depend_on_the_worker_count(fresh_runtime: ax.Runtime) -> None:
    one = sim.sweep(Exchange, GRID, replicates=3, steps=15, seed=11, workers=1)
    two = sim.sweep(Exchange, GRID, replicates=3, steps=15, seed=11, workers=2)
    assert one.digest() == two.digest()
    assert [r.metrics.digest() for r in one.runs] == [r.metrics.digest() for r in two.runs]
    assert len(one.runs) == 12
    assert one.points[1] == {"n": 50, "p": 0.8}
    assert one.run(3, 2).params == {"n": 200, "p": 0.8, "label": "x"}
    other = sim.sweep(Exchange, GRID, replicates=3, steps=15, seed=12, workers=2)
    assert other.digest() != one.digest()


def test_a_sweep_run_is_the_same_as_a_plain_run_with_its_child_seed() -> None:
    s = sim.sweep(Exchange, {"n": [80, 120]}, replicates=2, steps=10, seed=4)
    k = 3  # point 1, replicate 1
    child = np.random.SeedSequence(4).spawn(4)[k]
    alone = sim.run(Exchange, {"n": 120}, steps=10, seed=child)
    assert alone.metrics.equals(s.runs[k].metrics)
    assert s.runs[k].spawn_key == (k,)
    assert s.runs[k].seed == 4


def test_final_and_summary() -> None:
    s = sim.sweep(Exchange, GRID, replicates=2, steps=5, seed=1)
    assert s.final("total").shape == (4, 2)
    assert (s.final("total") == np.array([[50, 50], [50, 50], [200, 200], [200, 200]])).all()
    summary = s.summary()
    assert summary["runs"] == 8
    assert summary["points"][2]["final"]["total"]["mean"] == 200.0


def test_large_inputs_travel_through_shared_memory_not_per_task() -> None:
    bonus = np.full(1_000_000, 0.5)  # 8 MB
    with sim.SharedArrays({"bonus": bonus}) as shared:
        spec = RunSpec(Exchange, {"n": 10}, 1, 0, 0, (0,), shared.descriptors, None)
        assert len(cloudpickle.dumps(spec)) < 5_000  # the handle, not the data
    s = sim.sweep(Exchange, {"n": [10, 20]}, steps=4, seed=2, inputs={"bonus": bonus})
    for r in s.runs:
        start = r.metrics["energy"][0]
        n = r.params["n"]
        assert r.metrics["energy"][-1] == pytest.approx(start + 4 * 0.5 * n)


def test_progress_moves_step_by_step() -> None:
    seen: list[sim.SweepProgress] = []
    sim.sweep(Slow, {"sleep_s": [0.03]}, replicates=2, steps=12, progress=seen.append)
    assert seen[-1].runs_done == 2
    assert seen[-1].steps_done == seen[-1].steps_total == 24
    partial = [p.steps_done for p in seen if 0 < p.steps_done < 24]
    assert partial, "progress should be seen between steps, not only per finished run"
    assert [p.steps_done for p in seen] == sorted(p.steps_done for p in seen)


def test_a_failing_run_is_named_and_the_rest_cancelled() -> None:
    with pytest.raises(sim.SweepError) as info:
        sim.sweep(Fails, {"boom": [False, True]}, replicates=2, steps=5, seed=9)
    msg = str(info.value)
    # Runs 2 and 3 (point 1, replicates 0 and 1) both fail; whichever fails
    # first is named, with its own seed.
    found = re.search(
        r"run (\d) of the sweep failed \(point 1: \{'boom': True\}, replicate (\d), "
        r"seed SeedSequence\(9, spawn_key=\((\d),\)\)\)",
        msg,
    )
    assert found, msg
    run, replicate, spawn = map(int, found.groups())
    assert run == spawn == 2 + replicate
    assert "the model broke on purpose" in msg


def test_bad_arguments_fail_before_any_run(tmp_path: Path) -> None:
    with pytest.raises(sim.ModelError, match=r"unknown parameter\(s\) m"):
        sim.sweep(Exchange, {"m": [1]})
    with pytest.raises(sim.ModelError, match="non-empty list"):
        sim.sweep(Exchange, {"n": []})
    with pytest.raises(sim.ModelError, match="both fixed and swept"):
        sim.sweep(Exchange, {"n": [1]}, params={"n": 2})
    with pytest.raises(sim.ModelError, match="replicates must be"):
        sim.sweep(Exchange, replicates=0)
    with pytest.raises(sim.ModelError, match=r"workers=5 but the runtime has 2"):
        sim.sweep(Exchange, workers=5)
    assert not list(tmp_path.iterdir())


def test_sweep_record_has_runs_in_grid_order(tmp_path: Path) -> None:
    path = tmp_path / "sweep.sqlite"
    s = sim.sweep(Exchange, GRID, replicates=2, steps=6, seed=3, workers=2, record=path)
    rec = sim.open_record(path)
    assert rec.meta["kind"] == "sweep"
    assert rec.meta["grid"] == GRID
    assert [(r.point, r.replicate) for r in rec.runs] == [
        (p, i) for p in range(4) for i in range(2)
    ]
    assert [r.digest for r in rec.runs] == [r.metrics.digest() for r in s.runs]
    assert np.array_equal(rec.metrics(rec.runs[5].run_id)["gini"], s.runs[5].metrics["gini"])


async def test_asweep_from_async_code_and_cancellation_kills_the_runs(
    fresh_runtime: ax.Runtime,
) -> None:
    s = await sim.asweep(Exchange, {"n": [30]}, replicates=2, steps=3)
    assert len(s.runs) == 2
    seen: list[sim.SweepProgress] = []
    task = asyncio.ensure_future(
        sim.asweep(Slow, {"sleep_s": [0.2]}, replicates=2, steps=100, progress=seen.append)
    )
    # Cancel once a run is stepping in a worker (each has 20 s of steps to go).
    assert await await_for(lambda: any(p.steps_done for p in seen), timeout_s=30)
    started = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - started < 5
    stats = fresh_runtime.statistics().cpu_workers
    assert stats is not None
    assert stats.killed >= 1


def test_progress_true_draws_a_bar_on_a_terminal() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import ambidex.sim as sim; "
        "from sim_toy_models import Slow; "
        "sim.sweep(Slow, {'sleep_s': [0.05]}, replicates=2, steps=10, progress=True)"
    )
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "120"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "sweep Slow" in proc.stderr
    assert "2/2 runs" in proc.stderr
