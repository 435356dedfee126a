"""Spans of LLM calls (OpenTelemetry GenAI conventions); imported only while tracing is on.

One span per ``chat`` (or per request of a ``batch``, or per ``stream``):
name ``chat <model>``, kind CLIENT, with the ``gen_ai.*`` attributes of the
GenAI semantic conventions (operation, provider, request and response model,
token usage, finish reasons, ``server.address``/``server.port``) and
``ambidex.llm.*`` for what ambidex adds: the cache (a hit sends no request),
retries (an event each), and, for a stream, the time to the first piece of text
(the conventions define it only as a metric, so the span carries it as
``ambidex.llm.time_to_first_token_s`` and a ``gen_ai.first_token`` event).

Prompts and answers are never recorded: they may hold personal or secret data.

Names and attributes: docs/observability.md.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
from opentelemetry import trace
from opentelemetry.trace import Span

from ambidex import _otel
from ambidex.llm._errors import LLMHTTPError

if TYPE_CHECKING:
    from ambidex.llm._client import AsyncLLM, _StreamState
    from ambidex.llm._types import ChatResponse

__all__ = ["StreamTrace", "retry_event", "traced_chat"]

_PROVIDER = "openai"  # the API every AsyncLLM speaks (OpenAI-compatible chat completions)
# request parameter -> GenAI attribute (recorded when the call sets it)
_REQUEST_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
}


def request_attributes(client: AsyncLLM, body: dict[str, Any], streaming: bool) -> dict[str, Any]:
    """The span's attributes known before the request is sent."""
    model = str(body.get("model", client.model))
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": _PROVIDER,
        "gen_ai.system": _PROVIDER,  # the attribute's older name (conventions <= 1.36)
        "gen_ai.request.model": model,
        "ambidex.llm.streaming": streaming,
    }
    for param, name in _REQUEST_PARAMS.items():
        value = body.get(param)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[name] = value
    stop = body.get("stop")
    if isinstance(stop, str):
        attributes["gen_ai.request.stop_sequences"] = [stop]
    url = httpx.URL(client.base_url)
    attributes["server.address"] = url.host
    attributes["server.port"] = url.port or (443 if url.scheme == "https" else 80)
    if client.limit is not None:
        attributes["ambidex.limit"] = client.limit
    return attributes


def _record_response(span: Span, result: ChatResponse) -> None:
    span.set_attribute("ambidex.llm.cached", result.cached)
    if result.cached:
        span.add_event("ambidex.llm.cache_hit")
    if result.model:
        span.set_attribute("gen_ai.response.model", result.model)
    response_id = result.raw.get("id") if isinstance(result.raw, dict) else None
    if isinstance(response_id, str) and response_id:
        span.set_attribute("gen_ai.response.id", response_id)
    if result.finish_reason:
        span.set_attribute("gen_ai.response.finish_reasons", [result.finish_reason])
    if not result.cached:  # a cached answer used no tokens
        span.set_attribute("gen_ai.usage.input_tokens", result.usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", result.usage.completion_tokens)


def _record_error(span: Span, exc: BaseException) -> None:
    if isinstance(exc, LLMHTTPError):
        span.set_attribute("http.response.status_code", exc.status)
    _otel.fail(span, exc)


async def traced_chat(client: AsyncLLM, body: dict[str, Any]) -> ChatResponse:
    """``client._chat(body)`` in its span ``chat <model>`` (current: retries add events)."""
    attributes = request_attributes(client, body, streaming=False)
    with _otel.tracer().start_as_current_span(
        f"chat {attributes['gen_ai.request.model']}",
        kind=_otel.SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            result = await client._chat(body)
        except BaseException as exc:
            _record_error(span, exc)
            raise
        _record_response(span, result)
        return result


def retry_event(
    traced: StreamTrace | None, error: BaseException, attempt: int, delay: float
) -> None:
    """An attempt failed and another follows after ``delay`` s: an event on the call's span."""
    span = traced.span if traced is not None else trace.get_current_span()
    attributes: dict[str, Any] = {
        "ambidex.attempt": attempt,
        "error.type": type(error).__qualname__,
        "ambidex.retry.delay_s": round(delay, 6),
    }
    if isinstance(error, LLMHTTPError):
        attributes["http.response.status_code"] = error.status
    span.add_event("ambidex.llm.retry", attributes)
    span.set_attribute("ambidex.llm.retries", attempt)


class StreamTrace:
    """The span of one ``stream()`` call, kept by the generator (never current)."""

    __slots__ = ("began", "first", "span")

    def __init__(self, client: AsyncLLM, body: dict[str, Any]) -> None:
        attributes = request_attributes(client, body, streaming=True)
        self.span = _otel.tracer().start_span(
            f"chat {attributes['gen_ai.request.model']}",
            kind=_otel.SpanKind.CLIENT,
            attributes=attributes,
        )
        self.began = time.perf_counter()
        self.first = False

    def carrier(self) -> dict[str, str]:
        """The W3C headers naming this span, for the request it makes."""
        return _otel.inject(trace.set_span_in_context(self.span)) or {}

    def first_piece(self) -> None:
        """The first piece of text arrived: the time to the first token."""
        self.first = True
        took = time.perf_counter() - self.began
        self.span.set_attribute("ambidex.llm.time_to_first_token_s", took)
        self.span.add_event("gen_ai.first_token", {"ambidex.llm.time_to_first_token_s": took})

    def answered(self, result: ChatResponse) -> None:
        """The answer came whole (from the cache, or a server that ignored ``stream``)."""
        _record_response(self.span, result)

    def streamed(self, state: _StreamState) -> None:
        """The stream ended: what its chunks said of the model, tokens and finish."""
        span = self.span
        span.set_attribute("ambidex.llm.cached", False)
        if state.model:
            span.set_attribute("gen_ai.response.model", state.model)
        if state.id:
            span.set_attribute("gen_ai.response.id", state.id)
        if state.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [state.finish_reason])
        if state.usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", state.usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", state.usage.completion_tokens)

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, GeneratorExit):  # the caller stopped reading: not an error
            self.span.set_attribute("ambidex.llm.closed_early", True)
            return
        _record_error(self.span, exc)

    def end(self) -> None:
        self.span.end()
