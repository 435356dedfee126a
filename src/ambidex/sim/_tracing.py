"""Spans of sweeps and their runs; imported only while tracing is on.

* ``ambidex.sweep <model>``: the whole sweep (``sweep_span``), current while
  its runs are dispatched.
* ``ambidex.sweep.run``: one per run (``traced_run``), made on the caller's side
  around the run's cpu call, so the runtime's ``ambidex.cpu run_one`` span (and
  whatever the worker records) is its child.

Names and attributes: docs/observability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span

from ambidex import _otel

if TYPE_CHECKING:
    from ambidex.sim._run import RunResult
    from ambidex.sim._sweep_plan import SweepPlan
    from ambidex.sim._transport import RunSpec

__all__ = ["MAX_PARAMS", "sweep_span", "traced_run"]

MAX_PARAMS = 32
"""At most this many parameters of a run become attributes (scalars only)."""

_SCALARS = (bool, int, float, str)


@contextlib.contextmanager
def sweep_span(plan: SweepPlan) -> Iterator[Span]:
    """The sweep's span, current in the block."""
    attributes: dict[str, Any] = {
        "ambidex.sweep.model": plan.name,
        "ambidex.sweep.runs": plan.n_runs,
        "ambidex.sweep.points": len(plan.points),
        "ambidex.sweep.replicates": plan.replicates,
        "ambidex.sweep.steps": plan.steps,
        "ambidex.sweep.seed": plan.seed,
        "ambidex.sweep.workers": plan.workers,
        "ambidex.sweep.grid": sorted(plan.grid)[:MAX_PARAMS],
    }
    with _otel.span(f"ambidex.sweep {plan.name}", attributes) as span:
        yield span


def _param_attributes(params: dict[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for name, value in params.items():
        if len(attributes) >= MAX_PARAMS:
            break
        if isinstance(value, _SCALARS):
            attributes[f"ambidex.sweep.param.{name}"] = value
        elif hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a numpy scalar
            item = value.item()
            if isinstance(item, _SCALARS):
                attributes[f"ambidex.sweep.param.{name}"] = item
    return attributes


async def traced_run(plan: SweepPlan, spec: RunSpec, call: Any) -> RunResult:
    """``await call(spec)`` (the run's cpu call) inside its span ``ambidex.sweep.run``."""
    k = spec.index
    attributes: dict[str, Any] = {
        "ambidex.sweep.model": plan.name,
        "ambidex.sweep.run.index": k,
        "ambidex.sweep.point": plan.point_of(k),
        "ambidex.sweep.replicate": plan.replicate_of(k),
        "ambidex.sweep.seed": spec.seed,
        "ambidex.sweep.spawn_key": list(spec.spawn_key),
        **_param_attributes(spec.params),
    }
    with _otel.span("ambidex.sweep.run", attributes) as span:
        outcome = "failed"
        try:
            result: RunResult = await call(spec)
            outcome = "succeeded"
            span.set_attribute("ambidex.sweep.run.steps", result.steps)
            span.set_attribute("ambidex.sweep.run.elapsed_s", result.elapsed_s)
            return result
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            span.set_attribute("ambidex.sweep.run.outcome", outcome)
