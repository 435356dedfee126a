"""Workflow definitions: nodes, their inputs and dependencies, and how to call a node's target.

A node's target is an ``ax.Agent`` (instance or class), a function decorated
with ``@ax.io``/``@ax.blocking``/``@ax.cpu``, or a plain function (``async def``
runs on the loop, a plain ``def`` on the I/O threads). Its input is a
template (see ``_refs``) or a callable that receives the outputs of the nodes
named in ``after=``.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import os
import types
import typing
import weakref
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


def _storable(text: str) -> bool:
    """Whether ``text`` is valid Unicode (no lone surrogate): UTF-8 can encode it."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


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
    line: int | None = field(default=None, compare=False)
    """Where the input is declared in its YAML file, for error messages."""

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
    lines: Mapping[tuple[str | int, ...], int] = field(default_factory=dict)
    """Lines of the node's parts in its YAML file, for error messages: keyed by
    ``("target",)``, ``("input", key, ...)`` (each key and item of the input),
    ``("when",)`` and ``("after", i)``."""
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

    def line_of(self, part: tuple[str | int, ...] = ()) -> int | None:
        """The YAML line of ``part`` (see ``lines``), else of the node; None outside YAML."""
        for end in range(len(part), 0, -1):
            line = self.lines.get(part[:end])
            if line:
                return line
        return self.line

    def where(self, part: tuple[str | int, ...] = (), *, label: bool = True) -> str:
        """``node 'fuel'``, ``node 'fuel' input 'litres'``; from YAML, with its line first.

        Args:
            part: a key of ``lines``: the line is that part's, if known.
            label: name the part after the node (``input 'litres'``, ``when``, ``after``).
        """
        line = self.line_of(part)
        named = f"node {self.name!r}" + (_part_label(part) if label else "")
        return (f"line {line}: " if line else "") + named


def _part_label(part: tuple[str | int, ...]) -> str:
    """`` input 'kg'``, `` input 'xs[3]'``, `` when``, `` after``: a part of a node."""
    if not part:
        return ""
    head, path = part[0], part[1:]
    if head != "input" or not path:
        return f" {head}"
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return f" input {text.removeprefix('.')!r}"


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
        # The workflow inputs its nodes refer to, found once (check_inputs, every run);
        # reset when a node is added.
        self._input_refs: list[Any] | None = None

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
        lines: Mapping[tuple[str | int, ...], int] | None = None,
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
            lines: the YAML lines of the node's parts (set by the YAML loader; see
                ``Node.lines``).

        Raises:
            WorkflowDefinitionError: a duplicate name or a bad option.
        """
        if name in self.nodes:
            raise WorkflowDefinitionError([f"node {name!r} is defined twice"], self.source)
        if not isinstance(name, str) or not name or name == INPUTS:
            raise WorkflowDefinitionError(
                [f"{name!r} is not a usable node name ('inputs' is reserved)"], self.source
            )
        if "\x00" in name or not _storable(name):  # every checkpoint keeps the node's name
            raise WorkflowDefinitionError(
                [
                    f"{name!r} is not a usable node name: it holds a NUL or a lone surrogate, "
                    "which no checkpoint (SQLite, PostgreSQL) can store"
                ],
                self.source,
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
        node = Node(
            name, target, input, deps, timeout_s, retries, policy, when, line, dict(lines or {})
        )
        self.nodes[name] = node
        self._validated = False
        self._input_refs = None
        return node

    def validate(self) -> None:
        """Check the workflow before anything runs.

        Raises:
            WorkflowDefinitionError: listing every problem found (docs/workflows.md,
                section Validation, lists what is checked): unknown nodes, cycles,
                undeclared inputs, references to fields that do not exist (in inputs
                and ``when`` conditions), missing input fields or parameters, dict
                inputs whose keys are not the function's parameters, and type
                mismatches between connected nodes, agents and annotated functions.
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
    """(input type, output type) of a node's target, ``Any`` where not annotated.

    A function's input type is ``Any``: its parameters are in ``call_info``.
    """
    if isinstance(target, Agent) or (isinstance(target, type) and issubclass(target, Agent)):
        cls = target if isinstance(target, type) else type(target)
        return cls.input_type, cls.output_type
    return Any, call_info(target).returns


@dataclass(frozen=True)
class Param:
    """One parameter of a function target."""

    name: str
    kind: inspect._ParameterKind
    required: bool
    type: Any
    """The resolved annotation; ``Any`` when there is none or it cannot be resolved."""

    @property
    def positional(self) -> bool:
        """Whether an argument can be passed to it by position."""
        return self.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )

    @property
    def keyword(self) -> bool:
        """Whether an argument can be passed to it by name."""
        return self.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        )


@dataclass(frozen=True)
class CallInfo:
    """What validation knows of a function target: its parameters and return type."""

    name: str
    params: tuple[Param, ...] | None
    """Named parameters (not ``*args``/``**kwargs``); None when the signature cannot be read."""
    var_positional: bool = False
    var_keyword: bool = False
    returns: Any = Any
    first_positional: Param | None = None
    """The parameter a single argument goes to."""
    required: tuple[str, ...] = ()
    """Names of the parameters without a default."""
    keywords: Mapping[str, Param] = field(default_factory=dict)
    """The parameters that can be passed by name."""

    @property
    def keyword_names(self) -> frozenset[str] | None:
        """Names it takes as keywords; None when it takes ``**kwargs`` (any name)."""
        return None if self.var_keyword else frozenset(self.keywords)


# Reading a signature and resolving annotations (string ones are evaluated) costs 10-50
# us, and a workflow often has thousands of nodes on one function, or on closures made
# by one def. A plain function's is kept by its code object (the same code, module,
# annotations and defaults give the same parameters and types); any other target's
# (a decorated function, a callable object) by the target itself.
_CALL_INFO: weakref.WeakKeyDictionary[Any, CallInfo] = weakref.WeakKeyDictionary()
_BY_CODE: weakref.WeakKeyDictionary[types.CodeType, dict[Any, CallInfo]] = (
    weakref.WeakKeyDictionary()
)


def call_info(target: Any) -> CallInfo:
    """The parameters and return type of a function target (read once per function).

    Annotations are resolved with ``typing.get_type_hints`` against the function's
    module, so string annotations (``from __future__ import annotations``) count; one
    that cannot be resolved (a name that is not in the module) is ``Any``: not checked.
    What is read is kept: for a plain function by its code object (closures made by
    one ``def`` share it when their module, annotations and defaults agree), for any
    other target (a callable object, a method) by the target itself.
    """
    fn = getattr(target, "__wrapped__", target)
    code_key = _code_key(fn)
    if code_key is not None:  # a plain function: kept by its code alone
        code, key = code_key
        by_key = _BY_CODE.get(code)
        if by_key is None:
            by_key = _BY_CODE[code] = {}
        info = by_key.get(key)
        if info is None:
            info = by_key[key] = _read_call_info(fn)
        return info
    try:
        return _CALL_INFO[target]
    except (KeyError, TypeError):  # TypeError: not hashable or not weak-referenceable
        pass
    info = _read_call_info(fn)
    with contextlib.suppress(TypeError):
        _CALL_INFO[target] = info
    return info


def _code_key(fn: Any) -> tuple[types.CodeType, Any] | None:
    """What a plain function's parameters and resolved annotations depend on, or None."""
    if not inspect.isfunction(fn) or "__wrapped__" in fn.__dict__ or "__signature__" in fn.__dict__:
        return None
    key = (
        fn.__name__,
        id(fn.__globals__),
        tuple(fn.__annotations__.items()),
        len(fn.__defaults__ or ()),
        tuple(sorted(fn.__kwdefaults__ or ())),
    )
    try:
        hash(key)
    except TypeError:  # an unhashable annotation
        return None
    return fn.__code__, key


def _read_call_info(fn: Any) -> CallInfo:
    """``fn``: the target, or what it wraps (what the scheduler reads, as it reads it)."""
    name = str(getattr(fn, "__name__", None) or type(fn).__name__)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return CallInfo(name, None)
    hints = _resolved_hints(fn)
    params = []
    var_positional = var_keyword = False
    for p in signature.parameters.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            var_positional = True
        elif p.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
        else:
            required = p.default is inspect.Parameter.empty
            params.append(Param(p.name, p.kind, required, hints.get(p.name, Any)))
    returns = fn if isinstance(fn, type) else hints.get("return", Any)
    return CallInfo(
        name,
        tuple(params),
        var_positional,
        var_keyword,
        returns,
        first_positional=next((p for p in params if p.positional), None),
        required=tuple(p.name for p in params if p.required),
        keywords={p.name: p for p in params if p.keyword},
    )


def _resolved_hints(fn: Any) -> dict[str, Any]:
    """``fn``'s annotations, resolved; each one that cannot be resolved left out."""
    if isinstance(fn, type):
        return {}  # a class: its annotations are its attributes, not its parameters
    if not (inspect.isfunction(fn) or inspect.ismethod(fn)):
        call = inspect.getattr_static(type(fn), "__call__", None)  # a callable object
        if not inspect.isfunction(call):
            return {}
        fn = call
    try:
        return typing.get_type_hints(fn)
    except Exception:
        pass
    # One at a time: a name that is not in the module spoils only its own annotation.
    raw = getattr(fn, "__annotations__", None)
    if not isinstance(raw, dict):
        return {}
    module_globals = getattr(fn, "__globals__", None)
    hints = {}
    for key, annotation in raw.items():
        try:
            holder = types.SimpleNamespace(__annotations__={key: annotation})
            hints[key] = typing.get_type_hints(holder, globalns=module_globals)[key]
        except Exception:
            continue
    return hints


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
