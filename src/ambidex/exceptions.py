"""Errors raised by ambidex.

Errors raised by *your* functions reach the caller with their original type,
from every executor. ambidex adds only these, for what goes wrong around them.
Every exception class ambidex defines is an ``AmbidexError``, so ``except
ax.AmbidexError`` catches whatever ambidex raises itself; those that were a
built-in error before keep that base too (``except ValueError`` still catches
``ax.sim.ModelError``)::

    AmbidexError                      base of everything ambidex itself raises
    ├── TaskTimeoutError              (also a TimeoutError) a call ran past timeout_s
    ├── WorkerCrashedError            a cpu task killed its worker process
    ├── UnknownLimitError             (also a KeyError) a function names an undeclared limit
    ├── RuntimeClosedError            (also a RuntimeError) a closed Runtime was asked to run work
    ├── SerializationError            an argument or result cannot cross to a worker process
    ├── RemoteError                   a worker raised an exception that cannot be pickled back
    ├── RemoteTraceback               never raised: the __cause__ showing a worker's traceback
    ├── AgentInputError               (also a ValueError) an agent's input is not its input type
    ├── AgentOutputError              (also a ValueError) an agent returned the wrong type
    ├── WorkflowError                 a workflow run failed (``.node`` names where)
    ├── WorkflowDefinitionError       (also a ValueError) a malformed workflow, every problem
    ├── sim.ModelError                (also a ValueError) unknown parameter, bad grid or seed
    ├── sim.RecordError               (also a ValueError) a record cannot be written or read
    ├── sim.SweepError                (also a RuntimeError) a run of a sweep failed
    ├── evolve.TargetError            (also a ValueError) a file is not a usable target
    ├── evolve.EvolveError            (also a RuntimeError) an evolution cannot start or go on
    ├── evolve.DatabaseError          (also a ValueError) not an evolve database, or not as asked
    ├── evolve.SandboxError           (also a RuntimeError) the sandbox, not the candidate, failed
    ├── jobs.JobError                 base of the job service's errors (see ``ambidex.jobs``)
    └── llm.LLMError                  base of the LLM client's errors (see ``ambidex.llm``)

``RemoteTraceback`` is not raised on its own: it is attached as the ``__cause__``
of an exception that crossed a process boundary, so the printed traceback shows
the frames of your code inside the worker.
"""

from __future__ import annotations

__all__ = [
    "AmbidexError",
    "RemoteError",
    "RemoteTraceback",
    "RuntimeClosedError",
    "SerializationError",
    "TaskTimeoutError",
    "UnknownLimitError",
    "WorkerCrashedError",
]


class AmbidexError(Exception):
    """Base class of every error ambidex raises itself."""


class TaskTimeoutError(AmbidexError, TimeoutError):
    """A call ran past its ``timeout_s``.

    By the time this is raised the work has been stopped where that is possible:
    an io coroutine is cancelled and a cpu task's worker process is killed and
    replaced. A blocking call's thread cannot be killed; it is abandoned, keeps
    running until its function returns, and is counted in
    ``statistics().io_threads.abandoned``.
    """

    def __init__(self, task: str, timeout_s: float, detail: str = "") -> None:
        self.task = task
        self.timeout_s = timeout_s
        message = f"{task} timed out after {timeout_s:g} s"
        super().__init__(f"{message} ({detail})" if detail else message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.task, self.timeout_s))


class WorkerCrashedError(AmbidexError):
    """A cpu task ended its worker process (segfault, ``os._exit``, OOM kill...).

    Only the task that was running in that worker fails; the pool replaces the
    worker and keeps serving the other tasks.
    """

    def __init__(self, task: str, pid: int, exit_description: str) -> None:
        self.task = task
        self.pid = pid
        self.exit_description = exit_description
        super().__init__(
            f"{task} killed its worker process (pid {pid}, {exit_description}); "
            "the worker was replaced and other tasks were not affected"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.task, self.pid, self.exit_description))


class UnknownLimitError(AmbidexError, KeyError):
    """A function asked for a named limit that was never declared."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        hint = f" (declared: {', '.join(sorted(known))})" if known else " (none declared)"
        self.message = f"unknown limit {name!r}: declare it first, e.g. ax.limits({name}=8){hint}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class RuntimeClosedError(AmbidexError, RuntimeError):
    """Work was submitted to a Runtime after ``close()``."""


class SerializationError(AmbidexError):
    """An argument, function or result could not be pickled to or from a worker."""


class RemoteError(AmbidexError):
    """A worker raised an exception that could not be sent back as itself."""

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.message = message
        super().__init__(f"{type_name}: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.type_name, self.message))


class RemoteTraceback(AmbidexError):
    """The formatted traceback of an exception raised in a worker process."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(text)

    def __str__(self) -> str:
        return "\n\n" + self.text.rstrip() + "\n"
