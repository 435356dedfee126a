"""``ambidex mock-llm``: a default port of its own, and the hint that names it."""

from __future__ import annotations

import inspect
import re

import pytest

from ambidex.cli._llm import mock_llm
from ambidex.cli._serve import serve
from ambidex.llm import MOCK_LLM_PORT, AsyncLLM, LLMConfigError


def _default(command: object, name: str) -> object:
    return inspect.signature(command).parameters[name].default  # type: ignore[arg-type]


def test_mock_llm_and_serve_listen_on_different_ports_by_default() -> None:
    assert _default(mock_llm, "port") == MOCK_LLM_PORT == 8001
    assert _default(serve, "port") == 8000


def test_no_api_key_for_openai_says_how_to_start_the_mock_llm_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(LLMConfigError) as info:
        AsyncLLM("gpt-4o-mini")
    message = str(info.value)
    assert "\n" not in message
    assert "run `ambidex mock-llm`" in message
    assert "OPENAI_BASE_URL=http://127.0.0.1:8001/v1" in message
    # another server than OpenAI's: the key is what is missing, no mock is suggested
    url = "https://llm.example/v1"
    with pytest.raises(LLMConfigError, match=re.escape(f"no API key for {url}")) as other:
        AsyncLLM("m", base_url=url)
    assert "mock-llm" not in str(other.value)
