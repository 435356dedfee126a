"""Streaming: SSE parsing, pieces, usage, retries before the first piece, early stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx

import ambidex as ax
from ambidex._sse import iter_sse_data
from ambidex.llm import LLM, AsyncLLM, MockLLMServer


async def test_stream_pieces_join_to_chat_text_when_consumed(server: MockLLMServer) -> None:
    async with AsyncLLM("mock-llm", base_url=server.url) as llm:
        pieces = [piece async for piece in llm.stream("stream this answer")]
        reply = await llm.chat("stream this answer")
    assert len(pieces) > 5
    assert "".join(pieces) == reply.text
    stats = server.stats()
    assert stats.streams == 1
    assert stats.completions == 2
    assert stats.in_flight == 0


async def test_stream_counts_usage_when_server_reports_it(server: MockLLMServer) -> None:
    async with AsyncLLM("mock-llm", base_url=server.url) as llm:
        reply = await llm.chat("count my tokens")
        after_chat = llm.usage
        _ = [piece async for piece in llm.stream("count my tokens")]
        after_stream = llm.usage
    assert after_stream.requests == 2
    assert after_stream.prompt_tokens == 2 * after_chat.prompt_tokens == 6
    assert after_stream.completion_tokens == 2 * reply.usage.completion_tokens


async def test_stream_retries_before_first_piece_when_server_fails(server: MockLLMServer) -> None:
    server.fail_next(1, status=502)
    async with AsyncLLM("mock-llm", base_url=server.url, backoff_s=0.01) as llm:
        text = "".join([piece async for piece in llm.stream("hi")])
        assert llm.usage.retries == 1
    assert "you said 'hi'" in text
    assert server.stats().requests == 2


async def test_stream_served_from_cache_when_asked_before(server: MockLLMServer) -> None:
    async with AsyncLLM("mock-llm", base_url=server.url, cache="memory") as llm:
        streamed = "".join([piece async for piece in llm.stream("cache me")])
        chatted = await llm.chat("cache me")  # the finished stream was stored
        again = [piece async for piece in llm.stream("cache me")]
        assert llm.usage.cache_hits == 2
    assert chatted.cached
    assert chatted.text == streamed
    assert again == [streamed]
    assert server.stats().requests == 1


async def test_stream_frees_limit_when_consumer_stops_early(server: MockLLMServer) -> None:
    ax.limits(llm=1)
    async with AsyncLLM("mock-llm", base_url=server.url) as llm:
        async with contextlib.aclosing(llm.stream("a long enough answer")) as pieces:
            async for _ in pieces:
                assert ax.limit("llm").statistics().in_use == 1  # type: ignore[union-attr]
                break
        assert ax.limit("llm").statistics().in_use == 0  # type: ignore[union-attr]
        reply = await asyncio.wait_for(llm.chat("next"), 5)  # the one slot is free again
    assert "you said 'next'" in reply.text


def test_sync_stream_yields_pieces_when_called_from_sync_code(server: MockLLMServer) -> None:
    with LLM("mock-llm", base_url=server.url) as llm:
        pieces = list(llm.stream("from sync code"))
        reply = llm.chat("from sync code")
        for _ in llm.stream("stopped early"):
            break
        assert llm.chat("still works").text
    assert "".join(pieces) == reply.text
    assert server.stats().in_flight == 0


async def test_mock_stream_uses_openai_chunk_format_when_raw(server: MockLLMServer) -> None:
    body = {
        "model": "mock-llm",
        "messages": [{"role": "user", "content": "raw"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{server.url}/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 1


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def test_sse_parser_joins_data_lines_when_event_spans_several() -> None:
    lines = _lines(
        ": a comment",
        "event: message",
        "data: first",
        "data:second",
        "",
        "",
        "id: 7",
        "data: {}",
        "",
        "data: tail without blank line",
    )
    assert [d async for d in iter_sse_data(lines)] == [
        "first\nsecond",
        "{}",
        "tail without blank line",
    ]
