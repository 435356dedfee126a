"""The mock LLM server in the foreground: what ``ambidex mock-llm`` runs.

``MockLLMServer`` serves from a thread of a test on loopback; this serves from
the calling thread, on any address, until Ctrl-C, with uvicorn's access log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from ambidex.llm._mockapp import MockConfig, MockState, create_app
from ambidex.llm._mockserver import bind_socket, uvicorn_server

__all__ = ["serve_mock_llm"]


def serve_mock_llm(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    latency_ms: float = 0.0,
    jitter_ms: float = 0.0,
    error_rate: float = 0.0,
    rate_429: float = 0.0,
    retry_after_s: float = 1.0,
    seed: int = 0,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Serve the mock chat API on ``host:port`` in this thread until Ctrl-C.

    The options are ``MockLLMServer``'s. ``on_listening`` is called with the
    bound port (``port=0`` picks a free one) once the socket listens, before the
    first request is served. Ctrl-C returns normally.

    Raises:
        ValueError: a bad rate or latency (nothing has listened yet).
        OSError: the address cannot be bound.
    """
    config = MockConfig(
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        error_rate=error_rate,
        rate_429=rate_429,
        retry_after_s=retry_after_s,
        seed=seed,
    )
    sock = bind_socket(host, port)
    try:
        if on_listening is not None:
            on_listening(int(sock.getsockname()[1]))
        server = uvicorn_server(create_app(MockState(config)), log_config=True)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it is meant to stop
            server.run(sockets=[sock])
    finally:
        sock.close()
