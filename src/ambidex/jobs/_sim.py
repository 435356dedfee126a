"""Simulations as jobs of the job service: one workload per model, runs and sweeps.

``registry.register_simulation(Boltzmann)`` (``ax.jobs.default_registry()`` is
the registry ``ambidex serve`` uses) registers the workload ``sim.Boltzmann``.
The job service adapts the simulation here, through ``ambidex.sim``'s public
API, so that ``ambidex.sim`` never imports the job service. Its input::

    {"params": {...}, "steps": 100, "seed": 0, "grid": {"n": [100, 1000]}, "replicates": 4}

``params`` is validated against the model's ``defaults`` (unknown names and
wrong types are refused before the job is stored). Without ``grid`` and with
one replicate the job is a single run; otherwise a sweep. Either way the runs
go to the cpu process pool and progress (steps done of steps total) is
reported to the job a few times a second. The result holds the final metrics
(per grid point for sweeps) and, for a single run, every step's metrics; the
whole record is written to ``$AMBIDEX_HOME/sim/jobs/<job id>.sqlite`` so that
``ambidex sim report`` can draw it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import pydantic

from ambidex._paths import data_dir
from ambidex.jobs._workloads import Workload
from ambidex.sim import Model, SweepProgress, asweep, grid_points, load_model, resolve_params

if TYPE_CHECKING:
    from ambidex.jobs._workloads import JobContext

__all__ = ["simulation_workload"]


def _params_model(cls: type[Model]) -> type[pydantic.BaseModel]:
    fields: dict[str, Any] = {}
    for key, default in cls.defaults.items():
        kind: Any = Any if default is None else type(default)
        if isinstance(default, (list, tuple)):
            kind = list[Any]
        fields[key] = (kind, default)
    return pydantic.create_model(
        f"{cls.model_name()}Params",
        __config__=pydantic.ConfigDict(extra="forbid", strict=False),
        **fields,
    )


MAX_RUNS = 10_000


class _SimulationInput(pydantic.BaseModel):
    """The fields every simulation job takes besides ``params``."""

    model_config = pydantic.ConfigDict(extra="forbid")
    sim_model: ClassVar[type[Model]]

    params: Any = None  # replaced per model by a pydantic model of its defaults
    steps: int = pydantic.Field(default=100, ge=0, le=10_000_000)
    seed: int = pydantic.Field(default=0, ge=0)
    grid: dict[str, list[Any]] | None = None
    replicates: int = pydantic.Field(default=1, ge=1, le=MAX_RUNS)

    @pydantic.model_validator(mode="after")
    def _check_grid(self) -> _SimulationInput:
        points = grid_points(self.grid)  # raises ModelError (a ValueError) on an empty list
        runs = len(points) * self.replicates
        if runs > MAX_RUNS:
            raise ValueError(f"the sweep has {runs} runs; a job may have at most {MAX_RUNS}")
        fixed = {k: v for k, v in self.params.model_dump().items() if k not in (self.grid or {})}
        for point in points:
            resolve_params(self.sim_model, {**fixed, **point})
        return self


def simulation_workload(
    model: type[Model] | str,
    *,
    name: str | None = None,
    max_attempts: int = 3,
    timeout_s: float | None = None,
) -> Workload:
    """A ``Workload`` that runs ``model`` once or as a sweep (see the module docs)."""
    cls = load_model(model)
    params_model = _params_model(cls)
    input_model = pydantic.create_model(
        f"{cls.model_name()}SimulationInput",
        __base__=_SimulationInput,
        params=(params_model, pydantic.Field(default_factory=params_model)),
    )
    input_model.sim_model = cls

    async def run_input(data: dict[str, Any], ctx: JobContext) -> Any:
        given = input_model.model_validate(data)
        grid = given.grid or None
        params = given.params.model_dump()
        if grid:
            for key in grid:
                params.pop(key, None)
        explicit = {k: params[k] for k in given.params.model_fields_set if k in params}
        out = data_dir() / "sim" / "jobs" / f"{ctx.job_id}.sqlite"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)  # a rerun after a lost worker starts the record afresh

        def progress(p: SweepProgress) -> None:
            fraction = p.steps_done / p.steps_total if p.steps_total else 1.0
            ctx.progress(
                min(fraction, 1.0),
                f"{p.steps_done}/{p.steps_total} steps, {p.runs_done}/{p.runs_total} runs",
            )

        result = await asweep(
            cls,
            grid,
            replicates=given.replicates,
            steps=given.steps,
            seed=given.seed,
            params=explicit,
            record=out,
            progress=progress,
            plain_seed=True,
        )
        summary = result.summary()
        summary["record"] = str(out)
        if not grid and result.replicates == 1:
            only = result.runs[0]
            summary["kind"] = "run"
            summary["metrics"] = only.metrics.to_dict()
            summary["final"] = only.metrics.last()
        else:
            summary["kind"] = "sweep"
        return summary

    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    return Workload(
        name=name or f"sim.{cls.model_name()}",
        run_input=run_input,
        input_model=input_model,
        kind="cpu",
        description=doc or f"simulation of {cls.model_name()}",
        max_attempts=max_attempts,
        timeout_s=timeout_s,
    )
