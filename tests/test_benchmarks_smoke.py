"""The benchmarks in their quick modes: they still run, lose nothing, agree with themselves.

They measure nothing here (a few hundred jobs on a busy test machine); the
figures that count come from full runs, recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK_TIMEOUT_S = 120  # a quick run takes 5-20 s alone, up to 60 s on a saturated machine
# pytest-timeout's 60 s default would cut a run off before its own timeout does.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(BENCHMARK_TIMEOUT_S + 30)]


def _quick(script: str, out: Path) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=BENCHMARK_TIMEOUT_S,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data: dict[str, object] = json.loads(out.with_name(out.name + ".json").read_text())
    return data


def test_jobs_throughput_quick_runs_ambidex_beside_huey(tmp_path: Path) -> None:
    data = _quick("jobs_throughput.py", tmp_path / "throughput")
    systems = {s["system"]: s for s in data["systems"]}  # type: ignore[attr-defined]
    assert systems["ambidex JobManager, SQLite"]["median_jobs_per_s"] > 0
    assert any(name.startswith("huey") for name in systems)
    # Issue 15's floor reference runs everywhere; every row states its delivery promise.
    assert systems["plain sqlite3 lease queue (floor reference)"]["median_jobs_per_s"] > 0
    assert all(s["delivery"].startswith("at ") for s in systems.values())
    # A PostgreSQL anchor is either measured or left out with a line saying so.
    settings = data["settings"]
    assert isinstance(settings, dict)
    if settings["postgresql_skipped"] is None:
        for name in ("plain asyncpg SKIP LOCKED lease queue", "pgqueuer (asyncpg)"):
            assert name in systems or any(name in note for note in settings["left_out"])


def test_jobs_http_quick_loses_no_accepted_job(tmp_path: Path) -> None:
    data = _quick("jobs_http.py", tmp_path / "http")
    medians = data["medians"]
    assert isinstance(medians, dict)
    for scenario in ("floor", "submit", "run", "batch"):
        assert medians[scenario]["errors"] == 0
        assert medians[scenario]["verify"]["missing"] == 0
    assert medians["batch"]["ok"] >= 10 * 500  # jobs, not requests


def test_sim_sweep_quick_gives_identical_results_on_1_and_2_workers(tmp_path: Path) -> None:
    data = _quick("sim_sweep.py", tmp_path / "sweep")
    assert data["identical"] is True
    assert data["ambidex"]["1"]["digests"] == data["ambidex"]["2"]["digests"]  # type: ignore[index]


def test_sim_vs_mesa_quick_runs_both_and_they_agree(tmp_path: Path) -> None:
    data = _quick("sim_vs_mesa.py", tmp_path / "mesa")
    assert data["agreement_passed"] is True
    ratios = data["ratios"]
    assert isinstance(ratios, list)
    assert all(r["value"] > 1 for r in ratios), ratios
    # Mesa's small and large configurations, all five models at both.
    models = data["models"]
    assert isinstance(models, list)
    timed = {(m["name"], m["size"]) for m in models if m["timed"]}
    for name in ("Boltzmann", "Schelling", "Wolf-Sheep", "Boids", "Virus on network"):
        assert {(name, "small"), (name, "large")} <= timed
    assert data["skipped"] == []


def test_sim_scale_quick_measures_time_and_memory_per_size(tmp_path: Path) -> None:
    data = _quick("sim_scale.py", tmp_path / "scale")
    rows = data["models"]["boltzmann"]["sizes"]  # type: ignore[index]
    assert [r["n"] for r in rows] == [1_000, 10_000, 100_000]
    for row in rows:
        assert row["ns_per_agent_step"] > 0
        assert row["live_bytes"] >= 16 * row["n"]  # at least the cell and wealth columns
        assert row["compile_s"] > 0
        assert row["params"]["width"] == row["params"]["height"] == round(row["n"] ** 0.5)
    boids = data["models"]["boids"]["sizes"]  # type: ignore[index]
    assert [r["n"] for r in boids] == [1_000, 10_000, 100_000]
    assert all(r["ns_per_agent_step"] > 0 and r["params"]["vision"] == 15 for r in boids)


def test_sim_network_quick_runs_both_and_they_agree(tmp_path: Path) -> None:
    data = _quick("sim_network.py", tmp_path / "network")
    assert data["agreement_passed"] is True
    ratios = data["ratios"]
    assert isinstance(ratios, list)
    assert all(r["value"] > 1 for r in ratios if "virus" in r["ratio"]), ratios
    build = data["build"]
    assert isinstance(build, dict)
    assert len({s["edges"] for name, s in build["systems"].items() if "fast_gnp" not in name}) == 1


def test_sim_overhead_quick_measures_both_trees_beside_mesa(tmp_path: Path) -> None:
    data = _quick("sim_overhead.py", tmp_path / "overhead")
    before, after = data["before"][0], data["after"][0]  # type: ignore[index]
    assert before["rng_type"] == "Generator"
    assert after["rng_type"] == "KernelGenerator"
    for label, figures in data["boltzmann"].items():  # type: ignore[attr-defined]
        assert figures["mesa"] > 0, label
        assert figures["after"] > 0, label


def test_sim_space_quick_checks_neighbors_against_all_pairs_and_runs_boids(
    tmp_path: Path,
) -> None:
    data = _quick("sim_space.py", tmp_path / "space")  # it asserts the answers agree
    boids = data["boids"]
    assert isinstance(boids, dict)
    assert set(boids) == {"small", "large"}
    assert all(b["speedup_step"] > 1 for b in boids.values())


def test_sim_record_quick_writes_both_formats_and_reads_back_equal(tmp_path: Path) -> None:
    data = _quick("sim_record.py", tmp_path / "record")
    assert data["correct"] is True
    rates = data["rows_per_s"]
    assert isinstance(rates, dict)
    assert len(rates) == 4
    assert all(v > 0 for v in rates.values())


def test_evolve_parallel_quick_runs_every_mode(tmp_path: Path) -> None:
    data = _quick("evolve_parallel.py", tmp_path / "evolve")
    for mode in ("sequential", "pipeline", "batches"):
        assert data[mode]["succeeded"] > 0, data[mode]  # type: ignore[index]
    assert float(data["speedup"]) > 1  # type: ignore[arg-type]


def test_ray_backend_quick_gives_identical_sweeps(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the ray backend needs ray: pip install 'ambidex[ray]'")
    data = _quick("ray_backend.py", tmp_path / "ray")
    assert data["identical"] is True


def test_workflow_validation_quick_catches_every_mistyped_edge(tmp_path: Path) -> None:
    data = _quick("workflow_validation.py", tmp_path / "validation")
    results = data["results"]
    assert isinstance(results, list)
    assert {(r["shape"], r["targets"]) for r in results} >= {
        (shape, targets)
        for shape in ("chain", "fan-out")
        for targets in ("functions, real annotations", "functions, string annotations", "agents")
    }
    for row in results:
        assert row["validate_us_per_node"] > 0, row
        assert row["mismatch_caught"] is True, row  # a str into an int parameter or field
