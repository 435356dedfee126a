"""A sweep and its runs as spans: one run span per run, around its cpu call in a worker."""

from __future__ import annotations

from typing import Any

import pytest
from sim_toy_models import Fails

import ambidex.sim as sim
from _otel import by_name, is_ancestor, one, parent_of, tree


async def test_a_sweep_of_three_runs_has_three_run_spans_under_its_span(spans: Any) -> None:
    result = await sim.asweep(
        Fails, {"at": [2, 3, 4]}, params={"boom": False}, steps=5, seed=3, workers=2
    )
    got = spans.get_finished_spans()
    shown = tree(got)
    sweep = one(got, "ambidex.sweep Fails")
    assert sweep.attributes["ambidex.sweep.runs"] == 3
    assert sweep.attributes["ambidex.sweep.seed"] == 3
    assert tuple(sweep.attributes["ambidex.sweep.grid"]) == ("at",)
    runs = sorted(
        by_name(got, "ambidex.sweep.run"), key=lambda s: s.attributes["ambidex.sweep.run.index"]
    )
    assert len(runs) == 3, shown
    for k, (run, expected) in enumerate(zip(runs, result.runs, strict=True)):
        assert parent_of(run, got) is sweep, shown
        a = run.attributes
        assert a["ambidex.sweep.run.index"] == k
        assert a["ambidex.sweep.point"] == k
        assert a["ambidex.sweep.replicate"] == 0
        assert a["ambidex.sweep.param.at"] == expected.params["at"] == k + 2
        assert a["ambidex.sweep.param.boom"] is False
        assert a["ambidex.sweep.seed"] == 3
        assert tuple(a["ambidex.sweep.spawn_key"]) == (k,)
        assert a["ambidex.sweep.run.outcome"] == "succeeded"
        assert a["ambidex.sweep.run.steps"] == 5
        assert a["ambidex.sweep.run.elapsed_s"] == expected.elapsed_s
    # The runtime's cpu call span of each run (``ambidex.cpu run_one``) is the run span's
    # child: that needs the runtime's tracing (the otel-runtime branch).
    cpu = by_name(got, "ambidex.cpu *")
    assert len(cpu) == 3, shown
    assert all(any(is_ancestor(run, c, got) for run in runs) for c in cpu), shown


async def test_a_failed_run_is_an_error_on_its_span_and_on_the_sweeps(spans: Any) -> None:
    with pytest.raises(sim.SweepError):
        await sim.asweep(Fails, {"boom": [True]}, steps=5, seed=9, workers=1)
    got = spans.get_finished_spans()
    sweep = one(got, "ambidex.sweep Fails")
    run = one(got, "ambidex.sweep.run")
    assert run.status.status_code.name == "ERROR"
    assert run.attributes["ambidex.sweep.run.outcome"] == "failed"
    assert run.attributes["ambidex.sweep.param.boom"] is True
    assert sweep.status.status_code.name == "ERROR"
    assert sweep.attributes["error.type"] == "SweepError"
