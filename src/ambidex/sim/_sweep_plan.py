"""Planning a sweep: its runs, their parameters and seeds, checked before any run starts.

Run ``k`` (grid point ``k // replicates``, replicate ``k % replicates``) is
seeded with the ``k``-th child of ``SeedSequence(seed).spawn(n_runs)``, so what
a run computes depends only on the sweep's seed and its place in the grid:
never on the worker count, the order runs finish in, the backend or the machine.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ambidex._text import describe_exception
from ambidex.exceptions import AmbidexError
from ambidex.runtime import current_runtime
from ambidex.sim._model import Model, ModelError, resolve_params
from ambidex.sim._run import ModelSpec, load_model

__all__ = ["SweepError", "SweepPlan", "SweepProgress", "grid_points", "plan_sweep"]


class SweepError(AmbidexError, RuntimeError):
    """A run of a sweep failed; names the run, its grid point, replicate and seed."""

    run: int | None = None
    """The failed run's index ``k`` in the sweep (grid order)."""


@dataclass(frozen=True)
class SweepProgress:
    """How far a sweep is; an ``ax.Progress`` report (steps done of all runs' steps)."""

    runs_done: int
    runs_total: int
    steps_done: int
    steps_total: int
    elapsed_s: float

    @property
    def done(self) -> float:
        """Steps done in all runs (runs done, for runs of no steps)."""
        return self.steps_done if self.steps_total else self.runs_done

    @property
    def total(self) -> float | None:
        """Steps of all runs (runs, for runs of no steps)."""
        return self.steps_total if self.steps_total else self.runs_total

    @property
    def message(self) -> str:
        """``3/8 runs``."""
        return f"{self.runs_done}/{self.runs_total} runs"


@dataclass(frozen=True)
class SweepPlan:
    """Every run of a sweep, before any of them runs."""

    model: type[Model]
    name: str
    grid: dict[str, list[Any]]
    params: dict[str, Any]
    """Parameters fixed for every run."""
    points: list[dict[str, Any]]
    point_params: list[dict[str, Any]]
    """The resolved parameters of every grid point."""
    replicates: int
    steps: int
    seed: int
    plain_seed: bool
    """A job that is one run is seeded like ``run(seed=...)``, not like a sweep's child."""
    workers: int
    """At most this many runs at once."""

    @property
    def n_runs(self) -> int:
        """How many runs: points times replicates."""
        return len(self.points) * self.replicates

    def point_of(self, k: int) -> int:
        """The grid point of run ``k``."""
        return k // self.replicates

    def replicate_of(self, k: int) -> int:
        """The replicate number of run ``k`` at its point."""
        return k % self.replicates

    def run_params(self, k: int) -> dict[str, Any]:
        """The parameters of run ``k``."""
        return self.point_params[self.point_of(k)]

    def spawn_key(self, k: int) -> tuple[int, ...]:
        """Run ``k``'s seed: ``SeedSequence(seed, spawn_key=...)``."""
        return () if self.plain_seed else (k,)

    def run_failed(self, k: int, exc: BaseException) -> SweepError:
        """The error that names run ``k`` (point, replicate, seed) and what it raised."""
        point = self.point_of(k)
        error = SweepError(
            f"run {k} of the sweep failed (point {point}: {self.points[point]}, "
            f"replicate {self.replicate_of(k)}, "
            f"seed SeedSequence({self.seed}, spawn_key={self.spawn_key(k)})): "
            f"{describe_exception(exc)}"
        )
        error.run = k
        return error


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


def plan_sweep(
    model: ModelSpec,
    grid: Mapping[str, Sequence[Any]] | None,
    *,
    replicates: int,
    steps: int,
    seed: int,
    params: Mapping[str, Any] | None,
    workers: int | None,
    plain_seed: bool,
) -> SweepPlan:
    """Load the model and check every argument and every point's parameters.

    Raises:
        ModelError: a bad model, grid, parameter, seed, replicates or workers count.
    """
    cls = load_model(model)
    points = grid_points(grid)
    fixed = dict(params or {})
    limit = _check_args(grid, replicates, steps, seed, fixed, workers)
    return SweepPlan(
        model=cls,
        name=cls.model_name(),
        grid={k: list(v) for k, v in (grid or {}).items()},
        params=fixed,
        points=points,
        point_params=[resolve_params(cls, {**fixed, **point}) for point in points],
        replicates=replicates,
        steps=steps,
        seed=seed,
        plain_seed=plain_seed and len(points) * replicates == 1,
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
