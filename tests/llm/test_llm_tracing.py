"""LLM calls as spans (GenAI semantic conventions), against the mock server on loopback."""

from __future__ import annotations

import contextlib
from typing import Any

from _otel import by_name, one
from ambidex.llm import AsyncLLM, LLMHTTPError, MockLLMServer


def _chats(spans: Any) -> list[Any]:
    """The client's spans, in start order (the mock server in this process makes its own)."""
    return sorted(by_name(spans.get_finished_spans(), "chat *"), key=lambda s: s.start_time or 0)


async def test_chat_span_follows_the_genai_conventions(server: MockLLMServer, spans: Any) -> None:
    async with AsyncLLM("mock-llm", base_url=server.url, temperature=0.5) as llm:
        reply = await llm.chat("hi", max_tokens=40)
    s = one(spans.get_finished_spans(), "chat mock-llm")
    a = s.attributes
    assert s.kind.name == "CLIENT"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.system"] == "openai"
    assert a["gen_ai.request.model"] == "mock-llm"
    assert a["gen_ai.request.max_tokens"] == 40
    assert a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.response.model"] == reply.model
    assert a["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens > 0
    assert a["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens > 0
    assert tuple(a["gen_ai.response.finish_reasons"]) == (reply.finish_reason,)
    assert a["server.address"] == "127.0.0.1"
    assert a["server.port"] == server.port
    assert a["ambidex.llm.cached"] is False
    assert s.status.status_code.name == "UNSET"
    # no content by default: neither the prompt nor the answer is on the span
    assert all(v != "hi" and reply.text != v for v in a.values())


async def test_retries_are_events_and_a_final_failure_sets_error_type(
    server: MockLLMServer, spans: Any
) -> None:
    server.fail_next(1, status=500)
    async with AsyncLLM("mock-llm", base_url=server.url, backoff_s=0.01, max_retries=1) as llm:
        await llm.chat("first")
        server.fail_next(5, status=503)
        with contextlib.suppress(LLMHTTPError):
            await llm.chat("second")
    ok, failed = _chats(spans)
    assert [e.name for e in ok.events] == ["ambidex.llm.retry"]
    assert ok.events[0].attributes["http.response.status_code"] == 500
    assert ok.attributes["ambidex.llm.retries"] == 1
    assert ok.status.status_code.name == "UNSET"
    assert failed.status.status_code.name == "ERROR"
    assert failed.attributes["error.type"] == "LLMHTTPError"
    assert failed.attributes["http.response.status_code"] == 503
    assert [e.name for e in failed.events] == ["ambidex.llm.retry", "exception"]


async def test_a_cache_hit_is_marked_and_counts_no_tokens(
    server: MockLLMServer, spans: Any
) -> None:
    async with AsyncLLM("mock-llm", base_url=server.url, cache="memory") as llm:
        await llm.chat("same")
        await llm.chat("same")
    first, second = _chats(spans)
    assert first.attributes["ambidex.llm.cached"] is False
    assert second.attributes["ambidex.llm.cached"] is True
    assert [e.name for e in second.events] == ["ambidex.llm.cache_hit"]
    assert "gen_ai.usage.input_tokens" not in second.attributes
    assert server.stats().requests == 1


async def test_a_stream_records_time_to_first_token(server: MockLLMServer, spans: Any) -> None:
    async with AsyncLLM("mock-llm", base_url=server.url) as llm:
        pieces = [p async for p in llm.stream("tell me")]
    assert len(pieces) > 1
    s = one(spans.get_finished_spans(), "chat mock-llm")
    a = s.attributes
    assert a["ambidex.llm.streaming"] is True
    ttft = a["ambidex.llm.time_to_first_token_s"]
    assert 0 < ttft < (s.end_time - s.start_time) / 1e9  # type: ignore[operator]
    assert [e.name for e in s.events] == ["gen_ai.first_token"]
    assert a["gen_ai.usage.output_tokens"] > 0
    assert a["gen_ai.response.finish_reasons"] == ("stop",)


async def test_batch_makes_one_span_per_request_under_the_caller(
    server: MockLLMServer, spans: Any
) -> None:
    from ambidex import _otel

    async with AsyncLLM("mock-llm", base_url=server.url) as llm:
        with _otel.span("caller") as caller:
            await llm.batch(["a", "b", "c"])
    chats = [s for s in spans.get_finished_spans() if s.name == "chat mock-llm"]
    assert len(chats) == 3
    assert {s.parent.span_id for s in chats if s.parent} == {caller.get_span_context().span_id}


async def test_a_streams_retries_are_events_on_its_own_span(
    server: MockLLMServer, spans: Any
) -> None:
    from ambidex import _otel

    server.fail_next(1, status=502)
    async with AsyncLLM("mock-llm", base_url=server.url, backoff_s=0.01) as llm:
        with _otel.span("caller") as caller:
            text = "".join([p async for p in llm.stream("again")])
    assert text
    (s,) = _chats(spans)
    assert s.parent is not None
    assert s.parent.span_id == caller.get_span_context().span_id
    assert [e.name for e in s.events] == ["ambidex.llm.retry", "gen_ai.first_token"]
    assert s.events[0].attributes["http.response.status_code"] == 502
    assert s.attributes["ambidex.llm.retries"] == 1
    assert not [e for e in one(spans.get_finished_spans(), "caller").events]


async def test_requests_carry_the_chat_span_so_a_server_that_traces_joins_the_trace(
    server: MockLLMServer, spans: Any
) -> None:
    # The mock is a FastAPI app in this process: FastAPI's own SERVER span reads the
    # request's traceparent, as a provider's or an LLM proxy's tracing would.
    async with AsyncLLM("mock-llm", base_url=server.url) as llm:
        await llm.chat("hi")
        async with contextlib.aclosing(llm.stream("hello")) as pieces:
            async for _ in pieces:
                pass
    finished = spans.get_finished_spans()
    chats = _chats(spans)
    served = by_name(finished, "POST /v1/chat/completions")
    assert len(chats) == len(served) == 2
    for chat in chats:
        (request,) = [s for s in served if s.parent and s.parent.span_id == chat.context.span_id]
        assert request.context.trace_id == chat.context.trace_id
