"""Workloads: what a job can run, with the schema its input is validated against.

A workload is a function (plain, ``async``, or marked ``@ax.io`` / ``@ax.blocking``
/ ``@ax.cpu``) or a workflow, registered under a name::

    @ax.jobs.workload(max_attempts=3, timeout_s=600)
    async def summarize(url: str, words: int = 100, *, ctx: ax.jobs.JobContext) -> str:
        ctx.progress(0.5, "fetched")
        ...

The function's parameters become the input schema (a pydantic model that
forbids unknown fields); a single parameter annotated with a pydantic model
makes that model the schema. A parameter annotated ``JobContext`` is not part
of the input: it receives the running job's context, to report progress.
A plain function runs on the I/O threads, a cpu function in the process pool
(where there is no context: it cannot report progress).
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, cast, get_type_hints, overload

import pydantic
import pydantic_core
from typing_extensions import Unpack

from ambidex._imports import MissingFileError, classes_in, load_module
from ambidex._job_errors import JobInputError, UnknownWorkloadError
from ambidex._job_model import RetryPolicy
from ambidex._text import describe_exception, plain_text
from ambidex.jobs._json import MAX_DEPTH, JsonProblem, raw_problem
from ambidex.jobs._progress import JobProgress
from ambidex.jobs._schedules import Schedule
from ambidex.runtime import TaskFunction, TaskKind, TaskOptions
from ambidex.workflows import EventKind, Workflow, WorkflowEvent

if TYPE_CHECKING:
    from ambidex.jobs._wfnodes import JobCheckpoints

__all__ = [
    "JobContext",
    "Workload",
    "WorkloadOptions",
    "WorkloadRegistry",
    "default_registry",
    "load_workloads",
    "workload",
]

F = TypeVar("F", bound=Callable[..., Any])


class JobContext(JobProgress):
    """Handed to a workload that asks for it: who it is, and its progress sink.

    ``progress(fraction, message)`` (or ``report`` with a progress object) may
    be called from any thread and as often as you like; the latest value is
    written to the store at most a few times a second (see ``JobProgress``).
    """

    def __init__(self, job_id: str, workload: str, attempt: int) -> None:
        super().__init__()
        self.job_id = job_id
        self.workload = workload
        self.attempt = attempt
        """1 on the first run; higher when the job runs again after its worker was lost."""
        # Set by the worker running the job: where a workflow job keeps its nodes
        # (called with the workflow's name). None elsewhere: no checkpoints.
        self._checkpoints: Callable[[str], JobCheckpoints] | None = None


def _jsonable(value: Any) -> Any:
    """A workload's result as JSON data (pydantic models and dataclasses converted).

    Raises:
        TypeError: the result holds an iterator or generator, which the
            conversion would drain (for ever, for an endless one) on the loop.
    """
    where = _iterator_in(value)
    if where is not None:
        raise TypeError(
            f"the result holds an iterator or generator ({where}): return a list instead"
        )
    return pydantic_core.to_jsonable_python(value)


def _iterator_in(value: Any) -> str | None:
    """Where an iterator sits in ``value`` (``result``, ``result.key.0``...), or None."""
    stack: list[tuple[Any, str, int]] = [(value, "result", 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, Iterator | AsyncIterator):
            return where
        if depth >= MAX_DEPTH:
            continue
        if isinstance(item, dict):
            stack.extend((v, f"{where}.{plain_text(k)}", depth + 1) for k, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{where}.{i}", depth + 1) for i, v in enumerate(item))
    return None


class WorkloadOptions(TypedDict, total=False):
    """How the jobs of a workload run; each is also a parameter of a single submit.

    Keys:
        max_attempts: how many times a job is started before a lost worker
            fails it for good (default 3).
        timeout_s: a job running longer is stopped (cancelled, or its
            process killed) and fails (default: none).
        retries: how many times a job that raises is put back in the queue
            (default 0); see ``RetryPolicy``.
        retry_on: the exception types (or their names) that are retried
            (default: any ``Exception``).
        retry_backoff_s: the first retry waits between half and all of this;
            each later one twice as long (default 1 s).
        retry_max_backoff_s: the cap of one retry's wait (default 300 s).
        priority: jobs with a higher priority are started first (default 0).
        concurrency: at most this many jobs of the workload run at once,
            across every worker sharing the store (default: no limit).
        schedule: a cron expression (or ``Schedule``, or a list of them): the
            workload runs at every tick (see ``ambidex.jobs.Schedule``).
    """

    max_attempts: int
    timeout_s: float | None
    retries: int
    retry_on: Any
    retry_backoff_s: float
    retry_max_backoff_s: float
    priority: int
    concurrency: int | None
    schedule: str | Schedule | list[str | Schedule] | None


MAX_PRIORITY = 1_000_000


def check_priority(priority: int) -> int:
    """``priority`` if it is an integer within ±``MAX_PRIORITY``.

    Raises:
        ValueError: otherwise.
    """
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(f"priority must be an integer, got {priority!r}")
    if abs(priority) > MAX_PRIORITY:
        raise ValueError(f"priority must be within -{MAX_PRIORITY}..{MAX_PRIORITY}, got {priority}")
    return priority


@dataclass
class Workload:
    """A registered workload: its name, how to call it, its input schema and job options."""

    name: str
    run_input: Callable[[dict[str, Any], JobContext], Any]
    """Coroutine function taking the validated input and the context."""
    input_model: type[pydantic.BaseModel]
    kind: str
    """``io``, ``blocking``, ``cpu`` or ``workflow``."""
    description: str = ""
    max_attempts: int = 3
    timeout_s: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    priority: int = 0
    concurrency: int | None = None
    """At most this many of its jobs run at once, across all workers (None: no limit)."""
    schedules: tuple[Schedule, ...] = ()
    workflow: Workflow | None = None
    """The workflow a ``workflow`` workload runs (its nodes and their order, for the dashboard)."""

    def validate(self, raw: Any) -> dict[str, Any]:
        """The input, validated and as JSON data.

        Raises:
            JobInputError: naming each field that is missing, unknown or of the
                wrong type, or the place that is not storable JSON (NaN, infinity,
                a lone surrogate, nesting past 100 levels).
        """
        if raw is None:
            raw = {}
        problem = raw_problem(raw)  # before pydantic turns a NaN into null
        if problem is not None:
            raise self._input_error(problem)
        try:
            model = self.input_model.model_validate(raw)
        except pydantic.ValidationError as exc:
            errors = [
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
            raise JobInputError(self.name, errors) from None
        if self.input_model.model_config.get("allow_inf_nan", True):
            # What a field's type made of the input ("nan" read as a float, say), before
            # the JSON form would turn it into null (the models made here refuse it):
            problem = raw_problem(model.model_dump())
            if problem is not None:
                raise self._input_error(problem)
        data: dict[str, Any] = model.model_dump(mode="json")
        return data

    def _input_error(self, problem: JsonProblem) -> JobInputError:
        return JobInputError(
            self.name, [{"loc": problem.loc, "msg": problem.msg, "type": "json_invalid"}]
        )

    def input_schema(self) -> dict[str, Any]:
        """The JSON schema of the input."""
        return self.input_model.model_json_schema()

    async def run(self, data: dict[str, Any], ctx: JobContext) -> Any:
        """Run the workload on validated input; return its result as JSON data."""
        result = await self.run_input(data, ctx)
        return _jsonable(result)

    def describe(self) -> dict[str, Any]:
        """A JSON summary (``GET /v1/workloads``)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "max_attempts": self.max_attempts,
            "timeout_s": self.timeout_s,
            **self.retry.as_dict(),
            "priority": self.priority,
            "concurrency": self.concurrency,
            "schedules": [{"name": s.name or self.name, "cron": s.cron} for s in self.schedules],
            "input_schema": self.input_schema(),
        }

    def with_options(self, **options: Unpack[WorkloadOptions]) -> Workload:
        """A copy with these options applied (see ``WorkloadOptions``).

        Raises:
            ValueError: an option out of range.
        """
        return dataclasses.replace(self, **_option_fields(options, self))


def _schedules_of(value: Any) -> tuple[Schedule, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else [value]
    return tuple(item if isinstance(item, Schedule) else Schedule(str(item)) for item in items)


def _option_fields(options: WorkloadOptions, base: Workload | None = None) -> dict[str, Any]:
    """The ``Workload`` fields that ``options`` set (checked)."""
    unknown = set(options) - set(WorkloadOptions.__annotations__)
    if unknown:
        raise TypeError(f"unknown workload option(s): {', '.join(sorted(unknown))}")
    fields: dict[str, Any] = {}
    for key in ("max_attempts", "timeout_s", "concurrency"):
        if key in options:
            fields[key] = options[key]
    if "priority" in options:
        fields["priority"] = check_priority(options["priority"])
    retry_keys = ("retries", "retry_on", "retry_backoff_s", "retry_max_backoff_s")
    if any(k in options for k in retry_keys):
        old = base.retry if base is not None else RetryPolicy()
        fields["retry"] = RetryPolicy.of(
            options.get("retries", old.retries),
            options.get("retry_on", old.on),
            options.get("retry_backoff_s", old.backoff_s),
            options.get("retry_max_backoff_s", old.max_backoff_s),
        )
    if "schedule" in options:
        fields["schedules"] = _schedules_of(options["schedule"])
    return fields


def _model_name(name: str) -> str:
    return "".join(p.capitalize() for p in name.replace("-", "_").replace(".", "_").split("_"))


def _function_workload(fn: Callable[..., Any], name: str) -> Workload:
    task = fn if isinstance(fn, TaskFunction) else None
    target = task._fn if task is not None else fn
    if task is None:
        kind: TaskKind = "io" if inspect.iscoroutinefunction(target) else "blocking"
        task = TaskFunction(target, kind, TaskOptions())
    hints = get_type_hints(target)
    params = list(inspect.signature(target).parameters.values())
    ctx_param = next((p.name for p in params if hints.get(p.name) is JobContext), None)
    if ctx_param is not None and task.kind == "cpu":
        raise TypeError(
            f"workload {name!r}: a cpu function runs in another process and cannot take "
            "a JobContext; report progress from an io or blocking function"
        )
    fields = [p for p in params if p.name != ctx_param]
    for p in fields:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise TypeError(f"workload {name!r}: parameter {p.name!r} must be passable by keyword")
    model_param: str | None = None
    model: type[pydantic.BaseModel]
    only = fields[0] if len(fields) == 1 else None
    if (
        only is not None
        and isinstance(hints.get(only.name), type)
        and issubclass(hints[only.name], pydantic.BaseModel)
    ):
        model_param = only.name
        model = hints[only.name]
    else:
        definitions: dict[str, Any] = {
            p.name: (hints.get(p.name, Any), ... if p.default is p.empty else p.default)
            for p in fields
        }
        model = pydantic.create_model(
            _model_name(name) + "Input",
            __config__=pydantic.ConfigDict(extra="forbid", allow_inf_nan=False),
            **definitions,
        )
    runner = task

    async def run_input(data: dict[str, Any], ctx: JobContext) -> Any:
        validated = model.model_validate(data)
        if model_param is not None:
            kwargs: dict[str, Any] = {model_param: validated}
        else:
            kwargs = {f: getattr(validated, f) for f in type(validated).model_fields}
        if ctx_param is not None:
            kwargs[ctx_param] = ctx
        return await runner.aio(**kwargs)

    doc = inspect.getdoc(target) or ""
    return Workload(
        name=name,
        run_input=run_input,
        input_model=model,
        kind=task.kind,
        description=doc.split("\n\n")[0].strip(),
    )


def _workflow_workload(wf: Workflow, name: str) -> Workload:
    definitions: dict[str, Any] = {
        key: (spec.type, ... if spec.required else spec.default)
        for key, spec in wf.input_specs.items()
    }
    model = pydantic.create_model(
        _model_name(name) + "Input",
        __config__=pydantic.ConfigDict(
            extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False
        ),
        **definitions,
    )
    total = max(len(wf.nodes), 1)

    async def run_input(data: dict[str, Any], ctx: JobContext) -> Any:
        # The same inputs on every attempt: the job's stored input, validated again.
        validated = model.model_validate(data)
        done: set[str] = set()
        make = ctx._checkpoints
        checkpoints = None if make is None else make(wf.name)

        def on_event(event: WorkflowEvent) -> None:
            if checkpoints is not None and event.kind is EventKind.STARTED and event.node:
                checkpoints.node_started(event.node, event.attempt)
            if event.node is None or event.kind.value not in (
                "finished",
                "failed",
                "skipped",
                "cancelled",
            ):
                return
            done.add(event.node)
            ctx.progress(len(done) / total, f"{event.node} {event.kind.value}")

        inputs = {k: getattr(validated, k) for k in type(validated).model_fields}
        if checkpoints is None:
            result = await wf.arun(inputs, on_event=on_event)
        else:  # resumes from the nodes an earlier attempt finished (none on the first)
            result = await wf.arun(
                inputs, on_event=on_event, checkpoint=checkpoints, resume=ctx.job_id
            )
        return result.as_dict()

    return Workload(
        name=name,
        run_input=run_input,
        input_model=model,
        kind="workflow",
        description=f"workflow {wf.name} ({len(wf.nodes)} nodes)",
        workflow=wf,
    )


class WorkloadRegistry:
    """Workloads by name, and recurring schedules.

    ``ax.jobs.workload`` registers into the default one.
    """

    def __init__(self) -> None:
        self._workloads: dict[str, Workload] = {}
        self._schedules: dict[str, Schedule] = {}

    @overload
    def register(
        self, fn: F, /, *, name: str | None = None, **options: Unpack[WorkloadOptions]
    ) -> F: ...

    @overload
    def register(
        self, fn: None = None, /, *, name: str | None = None, **options: Unpack[WorkloadOptions]
    ) -> Callable[[F], F]: ...

    def register(
        self, fn: F | None = None, /, *, name: str | None = None, **options: Unpack[WorkloadOptions]
    ) -> F | Callable[[F], F]:
        """Register a function as a workload (usable bare or with options).

        Args:
            fn: the function (plain, async, or an ``ax.io``/``blocking``/``cpu`` function).
            name: the workload's name (default: the function's name).
            **options: how its jobs run: ``max_attempts``, ``timeout_s``,
                ``retries``, ``retry_on``, ``retry_backoff_s``,
                ``retry_max_backoff_s``, ``priority``, ``concurrency``,
                ``schedule`` (see ``WorkloadOptions``).

        Raises:
            ValueError: an option out of range, or a bad cron expression.
            TypeError: the function cannot be a workload (positional-only or
                ``*args`` parameters; a cpu function that asks for a context),
                or an unknown option.
        """
        fields = _option_fields(options)

        def decorate(f: F) -> F:
            target = f._fn if isinstance(f, TaskFunction) else f
            wl_name = name or getattr(target, "__name__", None) or repr(target)
            self.add(dataclasses.replace(_function_workload(f, wl_name), **fields))
            return f

        return decorate(fn) if fn is not None else decorate

    def register_workflow(
        self, wf: Workflow, *, name: str | None = None, **options: Unpack[WorkloadOptions]
    ) -> Workload:
        """Register a workflow as a workload; its declared inputs are the input schema.

        The job's progress is the share of nodes that have finished, and its
        result is ``WorkflowResult.as_dict()``. Each node is checkpointed in the
        job store as it finishes, so an attempt after the first (the worker
        died, a retry) runs only the nodes not finished yet (see
        ``ambidex.jobs._wfnodes``). Options as for ``register``.
        """
        wf.validate()
        workload = _workflow_workload(wf, name or wf.name).with_options(**options)
        self.add(workload)
        return workload

    def register_simulation(
        self,
        model: Any,
        *,
        name: str | None = None,
        max_attempts: int = 3,
        timeout_s: float | None = None,
    ) -> Workload:
        """Register an ``ambidex.sim.Model`` as a workload (default name ``sim.<Model>``).

        Its input is ``{"params": {...}, "steps": N, "seed": S, "grid": {...},
        "replicates": R}``; a grid or several replicates make it a sweep. See
        ``ambidex.jobs._sim``.
        """
        from ambidex.jobs._sim import simulation_workload  # late: it needs numpy

        workload = simulation_workload(
            model, name=name, max_attempts=max_attempts, timeout_s=timeout_s
        )
        self.add(workload)
        return workload

    def register_evolution(self, target_file: str | Path, *, name: str | None = None) -> Workload:
        """Register the evolution of ``target_file`` (default name ``evolve.<function>``).

        The file holds a function marked ``@ax.evolve.target``. Its input is
        ``{"iterations", "parallel", "proposer", "model", "seed", "deterministic",
        "timeout_s", "fresh"}``; see ``ambidex.jobs._evolve``.
        """
        from ambidex.jobs._evolve import evolution_workload  # late: the coordinator is big

        workload = evolution_workload(target_file, name=name)
        self.add(workload)
        return workload

    def add(self, workload: Workload) -> None:
        """Register a ready-made ``Workload``; a workload of the same name is replaced.

        Raises:
            ValueError: an option out of range.
        """
        if workload.max_attempts < 1:
            raise ValueError(f"workload {workload.name!r}: max_attempts must be at least 1")
        if workload.timeout_s is not None and not workload.timeout_s > 0:
            raise ValueError(f"workload {workload.name!r}: timeout_s must be positive")
        if workload.concurrency is not None and (
            isinstance(workload.concurrency, bool)
            or not isinstance(workload.concurrency, int)
            or workload.concurrency < 1
        ):
            raise ValueError(f"workload {workload.name!r}: concurrency must be a positive integer")
        check_priority(workload.priority)
        self._workloads[workload.name] = workload

    def schedule(
        self,
        workload: str,
        cron: str | Schedule,
        *,
        input: dict[str, Any] | None = None,
        name: str | None = None,
        misfire_grace_s: float = 300.0,
    ) -> Schedule:
        """Run ``workload`` at every tick of ``cron`` (see ``ambidex.jobs.Schedule``).

        The schedule's name (default: the workload's) is its identity in the
        store: two processes declaring one name share its ticks.

        Raises:
            ValueError: a bad cron expression or name.
        """
        if isinstance(cron, Schedule):
            schedule = dataclasses.replace(cron, workload=workload, name=name or cron.name)
        else:
            schedule = Schedule(
                cron, input or {}, name=name, workload=workload, misfire_grace_s=misfire_grace_s
            )
        key = schedule.name or workload
        self._schedules[key] = dataclasses.replace(schedule, name=key)
        return self._schedules[key]

    def schedules(self) -> list[Schedule]:
        """Every schedule: those declared on workloads, then those added with ``schedule``.

        Each has its ``name`` and ``workload`` filled in.
        """
        found: dict[str, Schedule] = {}
        for wl in self:
            for s in wl.schedules:
                key = s.name or wl.name
                found[key] = dataclasses.replace(s, name=key, workload=s.workload or wl.name)
        found.update(self._schedules)
        return list(found.values())

    def check_schedules(self) -> list[Schedule]:
        """Every schedule (see ``schedules``), each checked against its workload.

        Raises:
            ValueError: a schedule names a workload that is not registered, or
                its input does not fit the workload (the message names both).
        """
        schedules = self.schedules()
        for s in schedules:
            if s.workload not in self._workloads:
                raise ValueError(
                    f"schedule {s.name!r} names workload {s.workload!r}, which is not "
                    f"registered; known: {', '.join(self.names())}"
                )
            try:
                self._workloads[str(s.workload)].validate(dict(s.input))
            except JobInputError as exc:
                raise ValueError(f"schedule {s.name!r}: {exc}") from None
        return schedules

    def get(self, name: str) -> Workload:
        """The workload called ``name``.

        Raises:
            UnknownWorkloadError: there is none (the message lists the known ones).
        """
        try:
            return self._workloads[name]
        except KeyError:
            raise UnknownWorkloadError(name, self.names()) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._workloads)

    def limits(self) -> dict[str, int]:
        """The concurrency limit of each workload that has one."""
        return {w.name: w.concurrency for w in self._workloads.values() if w.concurrency}

    def __contains__(self, name: object) -> bool:
        return name in self._workloads

    def __iter__(self) -> Iterator[Workload]:
        return iter([self._workloads[n] for n in self.names()])

    def __len__(self) -> int:
        return len(self._workloads)


_default = WorkloadRegistry()
_builtins_loaded = False


def default_registry() -> WorkloadRegistry:
    """The registry ``ax.jobs.workload`` writes to, with the built-in workloads in it."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        from ambidex.jobs import _builtin

        _builtin.register(_default)
    return _default


@overload
def workload(fn: F, /, *, name: str | None = None, **options: Unpack[WorkloadOptions]) -> F: ...


@overload
def workload(
    fn: None = None, /, *, name: str | None = None, **options: Unpack[WorkloadOptions]
) -> Callable[[F], F]: ...


def workload(
    fn: F | None = None, /, *, name: str | None = None, **options: Unpack[WorkloadOptions]
) -> F | Callable[[F], F]:
    """Register a function as a workload of the default registry (see ``WorkloadRegistry``)."""
    reg = default_registry()
    if fn is not None:
        return reg.register(fn, name=name, **options)
    return reg.register(name=name, **options)


def load_workloads(spec: str, registry: WorkloadRegistry | None = None) -> list[str]:
    """Load workloads from a module (``pkg.mod``), a Python file, or a workflow YAML file.

    A module or file registers its workloads when imported (``@ax.jobs.workload``
    writes to the default registry); a YAML workflow is registered in
    ``registry`` under its name. Simulation models (``ambidex.sim.Model``
    subclasses) a module or file defines are registered as ``sim.<Model>``
    workloads unless it registered them itself. Returns the names added to
    ``registry``.

    Raises:
        ValueError: the module or file cannot be found or fails to import; the
            message names it and the cause.
    """
    reg = registry if registry is not None else default_registry()
    before = set(reg.names())
    path = Path(spec)
    if spec.endswith((".yaml", ".yml")):
        if not path.is_file():
            raise ValueError(f"workflow file not found: {spec}")
        reg.register_workflow(Workflow.from_yaml(str(path)))
    else:
        try:
            module = load_module(spec)
        except MissingFileError:
            raise ValueError(f"workload file not found: {spec}") from None
        except Exception as exc:
            if spec.endswith(".py"):  # a ValueError that names the file and the cause
                raise
            raise ValueError(
                f"importing workload module {spec!r} failed: {describe_exception(exc)}"
            ) from exc
        _register_models(module, reg)
    return sorted(set(reg.names()) - before)


def _register_models(module: ModuleType, reg: WorkloadRegistry) -> None:
    """Register what ``module`` defines for ambidex's own workloads.

    Simulation models (``ambidex.sim.Model`` subclasses) become ``sim.<Model>``;
    a function marked ``@ax.evolve.target`` makes the file an ``evolve.<function>``
    workload.
    """
    sim: Any = sys.modules.get("ambidex.sim")
    for model in classes_in(module, sim.Model).values() if sim is not None else ():
        name = f"sim.{cast(Any, model).model_name()}"
        if name not in reg:
            reg.register_simulation(model, name=name)
    for value in list(vars(module).values()):
        obj: Any = value
        if (
            callable(obj)
            and hasattr(obj, "__ax_evolve__")
            and getattr(obj, "__module__", None) == module.__name__
            and getattr(module, "__file__", None)
        ):
            name = f"evolve.{obj.__name__}"
            if name not in reg:
                reg.register_evolution(str(module.__file__), name=name)
