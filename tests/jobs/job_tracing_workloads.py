"""Workloads of the job tracing tests, run by an ``ambidex worker`` subprocess."""

from __future__ import annotations

import sys

import ambidex as ax
from ambidex.jobs import JobContext


@ax.jobs.workload
async def traced_step(x: int = 1) -> dict[str, object]:
    """Make a span of the job's own code (a user's tracer), inside the job's span."""
    from opentelemetry import trace

    with trace.get_tracer("tests.jobs").start_as_current_span("user step") as span:
        span.set_attribute("x", x)
    return {"x": x}


@ax.jobs.workload(retries=1, retry_backoff_s=0.01)
async def flaky(ctx: JobContext) -> int:
    """Fail the first attempt (retried), succeed on the second."""
    if ctx.attempt == 1:
        raise ConnectionError("the first attempt hangs up")
    return ctx.attempt


@ax.jobs.workload
async def explode() -> None:
    """Fail every time."""
    raise RuntimeError("explode was asked to")


@ax.jobs.workload
async def otel_modules() -> list[str]:
    """The OpenTelemetry modules loaded in the worker running the job."""
    return sorted(name for name in sys.modules if name.startswith("opentelemetry"))
