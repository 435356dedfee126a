"""The scheduler: start every node the moment its dependencies have finished.

Not level by level: a node waits only for its own dependencies, so the run's
makespan is the critical path (plus scheduling overhead: a task and a
done-callback per node, except for an ``async def`` chain, which one task
carries (``carry``), and short plain ``def`` nodes, run several to a thread
job). Completions are settled with an explicit work list, so a chain of
10,000 nodes (or 10,000 skips in a row) needs neither recursion nor a rescan
of the graph.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import dataclasses
import functools
import inspect
import os
import secrets
import threading
import time
import types
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic
import pydantic_core

from ambidex import _observe
from ambidex._backoff import retry_cannot_help
from ambidex._contain import EscapedExit, enter_user_code, task_factory_installed
from ambidex._text import describe_exception, plain_text
from ambidex.agents import Agent
from ambidex.exceptions import TaskTimeoutError
from ambidex.runtime import Backoff, current_runtime, elastic_threads
from ambidex.workflows._checkpoint import CheckpointBackend, CheckpointStore
from ambidex.workflows._context import node_key
from ambidex.workflows._events import EventKind, EventListener, NodeStatus, WorkflowEvent
from ambidex.workflows._refs import INPUTS, Condition, Ref, resolve
from ambidex.workflows._spec import (
    FailurePolicy,
    Node,
    Outputs,
    Workflow,
    WorkflowDefinitionError,
    WorkflowError,
    _storable,
    call_style,
)
from ambidex.workflows._validate import check_inputs, topological_order

__all__ = ["NodeRun", "WorkflowResult", "execute"]

# A failed node's retry waits: 0.1 s doubling to 5 s, full jitter.
_RETRY_BACKOFF = Backoff(0.1, 5.0)
_Task = asyncio.Task
_THE_NODE = "the node"  # EscapedExit.where for a node's own SystemExit or KeyboardInterrupt

_RESTORED = "restored from the checkpoint"
_LATE = (
    "the run stopped while it ran on an I/O thread, which cannot be interrupted; "
    "it finished after the run stopped, before the run ended, so its outcome is kept"
)
_DROPPED = (
    "the run stopped while it ran on an I/O thread, which cannot be interrupted; "
    "it may still finish, but the run has ended: its result is discarded"
)
# Chain fusion (see ``_ChainCall``): a plain def node whose last call took less than this
# may run in its predecessor's thread job, at most _FUSE_LIMIT nodes and _FUSE_BUDGET_S
# seconds a job (then the loop gets its events and the next job starts).
_SHORT_S = 100e-6
_FUSE_LIMIT = 256
_FUSE_BUDGET_S = 0.002
# Batching (see ``_BatchCall``): ready short plain def nodes, this many a thread job.
_BATCH_SIZE = 128
# Carrying (see ``carry``): a node's task runs on into an ``async def`` successor the
# node's success made ready, and passes the loop on after _CARRY_SLICE_S of such nodes.
_CARRY_SLICE_S = 0.001
_RECORDED: Any = object()  # a carrier's result: its last node's outcome is recorded
_UNSET: Any = object()
_ALONE, _BATCHED, _CARRIED = 0, 1, 2  # how a node starts (plan_of)
# The states in which a node has finished: a run succeeds only if every node is in one
# (a failure under on_failure="skip" or "continue" is recorded and lets the run go on).
_FINAL = frozenset({NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED})
_NOT_BEGUN = (NodeStatus.PENDING, NodeStatus.QUEUED)


@dataclass
class NodeRun:
    """What happened to one node in a run."""

    name: str
    status: NodeStatus = NodeStatus.PENDING
    output: Any = None
    error: BaseException | None = None
    attempts: int = 0
    started_s: float | None = None
    """Seconds after the run started that the node started."""
    finished_s: float | None = None
    reason: str | None = None
    """Why it was skipped, cancelled or restored, or why it failed or finished as it did."""

    @property
    def duration_s(self) -> float | None:
        """How long the node ran, all attempts included."""
        if self.started_s is None or self.finished_s is None:
            return None
        return self.finished_s - self.started_s


@dataclass
class WorkflowResult:
    """The outcome of a run: per-node status and outputs."""

    run_id: str
    workflow: str
    succeeded: bool
    nodes: dict[str, NodeRun]
    elapsed_s: float
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def outputs(self) -> dict[str, Any]:
        """Outputs of the nodes that succeeded, by node name."""
        return {n: r.output for n, r in self.nodes.items() if r.status is NodeStatus.SUCCEEDED}

    def __getitem__(self, node: str) -> Any:
        run = self.nodes[node]
        if run.status is not NodeStatus.SUCCEEDED:
            raise KeyError(f"node {node!r} has no output: it {run.status.value}")
        return run.output

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: see ``_jsonable`` for how outputs and inputs are written."""
        plain = _jsonable
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "succeeded": self.succeeded,
            "elapsed_s": round(self.elapsed_s, 6),
            "inputs": plain(self.inputs),
            "nodes": {
                name: {
                    "status": r.status.value,
                    "output": plain(r.output),
                    "error": None if r.error is None else describe_exception(r.error),
                    "attempts": r.attempts,
                    "started_s": r.started_s,
                    "duration_s": r.duration_s,
                    "reason": r.reason,
                }
                for name, r in self.nodes.items()
            },
        }


_SCALARS = (str, int, float, bool, type(None))
_MAX_DEPTH = 200  # deeper than any real output; what lies below is shown by its repr


def _jsonable(value: Any, depth: int = 0, path: set[int] | None = None) -> Any:
    """``value`` as JSON data, whatever it holds; never raises.

    Bytes (``bytes``, ``bytearray``, ``memoryview``) become ``{"$base64":
    "<standard base64>"}`` wherever they are, also inside pydantic models and
    dataclasses, and whether or not they happen to be UTF-8: one form per type,
    so a reader decodes them the same way every time and gets the exact bytes
    back. (pydantic writes bytes as UTF-8 text, and raises on any other bytes.)
    A bytes dict key becomes its ``repr``, since a key cannot be an object.
    Models are dumped (``model_dump()``) and dataclasses read field by field;
    anything else goes to pydantic, and what it cannot write (an unknown type,
    a container that holds itself) is shown by its ``repr``. ``path`` holds the
    containers being written, to find such cycles.
    """
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$base64": base64.b64encode(value).decode("ascii")}
    container = isinstance(value, dict | list | tuple | set | frozenset | deque)
    model = isinstance(value, pydantic.BaseModel)
    record = not (container or model) and dataclasses.is_dataclass(value)
    if not (container or model or record) or isinstance(value, type):
        return _leaf(value)
    path = set() if path is None else path
    if depth >= _MAX_DEPTH or id(value) in path:
        return _shown(value)
    path.add(id(value))
    depth += 1
    try:
        if isinstance(value, dict):
            return {
                k if isinstance(k, str) else _json_key(k): _jsonable(v, depth, path)
                for k, v in value.items()
            }
        if container:
            return [_jsonable(v, depth, path) for v in value]
        if model:
            try:
                dumped = value.model_dump()
            except Exception:
                return _shown(value)
            return _jsonable(dumped, depth, path)
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _jsonable(fields, depth, path)
    finally:
        path.discard(id(value))


def _leaf(value: Any) -> Any:
    try:
        return pydantic_core.to_jsonable_python(value, fallback=_shown)
    except Exception:  # bytes in a container pydantic walks and we do not, ...
        return _shown(value)


def _json_key(key: Any) -> Any:
    """A dict key that is not text, as pydantic writes it (bytes: by their ``repr``)."""
    if isinstance(key, bytes | bytearray | memoryview):
        return repr(bytes(key))
    try:
        return next(iter(pydantic_core.to_jsonable_python({key: None}, fallback=_shown)))
    except Exception:
        return _shown(key)


def _shown(value: Any) -> str:
    """``repr(value)``, as text that JSON can hold, even if ``__repr__`` raises."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return plain_text(text)


class _WorkflowExecution:
    """The state of one execution of a workflow."""

    # Slots, since reading ``self.x`` is most of what the scheduler does per node. Once
    # its ``__dict__`` reaches about 30 attributes, an instance no longer shares its keys
    # with the other instances of its class (CPython 3.11), and every attribute read
    # takes a slower path (measured on a chain of 1,000 nodes: at 30 and at 32
    # attributes, +0.35 us per node, +6%; at 28, nothing; with slots, nothing).
    __slots__ = (
        "agents",
        "batch",
        "batches",
        "blocking",
        "cancelled",
        "carried",
        "carrier",
        "carries",
        "dependents",
        "detached",
        "done",
        "durations",
        "ended",
        "failure",
        "fuse",
        "fused",
        "held_agents",
        "inputs",
        "jobs",
        "keyword_names",
        "listener",
        "listener_error",
        "listener_errors",
        "loop",
        "max_parallel",
        "nodes",
        "outputs",
        "persisting",
        "plans",
        "queued",
        "remaining",
        "run_id",
        "running",
        "runs",
        "settled",
        "settling",
        "stopping",
        "store",
        "styles",
        "successor",
        "t0",
        "to_settle",
        "trace",
        "unfinished",
        "wf",
    )

    def __init__(
        self,
        wf: Workflow,
        inputs: dict[str, Any],
        run_id: str,
        listener: EventListener | None,
        store: CheckpointBackend | None,
        max_parallel: int | None,
    ) -> None:
        self.wf = wf
        self.inputs = inputs
        self.run_id = run_id
        self.listener = listener
        self.store = store
        self.max_parallel = max_parallel
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.nodes = wf.nodes
        self.runs = {name: NodeRun(name) for name in wf.nodes}
        self.outputs: dict[str, Any] = {}
        shape = _shape_of(wf)
        self.remaining = shape.remaining.copy()
        self.dependents = shape.dependents
        self.blocking: set[str] = set()  # settled nodes whose dependents must be skipped
        self.queued: deque[str] = deque()
        self.running: dict[asyncio.Task[Any], str] = {}
        self.settled = 0
        self.to_settle: deque[str] = deque()
        self.settling = False
        self.failure: tuple[str, BaseException] | None = None
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.agents: dict[str, Agent[Any, Any]] = {}
        self.held_agents: list[Agent[Any, Any]] = []  # each acquired once; released in finish
        # Per target (many nodes often share one function): how to call it.
        self.styles = shape.styles
        self.keyword_names = shape.keyword_names
        self.persisting: set[asyncio.Task[None]] = set()
        self.stopping = False  # set once the run fails or is cancelled: start nothing new
        self.cancelled = False  # the run itself was cancelled (Ctrl-C, task.cancel())
        # Plain def nodes cancelled while their thread ran on (see in_thread), until their
        # outcome comes or the run ends (finish sets ended).
        self.detached: set[str] = set()
        self.ended = False
        self.unfinished: tuple[str, str] | None = None  # (node, why): see outcome()
        self.listener_error: tuple[BaseException, WorkflowEvent] | None = None
        self.listener_errors = 0  # how many times the listener raised
        # Chain fusion (see _ChainCall): off with a checkpoint (each node's row is written
        # before its dependents start) and with max_parallel (a fused node takes no slot).
        self.fuse = store is None and max_parallel is None
        self.durations: dict[int, float] = {}  # id(target) -> its last call's seconds
        self.successor = shape.successor  # node -> the node it may fuse into
        self.jobs: dict[str, _ChainCall] = {}  # head node -> its fused job, until it is done
        self.fused: dict[str, tuple[str, float, float, bool, Any]] = {}  # ran, to record
        # Batching (see _BatchCall): ready nodes gathered while the graph settles, then
        # dispatched a batch per thread job, each carried by one task.
        self.batch: list[str] = []
        self.batches: dict[asyncio.Task[Any], _BatchCall] = {}
        # Carrying (see carry): the carrier task whose node is being recorded, and the
        # node it runs next; per node, how it starts (_plan_of).
        self.carrier: asyncio.Task[Any] | None = None
        self.carried: str | None = None
        self.plans = shape.plans
        self.carries = shape.carries  # node -> may_carry(node)
        # Tracing (see _tracing): the OpenTelemetry context of the run's span, when traced.
        self.trace: Any = None

    # -- events ----------------------------------------------------------------

    def elapsed(self) -> float:
        return self.loop.time() - self.t0

    def emit(self, kind: EventKind, node: str | None, **fields: Any) -> None:
        listener = self.listener
        if listener is not None:
            event = WorkflowEvent(kind, self.run_id, node, self.elapsed(), **fields)
            try:
                listener(event)
            except BaseException as exc:  # GeneratorExit, KeyboardInterrupt... too (see below)
                self.listener_failed(exc, event)

    def emit_at(self, kind: EventKind, node: str | None, at: float, **fields: Any) -> None:
        """``emit``, for something that happened at ``at`` (run seconds): a fused node."""
        listener = self.listener
        if listener is not None:
            event = WorkflowEvent(kind, self.run_id, node, at, **fields)
            try:
                listener(event)
            except BaseException as exc:  # as in emit
                self.listener_failed(exc, event)

    def listener_failed(self, exc: BaseException, event: WorkflowEvent) -> None:
        """The ``on_event`` listener raised: the run fails, as for a node that fails.

        A listener is part of the run (a progress view, a log, a job's
        progress), so its error is not swallowed. It is caught here, though:
        raised out of a done-callback it would leave the run waiting forever,
        and raised out of the scheduler's bookkeeping it would leave that half
        done. The run stops as for ``on_failure="fail"`` (running nodes are
        cancelled, nothing new starts, what finished is kept and stored) and
        raises ``WorkflowError`` naming the error. The listener still gets the
        events that follow; its later errors are only counted.

        Any ``BaseException`` is caught so: out of a done-callback a
        ``GeneratorExit`` or ``CancelledError`` left the run waiting forever, and
        a ``KeyboardInterrupt`` or ``SystemExit`` stopped the runtime's event loop
        with the run still recorded as running. Those two are raised again, as
        they are, once the run has stopped and been stored.
        """
        self.listener_errors += 1
        if self.listener_error is None:
            self.listener_error = (exc, event)
            if not self.stopping:  # (a node failure told to the listener stops the run itself)
                failure = self.failure
                self.cancel_rest(
                    "the on_event listener failed"
                    if failure is None
                    else f"node {failure[0]!r} failed"
                )

    def listener_text(self) -> str:
        """The listener's first error, in words (``listener_error`` is set)."""
        assert self.listener_error is not None
        exc, event = self.listener_error
        where = f"the {event.kind.value!r} event"
        if event.node is not None:
            where += f" of node {event.node!r}"
        text = f"its on_event listener raised {describe_exception(exc)}, given {where}"
        if self.listener_errors > 1:
            text += f" (and raised {self.listener_errors - 1} more times after)"
        return text

    # -- the graph -------------------------------------------------------------

    def settle(self, name: str) -> None:
        """A node reached a final state: release its dependents (iteratively)."""
        self.settled += 1
        self.to_settle.append(name)
        if self.settling:
            return
        self.settling = True
        try:
            while self.to_settle:
                done = self.to_settle.popleft()
                for child in self.dependents[done]:
                    self.remaining[child] -= 1
                    if self.remaining[child] == 0 and not self.stopping:
                        self.on_ready(child)
        finally:
            self.settling = False
        if self.batch:
            self.dispatch_batch()
        if self.queued:
            self.start_queued()
        if self.settled == len(self.nodes) and not self.done.done():
            self.done.set_result(None)

    def on_ready(self, name: str) -> None:
        node = self.nodes[name]
        if self.blocking:
            blocked_by = sorted(node.deps & self.blocking)
            if blocked_by:
                dep = blocked_by[0]
                self.skip(name, f"dependency {dep!r} {self.runs[dep].status.value}")
                return
        if node.when is not None:
            try:
                go = self.condition(node)
            except Exception as exc:
                if self.trace is not None:
                    self.trace_unrun(name, "failed", "its condition raised", exc)
                self.fail(name, exc, attempts=0)
                return
            if not go:
                self.skip(name, "condition is false")
                return
        self.runs[name].status = NodeStatus.QUEUED
        if self.listener is not None:
            if self.fused and name in self.fused:  # it ran in its predecessor's thread job
                self.emit_at(EventKind.QUEUED, name, self.fused[name][1])
            else:
                self.emit(EventKind.QUEUED, name)
            if self.stopping:  # the listener failed on that event; the node is cancelled
                return
        if self.max_parallel is not None and len(self.running) >= self.max_parallel:
            self.queued.append(name)
        else:
            self.start(name)

    def condition(self, node: Node) -> bool:
        when = node.when
        if isinstance(when, Condition):
            return when.evaluate(resolve(when.ref, self.inputs, self.outputs))
        if isinstance(when, Ref):
            return bool(resolve(when, self.inputs, self.outputs))
        assert callable(when)
        return bool(when(Outputs(node.name, node.deps, self.outputs, self.inputs)))

    def start_queued(self) -> None:
        limit = self.max_parallel
        while self.queued and not self.stopping and (limit is None or len(self.running) < limit):
            self.start(self.queued.popleft())

    def start(self, name: str) -> None:
        if self.fused and name in self.fused:
            self.record_fused(name)
            return
        if self.fuse:
            plan = self.plans.get(name)
            if plan is None:
                plan = self.plan_of(name)
            if plan == _CARRIED:
                carrier = self.carrier
                if carrier is None or len(self.nodes[name].deps) != 1:
                    self.start_task(name, carry=self.may_carry(name))
                    return
                # The node whose success made it ready is done: its task runs this one next.
                self.carrier = None
                self.carried = name
                self.running[carrier] = name
                run = self.runs[name]
                run.status = NodeStatus.RUNNING
                run.started_s = self.elapsed()
                return
            if plan == _BATCHED and self.short(self.nodes[name].target):
                self.runs[name].status = NodeStatus.RUNNING
                self.batch.append(name)  # dispatched once the graph has settled
                return
        self.start_task(name)

    def plan_of(self, name: str) -> int:
        """How ``name`` starts when fusion is on: carried (``async def``), batched, or alone."""
        node = self.nodes[name]
        if self.fusable(node):
            plan = _BATCHED
        elif self.styles[id(node.target)] == "async":
            plan = _CARRIED
        else:
            plan = _ALONE
        self.plans[name] = plan
        return plan

    def may_carry(self, name: str) -> bool:
        """Has ``name`` a dependant its task may run on into (``carry``)?"""
        ok = self.carries.get(name)
        if ok is None:
            plans = self.plans
            ok = False
            for child in self.dependents[name]:
                if len(self.nodes[child].deps) == 1:
                    plan = plans.get(child)
                    if (plan if plan is not None else self.plan_of(child)) == _CARRIED:
                        ok = True
                        break
            self.carries[name] = ok
        return ok

    def start_task(self, name: str, carry: bool = False) -> None:
        run = self.runs[name]
        run.status = NodeStatus.RUNNING
        run.started_s = self.loop.time() - self.t0  # (elapsed(), a call less a node)
        node = self.nodes[name]
        if self.trace is not None:  # traced: each node's attempts in a span (_tracing)
            coro = self.carry(node) if carry else self.traced_node(node, None)
        else:
            coro = self.carry(node) if carry else self.run_node(node)
        # asyncio.Task, not loop.create_task: the run's task factory (user code's SystemExit)
        # is for the tasks nodes start, not for the scheduler's own.
        task = _Task(coro, loop=self.loop, name=f"node:{name}")
        self.running[task] = name
        task.add_done_callback(self.on_task_done)

    def skip(self, name: str, reason: str) -> None:
        run = self.runs[name]
        run.status = NodeStatus.SKIPPED
        run.reason = reason
        if self.trace is not None:
            self.trace_unrun(name, "skipped", reason)
        self.blocking.add(name)
        self.emit(EventKind.SKIPPED, name, reason=reason)
        self.conclude(name)

    def fail(self, name: str, exc: BaseException, attempts: int, at: float | None = None) -> None:
        node = self.nodes[name]
        run = self.runs[name]
        run.status = NodeStatus.FAILED
        run.error = exc
        run.attempts = attempts
        run.finished_s = self.elapsed() if at is None else at
        # The first failure ends the run; later ones (as nodes are cancelled) are its echo,
        # and so are failures after the run stopped for another reason.
        ends_run = node.on_failure is FailurePolicy.FAIL and not self.stopping
        if ends_run:
            self.failure = (name, exc)  # before the event: a listener failing on it is second
        self.emit_at(
            EventKind.FAILED,
            name,
            run.finished_s,
            duration_s=run.duration_s,
            attempt=attempts,
            error=describe_exception(exc),
            reason=run.reason,
        )
        if node.on_failure is FailurePolicy.FAIL:
            if ends_run:
                self.cancel_rest(f"node {name!r} failed")
        elif node.on_failure is FailurePolicy.SKIP:
            self.blocking.add(name)
        else:
            self.outputs[name] = None
        self.conclude(name)

    def cancel_rest(self, reason: str) -> None:
        self.stopping = True
        if self.jobs or self.fused or self.batches or self.batch:
            self.halt_jobs(reason)
        for task in self.running:
            task.cancel()
        for name, run in self.runs.items():
            if run.status in (NodeStatus.PENDING, NodeStatus.QUEUED):
                if self.trace is not None and run.status is NodeStatus.QUEUED:
                    # (ready, waiting for a slot; a pending one counts on the run's span only)
                    self.trace_unrun(name, "cancelled", reason)
                run.status = NodeStatus.CANCELLED
                run.reason = reason
                self.emit(EventKind.CANCELLED, name, reason=reason)
        self.queued.clear()
        if not self.running and not self.done.done():
            self.done.set_result(None)

    def on_task_done(self, task: asyncio.Task[Any]) -> None:
        name = self.running.pop(task, None)
        if name is None:  # a carrier whose last node it recorded itself (carry_on)
            if self.stopping and not self.running and not self.done.done():
                self.done.set_result(None)
            return
        run = self.runs[name]
        job = self.jobs.pop(name, None) if self.jobs else None
        if task.cancelled():
            if name in self.detached:
                pass  # its thread runs on: reported when its outcome comes, or in finish
            elif run.status in _FINAL:
                # Its thread had finished when the run stopped it: ``detach`` passed the
                # outcome on with call_soon, so late_outcome recorded it before this.
                pass
            elif self.stopping:
                run.status = NodeStatus.CANCELLED
                run.finished_s = self.elapsed()
                run.reason = run.reason or "the run was stopped"
                if self.trace is not None and run.attempts == 0:  # its task never began
                    self.trace_unrun(name, "cancelled", run.reason)
                self.emit(EventKind.CANCELLED, name, reason=run.reason)
            else:
                self.cancelled_from_inside(name, task)
        elif (exc := task.exception()) is not None:
            if isinstance(exc, EscapedExit) and exc.where == _THE_NODE:
                exc = exc.exc  # the node's failure is what it raised: "SystemExit: 3"
            self.fail(name, exc, run.attempts)
        else:
            self.succeeded(name, task.result(), job)
        # A stopped run ends when its last task does, however that task ended (cancelled,
        # or raising something else while it was being cancelled).
        if self.stopping and not self.running and not self.done.done():
            self.done.set_result(None)

    def succeeded(self, name: str, output: Any, job: _ChainCall | None = None) -> None:
        run = self.runs[name]
        run.status = NodeStatus.SUCCEEDED
        run.output = output
        if job is None:
            run.finished_s = self.loop.time() - self.t0  # (elapsed(), a call less a node)
        else:  # its thread job ran on into its successors: record them as they come
            run.finished_s = job.head_end + job.offset
            for record in job.records:
                self.fused[record[0]] = record
        self.outputs[name] = output
        if self.listener is not None:
            self.emit_at(
                EventKind.FINISHED,
                name,
                run.finished_s,
                duration_s=run.duration_s,
                attempt=run.attempts,
            )
        # After the run stopped, dependants are not started, but the output is kept
        # (and stored, for a resume).
        if self.store is not None:
            self.conclude(name, not self.stopping)
        elif not self.stopping:
            self.settle(name)  # (conclude without a checkpoint, a call less a node)

    async def carry(self, node: Node) -> Any:
        """Run ``node``, then, in the same task, each ``async def`` node its success readies.

        The node's task is a carrier: when its node succeeds, the carrier
        records the success itself (``carry_on``: finished, dependants
        released) instead of leaving that to a done-callback one loop
        iteration later; and if that readies an ``async def`` node (``start``
        hands the carrier the first such node), the carrier runs it next, as
        if it were that node's own task, and so on. A chain of trivial nodes
        then costs no task and no loop iteration per node. Each node runs in
        its own copy of the context the carrier started with, so a ContextVar
        a node sets is seen by no other node (as with a task per node); its
        events, times, retries, timeout, ``on_failure`` and cancellation are
        those of a node in its own task (``running`` maps the carrier to the
        node it runs now). After ``_CARRY_SLICE_S`` of nodes run so, the carrier
        lets the loop run once before the next, so other tasks are not starved
        and a cancellation lands between nodes. A failure or cancellation ends
        the carrier, and ``on_task_done`` records it for the node it ran.
        """
        base = contextvars.copy_context()  # the carrier's own context, before any node runs
        if self.trace is None:
            output = await self.run_node(node)
        else:
            output = await self.traced_node(node, None)
        name = node.name
        # The loop runs once before the carrier records the first node, as it would
        # before a done-callback: the tasks started beside it have all taken a step.
        try:
            await _pass()
        except asyncio.CancelledError:
            return output  # the run stopped, but the node had finished: on_task_done keeps it
        task: asyncio.Task[Any] | None = None
        slice_end = -1.0
        while not self.stopping:
            if task is None:
                task = asyncio.current_task()
                assert task is not None
            carried = base.run(self.carry_on, name, output, task)
            if carried is None:
                return _RECORDED
            started = self.runs[carried].started_s
            assert started is not None
            if slice_end < 0:
                slice_end = started + _CARRY_SLICE_S
            elif started > slice_end:
                slice_end = -1.0
                await _pass()  # the loop runs its other callbacks; a cancellation lands here
            name = carried
            if self.trace is None:
                output = await _in_context(base.copy(), self.run_node(self.nodes[carried]))
            else:
                coro = self.traced_node(self.nodes[carried], "carried")
                output = await _in_context(base.copy(), coro)
        return output  # the run stopped: on_task_done records it as any node's task

    def carry_on(self, name: str, output: Any, task: asyncio.Task[Any]) -> str | None:
        """The carrier's node ``name`` succeeded: record it; the node to run next, if any."""
        del self.running[task]  # back (for the node it runs next) in start
        self.carrier = task
        try:
            self.succeeded(name, output)
        finally:
            self.carrier = None
        carried = self.carried
        self.carried = None
        if carried is None and self.stopping and not self.running and not self.done.done():
            self.done.set_result(None)
        return carried

    def cancelled_from_inside(self, name: str, task: asyncio.Task[Any]) -> None:
        """The node's task ended cancelled although the run did not cancel it: a failure.

        It awaited something that another task cancelled, or cancelled itself.
        It made no output, so it fails under its ``on_failure`` like any error;
        left as "cancelled" it would never settle, and the run would wait for
        it forever.
        """
        try:
            task.result()
        except asyncio.CancelledError as exc:
            error: BaseException = exc
        self.runs[name].reason = "its task was cancelled, but not by its run"
        self.fail(name, error, self.runs[name].attempts)

    # -- one node --------------------------------------------------------------

    def node_input(self, node: Node) -> Any:
        template = node.input
        if type(template) is Ref and not template.path and template.source != INPUTS:
            return self.outputs[template.source]  # the commonest input: another node's output
        if callable(template) and not isinstance(template, Ref):
            return template(Outputs(node.name, node.deps, self.outputs, self.inputs))
        return resolve(template, self.inputs, self.outputs)

    async def run_node(self, node: Node) -> Any:
        node_key.set(f"{self.run_id}:{node.name}")  # this task's own context: current_node_key()
        enter_user_code("a task the node started")  # their SystemExit stays the node's (_contain)
        run = self.runs[node.name]
        value = self.node_input(node)
        try:
            while True:
                run.attempts += 1
                if self.listener is not None:
                    self.emit(EventKind.STARTED, node.name, attempt=run.attempts)
                if self.stopping:  # the listener failed on that event: this task is cancelled
                    raise asyncio.CancelledError
                try:
                    if node.timeout_s is None:
                        if self.styles.get(id(node.target)) == "async" and node.input is not None:
                            args, kwargs = self.arguments(node, value)  # invoke, a frame less
                            return await node.target(*args, **kwargs)
                        return await self.invoke(node, value)
                    cm = asyncio.timeout(node.timeout_s)
                    try:
                        async with cm:
                            return await self.invoke(node, value)
                    except TimeoutError:
                        if cm.expired():
                            raise TaskTimeoutError(f"node {node.name!r}", node.timeout_s) from None
                        raise
                except Exception as exc:
                    if run.attempts > node.retries or retry_cannot_help(exc):
                        raise  # retries used up, or an error another attempt cannot mend
                    if self.trace is not None:
                        from ambidex.workflows._tracing import retry_event

                        retry_event(run.attempts, exc)
                    self.emit(
                        EventKind.RETRYING,
                        node.name,
                        attempt=run.attempts,
                        error=describe_exception(exc),
                    )
                    await _RETRY_BACKOFF.asleep(run.attempts)  # on the clock: a test may fake it
        except (SystemExit, KeyboardInterrupt) as exc:
            # The node's own (sys.exit, or raised in its thread or by its agent): out of a
            # task asyncio would raise it from the event loop, stopping the loop thread and
            # every run on it. It is the node's failure (not retried); on_task_done unwraps it.
            raise EscapedExit(exc, _THE_NODE) from exc

    async def invoke(self, node: Node, value: Any) -> Any:
        target = node.target
        style = self.styles.get(id(target))
        if style is None:
            style = self.styles[id(target)] = call_style(target)
        if style in ("agent", "agent_class"):
            agent = await self.agent_for(node)
            return await agent.arun(value)
        args, kwargs = self.arguments(node, value)
        if style == "task":
            if target.kind == "blocking":  # may grow the I/O pool, as a plain def node
                with elastic_threads():
                    return await target.aio(*args, **kwargs)
            return await target.aio(*args, **kwargs)
        if style == "async":
            return await target(*args, **kwargs)
        return await self.in_thread(node.name, target, args, kwargs)

    async def in_thread(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Call a plain ``def`` node on the I/O threads, where cancelling cannot stop it.

        When the run stops, the node's task is cancelled and the call
        abandoned: if it had not begun it never will, and the node is
        cancelled. If it had, its thread runs to the end, side effects and
        all; the node is then "detached": not reported until its outcome
        comes (``late_outcome``), which the run keeps if it comes before the
        run ends, or until the run ends (``finish``), which reports it
        cancelled and discards whatever comes later. (A cancellation by the
        node's own timeout is a failed attempt, as before: its thread's late
        result is discarded.)
        """
        plan = self.chain_plan(name) if self.fuse and self.short(fn) else None
        call: _ThreadCall
        if plan:
            call = self.jobs[name] = _ChainCall(fn, self, name, plan)
        else:
            call = _ThreadCall(fn, self.loop, self.durations)
        try:
            # Elastic: if every I/O thread is busy, the pool starts one more (up to
            # io_threads_max), so the run's ready blocking nodes all run at once.
            return await current_runtime().run_in_thread(call, args, kwargs, elastic=True)
        except asyncio.CancelledError:
            if self.stopping and call.detach(functools.partial(self.late_outcome, name)):
                self.detached.add(name)
            raise

    # -- chain fusion ----------------------------------------------------------

    def short(self, fn: Callable[..., Any]) -> bool:
        """Did ``fn``'s last call in this run take less than ``_SHORT_S``?"""
        took = self.durations.get(id(fn))
        return took is not None and took < _SHORT_S

    def fusable(self, node: Node) -> bool:
        """May ``node`` run inside a fused thread job (or head one)? See ``_ChainCall``.

        A plain ``def`` node with no timeout, no retries, no condition, and an
        input that is a template (not a function of the outputs, which would be
        user code called on the thread): the ordinary path handles the rest.
        """
        target = node.target
        style = self.styles.get(id(target))
        if style is None:
            style = self.styles[id(target)] = call_style(target)
        template = node.input
        return (
            style == "sync"
            and node.timeout_s is None
            and node.retries == 0
            and node.when is None
            and not (callable(template) and not isinstance(template, Ref))
        )

    def chain_plan(self, name: str) -> list[tuple[str, Node, frozenset[str] | None]]:
        """The nodes that may run after ``name`` in its thread job, in order.

        Each depends on the one before only (so it is ready the moment that one
        succeeds), is ``fusable``, and its function's last call was short.
        """
        if not self.fusable(self.nodes[name]):
            return []
        plan: list[tuple[str, Node, frozenset[str] | None]] = []
        successor = self.successor
        durations = self.durations
        while len(plan) < _FUSE_LIMIT:
            nxt = successor.get(name, _UNSET)
            if nxt is _UNSET:
                nxt = successor[name] = self.find_successor(name)
            if nxt is None:
                break
            node = self.nodes[nxt]
            took = durations.get(id(node.target))
            if took is None or took >= _SHORT_S:
                break
            plan.append((nxt, node, self.names_of(node)))
            name = nxt
        return plan

    def dispatch_batch(self) -> None:
        """Run the ready short plain def nodes gathered by ``start``: a thread job a batch.

        A lone node takes the ordinary path (where its chain may be fused).
        """
        names = self.batch
        self.batch = []
        if len(names) == 1:
            self.start_task(names[0])
            return
        elapsed = self.elapsed()
        items = []
        for name in names:
            run = self.runs[name]
            run.started_s = elapsed  # until its call begins (record_ran)
            node = self.nodes[name]
            try:
                value = self.node_input(node)
                args, kwargs = self.arguments(node, value)
            except Exception as exc:
                if self.trace is not None:
                    self.trace_unrun(name, "failed", "its input could not be made", exc)
                self.fail(name, exc, attempts=0)
                continue
            items.append((name, node.target, args, kwargs))
        for i in range(0, len(items), _BATCH_SIZE):
            job = _BatchCall(self, items[i : i + _BATCH_SIZE])
            task = self.loop.create_task(self.run_batch(job), name="nodes:batch")
            self.running[task] = ""
            self.batches[task] = job
            task.add_done_callback(self.on_batch_done)

    async def run_batch(self, job: _BatchCall) -> None:
        await current_runtime().run_in_thread(job, (), {})

    def on_batch_done(self, task: asyncio.Task[Any]) -> None:
        del self.running[task]
        job = self.batches.pop(task, None)
        if job is not None:  # not halted by the run stopping (halt_jobs reports those)
            error = None if task.cancelled() else task.exception()
            for record in job.records:
                self.record_ran(*record)
            for name, _, _, _ in job.items[len(job.records) :]:
                # After a call that was not short: the rest go the ordinary way, in parallel.
                if error is not None:
                    if self.trace is not None:
                        self.trace_unrun(name, "failed", "its thread job failed", error)
                    self.fail(name, error, attempts=0)
                elif self.stopping:
                    run = self.runs[name]
                    run.status = NodeStatus.CANCELLED
                    run.finished_s = self.elapsed()
                    run.reason = run.reason or "the run was stopped"
                    if self.trace is not None:
                        self.trace_unrun(name, "cancelled", run.reason)
                    self.emit(EventKind.CANCELLED, name, reason=run.reason)
                else:
                    self.start_task(name)
        if self.stopping and not self.running and not self.done.done():
            self.done.set_result(None)

    def find_successor(self, name: str) -> str | None:
        for child in self.dependents[name]:
            node = self.nodes[child]
            if len(node.deps) == 1 and self.fusable(node):
                return child
        return None

    def names_of(self, node: Node) -> frozenset[str] | None:
        key = id(node.target)
        if key not in self.keyword_names:
            self.keyword_names[key] = _keyword_names(node.target)
        return self.keyword_names[key]

    def record_fused(self, name: str) -> None:
        """A node that ran in its predecessor's thread job: its events and outcome, now."""
        self.record_ran(*self.fused.pop(name))

    def record_ran(self, name: str, began: float, ended: float, ok: bool, value: Any) -> None:
        """A node that ran in a fused or batch thread job: its events and outcome, now."""
        run = self.runs[name]
        run.status = NodeStatus.RUNNING
        run.started_s = began
        run.attempts = 1
        listener = self.listener
        if listener is not None:
            self.emit_at(EventKind.STARTED, name, began, attempt=1)
        if not ok:
            self.fail(name, value, 1, at=ended)
            return
        run.status = NodeStatus.SUCCEEDED
        run.output = value
        run.finished_s = ended
        self.outputs[name] = value
        if listener is not None:
            self.emit_at(EventKind.FINISHED, name, ended, duration_s=run.duration_s, attempt=1)
        self.conclude(name, not self.stopping)

    def halt_jobs(self, reason: str) -> None:
        """The run stops: fused jobs start no further node; those they began are detached.

        As for a plain def node whose thread runs on (``in_thread``): each is
        reported when its outcome comes (``late_fused``), kept if that is before
        the run ends, or cancelled by ``finish``. The same for the nodes that ran
        in a job that has ended but that the loop has not recorded yet (``fused``):
        they ran, so they are not reported cancelled.
        """
        jobs = list(self.jobs.values())
        self.jobs.clear()
        waiting = [r for r in self.fused.values() if self.runs[r[0]].status in _NOT_BEGUN]
        self.fused.clear()
        if waiting:
            self.detach_fused([r[0] for r in waiting])
            self.loop.call_soon(self.late_fused, waiting)
        for job in jobs:
            begun, done = job.halt()
            self.detach_fused(begun)
            if begun and done:  # its thread has finished: its records are all there
                self.loop.call_soon(self.late_fused, job.records)
        # Batches: nodes not begun are cancelled (as a node whose task had not started
        # its thread call), nodes begun are detached, as above.
        never = list(self.batch)
        self.batch.clear()
        batches = list(self.batches.values())
        self.batches.clear()
        for batch in batches:
            begun, done = batch.halt()
            self.detach_fused(begun)
            if begun and done:
                self.loop.call_soon(self.late_fused, batch.records)
            never += [item[0] for item in batch.items[len(begun) :]]
        for name in never:
            run = self.runs[name]
            run.status = NodeStatus.CANCELLED
            run.finished_s = self.elapsed()
            run.reason = reason
            if self.trace is not None:
                self.trace_unrun(name, "cancelled", reason)
            self.emit(EventKind.CANCELLED, name, reason=reason)

    def detach_fused(self, names: list[str]) -> None:
        for name in names:
            run = self.runs[name]
            pending = run.status is NodeStatus.PENDING
            run.status = NodeStatus.RUNNING
            run.attempts = 1
            run.started_s = self.elapsed()
            self.detached.add(name)
            if pending:
                self.emit(EventKind.QUEUED, name)
            self.emit(EventKind.STARTED, name, attempt=1)

    def late_fused(self, records: list[tuple[str, float, float, bool, Any]]) -> None:
        for name, began, _, ok, value in records:
            if not self.ended and name in self.detached:
                self.runs[name].started_s = began
                self.late_outcome(name, ok, value)

    def late_outcome(self, name: str, ok: bool, value: Any) -> None:
        """A detached node's thread finished (see ``in_thread``): record it, if the run is on.

        The thread did its work, side effects included, so the honest record
        is what it returned: the node finished (or failed), once, with its
        output stored for a resume, which then does not run it again. Its
        dependants are not started: the run has stopped.
        """
        if self.ended or name not in self.detached:
            return  # the run ended first: it was reported cancelled; the result is dropped
        self.detached.discard(name)
        run = self.runs[name]
        run.finished_s = self.elapsed()
        run.reason = _LATE
        if ok:
            run.status = NodeStatus.SUCCEEDED
            run.output = value
            self.outputs[name] = value
            self.emit(
                EventKind.FINISHED,
                name,
                duration_s=run.duration_s,
                attempt=run.attempts,
                reason=_LATE,
            )
        else:
            run.status = NodeStatus.FAILED
            run.error = value
            self.emit(
                EventKind.FAILED,
                name,
                duration_s=run.duration_s,
                attempt=run.attempts,
                error=describe_exception(value),
                reason=_LATE,
            )
        self.conclude(name, release=False)

    async def agent_for(self, node: Node) -> Agent[Any, Any]:
        """The node's agent, held set up for this run (an instance may be shared by runs)."""
        agent = self.agents.get(node.name)
        if agent is None:
            target = node.target
            agent = target() if isinstance(target, type) else target
            if not any(held is agent for held in self.held_agents):  # once per run
                self.held_agents.append(agent)  # before the await: a sibling node shares it
                await agent._acquire()
            self.agents[node.name] = agent
        return agent

    def arguments(self, node: Node, value: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """A dict input becomes keyword arguments when the function takes those names."""
        if node.input is None:
            return (), {}
        if type(value) in _SCALARS:
            return (value,), {}
        if isinstance(value, Mapping) and value:
            return _arguments(node, value, self.names_of(node))
        return (value,), {}

    # -- checkpoints -----------------------------------------------------------

    def conclude(self, name: str, release: bool = True) -> None:
        """A node reached its final state: store it (if checkpointing), then release dependents.

        With a checkpoint, dependents start only after the node's row is
        committed, so a crash in a dependent never loses its dependency's result.
        """
        if self.store is None:
            if release:
                self.settle(name)
            return
        task = self.loop.create_task(self.persist(name, release))
        self.persisting.add(task)
        task.add_done_callback(self.persisting.discard)

    async def persist(self, name: str, release: bool) -> None:
        assert self.store is not None
        try:
            await self.store.asave_node(self.run_id, self.runs[name])
        except Exception as exc:  # no dependent may start on a result that was not stored
            self.checkpoint_failed(name, exc)
            return
        if release:
            self.settle(name)

    def checkpoint_failed(self, name: str, exc: Exception) -> None:
        """A node's checkpoint could not be written: the run fails (as a node failing would)."""
        if self.failure is None:
            self.failure = (name, exc)
            self.cancel_rest(f"the checkpoint of node {name!r} could not be written")

    # -- the run ---------------------------------------------------------------

    async def go(self, stored: Mapping[str, Any]) -> WorkflowResult:
        restored = self.restore(stored)
        if restored and self.trace is not None:
            from ambidex.workflows._tracing import restored_events

            restored_events(self, restored)
        self.emit(EventKind.RUN_STARTED, None)
        for name in restored:
            self.emit(EventKind.FINISHED, name, reason=_RESTORED)
        try:
            with task_factory_installed(self.loop):  # for the tasks nodes start (_contain)
                try:
                    if not self.stopping and self.settled < len(self.nodes):
                        for name in self.nodes:
                            if (
                                self.remaining[name] == 0
                                and self.runs[name].status is NodeStatus.PENDING
                            ):
                                self.on_ready(name)
                        if self.batch:
                            self.dispatch_batch()
                        await self.done
                except asyncio.CancelledError:
                    self.cancelled = True
                    self.cancel_rest("the run was cancelled")
                    if self.running:
                        await asyncio.gather(*self.running, return_exceptions=True)
                    raise
        finally:
            await self.finish()
        return self.result()

    # -- tracing (only when the run is traced: see ambidex.workflows._tracing) -------

    def traced_node(self, node: Node, how: str | None) -> Coroutine[Any, Any, Any]:
        """``run_node(node)`` in the node's span (``how``: "carried", or None for its style)."""
        from ambidex.workflows._tracing import traced_node

        return traced_node(self, node, how)

    def trace_unrun(
        self, name: str, status: str, reason: str, exc: BaseException | None = None
    ) -> None:
        """A node that ends without running (skipped, cancelled, failed before it began)."""
        from ambidex.workflows._tracing import unrun_span

        unrun_span(self, name, status, reason, exc)

    def restore(self, stored: Mapping[str, Any]) -> list[str]:
        """Take back the stored outputs of a resumed run; returns the nodes restored, in order.

        A node is restored only if every node it depends on is restored too. A
        node that runs again (it failed, even under ``on_failure="continue"``,
        or was skipped or cancelled, or its output could not be stored) makes
        a new output, and the outputs stored for its dependants were made from
        the old one (``None``, for a failure), so they run again after it.
        Restored nodes are settled here, before anything starts: they are never
        started, queued or cancelled. (Their events are the caller's to send.)
        """
        if not stored:
            return []
        runs = self.runs
        restored = []
        for name in topological_order(self.wf):  # a node's dependencies come first
            if name not in stored or any(
                runs[dep].status is not NodeStatus.SUCCEEDED for dep in self.nodes[name].deps
            ):
                continue
            run = runs[name]
            run.status = NodeStatus.SUCCEEDED
            run.output = stored[name]
            run.reason = _RESTORED
            self.outputs[name] = run.output
            self.settled += 1
            for child in self.dependents[name]:
                self.remaining[child] -= 1
            restored.append(name)
        if self.settled == len(self.nodes) and not self.done.done():
            self.done.set_result(None)
        return restored

    async def finish(self) -> None:
        if self.running:
            for task in self.running:
                task.cancel()
            await asyncio.gather(*self.running, return_exceptions=True)
        for agent in reversed(self.held_agents):
            try:
                await agent._release()  # the last run holding it tears it down
            except Exception as exc:  # teardown must not hide the run's own outcome
                self.emit(EventKind.FAILED, None, error=f"teardown of {agent.name}: {exc!r}")
        while self.persisting:
            await asyncio.gather(*self.persisting)
        self.ended = True
        for name in sorted(self.detached):  # still running on their threads
            run = self.runs[name]
            run.status = NodeStatus.CANCELLED
            run.finished_s = self.elapsed()
            run.reason = _DROPPED
            self.emit(EventKind.CANCELLED, name, reason=_DROPPED)
        self.detached.clear()
        error_text = self.outcome()
        if self.store is not None:
            if error_text is None:
                status = "succeeded"
            elif self.failure is None and (
                (self.cancelled and self.listener_error is None) or self.interrupted_by_listener()
            ):
                status = "cancelled"
            else:
                status = "failed"
            error = error_text if self.failure is None else repr(self.failure[1])
            await self.store.afinish_run(self.run_id, status, error)
        self.emit(EventKind.RUN_FINISHED, None, duration_s=self.elapsed(), error=error_text)
        if error_text is None and self.listener_error is not None and self.store is not None:
            # The listener raised on run_finished itself: the run fails after all.
            status = "cancelled" if self.interrupted_by_listener() else "failed"
            await self.store.afinish_run(self.run_id, status, self.outcome())

    def interrupted_by_listener(self) -> bool:
        """The listener raised ``KeyboardInterrupt`` (a Ctrl-C as it ran): a cancelled run."""
        return self.listener_error is not None and isinstance(
            self.listener_error[0], KeyboardInterrupt
        )

    def outcome(self) -> str | None:
        """Why the run did not succeed, in words; None if it did.

        It succeeded only if no failure ended it and every node finished
        (``_FINAL``): a node left cancelled, queued or running means work the
        run reports as done was not done, whatever the reason.
        """
        if self.failure is not None:
            name, exc = self.failure
            return f"node {name!r} failed: {describe_exception(exc)}"
        if self.listener_error is not None:
            return self.listener_text()
        for name, run in self.runs.items():
            if run.status not in _FINAL:
                why = f"{run.status.value}: {run.reason}" if run.reason else run.status.value
                self.unfinished = (name, why)
                return f"node {name!r} did not finish ({why})"
        return None

    def result(self) -> WorkflowResult:
        result = WorkflowResult(
            run_id=self.run_id,
            workflow=self.wf.name,
            succeeded=(
                self.failure is None and self.listener_error is None and self.unfinished is None
            ),
            nodes=self.runs,
            elapsed_s=self.elapsed(),
            inputs=self.inputs,
        )
        if self.failure is not None:
            name, exc = self.failure
            err = WorkflowError(
                f"workflow {self.wf.name!r} failed: node {name!r} raised {describe_exception(exc)}",
                node=name,
                run_id=self.run_id,
            )
            err.result = result  # type: ignore[attr-defined]
            if self.listener_error is not None:
                err.add_note(self.listener_text())
            raise err from exc
        if self.listener_error is not None:
            cause = self.listener_error[0]
            if isinstance(cause, KeyboardInterrupt | SystemExit):  # the listener's, to its caller
                raise cause
            err = WorkflowError(
                f"workflow {self.wf.name!r} failed: {self.listener_text()}", run_id=self.run_id
            )
            err.result = result  # type: ignore[attr-defined]
            raise err from self.listener_error[0]
        if self.unfinished is not None:
            name, why = self.unfinished
            err = WorkflowError(
                f"workflow {self.wf.name!r} failed: node {name!r} did not finish ({why})",
                node=name,
                run_id=self.run_id,
            )
            err.result = result  # type: ignore[attr-defined]
            raise err
        return result


class _Shape:
    """What every run of a workflow would work out again: its graph, and how each node starts.

    Found once per shape of the workflow (``_shape_of``: a node added makes
    a new one) and shared by its runs. The dicts after ``dependents`` fill as
    runs come to each node or target; each holds only what follows from the
    nodes themselves (their targets, options and edges), never from a run.
    """

    __slots__ = (
        "carries",
        "dependents",
        "keyword_names",
        "plans",
        "remaining",
        "size",
        "styles",
        "successor",
    )

    def __init__(self, wf: Workflow) -> None:
        self.size = len(wf.nodes)
        self.remaining = {name: len(node.deps) for name, node in wf.nodes.items()}
        self.dependents: dict[str, list[str]] = {name: [] for name in wf.nodes}
        for name, node in wf.nodes.items():
            for dep in node.deps:
                self.dependents[dep].append(name)
        # Per target (many nodes often share one function): how to call it. By id: the
        # workflow's nodes hold their targets, so the ids stay theirs while this lives.
        self.styles: dict[int, str] = {}
        self.keyword_names: dict[int, frozenset[str] | None] = {}
        self.successor: dict[str, str | None] = {}  # chain_plan: the node it may fuse into
        self.plans: dict[str, int] = {}  # plan_of
        self.carries: dict[str, bool] = {}  # may_carry


_SHAPES: weakref.WeakKeyDictionary[Workflow, _Shape] = weakref.WeakKeyDictionary()


def _shape_of(wf: Workflow) -> _Shape:
    """``wf``'s ``_Shape``; a new one if a node was added since (``Workflow.node``)."""
    shape = _SHAPES.get(wf)
    if shape is None or shape.size != len(wf.nodes):
        shape = _SHAPES[wf] = _Shape(wf)
    return shape


class _ThreadCall:
    """One call of a plain ``def`` node on an I/O thread, which may outlive the node's task.

    Cancelling the task abandons the call in the thread pool: if it had not
    begun it never will; if it had, the thread runs it to the end and the
    pool drops the outcome. ``detach`` asks for that outcome instead, and says
    whether there will be one. The lock settles the race between the thread
    beginning or ending the call and the loop detaching it.
    """

    __slots__ = ("durations", "fn", "lock", "loop", "on_late", "outcome", "state")

    def __init__(
        self, fn: Callable[..., Any], loop: asyncio.AbstractEventLoop, durations: dict[int, float]
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.durations = durations  # id(fn) -> seconds its last call took (for fusion)
        self.lock = threading.Lock()
        self.state = "waiting"  # -> "running" -> "done"; or "waiting" -> "given up"
        self.outcome: tuple[bool, Any] | None = None
        self.on_late: Callable[[bool, Any], None] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            if self.state == "given up":  # detached before it began: it never runs
                return None  # (to an abandoned call: the pool drops it)
            self.state = "running"
        fn = self.fn
        began = time.monotonic()
        try:
            value, ok = fn(*args, **kwargs), True
        except BaseException as exc:
            value, ok = exc, False
        self.durations[id(fn)] = time.monotonic() - began
        with self.lock:
            on_late = self.on_late
            self.state = "done"
            if on_late is None:
                self.outcome = (ok, value)
        if on_late is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self.loop.call_soon_threadsafe(on_late, ok, value)
        if ok:
            return value
        raise value

    def detach(self, on_late: Callable[[bool, Any], None]) -> bool:
        """The caller stopped waiting (on the loop): will ``on_late(ok, value)`` be called?

        False if the call had not begun (it now never will). True if it had:
        ``on_late`` gets its outcome on the loop when the thread ends, or soon
        if it already has (its outcome was on its way to the abandoned call).
        """
        with self.lock:
            state = self.state
            if state == "waiting":
                self.state = "given up"
                return False
            if state == "running":
                self.on_late = on_late
                return True
            outcome = self.outcome
        assert outcome is not None
        self.loop.call_soon(on_late, *outcome)
        return True


class _ChainCall(_ThreadCall):
    """A plain ``def`` node's thread call that runs on into its successors (chain fusion).

    Each node of a chain of plain ``def`` nodes costs a round trip loop ->
    I/O thread -> loop, tens of µs, most of a trivial node's cost. When the
    head's call was short (``_SHORT_S``) and it succeeded, this job goes on
    on the same thread with the next node of its plan (``chain_plan``: it
    depends on the previous node only, so it is ready now; its function was
    short last time; no timeout, retries or condition), and so on, and
    records when each began and ended and its outcome. It stops at the first
    failure, the first call that took ``_SHORT_S`` or more, a node whose input
    cannot be resolved, after ``_FUSE_LIMIT`` nodes or ``_FUSE_BUDGET_S``
    seconds, or when the run halts it. Back on the loop, the head finishes
    as usual and each fused node then goes through the usual steps (queued,
    started, finished or failed; dependents released) at its recorded times
    (``record_fused``), only later than it ran.

    ``halt`` (the run stops) is checked under the lock before each next node:
    nothing further starts, and the nodes it began are detached like a
    blocking node's thread that runs on (their outcomes come to ``late_fused``).
    """

    __slots__ = ("execution", "halted", "head", "head_end", "offset", "plan", "records", "started")

    def __init__(
        self,
        fn: Callable[..., Any],
        execution: _WorkflowExecution,
        head: str,
        plan: list[tuple[str, Node, frozenset[str] | None]],
    ) -> None:
        super().__init__(fn, execution.loop, execution.durations)
        self.execution = execution
        self.head = head
        self.plan = plan
        # monotonic() + offset = seconds since the run started, on the run's clock
        self.offset = execution.elapsed() - time.monotonic()
        self.head_end = 0.0
        self.records: list[tuple[str, float, float, bool, Any]] = []
        self.started: list[str] = []
        self.halted = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            if self.state == "given up":
                return None
            self.state = "running"
        fn = self.fn
        began = time.monotonic()
        try:
            value, ok = fn(*args, **kwargs), True
        except BaseException as exc:
            value, ok = exc, False
        ended = self.head_end = time.monotonic()
        self.durations[id(fn)] = ended - began
        if ok and ended - began < _SHORT_S:
            self.follow(value, began)
        with self.lock:
            on_late = self.on_late
            self.state = "done"
            if on_late is None:
                self.outcome = (ok, value)
            late_chain = self.halted and bool(self.started)
        loop = self.loop
        with contextlib.suppress(RuntimeError):  # the loop has closed
            if on_late is not None:
                loop.call_soon_threadsafe(on_late, ok, value)
            if late_chain:
                loop.call_soon_threadsafe(self.execution.late_fused, self.records)
        if ok:
            return value
        raise value

    def follow(self, value: Any, since: float) -> None:
        """Run the plan's nodes one after another while each succeeds quickly."""
        inputs = self.execution.inputs
        durations = self.durations
        prev = self.head
        deadline = since + _FUSE_BUDGET_S
        for name, node, names in self.plan:
            target = node.target
            took = durations.get(id(target))
            if took is None or took >= _SHORT_S or time.monotonic() > deadline:
                return
            try:  # its only dependency is prev: the template refers to nothing else
                template = node.input
                if template is None:
                    args: tuple[Any, ...] = ()
                    kwargs: dict[str, Any] = {}
                else:
                    given = resolve(template, inputs, {prev: value})
                    if isinstance(given, Mapping) and given:
                        args, kwargs = _arguments(node, given, names)
                    else:
                        args, kwargs = (given,), {}
            except Exception:
                return  # the loop resolves it again, and fails it as usual
            ran = _run_recorded(self, name, target, args, kwargs)
            if ran is None:
                return
            ok, took, value = ran
            if not ok or took >= _SHORT_S:
                return
            prev = name

    def halt(self) -> tuple[list[str], bool]:
        """Start no further node; the nodes begun, and whether the job has ended."""
        with self.lock:
            self.halted = True
            return list(self.started), self.state == "done"


def _run_recorded(
    job: _ChainCall | _BatchCall,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[bool, float, Any] | None:
    """Run one node of a fused or batched job on its thread, and record it.

    None if the job was halted first (the node never begins); else whether it
    succeeded, the seconds it took, and its value (or exception). The record
    (name, start and end on the run's clock, ok, value) is what the loop reports.
    """
    with job.lock:
        if job.halted:
            return None
        job.started.append(name)
    node_key.set(f"{job.execution.run_id}:{name}")
    if job.execution.trace is not None:
        from ambidex.workflows._tracing import run_recorded_traced

        return run_recorded_traced(job, name, fn, args, kwargs)
    began = time.monotonic()
    try:
        value, ok = fn(*args, **kwargs), True
    except BaseException as exc:
        value, ok = exc, False
    ended = time.monotonic()
    job.durations[id(fn)] = ended - began
    job.records.append((name, began + job.offset, ended + job.offset, ok, value))
    return ok, ended - began, value


class _BatchCall:
    """Ready plain ``def`` nodes run one after another in one I/O thread job (batching).

    A wide layer of trivial nodes (a fan-out) costs a thread round trip per
    node, and as many wake-ups of the loop. Nodes whose function's last call
    was short (``_SHORT_S``) are run ``_BATCH_SIZE`` a job instead, each
    with its begin and end times recorded; back on the loop each goes through
    the usual steps at those times (``record_ran``). The job stops after a
    call that was not short: the nodes left go the ordinary way, one task and
    one thread call each, so long blocking calls still run in parallel.
    ``halt`` (the run stops) is checked under the lock before each call.
    """

    __slots__ = (
        "durations",
        "execution",
        "halted",
        "items",
        "lock",
        "offset",
        "records",
        "started",
        "state",
    )

    def __init__(
        self,
        execution: _WorkflowExecution,
        items: list[tuple[str, Callable[..., Any], tuple[Any, ...], dict[str, Any]]],
    ) -> None:
        self.execution = execution
        self.items = items
        self.durations = execution.durations
        self.offset = execution.elapsed() - time.monotonic()
        self.lock = threading.Lock()
        self.records: list[tuple[str, float, float, bool, Any]] = []
        self.started: list[str] = []
        self.halted = False
        self.state = "waiting"

    def __call__(self) -> None:
        lock = self.lock
        with lock:
            self.state = "running"
        for name, fn, args, kwargs in self.items:
            ran = _run_recorded(self, name, fn, args, kwargs)
            if ran is None or ran[1] >= _SHORT_S:
                break
        with lock:
            self.state = "done"
            late = self.halted and bool(self.started)
        if late:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self.execution.loop.call_soon_threadsafe(self.execution.late_fused, self.records)

    def halt(self) -> tuple[list[str], bool]:
        """Start no further call; the nodes begun, and whether the job has ended."""
        with self.lock:
            self.halted = True
            return list(self.started), self.state == "done"


@types.coroutine
def _in_context(
    ctx: contextvars.Context, coro: Coroutine[Any, Any, Any]
) -> Generator[Any, Any, Any]:
    """``await coro``, with each of its steps run in ``ctx`` (a node's own context).

    What ``coro`` awaits is passed to the task as it is, and what the task
    sends or throws back (a result, a cancellation) goes to ``coro``.
    """
    run = ctx.run
    try:
        signal = run(coro.send, None)
    except StopIteration as stop:
        return stop.value
    while True:
        try:
            value = yield signal
        except BaseException as exc:
            try:
                signal = run(coro.throw, exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                signal = run(coro.send, value)
            except StopIteration as stop:
                return stop.value


@types.coroutine
def _pass() -> Generator[None, None, None]:
    """Let the loop run once (a bare yield: the task is scheduled again)."""
    yield


def _arguments(
    node: Node, value: Mapping[str, Any], names: frozenset[str] | None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A dict input becomes keyword arguments when the function takes those names."""
    if names is None or all(k in names for k in value):
        return (), dict(value)
    return (value,), {}


def _keyword_names(target: Any) -> frozenset[str] | None:
    """Names a function accepts as keywords; None when it takes ``**kwargs``."""
    fn = getattr(target, "__wrapped__", target)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return frozenset()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return frozenset(
        n
        for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    )


async def execute(
    wf: Workflow,
    given: Mapping[str, Any],
    *,
    on_event: EventListener | None,
    checkpoint: str | os.PathLike[str] | CheckpointBackend | None,
    run_id: str | None,
    resume: str | None,
    max_parallel: int | None,
) -> WorkflowResult:
    """Run ``wf`` (already validated); see ``Workflow.arun``."""
    if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
        raise WorkflowDefinitionError(
            [f"max_parallel must be a positive integer, got {max_parallel!r}"]
        )
    rt = current_runtime()
    if checkpoint is not None and not isinstance(checkpoint, str | os.PathLike):
        if not isinstance(checkpoint, CheckpointBackend):
            raise WorkflowDefinitionError(
                [f"checkpoint= takes a file path or a CheckpointBackend, not {checkpoint!r}"]
            )
        return await _execute(wf, given, on_event, checkpoint, run_id, resume, max_parallel)
    store = None
    if checkpoint is not None:
        store = await rt.run_in_thread(CheckpointStore, (checkpoint,), {})
    try:
        return await _execute(wf, given, on_event, store, run_id, resume, max_parallel)
    finally:
        if store is not None:
            await rt.run_in_thread(store.close, (), {})


async def _execute(
    wf: Workflow,
    given: Mapping[str, Any],
    on_event: EventListener | None,
    store: CheckpointBackend | None,
    run_id: str | None,
    resume: str | None,
    max_parallel: int | None,
) -> WorkflowResult:
    for option, value in (("run_id", run_id), ("resume", resume)):
        if value is not None and not isinstance(value, str):
            raise WorkflowDefinitionError([f"{option}= must be text, got {value!r}"])
        if value is not None and store is not None and not _storable(value):
            raise WorkflowDefinitionError(
                [f"{option}= must be text a checkpoint can store (valid Unicode), got {value!r}"]
            )
    restored: dict[str, Any] = {}
    if resume is not None:
        if store is None:
            raise WorkflowDefinitionError(["resume needs checkpoint= (the SQLite file of the run)"])
        stored = await store.aload_run(resume)
        if stored.workflow != wf.name:
            raise WorkflowDefinitionError(
                [f"run {resume!r} belongs to workflow {stored.workflow!r}, not {wf.name!r}"]
            )
        given = {**stored.inputs, **given}
        restored = {n: o for n, o in stored.outputs.items() if n in wf.nodes}
        run_id = resume
    inputs = check_inputs(wf, given)
    run_id = run_id or secrets.token_hex(8)
    if store is not None:  # a resume records its inputs: a later resume runs with the same
        await store.astart_run(
            run_id,
            wf.name,
            inputs,
            resume=resume is not None,
            source=wf.source,  # what `ambidex runs` shows
            nodes=list(wf.nodes),
        )
    run = _WorkflowExecution(wf, inputs, run_id, on_event, store, max_parallel)
    if _observe.on:
        from ambidex.workflows._tracing import traced_run

        return await traced_run(run, restored, resumed=resume is not None)
    return await run.go(restored)
