"""Chat completions from any OpenAI-compatible server, under ambidex's shared limits.

::

    from ambidex.llm import LLM, AsyncLLM

    llm = LLM("gpt-4o-mini", cache="memory")        # sync code, any thread
    llm.complete("Say hi")
    llm.batch(["a", "b", "c"])                       # concurrent, in input order

    async with AsyncLLM("gpt-4o-mini") as llm:      # async code, any loop
        reply = await llm.chat([{"role": "user", "content": "hi"}], temperature=0)
        async for piece in llm.stream("tell me a story"):
            print(piece, end="")

Every request holds the runtime's ``llm`` limit (16 at once unless you
declare ``ax.limits(llm=N)``), shared by all clients. ``MockLLMServer`` runs
a real OpenAI-compatible server on loopback for your tests. See docs/llm.md.
"""

from ambidex.llm._cache import MemoryCache, ResponseCache, SQLiteCache
from ambidex.llm._client import DEFAULT_LLM_CAPACITY, MAX_RETRY_AFTER_S, AsyncLLM
from ambidex.llm._errors import (
    CONFIG_STATUSES,
    LLMConfigError,
    LLMConnectionError,
    LLMError,
    LLMHTTPError,
    LLMResponseError,
    LLMTimeoutError,
)
from ambidex.llm._http import MOCK_LLM_PORT
from ambidex.llm._mockmain import serve_mock_llm
from ambidex.llm._mockserver import MockLLMServer
from ambidex.llm._sync import LLM
from ambidex.llm._types import ChatResponse, Messages, Usage, UsageTotals

__all__ = [
    "CONFIG_STATUSES",
    "DEFAULT_LLM_CAPACITY",
    "LLM",
    "MAX_RETRY_AFTER_S",
    "MOCK_LLM_PORT",
    "AsyncLLM",
    "ChatResponse",
    "LLMConfigError",
    "LLMConnectionError",
    "LLMError",
    "LLMHTTPError",
    "LLMResponseError",
    "LLMTimeoutError",
    "MemoryCache",
    "Messages",
    "MockLLMServer",
    "ResponseCache",
    "SQLiteCache",
    "Usage",
    "UsageTotals",
    "serve_mock_llm",
]
