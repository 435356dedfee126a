"""Evolutions as jobs of the job service: one workload per target file.

``registry.register_evolution("packing.py")`` (or ``ambidex serve --workloads
packing.py``: a file with an ``@ax.evolve.target`` function) registers the
workload ``evolve.<function>``. The job service adapts the evolution here,
through ``ambidex.evolve``'s public API, so that ``ambidex.evolve`` never
imports the job service. Each job evolves into its own database,
``$AMBIDEX_HOME/evolve/jobs/<file stem>-<job id>.sqlite``, and reports the
coordinator's progress line as the job's progress.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic

from ambidex._paths import data_dir
from ambidex.evolve import aevolve, load_target
from ambidex.jobs._workloads import Workload

if TYPE_CHECKING:
    from ambidex.jobs._workloads import JobContext

__all__ = ["evolution_workload"]


class EvolveInput(pydantic.BaseModel):
    """The input of an evolution job (the options of ``ax.evolve.aevolve``)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    iterations: int = pydantic.Field(default=50, ge=1, le=1_000_000)
    parallel: int = pydantic.Field(default=4, ge=1, le=256)
    proposer: str = pydantic.Field(default="offline", pattern="^(offline|llm)$")
    model: str | None = None
    seed: int = pydantic.Field(default=0, ge=0)
    deterministic: bool = True
    timeout_s: float = pydantic.Field(default=30.0, gt=0, le=3600)
    fresh: bool = False


def evolution_workload(target_file: str | Path, *, name: str | None = None) -> Workload:
    """A ``Workload`` that evolves ``target_file`` (``evolve.<function>``)."""
    tgt = load_target(target_file)

    async def run_input(data: dict[str, Any], ctx: JobContext) -> Any:
        given = EvolveInput.model_validate(data)
        db = data_dir() / "evolve" / "jobs" / f"{tgt.path.stem}-{ctx.job_id}.sqlite"

        result = await aevolve(
            tgt.path,
            iterations=given.iterations,
            parallel=given.parallel,
            proposer=given.proposer,
            model=given.model,
            db=db,
            fresh=given.fresh,
            seed=given.seed,
            deterministic=given.deterministic,
            timeout_s=given.timeout_s,
            on_progress=ctx.report,  # candidates done of all, and the run's status line
        )
        return result.summary()

    return Workload(
        name=name or f"evolve.{tgt.name}",
        run_input=run_input,
        input_model=EvolveInput,
        kind="io",
        description=f"evolve {tgt.name} in {tgt.path.name}: {tgt.spec.goal}",
        max_attempts=3,
        timeout_s=None,
    )
