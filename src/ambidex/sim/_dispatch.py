"""Dispatching a sweep's runs: at most ``workers`` at once, progress ten times a second.

The runs go through ``agather`` (results in grid order whatever order they
finish in; the first failure cancels the rest, killing their workers), so a
sweep's outcome depends on its seed and grid only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ambidex import _observe
from ambidex.runtime import agather
from ambidex.sim._model import ModelError
from ambidex.sim._run import RunResult
from ambidex.sim._sweep_plan import SweepPlan, SweepProgress
from ambidex.sim._transport import RunSpec, run_one

__all__ = ["dispatch"]

_POLL_S = 0.1


async def dispatch(
    plan: SweepPlan,
    specs: list[RunSpec],
    steps_done: np.ndarray[Any, Any],
    progress: Callable[[SweepProgress], None] | None,
    started: float,
    on_result: Callable[[int, RunResult], None] | None = None,
) -> list[RunResult]:
    """Run every spec; return the results in the specs' order.

    ``on_result(k, result)`` is called as each run comes back (the sweep's
    record writes it then, so an interrupted sweep keeps its finished runs).

    Raises:
        SweepError: a run failed (naming it); the others were cancelled.
        ModelError: a run refused its parameters or inputs.
    """
    finished = 0

    async def one(spec: RunSpec) -> RunResult:
        nonlocal finished
        try:
            if _observe.on:  # the run's span, around its cpu call (ambidex.sim._tracing)
                from ambidex.sim._tracing import traced_run

                result = await traced_run(plan, spec, run_one.aio)
            else:
                result = await run_one.aio(spec)
        except (asyncio.CancelledError, ModelError):
            raise
        except (Exception, SystemExit) as exc:  # the model's sys.exit() fails its run only
            raise plan.run_failed(spec.index, exc) from exc
        steps_done[spec.index] = plan.steps  # a run that stopped early counts as complete
        finished += 1
        if on_result is not None:
            on_result(spec.index, result)
        return result

    def report() -> None:
        if progress is not None:
            progress(_progress(plan, steps_done, finished, started))

    ticker = asyncio.ensure_future(_tick(report)) if progress is not None else None
    try:
        results: list[RunResult] = await agather(
            *(one(spec) for spec in specs), max_in_flight=plan.workers
        )
    finally:
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
    report()
    return results


async def _tick(report: Callable[[], None]) -> None:
    while True:
        await asyncio.sleep(_POLL_S)
        report()


def _progress(
    plan: SweepPlan, steps_done: np.ndarray[Any, Any], finished: int, started: float
) -> SweepProgress:
    n = plan.n_runs
    return SweepProgress(
        runs_done=finished,
        runs_total=n,
        steps_done=int(steps_done[:n].sum()),
        steps_total=n * plan.steps,
        elapsed_s=time.perf_counter() - started,
    )
