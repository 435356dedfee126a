"""Recording a sweep: its facts, one row per run in grid order, each run's metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ambidex.sim._recorder import Recorder
from ambidex.sim._run import RunResult, _open_recorder
from ambidex.sim._sweep_plan import SweepPlan

__all__ = ["SweepRecord", "open_sweep_record"]


class SweepRecord:
    """Writes a sweep to a recorder, or does nothing when there is none."""

    def __init__(self, recorder: Recorder | None, plan: SweepPlan) -> None:
        self.recorder = recorder
        self.plan = plan

    def start_runs(self) -> list[int | None]:
        """Store the sweep's facts and a row per run; the run ids, in grid order."""
        plan, recorder = self.plan, self.recorder
        if recorder is None:
            return [None] * plan.n_runs
        recorder.set_meta(
            kind="sweep",
            model=plan.name,
            grid=plan.grid,
            params=plan.params,
            replicates=plan.replicates,
            steps=plan.steps,
            seed=plan.seed,
        )
        return [
            recorder.start_run(
                plan.name,
                plan.run_params(k),
                plan.seed,
                plan.spawn_key(k),
                plan.steps,
                point=plan.point_of(k),
                replicate=plan.replicate_of(k),
            )
            for k in range(plan.n_runs)
        ]

    def finish_runs(self, results: list[RunResult], run_ids: list[int | None]) -> None:
        """Give each result its run id and write its metrics."""
        for result, run_id in zip(results, run_ids, strict=True):
            result.run_id = run_id
            if self.recorder is not None and run_id is not None:
                self.recorder.finish_run(run_id, result)


@contextlib.contextmanager
def open_sweep_record(
    record: str | Path | Recorder | None, plan: SweepPlan
) -> Iterator[SweepRecord]:
    """The sweep's record; a recorder opened here is closed after, the caller's flushed."""
    recorder, owned = _open_recorder(record)
    try:
        yield SweepRecord(recorder, plan)
    finally:
        if recorder is not None:
            if owned:
                recorder.close()
            else:
                recorder.flush()
