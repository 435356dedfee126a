"""Fixtures of the LLM tests: a real mock server on loopback per module, reset per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ambidex.llm import MockLLMServer


@pytest.fixture(scope="module")
def module_server() -> Iterator[MockLLMServer]:
    """One mock server (no latency) for a test module; stopped after the module."""
    with MockLLMServer(seed=7) as server:
        yield server


@pytest.fixture
def server(module_server: MockLLMServer) -> MockLLMServer:
    """The module's mock server with fresh statistics and no scripted faults."""
    module_server.reset()
    return module_server


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not depend on (or send) a developer's real OpenAI settings."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
