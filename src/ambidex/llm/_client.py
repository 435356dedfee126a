"""AsyncLLM: chat completions from any OpenAI-compatible server, under ambidex's limits.

One request runs as: cache lookup -> take the shared limit (and the client's
rate, if any) -> POST with a per-attempt deadline -> on 408/429/5xx or a
connection error, give the limit back, wait (exponential backoff with full
jitter, at least what ``Retry-After`` asks) and try again -> parse, count
usage, store in the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, overload

import httpx

from ambidex import _observe
from ambidex._clock import current_clock
from ambidex._sse import iter_sse_data
from ambidex.exceptions import UnknownLimitError
from ambidex.llm._cache import MemoryCache, ResponseCache, cache_key
from ambidex.llm._errors import (
    LLMConfigError,
    LLMConnectionError,
    LLMError,
    LLMHTTPError,
    LLMResponseError,
    LLMTimeoutError,
    excerpt,
)
from ambidex.llm._http import (
    LoopPools,
    connection_error,
    make_headers,
    parse_retry_after,
    resolve_api_key,
    resolve_base_url,
)
from ambidex.llm._types import (
    ChatResponse,
    Messages,
    Usage,
    UsageCounter,
    UsageTotals,
    normalize_messages,
    parse_completion,
    parse_usage,
)
from ambidex.runtime import Backoff, CapacityLimit, Rate, RateLimit, agather, current_runtime

__all__ = ["DEFAULT_LLM_CAPACITY", "MAX_RETRY_AFTER_S", "AsyncLLM", "CacheSpec"]

log = logging.getLogger("ambidex.llm")

#: Capacity given to a client's limit (``"llm"`` by default) when the runtime
#: has not declared it: at most this many requests at once, over every client.
DEFAULT_LLM_CAPACITY = 16

#: A ``Retry-After`` longer than this ends the retries instead of being waited out.
MAX_RETRY_AFTER_S = 60.0

#: What ``cache=`` accepts: None (no cache), "memory" (a default ``MemoryCache``) or a cache.
CacheSpec = ResponseCache | Literal["memory"] | None

_RESERVED_PARAMS = frozenset({"messages", "stream"})
_declare_lock = threading.Lock()


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


def shared_limit(name: str) -> CapacityLimit | RateLimit:
    """The runtime's limit ``name``, declared with ``DEFAULT_LLM_CAPACITY`` if missing."""
    rt = current_runtime()
    try:
        return rt.limit(name)
    except UnknownLimitError:
        with _declare_lock:
            try:
                return rt.limit(name)
            except UnknownLimitError:
                rt.limits(**{name: DEFAULT_LLM_CAPACITY})
                return rt.limit(name)


def _check_options(
    model: str, timeout_s: float | None, max_retries: int, backoff_s: float, max_backoff_s: float
) -> None:
    if not isinstance(model, str) or not model:
        raise LLMConfigError(f"model must be a non-empty string, got {model!r}")
    if timeout_s is not None and not timeout_s > 0:
        raise LLMConfigError(f"timeout_s must be a positive number or None, got {timeout_s!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise LLMConfigError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    if not backoff_s >= 0 or not max_backoff_s >= 0:
        raise LLMConfigError(
            f"backoff_s and max_backoff_s must be >= 0, got {backoff_s!r} and {max_backoff_s!r}"
        )


def _make_cache(cache: CacheSpec) -> ResponseCache | None:
    if cache is None:
        return None
    if cache == "memory":
        return MemoryCache()
    if isinstance(cache, ResponseCache):
        return cache
    raise LLMConfigError(
        f"cache must be None, 'memory', MemoryCache(...) or SQLiteCache(path), got {cache!r}"
    )


class AsyncLLM:
    """An async client for OpenAI-compatible chat completions.

    ``await llm.chat("hi")`` from any event loop; each loop gets its own
    pooled ``httpx.AsyncClient``. Every request takes the runtime's named
    limit ``limit`` (declared with ``DEFAULT_LLM_CAPACITY`` = 16 if the runtime
    has none), so all clients together keep to it, from sync and async code.

    Args:
        model: the model to ask, e.g. ``"gpt-4o-mini"``; ``model=`` in a call overrides it.
        base_url: the API root, e.g. ``"http://127.0.0.1:8000/v1"``; default
            ``OPENAI_BASE_URL``, else ``https://api.openai.com/v1``.
        api_key: default ``OPENAI_API_KEY``; required unless the server is on
            loopback; ``""`` sends no key. It is only ever sent in the
            ``Authorization`` header, never logged or shown.
        timeout_s: the deadline of one attempt (for ``stream``: of connecting
            and of each wait for data); None for none. Waiting for the limit
            does not count.
        max_retries: attempts after the first, on 408, 429, 5xx, connection
            errors and timeouts.
        backoff_s: the first retry waits up to this (full jitter), doubling
            each retry up to ``max_backoff_s``; a ``Retry-After`` (or
            ``retry-after-ms``) from the server is waited out if longer, up to
            ``MAX_RETRY_AFTER_S`` (a longer one ends the retries).
        max_backoff_s: the cap of the backoff.
        limit: the name of the runtime limit every request holds; None for none.
        rate: a rate limit of this client's own, e.g. ``ax.Rate(10, burst=20)``.
        cache: None, ``"memory"``, a ``MemoryCache(...)`` or ``SQLiteCache(path)``.
        **default_params: request parameters for every call (``temperature``,
            ``max_tokens``, ...); a call's own parameters override them and a
            parameter set to None is not sent.

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
        _check_options(model, timeout_s, max_retries, backoff_s, max_backoff_s)
        reserved = _RESERVED_PARAMS & default_params.keys()
        if reserved:
            raise LLMConfigError(
                f"{', '.join(sorted(reserved))} cannot be a default parameter: pass messages to "
                "chat()/stream() and use stream() for streaming"
            )
        if rate is not None and not isinstance(rate, Rate):
            raise LLMConfigError(
                f"rate must be an ax.Rate(per_second, burst) or None, got {rate!r}"
            )
        import ambidex

        self.model = model
        self.base_url = resolve_base_url(base_url)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.limit = limit
        self.rate = rate
        self.cache = _make_cache(cache)
        self.default_params: dict[str, Any] = dict(default_params)
        key = resolve_api_key(api_key, self.base_url)
        agent = f"ambidex/{getattr(ambidex, '__version__', '0')} httpx/{httpx.__version__}"
        self._pools = LoopPools(make_headers(key, agent), timeout_s)
        self._url = f"{self.base_url}/chat/completions"
        self._rate = RateLimit(f"rate of {self!r}", rate) if rate is not None else None
        self._usage = UsageCounter()
        self._closed = False

    # -- public API ----------------------------------------------------------

    @property
    def usage(self) -> UsageTotals:
        """Tokens, requests, retries and cache hits so far (a snapshot)."""
        return self._usage.snapshot()

    async def chat(self, messages: Messages, **params: Any) -> ChatResponse:
        """Ask for one chat completion.

        Args:
            messages: a prompt (one user message) or a list of message dicts.
            **params: request parameters for this call (``temperature=0``,
                ``max_tokens=100``, ``model=...``); None leaves one out.

        Returns:
            The completion; ``cached`` says whether it came from the cache.

        Raises:
            LLMHTTPError: an error status (after retries, for retryable ones).
            LLMConnectionError: the server could not be reached (after retries).
            LLMTimeoutError: every attempt ran past ``timeout_s``.
            LLMResponseError: the answer was not a chat completion.
            LLMError: the client is closed.
            TypeError: ``messages`` is not a str or a list of message dicts.
        """
        if _observe.on:
            from ambidex.llm._tracing import traced_chat

            return await traced_chat(self, self._body(messages, params))
        return await self._chat(self._body(messages, params))

    async def complete(self, prompt: Messages, **params: Any) -> str:
        """The text of ``chat(prompt)``; raises what ``chat`` raises."""
        return (await self.chat(prompt, **params)).text

    @overload
    async def batch(
        self,
        requests: Iterable[Messages],
        *,
        max_in_flight: int | None = None,
        return_exceptions: Literal[False] = False,
        **params: Any,
    ) -> list[ChatResponse]: ...

    @overload
    async def batch(
        self,
        requests: Iterable[Messages],
        *,
        max_in_flight: int | None = None,
        return_exceptions: bool,
        **params: Any,
    ) -> list[ChatResponse | BaseException]: ...

    async def batch(
        self,
        requests: Iterable[Messages],
        *,
        max_in_flight: int | None = None,
        return_exceptions: bool = False,
        **params: Any,
    ) -> list[ChatResponse] | list[ChatResponse | BaseException]:
        """Ask many chats at once; the responses come back in input order.

        Concurrency is bounded by the shared limit (and ``max_in_flight``, if
        given). The first error cancels the requests still running and is
        raised, unless ``return_exceptions=True``, which puts each error in
        its item's place instead.

        Args:
            requests: prompts or message lists, one per chat.
            max_in_flight: at most this many of this batch at once (default:
                only the limit bounds it).
            return_exceptions: return errors in place of results instead of raising.
            **params: request parameters for every chat of the batch.

        Returns:
            One ``ChatResponse`` (or, with ``return_exceptions``, an error) per request.

        Raises:
            LLMError: the first failure (see ``chat``), unless ``return_exceptions``.
            TypeError: a request is not a str or a list of message dicts.
            ValueError: ``max_in_flight`` is not a positive integer.
        """
        bodies = []
        for i, messages in enumerate(requests):
            try:
                bodies.append(self._body(messages, params))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"batch request {i}: {exc}") from None
        if _observe.on:
            from ambidex.llm._tracing import traced_chat

            calls = [traced_chat(self, body) for body in bodies]
        else:
            calls = [self._chat(body) for body in bodies]
        return await agather(
            *calls,
            max_in_flight=max_in_flight,
            return_exceptions=return_exceptions,
        )

    async def stream(self, messages: Messages, **params: Any) -> AsyncGenerator[str, None]:
        """Stream one chat completion: yields the text as it arrives.

        Holds the limit until the stream ends. Retries happen only before the
        first text arrives. A cached answer comes as one piece; a finished
        stream is stored in the cache. To stop early and free the connection
        at once, wrap it: ``async with contextlib.aclosing(llm.stream(...)) as s``.
        Token usage is asked for with ``stream_options={"include_usage": True}``
        unless you pass ``stream_options`` yourself (None sends none).

        Yields:
            Pieces of the assistant message's text, in order.

        Raises:
            LLMHTTPError: see ``chat``.
            LLMConnectionError: see ``chat``; also a connection broken mid-stream.
            LLMTimeoutError: see ``chat``; also no data for ``timeout_s`` mid-stream.
            LLMResponseError: a chunk was not JSON, carried an error, or the stream
                ended without a finish reason or ``[DONE]``.
        """
        body = self._body(messages, params)
        self._check_open()
        # Tracing: the call's span (not current: a generator's steps run in its caller's
        # context); ambidex.llm._tracing.StreamTrace records it, ended in the finally.
        traced: Any = None
        if _observe.on:
            from ambidex.llm._tracing import StreamTrace

            traced = StreamTrace(self, body)
        try:
            key, hit = await self._stream_lookup(body, traced)
            if hit is not None:
                if hit.text:
                    yield hit.text
                return
            body["stream"] = True
            if "stream_options" not in params and "stream_options" not in self.default_params:
                body["stream_options"] = {"include_usage": True}
            async with self._open_stream(body, traced) as response:
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    # The server ignored stream=true and sent one JSON answer.
                    await response.aread()
                    result = await self._finish(response, key)
                    if traced is not None:
                        traced.answered(result)
                    if result.text:
                        yield result.text
                    return
                state = _StreamState()
                events = self._read_events(response, state, traced)
                async with contextlib.aclosing(events) as pieces:
                    async for piece in pieces:
                        yield piece
            await self._stream_ended(state, key, traced)
        except BaseException as exc:
            if traced is not None:
                traced.failed(exc)
            raise
        finally:
            if traced is not None:
                traced.end()

    async def _stream_lookup(
        self, body: dict[str, Any], traced: Any
    ) -> tuple[str | None, ChatResponse | None]:
        """A stream's cache key (None without a cache) and the cached answer, if any."""
        if self.cache is None:
            return None, None
        key = cache_key(body)
        hit = await self._cache_get(key)
        if hit is not None and traced is not None:
            traced.answered(hit)
        return key, hit

    async def _stream_ended(self, state: _StreamState, key: str | None, traced: Any) -> None:
        """A stream ran to its end: check it was whole, count its tokens, cache it."""
        if traced is not None:
            traced.streamed(state)
        if not (state.done or state.finish_reason):
            raise LLMResponseError(
                f"{self._url}: the stream ended without a finish_reason or [DONE]; the answer "
                f"may be cut short ({len(state.text())} characters received)"
            )
        self._usage.add_tokens(state.usage or Usage())
        if key is not None and self.cache is not None:
            await self.cache.set(key, json.dumps(state.as_completion(self.model)))

    async def _read_events(
        self, response: httpx.Response, state: _StreamState, traced: Any = None
    ) -> AsyncGenerator[str, None]:
        """The text pieces of a streaming response's events, until ``[DONE]``."""
        try:
            async with contextlib.aclosing(iter_sse_data(response.aiter_lines())) as events:
                async for data in events:
                    if data.strip() == "[DONE]":
                        state.done = True
                        return
                    for piece in state.feed(self._parse_chunk(data)):
                        if traced is not None and not traced.first:
                            traced.first_piece()  # the time to the first token
                        yield piece
        except httpx.TransportError as exc:
            raise self._transport_error(exc, attempts=1, mid_stream=True) from None

    async def aclose(self) -> None:
        """Close the connection pools (of every loop) and release the cache's files.

        Further calls raise ``LLMError``. Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        await self._pools.aclose()
        if self.cache is not None:
            await self.cache.aclose()

    @property
    def closed(self) -> bool:
        """True after ``aclose()``."""
        return self._closed

    async def __aenter__(self) -> AsyncLLM:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"AsyncLLM(model={self.model!r}, base_url={self.base_url!r}, "
            f"limit={self.limit!r}, rate={self.rate!r}, cache={self.cache!r})"
        )

    # -- request building ----------------------------------------------------

    def _body(self, messages: Messages, params: Mapping[str, Any]) -> dict[str, Any]:
        reserved = _RESERVED_PARAMS & params.keys()
        if reserved:
            raise TypeError(
                f"{', '.join(sorted(reserved))} is not a request parameter here: pass messages "
                "as the first argument and use stream() for streaming"
            )
        body: dict[str, Any] = {"model": self.model, "messages": normalize_messages(messages)}
        body.update(self.default_params)
        body.update(params)
        return {k: v for k, v in body.items() if v is not None}

    def _check_open(self) -> None:
        if self._closed:
            raise LLMError(f"{self!r} is closed; create a new client")

    # -- one chat ------------------------------------------------------------

    async def _chat(self, body: dict[str, Any]) -> ChatResponse:
        self._check_open()
        key = None
        if self.cache is not None:
            key = cache_key(body)
            hit = await self._cache_get(key)
            if hit is not None:
                return hit
        response = await self._send(body)
        return await self._finish(response, key)

    async def _finish(self, response: httpx.Response, key: str | None) -> ChatResponse:
        """Parse a successful response, count its tokens, store it in the cache."""
        text = response.text
        try:
            data = json.loads(text)
        except ValueError:
            ctype = response.headers.get("content-type") or "no content type"
            raise LLMResponseError(
                f"{self._url} answered HTTP {response.status_code} with {ctype}, not JSON: "
                f"{excerpt(text, 200)!r} [is base_url an OpenAI-compatible API root, "
                "such as https://api.openai.com/v1?]"
            ) from None
        result = parse_completion(data, cached=False, url=self._url)
        self._usage.add_tokens(result.usage)
        if key is not None and self.cache is not None:
            await self.cache.set(key, text)
        return result

    async def _cache_get(self, key: str) -> ChatResponse | None:
        assert self.cache is not None
        text = await self.cache.get(key)
        if text is None:
            return None
        try:
            result = parse_completion(json.loads(text), cached=True, url=self._url)
        except (ValueError, LLMResponseError):
            log.warning("ignoring an unreadable entry in the LLM response cache %r", self.cache)
            return None
        self._usage.add_cache_hit()
        return result

    async def _send(self, body: dict[str, Any]) -> httpx.Response:
        """POST ``body``; retry what may pass on a second try; return a 2xx response."""
        pool = self._pools.get()
        attempts = 0
        while True:
            attempts += 1
            retry_after: float | None = None
            held = await self._take_slot()
            shard = pool.checkout()
            try:
                self._usage.add_request()
                # the chat span's W3C context, for a provider or proxy that traces
                trace_headers = _observe.carrier() if _observe.on else None
                async with asyncio.timeout(self.timeout_s):
                    response = await shard.client.post(self._url, json=body, headers=trace_headers)
            except (TimeoutError, httpx.TransportError) as exc:
                error: LLMError = self._transport_error(exc, attempts)
            else:
                if response.is_success:
                    return response
                retry_after = parse_retry_after(response.headers)
                error = self._http_error(response, attempts, retry_after)
            finally:
                pool.checkin(shard)
                self._release(held)
            await self._wait_to_retry(error, attempts, retry_after)

    @contextlib.asynccontextmanager
    async def _open_stream(
        self, body: dict[str, Any], traced: Any = None
    ) -> AsyncIterator[httpx.Response]:
        """A 2xx streaming response, with the limit held until the block ends."""
        pool = self._pools.get()
        headers = {"accept": "text/event-stream"}
        attempts = 0
        while True:
            attempts += 1
            retry_after: float | None = None
            held = await self._take_slot()
            shard = pool.checkout()
            try:
                self._usage.add_request()
                try:
                    client = shard.client
                    if traced is not None:  # the stream's span, never current: its own context
                        headers.update(traced.carrier())
                    request = client.build_request("POST", self._url, json=body, headers=headers)
                    async with asyncio.timeout(self.timeout_s):
                        response = await client.send(request, stream=True)
                except (TimeoutError, httpx.TransportError) as exc:
                    error: LLMError = self._transport_error(exc, attempts)
                else:
                    try:
                        if response.is_success:
                            yield response
                            return
                        with contextlib.suppress(httpx.HTTPError):
                            await response.aread()
                        retry_after = parse_retry_after(response.headers)
                        error = self._http_error(response, attempts, retry_after)
                    finally:
                        await response.aclose()
            finally:
                pool.checkin(shard)
                self._release(held)
            await self._wait_to_retry(error, attempts, retry_after, traced)

    # -- limits, retries, errors ---------------------------------------------

    async def _take_slot(self) -> CapacityLimit | RateLimit | None:
        held = shared_limit(self.limit) if self.limit is not None else None
        if held is not None:
            await held.acquire()
        if self._rate is not None:
            try:
                await self._rate.acquire()
            except BaseException:
                self._release(held)
                raise
        return held

    @staticmethod
    def _release(held: CapacityLimit | RateLimit | None) -> None:
        if held is not None:
            held.release()

    async def _wait_to_retry(
        self, error: LLMError, attempts: int, retry_after: float | None, traced: Any = None
    ) -> None:
        """Sleep before the next attempt, or raise ``error`` if there is none."""
        if isinstance(error, LLMHTTPError):
            retryable = _retryable(error.status)
        else:
            retryable = isinstance(error, LLMConnectionError | LLMTimeoutError)
        if not retryable or attempts > self.max_retries:
            raise error
        if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
            raise error
        delay = Backoff(self.backoff_s, self.max_backoff_s).delay_s(attempts)
        if retry_after is not None:
            delay = max(delay, retry_after)
        self._usage.add_retry()
        if _observe.on:
            from ambidex.llm._tracing import retry_event

            retry_event(traced, error, attempts, delay)
        log.debug("retrying %s in %.2f s after: %s", self._url, delay, error)
        await current_clock().asleep(delay)  # a test's FakeClock skips the wait

    def _transport_error(
        self, exc: BaseException, attempts: int, mid_stream: bool = False
    ) -> LLMError:
        """The error to raise for ``exc``: a timeout, a connection error, or neither."""
        where = " in the middle of a stream" if mid_stream else ""
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            tries = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
            return LLMTimeoutError(
                f"{self._url} did not answer within timeout_s={self.timeout_s:g} s{where}{tries}"
            )
        if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
            return connection_error(exc, self.base_url, attempts, where)
        # A request httpx refuses to send (e.g. a bad header): retrying cannot help. The
        # message of such errors may quote headers, the API key among them: leave it out.
        return LLMError(f"could not send the request to {self._url}: {type(exc).__name__}")

    def _http_error(
        self, response: httpx.Response, attempts: int, retry_after: float | None
    ) -> LLMHTTPError:
        detail = ""
        if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
            detail = (
                f"the server asked to retry after {retry_after:g} s, longer than "
                f"MAX_RETRY_AFTER_S = {MAX_RETRY_AFTER_S:g} s, so no retry was made"
            )
        try:
            body = response.text
        except httpx.ResponseNotRead:
            body = ""
        return LLMHTTPError(
            response.status_code,
            body,
            response.headers.get("x-request-id"),
            self._url,
            attempts,
            detail,
        )

    def _parse_chunk(self, data: str) -> dict[str, Any]:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise LLMResponseError(
                f"{self._url} sent a stream event that is not JSON: {excerpt(data, 200)!r}"
            ) from None
        if not isinstance(chunk, dict):
            raise LLMResponseError(f"{self._url} sent a stream event that is not an object")
        if "error" in chunk:
            raise LLMResponseError(
                f"{self._url} reported an error in the stream: {excerpt(str(chunk['error']), 300)}"
            )
        return chunk


class _StreamState:
    """What a stream has delivered so far."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.model = ""
        self.id = ""
        self.usage: Usage | None = None
        self.done = False

    def feed(self, chunk: dict[str, Any]) -> list[str]:
        """Take one chunk; return its text pieces of choice 0."""
        pieces = []
        self.model = chunk.get("model") or self.model
        self.id = chunk.get("id") or self.id
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                self.parts.append(content)
                pieces.append(content)
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]
        if chunk.get("usage"):
            self.usage = parse_usage(chunk["usage"])
        return pieces

    def text(self) -> str:
        return "".join(self.parts)

    def as_completion(self, model: str) -> dict[str, Any]:
        """The stream as the ``chat.completion`` body a non-streaming call would get."""
        usage = self.usage or Usage()
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model or model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.text()},
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            },
        }
