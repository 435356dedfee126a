"""Spans of workflow runs and their nodes; imported only while tracing is on.

The scheduler (``_scheduler``) checks ``_observe.on`` once, when a run starts,
and then ``execution.trace`` (the OpenTelemetry context of the run's span, or
None) wherever a node starts; everything that needs OpenTelemetry is here.

* ``ambidex.workflow <name>``: the run (``traced_run``), the current span while
  the scheduler works, so the tasks and callbacks it makes inherit it.
* ``ambidex.node <name>``: one per node, a child of the run's span, whatever
  context started the node (``context=execution.trace``). A node's own code runs
  with it current: in its task, in the carrier's copy of the context for a
  carried node, and on the I/O thread for a plain ``def`` node (the runtime
  copies the context into the thread). A node that runs in a fused or batched
  thread job gets its span on that thread, around its call. A node that never
  runs (skipped, cancelled before it began, failed on its input or condition)
  gets a span without duration that says so.

Names and attributes: docs/observability.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from ambidex import _otel
from ambidex._text import exception_message
from ambidex.exceptions import TaskTimeoutError
from ambidex.workflows._events import NodeStatus

if TYPE_CHECKING:
    from ambidex.workflows._scheduler import (
        WorkflowResult,
        _BatchCall,
        _ChainCall,
        _WorkflowExecution,
    )
    from ambidex.workflows._spec import Node

__all__ = [
    "restored_events",
    "retry_event",
    "run_recorded_traced",
    "traced_node",
    "traced_run",
    "unrun_span",
]

_SUCCEEDED = NodeStatus.SUCCEEDED.value
_FAILED = NodeStatus.FAILED.value
_CANCELLED = NodeStatus.CANCELLED.value

# call_style(target) -> how the node ran (ambidex.node.mode)
_MODES = {
    "async": "async",
    "sync": "thread",
    "task": "task",
    "agent": "agent",
    "agent_class": "agent",
}


async def traced_run(
    execution: _WorkflowExecution, restored: dict[str, Any], *, resumed: bool
) -> WorkflowResult:
    """``execution.go(restored)`` inside the run's span ``ambidex.workflow <name>``."""
    wf = execution.wf
    attributes = {
        "ambidex.workflow.name": wf.name,
        "ambidex.workflow.run_id": execution.run_id,
        "ambidex.workflow.nodes": len(wf.nodes),
        "ambidex.workflow.resumed": resumed,
        "ambidex.workflow.checkpoint": execution.store is not None,
    }
    if execution.max_parallel is not None:
        attributes["ambidex.workflow.max_parallel"] = execution.max_parallel
    with _otel.span(f"ambidex.workflow {wf.name}", attributes) as span:
        execution.trace = otel_context.get_current()
        outcome = "failed"
        try:
            result = await execution.go(restored)
            outcome = "succeeded"
            return result
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            span.set_attribute("ambidex.workflow.outcome", outcome)
            counts: dict[str, int] = {}
            for run in execution.runs.values():
                counts[run.status.value] = counts.get(run.status.value, 0) + 1
            for status, count in counts.items():
                span.set_attribute(f"ambidex.workflow.nodes_{status}", count)


def _node_attributes(execution: _WorkflowExecution, node: Node, mode: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "ambidex.node.name": node.name,
        "ambidex.node.key": f"{execution.run_id}:{node.name}",
        "ambidex.node.mode": mode,
        "ambidex.node.on_failure": node.on_failure.value,
    }
    if node.retries:
        attributes["ambidex.node.retries"] = node.retries
    if node.timeout_s is not None:
        attributes["ambidex.node.timeout_s"] = node.timeout_s
    kind = getattr(node.target, "kind", None)
    if mode == "task" and isinstance(kind, str):
        attributes["ambidex.kind"] = kind
    return attributes


def _mode_of(execution: _WorkflowExecution, node: Node) -> str:
    from ambidex.workflows._spec import call_style

    style = execution.styles.get(id(node.target))
    if style is None:
        style = execution.styles[id(node.target)] = call_style(node.target)
    return _MODES.get(style, style)


async def traced_node(execution: _WorkflowExecution, node: Node, how: str | None) -> Any:
    """``execution.run_node(node)`` (all its attempts) inside its span ``ambidex.node <name>``.

    Runs in the node's own context (its task's, or a carrier's copy), so the
    span is current for the node's code and for what it calls. (The tracer's
    own context manager, not ``_otel.span``: one layer less per node.)
    """
    mode = how or _mode_of(execution, node)
    run = execution.runs[node.name]
    with _otel.tracer().start_as_current_span(
        f"ambidex.node {node.name}",
        context=execution.trace,
        attributes=_node_attributes(execution, node, mode),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        status = _FAILED
        try:
            output = await execution.run_node(node)
            status = _SUCCEEDED
            return output
        except asyncio.CancelledError as exc:
            status = _CANCELLED
            _otel.fail(span, exc)
            raise
        except BaseException as exc:
            if isinstance(exc, TaskTimeoutError):
                span.set_attribute("ambidex.node.timed_out", True)
            _otel.fail(span, exc)
            raise
        finally:
            span.set_attribute("ambidex.node.attempts", run.attempts)
            span.set_attribute("ambidex.node.status", status)


def retry_event(attempt: int, exc: BaseException) -> None:
    """An attempt of the current node failed and another follows: an event on its span."""
    trace.get_current_span().add_event(
        "ambidex.node.retry",
        {
            "ambidex.attempt": attempt,
            "error.type": type(exc).__qualname__,
            "exception.message": exception_message(exc)[:500],  # str() may raise
        },
    )


def unrun_span(
    execution: _WorkflowExecution,
    name: str,
    status: str,
    reason: str,
    exc: BaseException | None,
) -> None:
    """A span without duration for a node that never ran (skipped, cancelled, failed early)."""
    node = execution.nodes[name]
    attributes = _node_attributes(execution, node, _mode_of(execution, node))
    attributes["ambidex.node.status"] = status
    attributes["ambidex.node.attempts"] = 0
    attributes["ambidex.node.reason"] = reason
    span = _otel.tracer().start_span(
        f"ambidex.node {name}", context=execution.trace, attributes=attributes
    )
    if exc is not None:
        _otel.fail(span, exc)
    elif status == _CANCELLED:
        _otel.fail(span, asyncio.CancelledError(), description=reason)
    span.end()


def restored_events(execution: _WorkflowExecution, restored: list[str]) -> None:
    """The nodes a resumed run took from its checkpoint (not run again): run-span events."""
    span = trace.get_current_span(execution.trace)
    span.set_attribute("ambidex.workflow.restored_nodes", len(restored))
    for name in restored:
        span.add_event(
            "ambidex.node.restored",
            {"ambidex.node.name": name, "ambidex.node.key": f"{execution.run_id}:{name}"},
        )


def run_recorded_traced(
    job: _ChainCall | _BatchCall,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[bool, float, Any] | None:
    """``_run_recorded`` for a traced run: the node's call in its span, on the job's thread.

    (The job has already checked ``halted`` and noted the node as started.)
    """
    from ambidex.workflows._scheduler import _ChainCall

    execution = job.execution
    node = execution.nodes[name]
    mode = "fused" if isinstance(job, _ChainCall) else "batched"
    attributes = _node_attributes(execution, node, mode)
    attributes["ambidex.node.attempts"] = 1
    with _otel.tracer().start_as_current_span(
        f"ambidex.node {name}",
        context=execution.trace,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        began = time.monotonic()
        try:
            value, ok = fn(*args, **kwargs), True
        except BaseException as exc:
            value, ok = exc, False
        ended = time.monotonic()
        if ok:
            span.set_attribute("ambidex.node.status", _SUCCEEDED)
        else:
            span.set_attribute("ambidex.node.status", _FAILED)
            _otel.fail(span, value)
    job.durations[id(fn)] = ended - began
    job.records.append((name, began + job.offset, ended + job.offset, ok, value))
    return ok, ended - began, value
