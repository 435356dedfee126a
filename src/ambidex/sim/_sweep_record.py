"""Recording a sweep: its facts, one row per run in grid order, each run's metrics.

Each run's metrics are written as it comes back (in completion order; run ids
stay in grid order), so a sweep stopped midway (Ctrl-C, a failed run) keeps
every finished run, and marks the others ``interrupted`` (or the failed one
``failed``) with the steps their workers reported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ambidex.sim._recorder import Recorder, RunStatus
from ambidex.sim._run import RunResult, _open_recorder
from ambidex.sim._sweep_plan import SweepError, SweepPlan

__all__ = ["SweepRecord", "open_sweep_record"]


class SweepRecord:
    """Writes a sweep to a recorder, or does nothing when there is none."""

    def __init__(self, recorder: Recorder | None, plan: SweepPlan) -> None:
        self.recorder = recorder
        self.plan = plan
        self.run_ids: list[int | None] = [None] * plan.n_runs
        self._written: set[int] = set()

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
        charts = getattr(plan.model, "charts", None)
        if charts:
            from ambidex.sim._recorder import _charts

            recorder.set_meta(charts=_charts(charts, plan.name))
        self.run_ids = [
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
        return list(self.run_ids)

    def finish_run(self, k: int, result: RunResult) -> None:
        """Give run ``k``'s result its run id and write its metrics (once)."""
        run_id = self.run_ids[k]
        result.run_id = run_id
        if self.recorder is not None and run_id is not None and k not in self._written:
            self._written.add(k)
            self.recorder.finish_run(run_id, result)

    def finish_runs(self, results: list[RunResult], run_ids: list[int | None]) -> None:
        """Give each result its run id and write the metrics of those not written yet."""
        for k, result in enumerate(results):
            self.finish_run(k, result)

    def stop_runs(self, exc: BaseException, steps_done: np.ndarray[Any, Any]) -> None:
        """Mark every run not written yet as stopped by ``exc``, with its steps done.

        The run a ``SweepError`` names is ``failed``; the others (cancelled
        with it, or by Ctrl-C) ``interrupted``.
        """
        if self.recorder is None:
            return
        failed = exc.run if isinstance(exc, SweepError) else None
        for k, run_id in enumerate(self.run_ids):
            if run_id is None or k in self._written:
                continue
            status = RunStatus.FAILED if k == failed else RunStatus.INTERRUPTED
            steps = int(steps_done[k]) if k < len(steps_done) else None
            self.recorder.stop_run(run_id, exc, steps=steps, status=status)


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
