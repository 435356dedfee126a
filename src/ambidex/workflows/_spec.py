"""Workflow definitions: nodes, their inputs and dependencies, and how to call a node's target.

A node's target is an ``ax.Agent`` (instance or class), a function decorated
with ``@ax.io``/``@ax.blocking``/``@ax.cpu``, or a plain function (``async def``
runs on the loop, a plain ``def`` on the I/O threads). Its input is a
template (see ``_refs``) or a callable that receives the outputs of the nodes
named in ``after=``.
"""

from __future__ import annotations

import enum
import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ambidex.agents import Agent
from ambidex.exceptions import AmbidexError
from ambidex.runtime import TaskFunction
from ambidex.workflows._refs import INPUTS, Condition, Ref, find_refs

if TYPE_CHECKING:
    from ambidex.workflows._checkpoint import CheckpointBackend
    from ambidex.workflows._events import EventListener
    from ambidex.workflows._scheduler import WorkflowResult

__all__ = [
    "FailurePolicy",
    "InputSpec",
    "Node",
    "Outputs",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowError",
]


class WorkflowError(AmbidexError):
    """A workflow run failed; ``node`` names the node whose failure ended it."""

    def __init__(self, message: str, node: str | None = None, run_id: str | None = None) -> None:
        self.node = node
        self.run_id = run_id
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.node, self.run_id))


class WorkflowDefinitionError(AmbidexError, ValueError):
    """A workflow is malformed; ``problems`` lists every problem found, one per line."""

    def __init__(self, problems: Sequence[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            message = f"{where}{self.problems[0]}"
        else:
            listed = "\n".join(f"  - {p}" for p in self.problems)
            message = f"{where}{len(self.problems)} problems:\n{listed}"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems, self.source))


class FailurePolicy(enum.Enum):
    """What a node's failure does to the rest of the run."""

    FAIL = "fail"  # cancel everything still running; the run fails
    SKIP = "skip"  # skip the node's dependents; the rest of the run goes on
    CONTINUE = "continue"  # record the failure; dependents run with output None


@dataclass(frozen=True)
class InputSpec:
    """A declared workflow input: its type and, if optional, its default."""

    type: Any = Any
    default: Any = inspect.Parameter.empty
    description: str = ""

    @property
    def required(self) -> bool:
        """True when the input has no default."""
        return self.default is inspect.Parameter.empty


class Outputs(Mapping[str, Any]):
    """What a callable input (or condition) sees: the outputs of its declared dependencies."""

    def __init__(
        self,
        node: str,
        allowed: frozenset[str],
        outputs: Mapping[str, Any],
        inputs: Mapping[str, Any],
    ) -> None:
        self._node = node
        self._allowed = allowed
        self._outputs = outputs
        self.inputs = inputs
        """The workflow's inputs."""

    def __getitem__(self, name: str) -> Any:
        if name not in self._allowed:
            known = ", ".join(sorted(self._allowed)) or "none"
            raise KeyError(
                f"node {self._node!r} reads the output of {name!r}, which is not among its "
                f"dependencies (after=[...]: {known}); add it to after="
            )
        return self._outputs[name]

    def __iter__(self) -> Any:
        return iter(sorted(self._allowed))

    def __len__(self) -> int:
        return len(self._allowed)


@dataclass
class Node:
    """One step of a workflow."""

    name: str
    target: Any
    input: Any = None
    after: tuple[str, ...] = ()
    timeout_s: float | None = None
    retries: int = 0
    on_failure: FailurePolicy = FailurePolicy.FAIL
    when: Condition | Ref | Callable[[Outputs], bool] | None = None
    line: int | None = None
    """Where the node is defined in its YAML file, for error messages."""
    deps: frozenset[str] = field(default=frozenset(), init=False)

    def __post_init__(self) -> None:
        self.deps = frozenset(self._compute_deps())

    def _compute_deps(self) -> Iterable[str]:
        yield from self.after
        for _, ref in find_refs(self.input):
            if ref.source != INPUTS:
                yield ref.source
        if isinstance(self.when, Condition | Ref):
            ref = self.when.ref if isinstance(self.when, Condition) else self.when
            if ref.source != INPUTS:
                yield ref.source

    @property
    def output(self) -> Ref:
        """A reference to this node's output, for other nodes' inputs: ``fuel.output.kg``."""
        return Ref(self.name)

    def where(self) -> str:
        """``node 'fuel'``, or ``line 12: node 'fuel'`` for a node read from YAML."""
        return (f"line {self.line}: " if self.line else "") + f"node {self.name!r}"


class Workflow:
    """A DAG of nodes; each starts the moment its inputs exist.

    Build one in Python::

        wf = ax.Workflow("emissions", inputs={"litres": float})
        fuel = wf.node("fuel", FuelAgent(), input={"litres": wf.inputs.litres})
        grid = wf.node("grid", GridAgent(), input={"region": "EU"})
        wf.node("report", ReportAgent(),
                input={"kg": fuel.output.kg_co2, "factor": grid.output.factor})
        result = wf.run({"litres": 120})          # or: await wf.arun(...)

    or load it from YAML with ``ax.Workflow.from_yaml(path)``.
    """

    def __init__(
        self,
        name: str,
        *,
        inputs: Mapping[str, Any] | None = None,
        max_parallel: int | None = None,
        source: str | None = None,
    ) -> None:
        self.name = name
        self.max_parallel = max_parallel
        self.source = source
        self.input_specs: dict[str, InputSpec] = {
            key: spec if isinstance(spec, InputSpec) else InputSpec(type=spec)
            for key, spec in (inputs or {}).items()
        }
        self.nodes: dict[str, Node] = {}
        self._validated = False

    @property
    def inputs(self) -> Ref:
        """References to workflow inputs: ``wf.inputs.litres``."""
        return Ref(INPUTS)

    def node(
        self,
        name: str,
        target: Any,
        input: Any = None,
        *,
        after: Iterable[str | Node] = (),
        timeout_s: float | None = None,
        retries: int = 0,
        on_failure: str | FailurePolicy = "fail",
        when: Condition | Ref | Callable[[Outputs], bool] | None = None,
        line: int | None = None,
    ) -> Node:
        """Add a node and return it (use ``node.output`` to wire later nodes).

        Args:
            name: unique within the workflow.
            target: an Agent (instance or class), a decorated function, or a function.
            input: a template (values, dicts and lists, with references such as
                ``other.output.field`` or ``wf.inputs.x``) or a callable that
                receives an ``Outputs`` mapping of the ``after=`` nodes' outputs.
            after: nodes that must finish first (besides those the input refers to).
            timeout_s: deadline of each attempt of this node.
            retries: attempts after the first failure.
            on_failure: ``"fail"`` (cancel the run), ``"skip"`` (skip dependents) or
                ``"continue"`` (dependents run with output None).
            when: run only if this holds: a reference (truthiness), a ``Condition``,
                or a callable receiving ``Outputs``; otherwise the node is skipped.
            line: the YAML line that defined the node (set by the YAML loader).

        Raises:
            WorkflowDefinitionError: a duplicate name or a bad option.
        """
        if name in self.nodes:
            raise WorkflowDefinitionError([f"node {name!r} is defined twice"], self.source)
        if not isinstance(name, str) or not name or name == INPUTS:
            raise WorkflowDefinitionError(
                [f"{name!r} is not a usable node name ('inputs' is reserved)"], self.source
            )
        try:
            policy = FailurePolicy(on_failure)
        except ValueError:
            raise WorkflowDefinitionError(
                [
                    f"node {name!r}: on_failure must be 'fail', 'skip' or 'continue', "
                    f"got {on_failure!r}"
                ],
                self.source,
            ) from None
        if timeout_s is not None and not timeout_s > 0:
            raise WorkflowDefinitionError(
                [f"node {name!r}: timeout_s must be a positive number, got {timeout_s!r}"],
                self.source,
            )
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise WorkflowDefinitionError(
                [f"node {name!r}: retries must be a non-negative integer, got {retries!r}"],
                self.source,
            )
        deps = tuple(a.name if isinstance(a, Node) else a for a in after)
        node = Node(name, target, input, deps, timeout_s, retries, policy, when, line)
        self.nodes[name] = node
        self._validated = False
        return node

    def validate(self) -> None:
        """Check the workflow before anything runs.

        Raises:
            WorkflowDefinitionError: listing every problem found: unknown nodes,
                cycles (naming their nodes), undeclared inputs, missing or unknown
                input fields, and type mismatches between connected nodes.
        """
        from ambidex.workflows._validate import validate

        validate(self)
        self._validated = True

    def order(self) -> list[str]:
        """Node names in a dependency-respecting order (validates first)."""
        from ambidex.workflows._validate import topological_order

        if not self._validated:
            self.validate()
        return topological_order(self)

    def run(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        on_event: EventListener | None = None,
        checkpoint: str | os.PathLike[str] | CheckpointBackend | None = None,
        run_id: str | None = None,
        resume: str | None = None,
        max_parallel: int | None = None,
    ) -> WorkflowResult:
        """Run from sync code; returns when every node has finished, failed or been skipped.

        See ``arun`` for the arguments.
        """
        from ambidex.runtime import current_runtime

        return current_runtime().call(
            self.arun(
                inputs,
                on_event=on_event,
                checkpoint=checkpoint,
                run_id=run_id,
                resume=resume,
                max_parallel=max_parallel,
            )
        )

    async def arun(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        on_event: EventListener | None = None,
        checkpoint: str | os.PathLike[str] | CheckpointBackend | None = None,
        run_id: str | None = None,
        resume: str | None = None,
        max_parallel: int | None = None,
    ) -> WorkflowResult:
        """Run the workflow: each node starts the moment its dependencies have finished.

        Args:
            inputs: values for the declared workflow inputs.
            on_event: called with each ``WorkflowEvent`` (queued, started, finished...).
            checkpoint: a SQLite file (``CheckpointStore``) in which every
                finished node's output is stored before its dependents start, so
                that a crashed run can be resumed; or another
                ``ax.workflows.CheckpointBackend``.
            run_id: the id to store the run under (default: a new random id).
                Nodes read ``"<run id>:<node>"`` as their idempotency key
                (``ax.workflows.current_node_key()``).
            resume: the id of a stored run to resume: nodes that finished are not
                run again; their stored outputs are used. Needs ``checkpoint``.
                Inputs given with it replace the stored ones, and are stored in
                their place (a later resume runs with them).
            max_parallel: at most this many nodes at once (default: the
                workflow's ``max_parallel``, else no bound).

        Raises:
            WorkflowDefinitionError: the workflow or the inputs are invalid (nothing ran).
            WorkflowError: a node with ``on_failure="fail"`` failed (its error is
                the ``__cause__``); everything still running was cancelled.
        """
        from ambidex.workflows._scheduler import execute

        if not self._validated:
            self.validate()
        return await execute(
            self,
            inputs or {},
            on_event=on_event,
            checkpoint=checkpoint,
            run_id=run_id,
            resume=resume,
            max_parallel=max_parallel if max_parallel is not None else self.max_parallel,
        )

    @classmethod
    def from_yaml(cls, path: str) -> Workflow:
        """Load a workflow from a YAML file (agents by import path).

        Raises:
            WorkflowDefinitionError: with the file and line of each problem.
        """
        from ambidex.workflows._yaml import load_workflow

        return load_workflow(path)

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r} with {len(self.nodes)} nodes>"


# -- calling a node's target -------------------------------------------------


def target_signature(target: Any) -> tuple[Any, Any]:
    """(input type, output type) of a node's target, ``Any`` where not annotated."""
    if isinstance(target, Agent) or (isinstance(target, type) and issubclass(target, Agent)):
        cls = target if isinstance(target, type) else type(target)
        return cls.input_type, cls.output_type
    fn = getattr(target, "__wrapped__", target)
    try:
        hints = _type_hints(fn)
    except Exception:
        return Any, Any
    return Any, hints.get("return", Any)


def _type_hints(fn: Any) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(fn)


def call_style(target: Any) -> str:
    """How a target is invoked: 'agent', 'agent_class', 'task', 'async' or 'sync'."""
    if isinstance(target, Agent):
        return "agent"
    if isinstance(target, type) and issubclass(target, Agent):
        return "agent_class"
    if isinstance(target, TaskFunction):
        return "task"
    if inspect.iscoroutinefunction(target):
        return "async"
    if callable(target):
        return "sync"
    raise TypeError(f"{target!r} is not an agent or a function")
