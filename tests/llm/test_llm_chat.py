"""AsyncLLM against the real mock server: replies, batches, usage, configuration errors."""

from __future__ import annotations

import re
from typing import Any

import pytest
from _llm_support import html_server

from ambidex.llm import (
    AsyncLLM,
    ChatResponse,
    LLMConfigError,
    LLMError,
    LLMHTTPError,
    LLMResponseError,
    MockLLMServer,
)


async def test_chat_returns_mock_reply_when_prompt_is_a_string(server: MockLLMServer) -> None:
    async with AsyncLLM("mock-llm", base_url=server.url) as llm:
        reply = await llm.chat("hello there, mock")
    assert isinstance(reply, ChatResponse)
    assert "you said 'hello there, mock'" in reply.text
    assert reply.model == "mock-llm"
    assert reply.finish_reason == "stop"
    assert reply.cached is False
    assert reply.usage.prompt_tokens == 3
    assert reply.usage.completion_tokens == len(reply.text.split())
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.raw["object"] == "chat.completion"
    assert server.stats().completions == 1


async def test_chat_is_deterministic_when_request_repeats(server: MockLLMServer) -> None:
    async with AsyncLLM("mock-llm", base_url=server.url) as llm:
        first = await llm.complete("the same question")
        second = await llm.complete("the same question")
        other = await llm.complete("another question")
        other_model = await llm.complete("the same question", model="mock-llm-large")
    assert first == second
    assert other != first
    assert other_model != first
    assert server.stats().requests == 4  # no cache: every call was sent


async def test_chat_sends_messages_and_params_when_given(server: MockLLMServer) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "count to ten please"},
    ]
    async with AsyncLLM("mock-llm", base_url=server.url, temperature=0) as llm:
        reply = await llm.chat(messages, max_tokens=3)
        full = await llm.chat(messages, max_tokens=None)  # None: not sent
    assert reply.finish_reason == "length"
    assert reply.usage.completion_tokens == 3
    assert reply.text.split() == full.text.split()[:3]
    assert full.finish_reason == "stop"
    assert reply.usage.prompt_tokens == 6  # whitespace tokens of both messages


async def test_batch_keeps_input_order_when_replies_finish_out_of_order() -> None:
    prompts = [f"question number {i}" for i in range(24)]
    async with (
        MockLLMServer(latency_ms=5, jitter_ms=40, seed=3) as server,
        AsyncLLM("mock-llm", base_url=server.url) as llm,
    ):
        replies = await llm.batch(prompts)
        peak = server.stats().peak_in_flight
    assert [r.text.split("you said ")[1].split("'")[1] for r in replies] == prompts
    assert peak > 1  # they really ran at once


async def test_batch_returns_errors_in_place_when_return_exceptions(
    server: MockLLMServer,
) -> None:
    server.fail_next(1, status=400)
    prompts = [f"item {i}" for i in range(6)]
    async with AsyncLLM("mock-llm", base_url=server.url) as llm:
        results = await llm.batch(prompts, return_exceptions=True, max_in_flight=1)
    assert isinstance(results[0], LLMHTTPError)
    assert results[0].status == 400
    for prompt, result in zip(prompts[1:], results[1:], strict=True):
        assert isinstance(result, ChatResponse)
        assert f"'{prompt}'" in result.text


async def test_batch_raises_first_error_when_errors_not_returned(server: MockLLMServer) -> None:
    server.fail_next(1, status=400)
    async with AsyncLLM("mock-llm", base_url=server.url) as llm:
        with pytest.raises(LLMHTTPError, match="HTTP 400"):
            await llm.batch(["a", "b", "c"], max_in_flight=1)


async def test_batch_names_the_bad_item_when_messages_are_malformed(
    server: MockLLMServer,
) -> None:
    async with AsyncLLM("mock-llm", base_url=server.url) as llm:
        with pytest.raises(TypeError, match=r"batch request 1: messages\[0\] must be a dict"):
            await llm.batch(["fine", [{"content": "no role"}]])
    assert server.stats().requests == 0


async def test_usage_totals_add_up_when_several_calls_made(server: MockLLMServer) -> None:
    async with AsyncLLM("mock-llm", base_url=server.url) as llm:
        replies = [await llm.chat("one two three")]
        replies += await llm.batch(["four", "five six"])
        totals = llm.usage
    assert totals.requests == 3
    assert totals.retries == 0
    assert totals.cache_hits == 0
    assert totals.prompt_tokens == 3 + 1 + 2
    assert totals.completion_tokens == sum(r.usage.completion_tokens for r in replies)
    assert totals.total_tokens == totals.prompt_tokens + totals.completion_tokens
    assert totals.as_dict()["requests"] == 3


async def test_api_key_sent_as_bearer_and_never_shown_when_given(server: MockLLMServer) -> None:
    secret = "sk-test-0123456789"
    async with AsyncLLM("mock-llm", base_url=server.url, api_key=secret) as llm:
        await llm.chat("hi")
        assert secret not in repr(llm)
        assert secret not in str(vars(llm))
    async with AsyncLLM("mock-llm", base_url=server.url) as anonymous:
        await anonymous.chat("hi")
    assert server.stats().with_api_key == 1


async def test_env_settings_used_when_arguments_missing(
    server: MockLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    async with AsyncLLM("mock-llm") as llm:
        assert llm.base_url == server.url
        await llm.chat("hi")
    assert server.stats().with_api_key == 1


def test_missing_api_key_raises_config_error_when_server_not_on_loopback() -> None:
    with pytest.raises(LLMConfigError, match=re.escape("no API key for https://api.openai.com/v1")):
        AsyncLLM("gpt-4o-mini")
    with pytest.raises(LLMConfigError, match="OPENAI_API_KEY"):
        AsyncLLM("gpt-4o-mini", base_url="https://llm.example.com/v1")
    # api_key="" says the server needs none; loopback servers need none either.
    AsyncLLM("m", base_url="https://llm.example.com/v1", api_key="")
    AsyncLLM("m", base_url="http://localhost:9/v1")


def test_api_key_with_a_newline_refused_without_showing_it() -> None:
    with pytest.raises(LLMConfigError, match="trailing newline") as info:
        AsyncLLM("m", base_url="https://llm.example.com/v1", api_key="sk-secret\n")
    assert "sk-secret" not in str(info.value)


@pytest.mark.parametrize("bad", ["localhost:8000", "ftp://example.com/v1", "http://", "/v1"])
def test_bad_base_url_raises_config_error_when_not_http(bad: str) -> None:
    with pytest.raises(LLMConfigError, match="http") as info:
        AsyncLLM("m", base_url=bad, api_key="")
    assert isinstance(info.value, ValueError)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize(
    ("option", "value"),
    [("timeout_s", 0), ("max_retries", -1), ("backoff_s", -1.0), ("cache", "redis")],
)
def test_bad_option_raises_config_error_when_constructed(option: str, value: Any) -> None:
    with pytest.raises(LLMConfigError, match=option.split("_")[0]):
        AsyncLLM("m", base_url="http://127.0.0.1:9/v1", **{option: value})


async def test_messages_of_wrong_type_raise_type_error_when_called(server: MockLLMServer) -> None:
    async with AsyncLLM("mock-llm", base_url=server.url) as llm:
        with pytest.raises(TypeError, match="messages must be a str or a list"):
            await llm.chat({"role": "user", "content": "a dict, not a list"})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="messages is empty"):
            await llm.chat([])
        with pytest.raises(TypeError, match="stream"):
            await llm.chat("hi", stream=True)
    assert server.stats().requests == 0


async def test_closed_client_raises_llm_error_when_used(server: MockLLMServer) -> None:
    llm = AsyncLLM("mock-llm", base_url=server.url)
    await llm.chat("hi")
    await llm.aclose()
    await llm.aclose()  # twice is fine
    assert llm.closed
    with pytest.raises(LLMError, match="is closed"):
        await llm.chat("hi")


async def test_http_error_carries_status_request_id_and_body_when_server_refuses(
    server: MockLLMServer,
) -> None:
    server.fail_next(1, status=400)
    async with AsyncLLM("mock-llm", base_url=server.url) as llm:
        with pytest.raises(LLMHTTPError) as info:
            await llm.chat("hi")
    error = info.value
    assert error.status == 400
    assert error.request_id == "req-mock-1"
    assert "injected failure" in error.body
    assert error.attempts == 1
    assert re.search(r"answered HTTP 400: injected failure .*request id req-mock-1", str(error))


async def test_wrong_path_names_base_url_when_server_answers_404(server: MockLLMServer) -> None:
    root = server.url.removesuffix("/v1")
    async with AsyncLLM("mock-llm", base_url=root) as llm:
        with pytest.raises(LLMHTTPError, match=r"HTTP 404.*is base_url right\?") as info:
            await llm.chat("hi")
    assert info.value.status == 404


async def test_malformed_response_raises_response_error_when_server_is_not_an_api() -> None:
    with html_server() as url:
        async with AsyncLLM("m", base_url=url) as llm:
            with pytest.raises(LLMResponseError, match=r"text/html, not JSON.*is base_url"):
                await llm.chat("hi")
