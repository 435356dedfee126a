"""An LLM configuration that can never work fails at once: no retry of ambidex's tries again.

A missing API key, a bad base URL, 401, 403, 404: every attempt would fail the
same way, so a workflow node's ``retries``, an agent's or a marked function's
``retries`` and a job's retry policy all leave them alone. Attempts are counted
by a real HTTP server on loopback (the mock LLM server, told to answer 401),
and a 500 shows that the counting would see retries that did happen.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import ambidex as ax
from ambidex._job_model import RetryPolicy
from ambidex.llm import AsyncLLM, LLMConfigError, LLMHTTPError, MockLLMServer


@pytest.fixture
def server() -> Iterator[MockLLMServer]:
    with MockLLMServer() as mock:
        yield mock


def _ask(url: str) -> ax.Workflow:
    """A workflow of one node that asks the LLM at ``url`` once per attempt, with 2 retries."""

    async def ask() -> str:
        async with AsyncLLM("mock", base_url=url, max_retries=0) as llm:
            return (await llm.chat("hi")).text

    wf = ax.Workflow("ask")
    wf.node("ask", ask, retries=2)
    return wf


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_node_is_not_retried_when_the_llm_says_its_configuration_is_wrong(
    server: MockLLMServer, status: int
) -> None:
    server.fail_next(10, status=status)
    with pytest.raises(ax.WorkflowError) as info:
        _ask(server.url).run()
    assert isinstance(info.value.__cause__, LLMHTTPError)
    assert info.value.__cause__.status == status
    assert info.value.result.nodes["ask"].attempts == 1  # type: ignore[attr-defined]
    assert server.stats().requests == 1


def test_a_node_is_still_retried_after_a_server_error(server: MockLLMServer) -> None:
    server.fail_next(10, status=500)
    with pytest.raises(ax.WorkflowError) as info:
        _ask(server.url).run()
    assert info.value.result.nodes["ask"].attempts == 3  # type: ignore[attr-defined]
    assert server.stats().requests == 3


class _NoKeyAgent(ax.Agent[str, str]):
    """Sets up a client for a server that is not on loopback, without an API key."""

    async def setup(self) -> None:
        self.llm = AsyncLLM("gpt-4o-mini", base_url="https://llm.example.invalid/v1")

    async def run(self, input: str) -> str:
        return (await self.llm.chat(input)).text


def test_a_node_whose_agent_has_no_api_key_fails_at_the_first_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    wf = ax.Workflow("report")
    wf.node("report", _NoKeyAgent(), input="hi", retries=2)
    events: list[ax.WorkflowEvent] = []
    with pytest.raises(ax.WorkflowError, match="no API key") as info:
        wf.run(on_event=events.append)
    assert isinstance(info.value.__cause__, LLMConfigError)
    assert info.value.result.nodes["report"].attempts == 1  # type: ignore[attr-defined]
    assert [e for e in events if e.kind is ax.EventKind.RETRYING] == []


def test_a_marked_function_and_an_agent_are_not_retried_on_401(server: MockLLMServer) -> None:
    server.fail_next(10, status=401)

    @ax.io(retries=3)
    async def ask(prompt: str) -> str:
        async with AsyncLLM("mock", base_url=server.url) as llm:
            return (await llm.chat(prompt)).text

    class Asker(ax.Agent[str, str]):
        retries = 3

        async def run(self, input: str) -> str:
            return await ask.aio(input)

    with pytest.raises(LLMHTTPError):
        ask("hi")
    assert server.stats().requests == 1
    with pytest.raises(LLMHTTPError):
        Asker().run_sync("hi")
    assert server.stats().requests == 2


def test_a_job_retry_policy_leaves_configuration_errors_alone() -> None:
    policy = RetryPolicy(retries=3)
    url = "http://127.0.0.1:1/v1/chat/completions"
    assert not policy.matches(LLMHTTPError(401, "", None, url))
    assert not policy.matches(LLMConfigError("no API key"))
    assert policy.matches(LLMHTTPError(503, "", None, url))
    # even when retry_on names the type: another attempt cannot succeed
    assert not RetryPolicy(retries=3, on=("LLMHTTPError",)).matches(
        LLMHTTPError(404, "", None, url)
    )


def test_the_error_says_why_it_is_not_retried_and_survives_pickling() -> None:
    import pickle

    error = LLMHTTPError(401, '{"error": {"message": "bad key"}}', None, "http://x/v1")
    assert error.retryable is False
    assert pickle.loads(pickle.dumps(error)).retryable is False
    assert LLMHTTPError(429, "", None, "http://x/v1").retryable is True


class _BrokenRetryable(Exception):
    """A user's exception whose ``retryable`` is a property that raises."""

    @property
    def retryable(self) -> bool:
        raise RuntimeError("the retryable property broke")


def test_an_exception_whose_retryable_property_raises_is_retried_and_stays_the_error() -> None:
    """Before (review 16): asking ``retry_cannot_help`` raised the property's RuntimeError
    out of the retry loop: the node failed at once with "RuntimeError: the retryable
    property broke", its own error lost, its retries never made. An exception that cannot
    say it is not retryable has not said so: it is retried as any other."""
    calls: list[int] = []

    async def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise _BrokenRetryable("not yet")
        return len(calls)

    wf = ax.Workflow("broken-retryable")
    wf.node("n", flaky, retries=2)
    assert wf.run()["n"] == 3

    calls.clear()
    failing = ax.Workflow("broken-retryable-2")

    async def always() -> int:
        calls.append(1)
        raise _BrokenRetryable("boom")

    failing.node("n", always, retries=1)
    with pytest.raises(ax.WorkflowError, match="_BrokenRetryable: boom"):
        failing.run()
    assert len(calls) == 2
    assert RetryPolicy(retries=1).matches(_BrokenRetryable("x"))
