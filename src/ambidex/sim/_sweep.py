"""Sweeps: many runs of one model over a parameter grid, on the cpu process pool.

Run ``k`` (grid point ``k // replicates``, replicate ``k % replicates``) is
seeded with the ``k``-th child of ``SeedSequence(seed).spawn(n_runs)``, so what
a run computes depends only on the sweep's seed and its place in the grid:
never on the worker count, the order runs finish in, or the machine.
Large read-only ``inputs`` are copied once into shared memory; progress comes
back through a shared counter per run, so the bar moves step by step.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ambidex._text import describe_exception
from ambidex.exceptions import AmbidexError
from ambidex.runtime import cpu, current_runtime
from ambidex.sim._model import Model, ModelError, resolve_params
from ambidex.sim._recorder import Recorder
from ambidex.sim._run import ModelSpec, RunResult, _open_recorder, load_model, run
from ambidex.sim._shared import SharedArray, SharedArrays, attach, release

__all__ = ["SweepError", "SweepProgress", "SweepResult", "asweep", "grid_points", "sweep"]

_POLL_S = 0.1
ProgressArg = Callable[["SweepProgress"], None] | bool | None


class SweepError(AmbidexError, RuntimeError):
    """A run of a sweep failed; names the run, its grid point, replicate and seed."""


@dataclass(frozen=True)
class SweepProgress:
    """How far a sweep is."""

    runs_done: int
    runs_total: int
    steps_done: int
    steps_total: int
    elapsed_s: float


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


def grid_points(grid: Mapping[str, Sequence[Any]] | None) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the last parameter varying fastest."""
    if not grid:
        return [{}]
    keys = list(grid)
    for key in keys:
        values = grid[key]
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ModelError(f"grid[{key!r}] must be a non-empty list of values, got {values!r}")
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


@dataclass(frozen=True)
class _RayInput:
    """Stands for the ``index``-th object reference sent with a Ray task."""

    index: int


def _sending(refs: list[Any]) -> contextlib.AbstractContextManager[None]:
    if not refs:
        return contextlib.nullcontext()
    from ambidex.runtime._raypool import sending_inputs

    return sending_inputs(refs)


@dataclass(frozen=True)
class _RunSpec:
    model: type[Model]
    params: dict[str, Any]
    steps: int
    seed: int
    index: int
    spawn_key: tuple[int, ...]
    inputs: dict[str, Any]
    """Name to a ``SharedArray`` (local backend) or a Ray object reference."""
    progress: SharedArray | None
    """The per-run step counters (local backend only)."""


@cpu
def _run_one(spec: _RunSpec) -> RunResult:
    """One run of a sweep, in a worker process."""
    shared = {k: v for k, v in spec.inputs.items() if isinstance(v, SharedArray)}
    keep = {d.block for d in shared.values()}
    if spec.progress is not None:
        keep.add(spec.progress.block)
    release(keep=keep)
    arrays = attach(shared)
    for key, ref in spec.inputs.items():
        if isinstance(ref, _RayInput):
            from ambidex.runtime._raypool import task_inputs

            arrays[key] = task_inputs()[ref.index]  # mapped from Ray's object store
    counter = None if spec.progress is None else attach({"p": spec.progress}, writable=True)["p"]

    def progress(done: int, total: int) -> None:
        if counter is not None:
            counter[spec.index] = done

    result = run(
        spec.model,
        spec.params,
        steps=spec.steps,
        seed=np.random.SeedSequence(spec.seed, spawn_key=spec.spawn_key),
        inputs=arrays,
        progress=progress,
    )
    result.final = None
    return result


def sweep(
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
) -> SweepResult:
    """Run ``model`` at every point of ``grid``, ``replicates`` times each, on the process pool.

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

    Raises:
        ModelError: a bad grid, parameter, seed or replicates count (before any run starts).
        SweepError: a run failed; the rest are cancelled.
    """
    return current_runtime().call(
        asweep(
            model,
            grid,
            replicates=replicates,
            steps=steps,
            seed=seed,
            params=params,
            inputs=inputs,
            record=record,
            workers=workers,
            progress=progress,
        )
    )


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
    _plain_seed: bool = False,
) -> SweepResult:
    """``sweep`` for async code: await it; the runs go to the same process pool."""
    cls = load_model(model)
    points = grid_points(grid)
    # A job that is one run is seeded like ``run(seed=...)``, not like a sweep's child.
    plain_seed = _plain_seed and len(points) * replicates == 1
    fixed = dict(params or {})
    limit = _check_args(grid, replicates, steps, seed, fixed, workers)
    run_params = [resolve_params(cls, {**fixed, **point}) for point in points]
    n_runs = len(points) * replicates
    name = cls.model_name()
    rt = current_runtime()
    on_ray = rt.backend == "ray" and not rt.in_worker
    recorder, owned = _open_recorder(record)
    started = time.perf_counter()
    try:
        with (
            _terminal_bar(progress, name, n_runs) as on_progress,
            SharedArrays({} if on_ray else (inputs or {})) as shared,
            SharedArrays({"p": np.zeros(max(n_runs, 1), np.int64)}, writable=True) as counters,
        ):
            # Large inputs travel once: into shared memory here, or Ray's object store.
            transport: dict[str, Any] = dict(shared.descriptors)
            refs: list[Any] = []
            if on_ray:
                for key, value in (inputs or {}).items():
                    transport[key] = _RayInput(len(refs))
                    refs.append(await rt.aput(np.ascontiguousarray(value)))
            run_ids: list[int | None] = [None] * n_runs
            if recorder is not None:
                recorder.set_meta(
                    kind="sweep",
                    model=name,
                    grid={k: list(v) for k, v in (grid or {}).items()},
                    params=fixed,
                    replicates=replicates,
                    steps=steps,
                    seed=seed,
                )
                for k in range(n_runs):
                    run_ids[k] = recorder.start_run(
                        name,
                        run_params[k // replicates],
                        seed,
                        () if plain_seed else (k,),
                        steps,
                        point=k // replicates,
                        replicate=k % replicates,
                    )
            specs = [
                _RunSpec(
                    cls,
                    run_params[k // replicates],
                    steps,
                    seed,
                    k,
                    () if plain_seed else (k,),
                    transport,
                    None if on_ray else counters.descriptors["p"],
                )
                for k in range(n_runs)
            ]
            with _sending(refs):
                results = await _dispatch(
                    specs,
                    points,
                    replicates,
                    limit,
                    counters.views["p"],
                    steps,
                    on_progress,
                    started,
                )
            for k, res in enumerate(results):
                res.run_id = run_ids[k]
                if recorder is not None and res.run_id is not None:
                    recorder.finish_run(res.run_id, res)
    finally:
        if recorder is not None:
            if owned:
                recorder.close()
            else:
                recorder.flush()
    return SweepResult(
        model=name,
        grid={k: list(v) for k, v in (grid or {}).items()},
        params=fixed,
        replicates=replicates,
        seed=seed,
        steps=steps,
        points=points,
        runs=results,
        elapsed_s=time.perf_counter() - started,
        workers=limit,
    )


def _check_args(
    grid: Mapping[str, Sequence[Any]] | None,
    replicates: int,
    steps: int,
    seed: int,
    fixed: dict[str, Any],
    workers: int | None,
) -> int:
    """Validate a sweep's arguments; return how many runs may be in flight."""
    for label, value, least in (("replicates", replicates, 1), ("steps", steps, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ModelError(f"{label} must be an integer >= {least}, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ModelError(f"seed must be a non-negative integer, got {seed!r}")
    overlap = sorted(set(fixed) & set(grid or {}))
    if overlap:
        raise ModelError(f"parameter(s) {', '.join(overlap)} are both fixed and swept")
    rt = current_runtime()
    limit = rt.cpu_workers if workers is None else workers
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ModelError(f"workers must be a positive integer, got {workers!r}")
    if limit > rt.cpu_workers and not rt.in_worker:
        raise ModelError(
            f"workers={limit} but the runtime has {rt.cpu_workers} cpu worker processes; "
            f"use ax.Runtime(cpu_workers={limit}) or AMBIDEX_CPU_WORKERS={limit}"
        )
    return limit


@contextlib.contextmanager
def _terminal_bar(
    progress: ProgressArg, name: str, n_runs: int
) -> Iterator[Callable[[SweepProgress], None] | None]:
    """The progress callback: the caller's, a rich bar on stderr, or none."""
    if callable(progress):
        yield progress
        return
    if progress is False or (progress is None and not sys.stderr.isatty()):
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[runs]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(f"sweep {name}", total=None, runs=f"0/{n_runs} runs")

        def update(p: SweepProgress) -> None:
            bar.update(
                task,
                total=max(p.steps_total, 1),
                completed=p.steps_done,
                runs=f"{p.runs_done}/{p.runs_total} runs",
            )

        yield update


async def _dispatch(
    specs: list[_RunSpec],
    points: list[dict[str, Any]],
    replicates: int,
    limit: int,
    counter: np.ndarray[Any, Any],
    steps: int,
    progress: Callable[[SweepProgress], None] | None,
    started: float,
) -> list[RunResult]:
    n = len(specs)
    results: list[RunResult | None] = [None] * n
    gate = asyncio.Semaphore(limit)
    finished = 0

    async def one(spec: _RunSpec) -> None:
        nonlocal finished
        async with gate:
            try:
                res = await _run_one.aio(spec)
            except (asyncio.CancelledError, ModelError):
                raise
            except Exception as exc:
                k = spec.index
                raise SweepError(
                    f"run {k} of the sweep failed (point {k // replicates}: "
                    f"{points[k // replicates]}, replicate {k % replicates}, "
                    f"seed SeedSequence({spec.seed}, spawn_key={spec.spawn_key})): "
                    f"{describe_exception(exc)}"
                ) from exc
        results[spec.index] = res
        counter[spec.index] = steps  # a run that stopped early counts as complete
        finished += 1

    def report() -> None:
        if progress is not None:
            progress(
                SweepProgress(
                    runs_done=finished,
                    runs_total=n,
                    steps_done=int(counter[:n].sum()),
                    steps_total=n * steps,
                    elapsed_s=time.perf_counter() - started,
                )
            )

    tasks = [asyncio.ensure_future(one(s)) for s in specs]
    try:
        pending: set[asyncio.Future[None]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(
                pending, timeout=_POLL_S, return_when=asyncio.FIRST_EXCEPTION
            )
            for t in done:
                if t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            report()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    report()
    out = [r for r in results if r is not None]
    if len(out) != n:  # pragma: no cover - every task either finished or raised
        raise SweepError("a sweep run finished without a result")
    return out
