"""``mock_llm()``: the mock OpenAI-compatible server, serving on loopback for one test."""

from __future__ import annotations

import os
from types import TracebackType

from ambidex.llm import MockLLMServer
from ambidex.runtime import to_thread

__all__ = ["MockLLM", "mock_llm"]

# What ``env=True`` points at the mock while it serves (OpenAI's own variable names,
# which ambidex's client and the OpenAI SDK both read).
_ENV_KEYS = ("OPENAI_BASE_URL", "OPENAI_API_KEY")
_MOCK_API_KEY = "sk-mock"


class MockLLM:
    """A started ``MockLLMServer`` for a ``with`` (or ``async with``) block; see ``mock_llm``."""

    def __init__(self, server: MockLLMServer, env: bool) -> None:
        self.server = server
        self._env = env
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> MockLLMServer:
        self.server.start()
        if self._env:
            self._saved = {key: os.environ.get(key) for key in _ENV_KEYS}
            os.environ["OPENAI_BASE_URL"] = self.server.url
            os.environ["OPENAI_API_KEY"] = _MOCK_API_KEY
        return self.server

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.server.stop()
        finally:
            self._restore_env()

    def _restore_env(self) -> None:
        saved, self._saved = self._saved, {}
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    async def __aenter__(self) -> MockLLMServer:
        # Starting waits for uvicorn (tens of ms): not on the test's loop.
        return await to_thread(self.__enter__)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await to_thread(self.__exit__, et, e, tb)


def mock_llm(
    *,
    latency_ms: float = 0.0,
    jitter_ms: float = 0.0,
    error_rate: float = 0.0,
    rate_429: float = 0.0,
    retry_after_s: float = 1.0,
    seed: int = 0,
    env: bool = True,
) -> MockLLM:
    """Serve the mock LLM on a free loopback port for a ``with`` or ``async with`` block.

    ::

        with ax.testing.mock_llm() as llm:
            llm.reply_next("42")                   # script the next reply
            llm.fail_next(2, status=503)           # ...after two failures
            assert LLM("mock-llm").complete("?") == "42"
            assert llm.stats().requests == 3

    The block gets the running ``ambidex.llm.MockLLMServer``: ``url`` (a
    ``base_url``), ``reply_next``, ``fail_next``, ``received``, ``stats``,
    ``reset``. Its replies are deterministic (the same request, the same reply).

    Args:
        latency_ms: the least time a request takes.
        jitter_ms: extra latency per request, uniform in [0, jitter_ms].
        error_rate: fraction of requests answered HTTP 500.
        rate_429: fraction of requests answered HTTP 429 with ``Retry-After``.
        retry_after_s: the ``Retry-After`` of those 429s.
        seed: seed of the random jitter and faults.
        env: inside the block, set ``OPENAI_BASE_URL`` to the mock and
            ``OPENAI_API_KEY`` to a dummy key (restored after), so code under
            test that builds its own client talks to the mock.

    Raises:
        ValueError: for a bad rate or latency.
    """
    server = MockLLMServer(
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        error_rate=error_rate,
        rate_429=rate_429,
        seed=seed,
        retry_after_s=retry_after_s,
    )
    return MockLLM(server, env)
