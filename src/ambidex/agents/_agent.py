"""``ax.Agent[In, Out]``: an async-first unit of work with a sync face.

An agent has a lifecycle (``setup`` once, ``run`` per input, ``teardown``
once), typed input and output validated by pydantic, and runs where its kind
says: an ``async def run`` on the event loop, a plain ``def run`` on the I/O
threads (``kind = "blocking"``, the default) or in a worker process
(``kind = "cpu"``). Timeout, retries and limits come from the runtime's
``TaskFunction`` machinery, so agents behave exactly like decorated functions.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar, cast, get_args, get_origin

import pydantic

from ambidex import _observe
from ambidex.exceptions import AmbidexError
from ambidex.runtime import TaskFunction, TaskKind, TaskOptions, current_runtime

__all__ = ["Agent", "AgentInputError", "AgentOutputError"]

In = TypeVar("In")
Out = TypeVar("Out")


class AgentInputError(AmbidexError, ValueError):
    """An agent's input did not match its declared input type."""


class AgentOutputError(AmbidexError, ValueError):
    """An agent's ``run`` returned something that does not match its output type."""


def describe_validation_error(exc: pydantic.ValidationError) -> str:
    """One line per problem: ``field.path: message (got value)``."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(the value itself)"
        got = err.get("input")
        got_text = f" (got {got!r})" if not isinstance(got, dict) else ""
        lines.append(f"  {where}: {err['msg']}{got_text}")
    return "\n".join(lines)


def _resolve_annotation(annotation: Any, owner: Any) -> Any:
    if isinstance(annotation, str):
        module = inspect.getmodule(owner)
        namespace = dict(vars(module)) if module is not None else {}
        try:
            return eval(annotation, namespace)  # resolving a string annotation
        except Exception:
            return Any
    return annotation


class Agent(Generic[In, Out]):
    """Base class of agents: subclass it as ``class Fuel(ax.Agent[FuelIn, FuelOut])``.

    Override ``run`` (``async def`` or ``def``) and optionally ``setup`` and
    ``teardown`` (either may be ``async def``). Class attributes configure how
    ``run`` is called:

    * ``kind``: where a plain ``def run`` runs, ``"blocking"`` (I/O threads, the
      default) or ``"cpu"`` (a worker process; the agent is pickled to it).
    * ``timeout_s``, ``retries``, ``retry_on``, ``limit``: as for ``@ax.io``.

    Use it from async code with ``await agent.arun(x)`` (or ``async with agent:``)
    and from sync code with ``agent.run_sync(x)`` (or ``with agent:``). Inputs
    may be given as the input type or as a dict that validates into it.
    """

    kind: ClassVar[TaskKind] = "blocking"
    timeout_s: float | None = None
    retries: int = 0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    limit: str | tuple[str, ...] | None = None

    input_type: ClassVar[Any] = Any
    output_type: ClassVar[Any] = Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            if get_origin(base) is Agent:
                args = get_args(base)
                if len(args) == 2:
                    cls.input_type = _resolve_annotation(args[0], cls)
                    cls.output_type = _resolve_annotation(args[1], cls)
        if cls.kind not in ("blocking", "cpu", "io"):
            raise TypeError(
                f"{cls.__qualname__}.kind must be 'blocking' or 'cpu', got {cls.kind!r}"
            )
        run = cls.__dict__.get("run")
        if run is not None and inspect.iscoroutinefunction(run) and cls.kind == "cpu":
            raise TypeError(
                f"{cls.__qualname__}: an `async def run` runs on the event loop; "
                "kind = 'cpu' needs a plain `def run`"
            )

    # -- to override ---------------------------------------------------------

    def setup(self) -> Awaitable[None] | None:
        """Acquire resources (clients, models). Runs once, before the first ``run``."""
        return None

    def run(self, input: In) -> Out | Awaitable[Out]:
        """Do the work for one input. Override as ``async def`` or ``def``."""
        raise NotImplementedError(f"{type(self).__qualname__} must define run(self, input)")

    def teardown(self) -> Awaitable[None] | None:
        """Release what ``setup`` acquired. Runs once, on leaving ``with``/``async with``."""
        return None

    # -- the machinery -------------------------------------------------------

    @property
    def name(self) -> str:
        """The agent's name: its class name unless ``agent_name`` is set."""
        return cast(str, getattr(self, "agent_name", type(self).__name__))

    @property
    def is_set_up(self) -> bool:
        """True between ``setup`` and ``teardown``."""
        return bool(self.__dict__.get("_ax_set_up", False))

    def _task(self) -> TaskFunction[..., Out]:
        task = self.__dict__.get("_ax_task")
        if task is None:
            run = self.run
            is_async = inspect.iscoroutinefunction(run)
            kind: TaskKind = "io" if is_async else type(self).kind
            limits: tuple[str, ...]
            if self.limit is None:
                limits = ()
            elif isinstance(self.limit, str):
                limits = (self.limit,)
            else:
                limits = tuple(self.limit)
            options = TaskOptions(
                limit=limits,
                timeout_s=self.timeout_s,
                retries=self.retries,
                retry_on=self.retry_on,
            )
            task = TaskFunction(run, kind, options)
            self.__dict__["_ax_task"] = task
        return cast(TaskFunction[..., Out], task)

    def validate_input(self, value: Any) -> In:
        """``value`` as the input type, or ``AgentInputError`` naming each bad field."""
        return cast(In, _validate(type(self).input_type, value, self, AgentInputError, "input"))

    def validate_output(self, value: Any) -> Out:
        """``value`` as the output type, or ``AgentOutputError`` naming each bad field."""
        return cast(Out, _validate(type(self).output_type, value, self, AgentOutputError, "output"))

    async def asetup(self) -> None:
        """Run ``setup`` once (it may be sync or async); later calls do nothing."""
        if self.is_set_up:
            return
        lock = self.__dict__.setdefault("_ax_setup_lock", asyncio.Lock())
        async with lock:
            if self.__dict__.get("_ax_set_up", False):  # set up while we waited
                return
            await _maybe_await(self.setup)
            self.__dict__["_ax_set_up"] = True

    async def ateardown(self) -> None:
        """Run ``teardown`` if ``setup`` ran; later calls do nothing."""
        if not self.is_set_up:
            return
        self.__dict__["_ax_set_up"] = False
        self.__dict__.pop("_ax_setup_lock", None)
        await _maybe_await(self.teardown)

    async def _acquire(self) -> None:
        """Hold the agent set up for one user of it, such as a workflow run, until ``_release``.

        Runs that share one instance hold it together, and may overlap: the
        first to come sets it up (when nothing had), and the last to leave
        tears it down, so no run loses its agent because another one ended. A
        setup that someone else did (``with agent:``, a direct ``arun``) is
        theirs to undo. The count is taken before setup is awaited, so a run
        that comes while another's setup is under way shares it too, and a
        failed setup still holds (the holder releases it as always).
        """
        held = self.__dict__.get("_ax_held", 0)
        if held == 0:
            self.__dict__["_ax_held_owns"] = not self.is_set_up
        self.__dict__["_ax_held"] = held + 1
        await self.asetup()

    async def _release(self) -> None:
        """Let go of an ``_acquire``; the last holder tears down what the holders set up."""
        held = self.__dict__["_ax_held"] - 1
        self.__dict__["_ax_held"] = held
        if held == 0 and self.__dict__.pop("_ax_held_owns", False):
            await self.ateardown()

    async def arun(self, input: In | Any) -> Out:
        """Validate ``input``, set up if needed, run where the kind says, validate the output.

        Raises:
            AgentInputError: ``input`` does not fit the input type (names the fields).
            AgentOutputError: ``run`` returned a value that does not fit the output type.
            TaskTimeoutError: past ``timeout_s``.
            BaseException: whatever ``run`` raised, after ``retries``.
        """
        value = self.validate_input(input)
        await self.asetup()
        if _observe.on:  # the call in a span "invoke_agent <name>" (ambidex.agents._tracing)
            from ambidex.agents._tracing import traced_invoke

            result = await traced_invoke(self, self._task(), value)
        else:
            result = await self._task().aio(value)
        return self.validate_output(result)

    def run_sync(self, input: In | Any) -> Out:
        """``arun`` from sync code (any thread); blocks until the result is ready."""
        return current_runtime().call(self.arun(input))

    async def __aenter__(self) -> typing.Self:
        await self.asetup()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.ateardown()

    def __enter__(self) -> typing.Self:
        current_runtime().call(self.asetup())
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        current_runtime().call(self.ateardown())

    def __getstate__(self) -> dict[str, Any]:
        # Sent to cpu workers: drop the per-process machinery.
        state = dict(self.__dict__)
        for key in ("_ax_task", "_ax_setup_lock", "_ax_held", "_ax_held_owns"):
            state.pop(key, None)
        return state

    def __repr__(self) -> str:
        return f"<agent {self.name}>"


async def _maybe_await(fn: Any) -> None:
    if inspect.iscoroutinefunction(fn):
        await fn()
        return
    result = fn()
    if inspect.isawaitable(result):
        await result


_ADAPTERS: dict[Any, pydantic.TypeAdapter[Any]] = {}


def _adapter(tp: Any) -> pydantic.TypeAdapter[Any]:
    adapter = _ADAPTERS.get(tp)
    if adapter is None:
        adapter = _ADAPTERS[tp] = pydantic.TypeAdapter(tp)
    return adapter


def _validate(
    tp: Any, value: Any, agent: Agent[Any, Any], error: type[AmbidexError], what: str
) -> Any:
    if tp is Any or (tp is None and value is None):
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    try:
        return _adapter(tp).validate_python(value)
    except pydantic.ValidationError as exc:
        type_name = getattr(tp, "__name__", repr(tp))
        raise error(
            f"{agent.name}: {what} does not match {type_name}:\n{describe_validation_error(exc)}"
        ) from None
