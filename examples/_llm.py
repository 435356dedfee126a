"""The LLM client of the examples: the server you configure, else ambidex's mock LLM.

With ``OPENAI_BASE_URL`` or ``OPENAI_API_KEY`` set, an example asks that server
(OpenAI's when only the key is set), as any program using ``AsyncLLM`` would.
With neither, as on a fresh machine, it starts ambidex's mock LLM on a free
loopback port for as long as it runs and says so in one line on stderr: the
examples run as written, and their replies are the mock's (deterministic, and
saying "mock reply"). ``ambidex mock-llm`` serves the same mock on port 8001
for any program: ``OPENAI_BASE_URL=http://127.0.0.1:8001/v1``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

from ambidex.llm import MOCK_LLM_PORT, AsyncLLM, MockLLMServer

__all__ = ["example_llm"]


def _configured() -> bool:
    return any(os.environ.get(name, "").strip() for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"))


@contextlib.asynccontextmanager
async def example_llm(**options: Any) -> AsyncIterator[AsyncLLM]:
    """An ``AsyncLLM`` for ``AMBIDEX_LLM_MODEL`` (default gpt-4o-mini), closed on exit.

    ``options`` are ``AsyncLLM``'s (``temperature=0``...).
    """
    model = os.environ.get("AMBIDEX_LLM_MODEL", "gpt-4o-mini")
    if _configured():
        async with AsyncLLM(model, **options) as llm:
            yield llm
        return
    async with MockLLMServer() as server:
        print(
            f"no OPENAI_BASE_URL or OPENAI_API_KEY set: this example asks ambidex's mock LLM "
            f"({server.url}, started for this run; `ambidex mock-llm` serves one on port "
            f"{MOCK_LLM_PORT})",
            file=sys.stderr,
            flush=True,
        )
        async with AsyncLLM(model, base_url=server.url, **options) as llm:
            yield llm
