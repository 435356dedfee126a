"""Sweeps: many runs of one model over a parameter grid, on the cpu backend.

A sweep goes through four steps, each in a module of its own:

1. **plan** (``_sweep_plan``): load the model, check every argument and point,
   give each run its parameters and seed, before anything runs;
2. **transport** (``_transport``): store large read-only ``inputs`` once
   (``Runtime.aput``) and give each run their handles, and a shared step
   counter where the backend can;
3. **record** (``_sweep_record``): the sweep's facts and a row per run;
4. **dispatch** (``_dispatch``): the runs, at most ``workers`` at once, results
   in grid order, progress as they go.

Run ``k`` is seeded with the ``k``-th child of ``SeedSequence(seed)``, so the
same seed gives the same sweep on any backend and any number of workers.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ambidex import _observe
from ambidex._progress import open_progress_bar
from ambidex.runtime import sync_facade
from ambidex.sim._dispatch import dispatch
from ambidex.sim._recorder import Recorder
from ambidex.sim._run import ModelSpec, RunResult
from ambidex.sim._sweep_plan import SweepError, SweepPlan, SweepProgress, grid_points, plan_sweep
from ambidex.sim._sweep_record import open_sweep_record
from ambidex.sim._transport import RunSpec, Transport, open_transport

__all__ = ["SweepError", "SweepProgress", "SweepResult", "asweep", "grid_points", "sweep"]

ProgressArg = Callable[["SweepProgress"], None] | bool | None


@dataclass
class SweepResult:
    """Every run of a sweep, in grid order (point-major, then replicate)."""

    model: str
    grid: dict[str, list[Any]]
    params: dict[str, Any]
    """Parameters fixed for every run (overrides of the model's defaults)."""
    replicates: int
    seed: int
    steps: int
    points: list[dict[str, Any]]
    runs: list[RunResult]
    elapsed_s: float
    workers: int

    def run(self, point: int, replicate: int = 0) -> RunResult:
        """The run of grid point ``point`` and replicate ``replicate``."""
        return self.runs[point * self.replicates + replicate]

    def final(self, metric: str) -> np.ndarray[Any, Any]:
        """The last value of ``metric`` in every run, shape ``(points, replicates)``."""
        values = [r.metrics[metric][-1] for r in self.runs]
        return np.asarray(values, dtype=np.float64).reshape(len(self.points), self.replicates)

    def digest(self) -> str:
        """One hash over every run's metrics: equal digests mean identical sweeps."""
        import hashlib

        h = hashlib.sha256()
        for r in self.runs:
            h.update(r.metrics.digest().encode())
        return h.hexdigest()

    def to_pandas(self) -> Any:
        """Every run's metrics as one ``pandas.DataFrame``, one row per run and step.

        Columns: ``point``, each swept parameter, ``replicate``, ``run`` (the
        run's index ``k``: its seed is ``SeedSequence(seed, spawn_key=(k,))``),
        ``seed``, ``step``, then one column per metric.

        Raises:
            ImportError: pandas is not installed (one line saying so).
        """
        from ambidex.sim._frames import sweep_frame

        return sweep_frame(self)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the grid, and for every point the mean and sd of final metrics."""
        names = [c for c in self.runs[0].metrics.columns if c != "step"] if self.runs else []
        finals = {name: self.final(name) for name in names}  # (points, replicates) each
        rows = [
            {
                "point": point,
                "final": {
                    name: {"mean": float(f[p].mean()), "sd": float(f[p].std())}
                    for name, f in finals.items()
                },
            }
            for p, point in enumerate(self.points)
        ]
        return {
            "model": self.model,
            "grid": self.grid,
            "params": self.params,
            "replicates": self.replicates,
            "seed": self.seed,
            "steps": self.steps,
            "runs": len(self.runs),
            "workers": self.workers,
            "elapsed_s": self.elapsed_s,
            "digest": self.digest(),
            "points": rows,
        }


async def asweep(
    model: ModelSpec,
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    replicates: int = 1,
    steps: int = 100,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    record: str | Path | Recorder | None = None,
    workers: int | None = None,
    progress: ProgressArg = None,
    plain_seed: bool = False,
) -> SweepResult:
    """``sweep`` for async code: await it; the runs go to the same cpu backend.

    ``sweep`` is this function run on the runtime's loop thread (``sync_facade``);
    its docstring says what the arguments mean.
    """
    plan = plan_sweep(
        model,
        grid,
        replicates=replicates,
        steps=steps,
        seed=seed,
        params=params,
        workers=workers,
        plain_seed=plain_seed,
    )
    if _observe.on:  # the sweep's span, current while its runs go (ambidex.sim._tracing)
        from ambidex.sim._tracing import sweep_span

        with sweep_span(plan):
            return await _run_sweep(plan, inputs, record, progress)
    return await _run_sweep(plan, inputs, record, progress)


async def _run_sweep(
    plan: SweepPlan,
    inputs: Mapping[str, Any] | None,
    record: str | Path | Recorder | None,
    progress: ProgressArg,
) -> SweepResult:
    """The planned sweep: its inputs stored, its runs dispatched and recorded."""
    started = time.perf_counter()
    with (
        open_sweep_record(record, plan) as recording,
        _terminal_bar(progress, plan.name) as on_progress,
    ):
        async with open_transport(inputs or {}, plan.n_runs) as transport:
            run_ids = recording.start_runs()
            specs = [_spec(plan, k, transport) for k in range(plan.n_runs)]
            try:
                results = await dispatch(
                    plan,
                    specs,
                    transport.steps_done,
                    on_progress,
                    started,
                    on_result=recording.finish_run,
                )
            except BaseException as exc:  # Ctrl-C, cancellation, a failed run: keep what ran
                recording.stop_runs(exc, transport.steps_done)
                raise
        recording.finish_runs(results, run_ids)
    return SweepResult(
        model=plan.name,
        grid=plan.grid,
        params=plan.params,
        replicates=plan.replicates,
        seed=plan.seed,
        steps=plan.steps,
        points=plan.points,
        runs=results,
        elapsed_s=time.perf_counter() - started,
        workers=plan.workers,
    )


sweep = sync_facade(
    asweep,
    name="sweep",
    doc="""Run ``model`` at every point of ``grid``, ``replicates`` times each, on the process pool.

    Args:
        model: a ``Model`` subclass, or ``"file.py[:Class]"`` / ``"module[:Class]"``.
        grid: parameter name to the values to try; every combination is a point.
        replicates: runs per point, each with its own seed.
        steps: steps per run.
        seed: the sweep's seed; run ``k`` gets ``SeedSequence(seed).spawn(n)[k]``.
        params: parameters fixed for every run.
        inputs: large read-only arrays (``self.inputs`` in the model), shared
            with the workers through shared memory, not pickled per run.
        record: a path or ``Recorder``; every run's metrics are written there,
            with run ids in grid order.
        workers: at most this many runs at once (default and maximum: the
            runtime's cpu workers; ``ax.Runtime(cpu_workers=N)`` for more).
        progress: a callable, called with a ``SweepProgress`` about ten times a
            second; ``True`` for a progress bar on stderr; ``False`` for nothing.
            Default: a bar when stderr is a terminal.
        plain_seed: a sweep of exactly one run is seeded like ``run(seed=seed)``
            (not as the sweep's child ``k = 0``), so it gives ``run``'s result;
            the job service runs its one-run simulation jobs this way.

    Raises:
        ModelError: a bad grid, parameter, seed or replicates count (before any run starts).
        SweepError: a run failed; the rest are cancelled.
    """,
)


def _spec(plan: SweepPlan, k: int, transport: Transport) -> RunSpec:
    return RunSpec(
        plan.model,
        plan.run_params(k),
        plan.steps,
        plan.seed,
        k,
        plan.spawn_key(k),
        transport.inputs,
        transport.progress,
    )


@contextlib.contextmanager
def _terminal_bar(
    progress: ProgressArg, name: str
) -> Iterator[Callable[[SweepProgress], None] | None]:
    """The progress sink: the caller's, a bar on stderr (any ``ax.Progress`` sink), or none."""
    if callable(progress):
        yield progress
        return
    if progress is False or (progress is None and not sys.stderr.isatty()):
        yield None
        return
    with open_progress_bar(f"sweep {name}") as bar:
        yield bar
