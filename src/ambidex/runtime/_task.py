"""``@ax.io``, ``@ax.blocking``, ``@ax.cpu``: mark the kind of work, call it from anywhere.

The call logic is written once, as a coroutine (``TaskFunction._acall``):
limits, retries with backoff, the timeout, and the executor for the kind.
The two faces drive it: ``f(...)`` from sync code runs it on the runtime's
loop thread and blocks; ``await f.aio(...)`` runs it on the caller's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import reprlib
import sys
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, ParamSpec, Protocol, TypeVar, overload

import cloudpickle

from ambidex import _observe
from ambidex._backoff import Backoff, retry_cannot_help
from ambidex._clock import current_clock
from ambidex._log import get_logger
from ambidex._text import describe_exception, shorten
from ambidex.exceptions import SerializationError, TaskTimeoutError
from ambidex.runtime._core import Runtime, current_runtime
from ambidex.runtime._gather import run_bounded
from ambidex.runtime._worker import FunctionRef

__all__ = ["Kind", "TaskFunction", "TaskOptions", "blocking", "cpu", "io"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

Kind = Literal["io", "blocking", "cpu"]

# Cancellation must stop at once, and a call that cannot be pickled will not
# become picklable by trying again.
log = get_logger(__name__)

_NEVER_RETRY = (
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
    SerializationError,
)
_arg_repr = reprlib.Repr()
_arg_repr.maxstring = 40
_arg_repr.maxother = 40


@dataclass(frozen=True)
class TaskOptions:
    """How a decorated function is called. Every field has a safe default."""

    limit: tuple[str, ...] = ()
    """Named limits each call holds while it runs (declared with ``ax.limits``)."""
    timeout_s: float | None = None
    """Deadline of one attempt, in seconds (waiting for a limit is not counted)."""
    retries: int = 0
    """Attempts after the first one fails with an error in ``retry_on``."""
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    """Error types that are retried (cancellation and Ctrl-C never are)."""
    backoff_s: float = 0.1
    """First retry waits up to this long; each later one up to twice as long."""
    max_backoff_s: float = 30.0
    """Cap on one retry's wait."""

    def __post_init__(self) -> None:
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(
                f"timeout_s must be a positive number of seconds, got {self.timeout_s!r}"
            )
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be a non-negative integer, got {self.retries!r}")
        for exc_type in self.retry_on:
            if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
                raise TypeError(f"retry_on must hold exception types, got {exc_type!r}")
        if not self.backoff_s >= 0 or not self.max_backoff_s >= 0:  # NaN fails too
            raise ValueError("backoff_s and max_backoff_s must not be negative")
        for name in self.limit:
            if not isinstance(name, str) or not name:
                raise TypeError(f"limit names must be non-empty strings, got {name!r}")

    @property
    def is_plain(self) -> bool:
        """True when no limit, timeout or retry applies: the fast path."""
        return not self.limit and self.timeout_s is None and self.retries == 0

    def backoff_delay_s(self, attempt: int) -> float:
        """Full-jitter exponential backoff before retry number ``attempt`` (1-based)."""
        return Backoff(self.backoff_s, self.max_backoff_s).delay_s(attempt)


def _describe_call(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [_arg_repr.repr(a) for a in args]
    parts += [f"{k}={_arg_repr.repr(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


class TaskFunction(Generic[P, R]):
    """A function marked as io, blocking or cpu work.

    Call it like the function from sync code (any thread, including one whose
    own event loop is running); ``await f.aio(...)`` from async code;
    ``f.map(items)`` / ``await f.amap(items)`` for bounded fan-out.
    """

    def __init__(
        self, fn: Callable[P, Awaitable[R]] | Callable[P, R], kind: Kind, options: TaskOptions
    ) -> None:
        is_async = inspect.iscoroutinefunction(fn)
        name = getattr(fn, "__qualname__", repr(fn))
        if is_async and kind != "io":
            raise TypeError(
                f"@ax.{kind} needs a plain function, but {name} is `async def`: "
                "mark coroutine functions @ax.io"
            )
        if not callable(fn):
            raise TypeError(f"@ax.{kind} expects a function, got {fn!r}")
        self._fn = fn
        self.kind: Kind = kind
        self.options = options
        self._is_async = is_async
        self._direct = is_async and options.is_plain
        self._name: str = name
        self._ref: FunctionRef | _PickledOnce | Callable[..., Any] | None = None
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<ax.{self.kind} {self._name}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskFunction, (self._fn, self.kind, self.options))

    def __get__(self, obj: object, objtype: type | None = None) -> TaskFunction[..., R]:
        if obj is None:
            return self
        bound = self._fn.__get__(obj, objtype)
        return TaskFunction(bound, self.kind, self.options)

    # -- the two faces -----------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run from sync code and return the value (or raise the function's error)."""
        rt = current_runtime()
        return rt.call(self._acall(rt, args, kwargs))

    def aio(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Awaitable call for async code; never blocks the caller's loop."""
        return self._acall(current_runtime(), args, kwargs)

    def map(
        self,
        items: Iterable[Any],
        *,
        max_in_flight: int | None = None,
        return_exceptions: bool = False,
    ) -> list[R]:
        """Call once per item from sync code; results in input order.

        ``max_in_flight`` defaults to unbounded for io work and to twice the
        pool size for blocking and cpu work (more would only queue); on the
        ray backend, cpu calls without a timeout go up to 1,024 at once
        (``Runtime.cpu_in_flight``).
        The first error cancels the rest unless ``return_exceptions=True``.
        """
        rt = current_runtime()
        materialized = list(items)  # iterate the caller's iterable on the caller's thread
        return rt.call(self._amap(rt, materialized, max_in_flight, return_exceptions))

    async def amap(
        self,
        items: Iterable[Any],
        *,
        max_in_flight: int | None = None,
        return_exceptions: bool = False,
    ) -> list[R]:
        """``map`` for async code."""
        return await self._amap(current_runtime(), items, max_in_flight, return_exceptions)

    async def _amap(
        self,
        rt: Runtime,
        items: Iterable[Any],
        max_in_flight: int | None,
        return_exceptions: bool,
    ) -> list[R]:
        if max_in_flight is None:
            if self.kind == "cpu":
                max_in_flight = rt.cpu_in_flight(timed=self.options.timeout_s is not None)
            elif self.kind == "blocking" or not self._is_async:
                max_in_flight = 2 * rt.io_threads
        acall = self._acall
        no_kwargs: dict[str, Any] = {}

        def thunk(item: Any) -> Callable[[], Coroutine[Any, Any, R]]:
            return lambda: acall(rt, (item,), no_kwargs)

        return await run_bounded(
            map(thunk, items),
            max_in_flight=max_in_flight,
            return_exceptions=return_exceptions,
        )

    # -- the logic, once ---------------------------------------------------

    async def _acall(self, rt: Runtime, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        if _observe.on:
            return await self._acall_traced(rt, args, kwargs)
        counters = rt.counters
        kind = self.kind
        counters.started(kind)
        ok = False
        result: R
        try:
            if self._direct:
                # The hot path of io fan-outs: one coroutine frame, no wrappers.
                result = await self._fn(*args, **kwargs)  # type: ignore[misc]
            elif self.options.is_plain:
                result = await self._attempt(rt, args, kwargs)
            else:
                result = await self._with_policy(rt, args, kwargs)
            ok = True
            return result
        finally:
            counters.finished(kind, ok)

    async def _with_policy(self, rt: Runtime, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        opts = self.options
        limits = rt.resolve_limits(opts.limit)
        attempt = 0
        while True:
            try:
                async with contextlib.AsyncExitStack() as stack:
                    for lim in limits:
                        await stack.enter_async_context(lim)
                    return await self._attempt(rt, args, kwargs)
            except BaseException as exc:
                if isinstance(exc, TaskTimeoutError):
                    rt.counters.bump(self.kind, "timeouts")
                if not self._retries_after(exc, attempt):
                    raise
                attempt += 1
                delay_s = opts.backoff_delay_s(attempt)
                self._log_retry(exc, attempt, delay_s)
            rt.counters.bump(self.kind, "retries")
            await current_clock().asleep(delay_s)  # fake in tests

    def _retries_after(self, exc: BaseException, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (0-based) failing with ``exc`` is retried."""
        opts = self.options
        return not (
            attempt >= opts.retries
            or isinstance(exc, _NEVER_RETRY)
            or not isinstance(exc, opts.retry_on)
            or retry_cannot_help(exc)
        )

    def _log_retry(self, exc: BaseException, attempt: int, delay_s: float) -> None:
        if log.isEnabledFor(logging.INFO):  # one per retry of one call: only when asked
            log.info(
                "%s failed (%s); retry %d of %d in %.2f s",
                self._name,
                describe_exception(exc),
                attempt,
                self.options.retries,
                delay_s,
            )

    async def _attempt(self, rt: Runtime, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        timeout_s = self.options.timeout_s
        if self.kind == "cpu" and not rt.in_worker:
            payload = self._payload(args, kwargs)
            label = _describe_call(self._name, args, kwargs)
            result: R = await rt.run_in_process(payload, label, timeout_s)
            return result
        if self._is_async:
            aw = self._fn(*args, **kwargs)
            detail = "coroutine cancelled"
        else:
            aw = rt.run_in_thread(self._fn, args, kwargs)  # type: ignore[arg-type]
            detail = "its thread cannot be killed and was abandoned"
        if timeout_s is None:
            return await aw  # type: ignore[no-any-return, misc]
        return await self._within(aw, timeout_s, detail, args, kwargs)

    async def _within(
        self,
        aw: Any,  # the coroutine, or the thread's future: ``Awaitable[R]``
        timeout_s: float,
        detail: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> R:
        """``await aw`` for at most ``timeout_s``, then ``TaskTimeoutError`` naming ``detail``."""
        cm = asyncio.timeout(timeout_s)
        try:
            async with cm:
                result: R = await aw
                return result
        except TimeoutError:
            if cm.expired():
                label = _describe_call(self._name, args, kwargs)
                raise TaskTimeoutError(label, timeout_s, detail) from None
            raise

    def _payload(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        traced: tuple[str, dict[str, str] | None] | None = None,
    ) -> bytes:
        # ``traced``: the function's name and the caller's trace context, sent as
        # a fourth item only while tracing is on (``_worker._run_traced``).
        ref = self._ref
        if ref is None or (type(ref) is _PickledOnce and not ref.current()):
            ref = self._ref = self._function_ref()
        try:
            if traced is not None:
                return bytes(cloudpickle.dumps((ref, args, kwargs, traced)))
            return bytes(cloudpickle.dumps((ref, args, kwargs)))
        except Exception as exc:
            label = _describe_call(self._name, args, kwargs)
            raise SerializationError(
                f"{label} cannot be sent to a cpu worker process: {exc}. Arguments and the "
                "function must be picklable (cloudpickle handles lambdas and closures)."
            ) from exc

    # -- the same logic while tracing is on (``_observe.on``) -------------------

    async def _acall_traced(self, rt: Runtime, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        """``_acall`` inside the call's span ``ambidex.<kind> <qualname>``.

        Apart from ``_acall`` so that the untraced call pays one attribute read
        for tracing. Every call takes the policy path here (limits, retries,
        timeout), whose steps the span records; docs/observability.md lists its
        attributes and events.
        """
        from ambidex import _otel

        kind = self.kind
        attributes: dict[str, Any] = {"ambidex.kind": kind, "ambidex.function": self._name}
        if self.options.limit:
            attributes["ambidex.limits"] = self.options.limit
        counters = rt.counters
        counters.started(kind)
        ok = False
        try:
            with _otel.span(f"ambidex.{kind} {self._name}", attributes) as span:
                result = await self._with_policy_traced(rt, args, kwargs, span)
            ok = True
            return result
        finally:
            counters.finished(kind, ok)

    async def _with_policy_traced(
        self, rt: Runtime, args: tuple[Any, ...], kwargs: dict[str, Any], span: Any
    ) -> R:
        opts = self.options
        limits = rt.resolve_limits(opts.limit) if opts.limit else ()
        attempt = 0
        waited_s = 0.0  # acquiring the limits, summed over the attempts
        try:
            while True:
                try:
                    if not limits:
                        return await self._attempt_traced(rt, args, kwargs, span)
                    async with contextlib.AsyncExitStack() as stack:
                        asked = time.perf_counter()
                        try:
                            for lim in limits:
                                await stack.enter_async_context(lim)
                        finally:
                            waited_s += time.perf_counter() - asked
                        return await self._attempt_traced(rt, args, kwargs, span)
                except BaseException as exc:
                    if isinstance(exc, TaskTimeoutError):
                        rt.counters.bump(self.kind, "timeouts")
                        span.set_attribute("ambidex.timeout_s", exc.timeout_s)
                    if not self._retries_after(exc, attempt):
                        raise
                    attempt += 1
                    delay_s = opts.backoff_delay_s(attempt)
                    span.add_event(
                        "retry",
                        {
                            "ambidex.attempt": attempt,
                            "error.type": type(exc).__qualname__,
                            # cut: a megabyte message, once per retry, on one span
                            "exception.message": shorten(describe_exception(exc), 1000),
                            "ambidex.delay_s": delay_s,
                        },
                    )
                    self._log_retry(exc, attempt, delay_s)
                rt.counters.bump(self.kind, "retries")
                await current_clock().asleep(delay_s)
        finally:
            span.set_attribute("ambidex.attempts", attempt + 1)
            if limits:
                span.set_attribute("ambidex.limit.wait_s", waited_s)

    async def _attempt_traced(
        self, rt: Runtime, args: tuple[Any, ...], kwargs: dict[str, Any], span: Any
    ) -> R:
        """``_attempt``, sending the trace context with a cpu call and timing a thread's queue."""
        timeout_s = self.options.timeout_s
        if self.kind == "cpu" and not rt.in_worker:
            from ambidex import _otel

            payload = self._payload(args, kwargs, (self._name, _otel.inject()))
            label = _describe_call(self._name, args, kwargs)
            result: R = await rt.run_in_process(payload, label, timeout_s)
            return result
        if self._is_async:
            aw = self._fn(*args, **kwargs)
            detail = "coroutine cancelled"
        else:
            fn: Callable[..., Any] = _timing_its_queue(self._fn, span)
            aw = rt.run_in_thread(fn, args, kwargs)
            detail = "its thread cannot be killed and was abandoned"
        if timeout_s is None:
            return await aw  # type: ignore[no-any-return, misc]
        return await self._within(aw, timeout_s, detail, args, kwargs)

    def _function_ref(self) -> FunctionRef | _PickledOnce | Callable[..., Any]:
        # A decorated module-level function is sent by name (its module is
        # imported in the worker); anything else (__main__, closures, lambdas)
        # is pickled by value, once while nothing it reads changes.
        module_name = getattr(self._fn, "__module__", None)
        qualname = getattr(self._fn, "__qualname__", "")
        module = sys.modules.get(module_name or "")
        if module is None or module_name == "__main__" or "<locals>" in qualname:
            return _PickledOnce.of(self._fn) or self._fn
        obj: Any = module
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if obj is self:
            return FunctionRef(module.__name__, qualname)
        return self._fn


def _timing_its_queue(fn: Callable[..., R], span: Any) -> Callable[..., R]:
    """``fn``, noting on ``span`` how long it waited for an I/O thread (traced calls)."""
    submitted = time.perf_counter()

    def run(*args: Any, **kwargs: Any) -> R:
        span.set_attribute("ambidex.queue_wait_s", time.perf_counter() - submitted)
        return fn(*args, **kwargs)

    return run


_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, types.ModuleType)
_ABSENT = object()


def _global_names(code: types.CodeType) -> set[str]:
    """Every name ``code`` and the code nested in it look up (globals among them)."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


class _PickledOnce:
    """A function pickled by value once, sent as those bytes while they stay true.

    cloudpickle pickles a function of ``__main__`` whole with every call (17 µs
    for a one-line one, 2 µs for its arguments; raw Ray pickles it once). Its
    pickled form changes only with its code, defaults and the globals it
    reads, so the bytes are kept while those are the same objects and each is
    immutable (or a module, sent by name). A function with a closure, or one
    that reads a list, dict or array, is pickled afresh with every call as
    before: what it reads may have changed in place. The worker still
    unpickles a fresh function with every call.
    """

    __slots__ = ("code", "data", "defaults", "fn", "kwdefaults", "reads")

    def __init__(self, fn: types.FunctionType, reads: tuple[tuple[str, Any], ...]) -> None:
        self.fn = fn
        self.code = fn.__code__
        self.defaults = fn.__defaults__
        self.kwdefaults = fn.__kwdefaults__
        self.reads = reads
        self.data = bytes(cloudpickle.dumps(fn))

    @classmethod
    def of(cls, fn: Any) -> _PickledOnce | None:
        """``fn`` pickled once, or None when it must be pickled with every call."""
        if type(fn) is not types.FunctionType or fn.__closure__ or fn.__dict__:
            return None
        given = [*(fn.__defaults__ or ()), *(fn.__kwdefaults__ or {}).values()]
        if not all(isinstance(value, _IMMUTABLE) for value in given):
            return None
        scope = fn.__globals__
        reads = tuple((name, scope.get(name, _ABSENT)) for name in _global_names(fn.__code__))
        if not all(v is _ABSENT or isinstance(v, _IMMUTABLE) for _, v in reads):
            return None
        try:
            return cls(fn, reads)
        except Exception:  # unpicklable: every call says so, as before
            return None

    def current(self) -> bool:
        """Whether the bytes still say what pickling ``fn`` now would."""
        fn = self.fn
        if (
            fn.__code__ is not self.code
            or fn.__defaults__ is not self.defaults
            or fn.__kwdefaults__ is not self.kwdefaults
            or fn.__dict__
        ):
            return False
        scope = fn.__globals__
        return all(scope.get(name, _ABSENT) is value for name, value in self.reads)

    def __reduce__(self) -> tuple[Any, ...]:
        return (cloudpickle.loads, (self.data,))  # pickle.loads: sent by name


class _Decorator(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> TaskFunction[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> TaskFunction[P, R]: ...


def _options(
    limit: str | Sequence[str] | None,
    timeout_s: float | None,
    retries: int,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    backoff_s: float,
    max_backoff_s: float,
) -> TaskOptions:
    names: tuple[str, ...]
    if limit is None:
        names = ()
    elif isinstance(limit, str):
        names = (limit,)
    else:
        names = tuple(limit)
    retry_types = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    return TaskOptions(names, timeout_s, retries, retry_types, backoff_s, max_backoff_s)


class _KindDecorator:
    """Shared body of ``ax.io``, ``ax.blocking`` and ``ax.cpu``.

    Usable bare (``@ax.cpu``) or with options::

        @ax.io(limit="llm", timeout_s=30, retries=3, retry_on=(ConnectionError,))

    Args:
        limit: name(s) of limits declared with ``ax.limits`` that each call holds.
        timeout_s: deadline of each attempt in seconds (see the kind for what
            happens to the work at the deadline).
        retries: attempts after the first; waits use exponential backoff with
            full jitter (``backoff_s``, doubling, capped at ``max_backoff_s``).
        retry_on: exception type(s) that are retried; others raise at once.
        backoff_s: the first retry's maximum wait.
        max_backoff_s: cap on one retry's wait.

    Raises:
        TypeError: at decoration, when the function cannot run on this executor.
        ValueError: at decoration, for an option out of range.
    """

    kind: Kind

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> TaskFunction[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> TaskFunction[P, R]: ...
    @overload
    def __call__(
        self,
        *,
        limit: str | Sequence[str] | None = None,
        timeout_s: float | None = None,
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
        backoff_s: float = 0.1,
        max_backoff_s: float = 30.0,
    ) -> _Decorator: ...

    def __call__(
        self,
        fn: Any = None,
        *,
        limit: str | Sequence[str] | None = None,
        timeout_s: float | None = None,
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
        backoff_s: float = 0.1,
        max_backoff_s: float = 30.0,
    ) -> Any:
        options = _options(limit, timeout_s, retries, retry_on, backoff_s, max_backoff_s)
        kind = self.kind
        if fn is not None:
            return TaskFunction(fn, kind, options)
        return lambda f: TaskFunction(f, kind, options)

    def __repr__(self) -> str:
        return f"ax.{self.kind}"


class _IO(_KindDecorator):
    """Mark waiting work: ``async def`` runs on an event loop, a plain ``def`` on the I/O threads.

    At ``timeout_s`` a coroutine is cancelled; a plain function's thread is
    abandoned (see ``ax.blocking``). Options as in ``_KindDecorator``.
    """

    kind: Kind = "io"


class _Blocking(_KindDecorator):
    """Mark a blocking call (a library without async, a driver): it runs on the I/O threads.

    At ``timeout_s`` the caller gets ``TaskTimeoutError``; a thread cannot be
    killed, so it is abandoned, finishes on its own, and is counted in
    ``statistics().io_threads.abandoned``.
    """

    kind: Kind = "blocking"


class _Cpu(_KindDecorator):
    """Mark computing work: it runs in the cpu process pool, one task per worker process.

    At ``timeout_s`` the worker process (and its process group) is killed and
    replaced. Arguments, results and the function travel by cloudpickle.
    """

    kind: Kind = "cpu"


io = _IO()
blocking = _Blocking()
cpu = _Cpu()
