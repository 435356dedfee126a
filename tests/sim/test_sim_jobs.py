"""Simulations as jobs of the job service: a run and a sweep, with progress and records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sim_toy_models import Exchange, Slow

import ambidex.sim as sim
from ambidex.jobs import JobInputError, JobManager, JobStatus, WorkloadRegistry, load_workloads


@pytest.fixture
def registry() -> WorkloadRegistry:
    reg = WorkloadRegistry()
    reg.register_simulation(Exchange)
    reg.register_simulation(Slow, name="slow-sim")
    return reg


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AMBIDEX_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


async def test_a_run_job_matches_a_plain_run(registry: WorkloadRegistry, tmp_path: Path) -> None:
    async with JobManager(tmp_path / "jobs.sqlite", registry=registry, poll_s=0.05) as m:
        job = await m.submit("sim.Exchange", {"params": {"n": 150}, "steps": 12, "seed": 4})
        done = await m.wait(job.id, timeout_s=30)
    assert done.status is JobStatus.SUCCEEDED, done.error
    result = done.result
    assert result["kind"] == "run"
    plain = sim.run(Exchange, {"n": 150}, steps=12, seed=4)
    assert np.array_equal(np.asarray(result["metrics"]["gini"]), plain.metrics["gini"])
    assert result["digest"] != ""
    record = sim.open_record(result["record"])
    assert record.runs[0].digest == plain.metrics.digest()
    assert done.progress == 1.0


async def test_a_sweep_job_reports_progress_and_summarises(
    registry: WorkloadRegistry, tmp_path: Path
) -> None:
    async with JobManager(tmp_path / "jobs.sqlite", registry=registry, poll_s=0.05) as m:
        job = await m.submit(
            "slow-sim", {"grid": {"sleep_s": [0.02, 0.03]}, "replicates": 2, "steps": 15}
        )
        done = await m.wait(job.id, timeout_s=30)
        events = await m.events(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.result["kind"] == "sweep"
    assert done.result["runs"] == 4
    assert done.result["points"][1]["final"]["count"]["mean"] == 15
    messages = [e.data.get("message") for e in events if e.kind == "progress"]
    assert any(m and "/60 steps" in m for m in messages), messages
    fractions = [e.data["progress"] for e in events if e.kind == "progress"]
    assert any(0 < f < 1 for f in fractions)
    assert fractions == sorted(fractions)


def test_bad_simulation_input_is_refused_before_it_is_stored(registry: WorkloadRegistry) -> None:
    wl = registry.get("sim.Exchange")
    with pytest.raises(JobInputError) as info:
        wl.validate({"params": {"n": "lots"}})
    assert "params" in str(info.value)
    assert "n" in str(info.value)
    with pytest.raises(JobInputError, match="q"):
        wl.validate({"params": {"q": 1}})
    with pytest.raises(JobInputError, match="unknown parameter"):
        wl.validate({"grid": {"q": [1, 2]}})
    with pytest.raises(JobInputError, match="at most 10000"):
        wl.validate({"grid": {"n": list(range(1, 200))}, "replicates": 100})
    assert wl.validate({})["steps"] == 100
    schema = wl.input_schema()
    assert "params" in schema["properties"]


def test_load_workloads_registers_the_models_of_a_file(tmp_path: Path) -> None:
    f = tmp_path / "sim_models_file.py"
    f.write_text(
        "import numpy as np\nimport ambidex.sim as sim\n"
        "class Counter(sim.Model):\n"
        "    defaults = {'k': 1}\n"
        "    def setup(self, params):\n        self.x = 0\n"
        "    def step(self):\n        self.x += self.params.k\n"
        "    def metrics(self):\n        return {'x': self.x}\n"
    )
    reg = WorkloadRegistry()
    assert load_workloads(str(f), reg) == ["sim.Counter"]
