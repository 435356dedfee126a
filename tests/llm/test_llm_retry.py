"""Retries, backoff, Retry-After, timeouts and connection errors, against real servers."""

from __future__ import annotations

import datetime as dt
import random
import time

import httpx
import pytest
from _llm_support import unused_port

from ambidex.llm import (
    AsyncLLM,
    LLMConnectionError,
    LLMHTTPError,
    LLMTimeoutError,
    MockLLMServer,
)
from ambidex.llm._http import parse_retry_after
from ambidex.runtime import Backoff
from ambidex.testing import FakeClock


async def test_retry_succeeds_when_server_fails_twice_with_500(server: MockLLMServer) -> None:
    server.fail_next(2, status=500)
    async with AsyncLLM("mock-llm", base_url=server.url, backoff_s=0.01) as llm:
        reply = await llm.chat("hi")
        usage = llm.usage
    assert "you said 'hi'" in reply.text
    stats = server.stats()
    assert stats.requests == 3
    assert stats.errors_500 == 2
    assert usage.requests == 3
    assert usage.retries == 2


async def test_retry_waits_retry_after_when_server_answers_429(server: MockLLMServer) -> None:
    server.fail_next(1, status=429, retry_after_s=1)
    with FakeClock() as clock:
        async with AsyncLLM("mock-llm", base_url=server.url, backoff_s=0.01) as llm:
            await llm.chat("hi")
    # The wait is the longer of the backoff (at most 0.01 s) and the Retry-After.
    assert clock.elapsed_s == 1.0
    stats = server.stats()
    assert stats.requests == 2
    assert stats.errors_429 == 1


async def test_gives_up_after_max_retries_when_server_keeps_failing(
    server: MockLLMServer,
) -> None:
    server.fail_next(10, status=503)
    async with AsyncLLM("mock-llm", base_url=server.url, max_retries=2, backoff_s=0.01) as llm:
        with pytest.raises(LLMHTTPError, match="gave up after 3 attempts") as info:
            await llm.chat("hi")
        assert llm.usage.retries == 2
    assert info.value.status == 503
    assert info.value.attempts == 3
    assert info.value.request_id == "req-mock-3"
    assert server.stats().requests == 3


async def test_client_error_not_retried_when_status_is_400(server: MockLLMServer) -> None:
    server.fail_next(1, status=400)
    async with AsyncLLM("mock-llm", base_url=server.url, backoff_s=0.01) as llm:
        with pytest.raises(LLMHTTPError):
            await llm.chat("hi")
    assert server.stats().requests == 1


async def test_retry_after_longer_than_cap_ends_retries_when_server_asks(
    server: MockLLMServer,
) -> None:
    server.fail_next(1, status=429, retry_after_s=3600)
    async with AsyncLLM("mock-llm", base_url=server.url) as llm:
        start = time.monotonic()
        with pytest.raises(LLMHTTPError, match="retry after 3600 s, longer than") as info:
            await llm.chat("hi")
    assert time.monotonic() - start < 1.0
    assert info.value.status == 429
    assert server.stats().requests == 1


async def test_timeout_raises_llm_timeout_error_when_server_is_slow() -> None:
    async with MockLLMServer(latency_ms=600) as server:
        llm = AsyncLLM(
            "mock-llm", base_url=server.url, timeout_s=0.15, max_retries=1, backoff_s=0.01
        )
        async with llm:
            start = time.monotonic()
            with pytest.raises(LLMTimeoutError, match=r"timeout_s=0.15 s \(gave up after 2"):
                await llm.chat("hi")
            elapsed = time.monotonic() - start
        assert server.stats().requests == 2
    assert 0.3 <= elapsed < 0.55  # two attempts of 0.15 s, not the server's 0.6 s
    assert isinstance(LLMTimeoutError("x"), TimeoutError)


async def test_connection_refused_raises_clear_error_when_nothing_listens() -> None:
    url = f"http://127.0.0.1:{unused_port()}/v1"
    async with AsyncLLM("mock-llm", base_url=url, max_retries=1, backoff_s=0.01) as llm:
        with pytest.raises(LLMConnectionError) as info:
            await llm.chat("hi")
        assert llm.usage.requests == 2
    message = str(info.value)
    assert f"could not reach {url}: connection refused" in message
    assert "is the server running" in message
    assert "gave up after 2 attempts" in message
    assert isinstance(info.value, ConnectionError)


async def test_injected_faults_repeat_when_seed_is_the_same() -> None:
    def statuses(server: MockLLMServer) -> list[int]:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(base_url=server.url) as client:
            return [client.post("/chat/completions", json=body).status_code for _ in range(30)]

    with MockLLMServer(error_rate=0.3, rate_429=0.2, seed=11, retry_after_s=0) as server:
        first = statuses(server)
        server.reset()
        again = statuses(server)
        stats = server.stats()
    assert first == again
    assert {200, 429, 500} <= set(first)
    assert stats.errors_500 == first.count(500)
    assert stats.errors_429 == first.count(429)


def test_parse_retry_after_reads_seconds_dates_and_milliseconds() -> None:
    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after(httpx.Headers({"retry-after": "3"})) == 3.0
    assert parse_retry_after(httpx.Headers({"retry-after": "0.25"})) == 0.25
    assert parse_retry_after(httpx.Headers({"retry-after": "-4"})) == 0.0
    date = "Thu, 01 Jan 2026 12:00:07 GMT"
    assert parse_retry_after(httpx.Headers({"retry-after": date}), now=now) == 7.0
    past = "Thu, 01 Jan 2026 11:00:00 GMT"
    assert parse_retry_after(httpx.Headers({"retry-after": past}), now=now) == 0.0
    both = httpx.Headers({"retry-after": "3", "retry-after-ms": "1500"})
    assert parse_retry_after(both) == 1.5
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx.Headers({})) is None


def test_backoff_delay_grows_with_full_jitter_when_retries_repeat() -> None:
    rng = random.Random(1)
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 8.0), (201, 8.0)]:
        delays = [Backoff(0.5, 8.0).delay_s(retry, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # spread over the whole range
