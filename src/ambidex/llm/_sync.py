"""LLM: the sync face of AsyncLLM, running on ambidex's loop thread."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from types import TracebackType
from typing import Any, Literal, overload

from ambidex.llm._client import AsyncLLM, CacheSpec
from ambidex.llm._types import ChatResponse, Messages, UsageTotals
from ambidex.runtime import Rate, current_runtime

__all__ = ["LLM"]

_END = object()


async def _next(agen: AsyncIterator[str]) -> object:
    try:
        return await agen.__anext__()
    except StopAsyncIteration:
        return _END


async def _aclose(agen: AsyncGenerator[str, None]) -> None:
    await agen.aclose()


class LLM:
    """The sync face of ``AsyncLLM``: the same client, callable from plain code.

    Each call runs on ambidex's event loop thread (``ax.current_runtime().call``) and
    blocks only the calling thread, so it works from any thread, including
    one whose own loop is running (Jupyter). All sync callers share that
    loop's connection pool, the runtime's ``llm`` limit, the cache and the
    usage totals. ``llm.aio`` is the underlying ``AsyncLLM``, for async code.

    Calling it from inside ambidex's own loop (an ``@ax.io`` ``async def``)
    raises ``RuntimeError``: use ``await llm.aio.chat(...)`` there.

    The arguments are ``AsyncLLM``'s.

    Raises:
        LLMConfigError: for a bad ``base_url``, a missing API key for a server
            not on loopback, or a bad option.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float | None = 60.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        limit: str | None = "llm",
        rate: Rate | None = None,
        cache: CacheSpec = None,
        **default_params: Any,
    ) -> None:
        self.aio = AsyncLLM(
            model,
            base_url=base_url,
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            limit=limit,
            rate=rate,
            cache=cache,
            **default_params,
        )

    @property
    def usage(self) -> UsageTotals:
        """Tokens, requests, retries and cache hits so far (a snapshot)."""
        return self.aio.usage

    def chat(self, messages: Messages, **params: Any) -> ChatResponse:
        """``AsyncLLM.chat`` from sync code; raises what it raises."""
        return current_runtime().call(self.aio.chat(messages, **params))

    def complete(self, prompt: Messages, **params: Any) -> str:
        """``AsyncLLM.complete`` from sync code; raises what it raises."""
        return current_runtime().call(self.aio.complete(prompt, **params))

    @overload
    def batch(
        self,
        requests: Iterable[Messages],
        *,
        max_in_flight: int | None = None,
        return_exceptions: Literal[False] = False,
        **params: Any,
    ) -> list[ChatResponse]: ...

    @overload
    def batch(
        self,
        requests: Iterable[Messages],
        *,
        max_in_flight: int | None = None,
        return_exceptions: bool,
        **params: Any,
    ) -> list[ChatResponse | BaseException]: ...

    def batch(
        self,
        requests: Iterable[Messages],
        *,
        max_in_flight: int | None = None,
        return_exceptions: bool = False,
        **params: Any,
    ) -> list[ChatResponse] | list[ChatResponse | BaseException]:
        """``AsyncLLM.batch`` from sync code: responses in input order; raises what it raises."""
        return current_runtime().call(
            self.aio.batch(
                requests,
                max_in_flight=max_in_flight,
                return_exceptions=return_exceptions,
                **params,
            )
        )

    def stream(self, messages: Messages, **params: Any) -> Iterator[str]:
        """``AsyncLLM.stream`` as a sync iterator of text pieces; raises what it raises.

        Stopping early (``break``) closes the stream and frees its connection
        and limit slot when the iterator is closed or collected.
        """
        rt = current_runtime()
        agen = self.aio.stream(messages, **params)
        try:
            while True:
                piece = rt.call(_next(agen))
                if piece is _END:
                    return
                assert isinstance(piece, str)
                yield piece
        finally:
            with contextlib.suppress(RuntimeError):
                rt.call(_aclose(agen))

    def close(self) -> None:
        """Close the connection pools and the cache's files; later calls raise ``LLMError``."""
        current_runtime().call(self.aio.aclose())

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self.aio.closed

    def __enter__(self) -> LLM:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return "LLM" + repr(self.aio).removeprefix("AsyncLLM")
