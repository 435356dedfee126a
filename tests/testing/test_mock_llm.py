"""``ax.testing.mock_llm``: a real mock server for a block, scripted, reached by a real client."""

from __future__ import annotations

import os
import time

import pytest

import ambidex as ax
from ambidex.llm import LLM, AsyncLLM, LLMHTTPError


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The block sets these; the test starts without a developer's real ones."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def test_mock_llm_answers_a_sync_client_with_scripted_replies() -> None:
    with ax.testing.mock_llm() as server:
        server.reply_next("forty-two", "forty-three")
        llm = LLM("mock-llm", base_url=server.url)
        assert llm.complete("the answer?") == "forty-two"
        assert llm.complete("and then?") == "forty-three"
        # The script is spent: the deterministic mock reply again.
        assert "you said 'and now?'" in llm.complete("and now?")
        bodies = server.received()
    assert [body["messages"][-1]["content"] for body in bodies] == [
        "the answer?",
        "and then?",
        "and now?",
    ]


def test_mock_llm_points_openai_env_at_itself_inside_the_block() -> None:
    with ax.testing.mock_llm() as server:
        assert os.environ["OPENAI_BASE_URL"] == server.url
        server.reply_next("from the environment")
        # Code under test that builds its own client, with no base_url, reaches the mock.
        assert LLM("gpt-4o-mini").complete("hi") == "from the environment"
    assert "OPENAI_BASE_URL" not in os.environ
    assert "OPENAI_API_KEY" not in os.environ


def test_mock_llm_leaves_env_alone_when_env_is_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    with ax.testing.mock_llm(env=False) as server:
        assert os.environ["OPENAI_BASE_URL"] == "http://127.0.0.1:9/v1"
        assert server.stats().requests == 0
    assert os.environ["OPENAI_BASE_URL"] == "http://127.0.0.1:9/v1"


async def test_mock_llm_scripted_failures_are_retried_on_the_fake_clock() -> None:
    async with ax.testing.mock_llm() as server:
        server.fail_next(2, status=503)
        server.fail_next(1, status=429, retry_after_s=30)
        server.reply_next("at last")
        with ax.testing.FakeClock() as clock:
            start = time.perf_counter()
            async with AsyncLLM("mock-llm", backoff_s=5, max_backoff_s=60) as llm:
                reply = await llm.chat("hi")
                assert llm.usage.retries == 3
            wall_s = time.perf_counter() - start
        stats = server.stats()
    assert reply.text == "at last"
    assert (stats.requests, stats.errors_other, stats.errors_429) == (4, 2, 1)
    # Two backoffs of up to 5 and 10 s, then the server's Retry-After of 30 s,
    # all in virtual time: the test takes milliseconds.
    assert 30 <= clock.elapsed_s <= 45
    assert wall_s < 2


async def test_mock_llm_gives_up_like_a_real_server_when_failures_outlast_retries() -> None:
    async with ax.testing.mock_llm() as server:
        server.fail_next(5, status=500)
        with ax.testing.FakeClock():
            async with AsyncLLM("mock-llm", max_retries=2) as llm:
                with pytest.raises(LLMHTTPError, match="gave up after 3 attempts"):
                    await llm.chat("hi")
        assert server.stats().errors_500 == 3


def test_mock_llm_refuses_a_bad_rate_before_serving() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        ax.testing.mock_llm(error_rate=2.0)
