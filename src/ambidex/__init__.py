"""ambidex: run io, blocking and cpu work where it belongs, from sync or async code.

import ambidex as ax

@ax.io(limit="llm", timeout_s=30, retries=3)
async def ask(prompt: str) -> str: ...

@ax.cpu
def score(program: str) -> float: ...

score("x")                 # from sync code: runs in the process pool, returns the value
await score.aio("x")       # from async code: awaitable, never blocks the loop
ax.limits(llm=5)           # named capacity shared by every caller
"""

import typing

from ambidex.exceptions import (
    AmbidexError,
    RemoteError,
    RemoteTraceback,
    RuntimeClosedError,
    SerializationError,
    TaskTimeoutError,
    UnknownLimitError,
    WorkerCrashedError,
)

if typing.TYPE_CHECKING:
    from ambidex import evolve as evolve
    from ambidex import jobs as jobs
    from ambidex import sim as sim
    from ambidex import testing as testing
    from ambidex._clock import Clock, current_clock, use_clock
    from ambidex._observe import instrument, uninstrument
    from ambidex._progress import Progress, ProgressUpdate
    from ambidex.agents import Agent, AgentInputError, AgentOutputError
    from ambidex.client import AsyncClient, Client
    from ambidex.runtime import (
        Backoff,
        CapacityLimit,
        KindStatistics,
        Rate,
        RateLimit,
        Runtime,
        RuntimeCollector,
        RuntimeStatistics,
        Shared,
        TaskFunction,
        TaskKind,
        TaskOptions,
        agather,
        blocking,
        cgroup_cpu_quota,
        cpu,
        current_runtime,
        elastic_threads,
        gather,
        io,
        sync_facade,
        to_elastic_thread,
        to_reserved_thread,
        to_thread,
        usable_cpus,
    )
    from ambidex.runtime import runtime as runtime  # deprecated: current_runtime
    from ambidex.workflows import (
        EventKind,
        NodeStatus,
        Workflow,
        WorkflowDefinitionError,
        WorkflowError,
        WorkflowEvent,
        WorkflowResult,
    )

__version__ = "0.1.0"

# The job service's parts load on first use: ``ambidex.jobs`` pulls in SQLAlchemy
# and the clients httpx, which would triple the time ``import ambidex`` takes
# (and every cpu worker process imports ambidex); ``ambidex.sim`` needs numpy. Agents
# and workflows (pydantic) load on first use too: a sandboxed evolution candidate
# imports ambidex for its decorator, once per evaluation. So does the runtime (asyncio,
# threads, the process pool: most of what ``import ambidex`` cost), which that
# evaluator never uses. It had to load eagerly while ``ax.runtime`` was a function
# hiding the ``ambidex.runtime`` package (importing the package later sets the
# attribute over the function); ``ax.current_runtime`` took the function's place, and
# ``ax.runtime`` is the package, callable for one release as the deprecated function.
_LAZY: dict[str, str | None] = {
    "Agent": "ambidex.agents",
    "AgentInputError": "ambidex.agents",
    "AgentOutputError": "ambidex.agents",
    "EventKind": "ambidex.workflows",
    "NodeStatus": "ambidex.workflows",
    "Workflow": "ambidex.workflows",
    "WorkflowDefinitionError": "ambidex.workflows",
    "WorkflowError": "ambidex.workflows",
    "WorkflowEvent": "ambidex.workflows",
    "WorkflowResult": "ambidex.workflows",
    "Clock": "ambidex._clock",
    "current_clock": "ambidex._clock",
    "use_clock": "ambidex._clock",
    "instrument": "ambidex._observe",
    "uninstrument": "ambidex._observe",
    "Progress": "ambidex._progress",
    "ProgressUpdate": "ambidex._progress",
    "AsyncClient": "ambidex.client",
    "Client": "ambidex.client",
    "Backoff": "ambidex.runtime",
    "CapacityLimit": "ambidex.runtime",
    "KindStatistics": "ambidex.runtime",
    "Rate": "ambidex.runtime",
    "RateLimit": "ambidex.runtime",
    "Runtime": "ambidex.runtime",
    "RuntimeCollector": "ambidex.runtime",
    "RuntimeStatistics": "ambidex.runtime",
    "Shared": "ambidex.runtime",
    "TaskFunction": "ambidex.runtime",
    "TaskKind": "ambidex.runtime",
    "TaskOptions": "ambidex.runtime",
    "agather": "ambidex.runtime",
    "blocking": "ambidex.runtime",
    "cgroup_cpu_quota": "ambidex.runtime",
    "cpu": "ambidex.runtime",
    "current_runtime": "ambidex.runtime",
    "elastic_threads": "ambidex.runtime",
    "gather": "ambidex.runtime",
    "io": "ambidex.runtime",
    "sync_facade": "ambidex.runtime",
    "to_elastic_thread": "ambidex.runtime",
    "to_reserved_thread": "ambidex.runtime",
    "to_thread": "ambidex.runtime",
    "usable_cpus": "ambidex.runtime",
    "evolve": None,
    "jobs": None,
    "runtime": None,
    "sim": None,
    "testing": None,
}


def __getattr__(name: str) -> typing.Any:
    """The runtime, ``ax.jobs``, ``ax.sim``, agents, workflows, clients: imported on first use."""
    import importlib

    if name not in _LAZY:
        raise AttributeError(f"module 'ambidex' has no attribute {name!r}")
    module = _LAZY[name]
    if module is None:
        value: typing.Any = importlib.import_module(f"ambidex.{name}")
    else:
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily imported ones included."""
    return sorted(set(globals()) | set(_LAZY))


def limits(**limits: "int | Rate") -> None:
    """Declare named limits on the current runtime: ``ax.limits(llm=5, api=ax.Rate(10))``.

    An int is a capacity (at most N calls at once, shared by sync and async
    callers and all threads); ``ax.Rate(per_second, burst=)`` is a rate limit.
    Calling again with a known name resizes it.
    """
    from ambidex.runtime import current_runtime

    current_runtime().limits(**limits)


def limit(name: str) -> "CapacityLimit | RateLimit":
    """A declared limit, to hold in your own code: ``with ax.limit("llm"): ...``."""
    from ambidex.runtime import current_runtime

    return current_runtime().limit(name)


__all__ = [
    "Agent",
    "AgentInputError",
    "AgentOutputError",
    "AmbidexError",
    "AsyncClient",
    "Backoff",
    "CapacityLimit",
    "Client",
    "Clock",
    "EventKind",
    "KindStatistics",
    "NodeStatus",
    "Progress",
    "ProgressUpdate",
    "Rate",
    "RateLimit",
    "RemoteError",
    "RemoteTraceback",
    "Runtime",
    "RuntimeClosedError",
    "RuntimeCollector",
    "RuntimeStatistics",
    "SerializationError",
    "Shared",
    "TaskFunction",
    "TaskKind",
    "TaskOptions",
    "TaskTimeoutError",
    "UnknownLimitError",
    "WorkerCrashedError",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowError",
    "WorkflowEvent",
    "WorkflowResult",
    "__version__",
    "agather",
    "blocking",
    "cgroup_cpu_quota",
    "cpu",
    "current_clock",
    "current_runtime",
    "elastic_threads",
    "evolve",
    "gather",
    "instrument",
    "io",
    "limit",
    "limits",
    "runtime",
    "sim",
    "sync_facade",
    "testing",
    "to_elastic_thread",
    "to_reserved_thread",
    "to_thread",
    "uninstrument",
    "usable_cpus",
    "use_clock",
]


# Tracing from the environment (docs/observability.md).
if "AMBIDEX_OTEL" in __import__("os").environ:
    from ambidex._observe import instrument_from_env as _instrument_from_env

    _instrument_from_env()
