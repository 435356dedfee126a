"""MockLLMServer: the mock OpenAI-compatible server in a background thread, for tests.

It is the same application ``ambidex mock-llm`` serves, run by uvicorn on a
free loopback port in a thread of its own (with its own event loop), so it
answers while the test's code blocks or awaits. FastAPI and uvicorn are
imported only when a server starts.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ambidex.runtime import to_thread

if TYPE_CHECKING:
    import uvicorn

    from ambidex.llm._mockapp import MockState, MockStats

__all__ = ["MockLLMServer", "bind_socket"]

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one).

    Raises:
        OSError: when the address cannot be bound (in use, not an address of this machine).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def uvicorn_server(app: Any, log_config: bool) -> uvicorn.Server:
    """A uvicorn server for ``app``: no access log, no lifespan, no websockets."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=2,
        backlog=2048,
        log_config=LOGGING_CONFIG if log_config else None,
    )
    return uvicorn.Server(config)


class MockLLMServer:
    """A real OpenAI-compatible HTTP server on a free loopback port, for your tests.

    ::

        with MockLLMServer(latency_ms=50, error_rate=0.1, seed=1) as server:
            llm = LLM("mock-llm", base_url=server.url)
            ...
            server.stats().requests

    Use it with ``with`` or ``async with`` (which starts and stops it without
    blocking the loop). Stopping it joins its thread.

    Args:
        latency_ms: the least time a request takes.
        jitter_ms: extra latency per request, uniform in [0, jitter_ms].
        error_rate: fraction of requests answered HTTP 500.
        rate_429: fraction of requests answered HTTP 429 with ``Retry-After``.
        seed: seed of the random jitter and faults.
        port: the port (0: a free one).
        retry_after_s: the ``Retry-After`` of injected 429s.

    Raises:
        ValueError: for a bad rate or latency.
    """

    def __init__(
        self,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        error_rate: float = 0.0,
        rate_429: float = 0.0,
        seed: int = 0,
        port: int = 0,
        *,
        retry_after_s: float = 1.0,
    ) -> None:
        from ambidex.llm._mockapp import MockConfig, MockState

        self.config = MockConfig(
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            error_rate=error_rate,
            rate_429=rate_429,
            retry_after_s=retry_after_s,
            seed=seed,
        )
        self._state: MockState = MockState(self.config)
        self._port = port
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._errors: list[BaseException] = []

    @property
    def port(self) -> int:
        """The port it listens on.

        Raises:
            RuntimeError: when the server is not running.
        """
        if self._sock is None:
            raise RuntimeError("the MockLLMServer is not running: use it in a with block")
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        """The ``base_url`` for a client: ``http://127.0.0.1:<port>/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> MockLLMServer:
        """Start serving; return once it accepts connections.

        Raises:
            RuntimeError: when it is already running or does not start within 10 s.
            OSError: when the port cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("this MockLLMServer is already running")
        from ambidex.llm._mockapp import create_app

        self._sock = bind_socket("127.0.0.1", self._port)
        self._server = server = uvicorn_server(create_app(self._state), log_config=False)
        self._errors = []
        self._thread = threading.Thread(
            target=self._serve, name=f"mock-llm-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the mock LLM server did not start: {self._errors or 'timeout'}"
                )
            time.sleep(0.002)
        return self

    def _serve(self) -> None:
        assert self._server is not None
        assert self._sock is not None
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # reported by start()
            self._errors.append(exc)

    def stop(self) -> None:
        """Stop serving and join the server's thread (in-flight requests get 2 s to finish)."""
        server, thread, sock = self._server, self._thread, self._sock
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(_STOP_TIMEOUT_S)
        if sock is not None:
            sock.close()
        self._server = self._thread = self._sock = None

    def stats(self) -> MockStats:
        """Counts so far: requests, completions, injected errors, peak concurrency..."""
        return self._state.stats()

    def reset(self) -> None:
        """Zero the statistics, drop scripted faults and replies, restart the random draws."""
        self._state.reset()

    def fail_next(
        self, count: int = 1, status: int = 500, retry_after_s: float | None = None
    ) -> None:
        """Answer the next ``count`` chat requests with HTTP ``status``.

        A 429 is sent at once with ``Retry-After`` (``retry_after_s``, default
        the server's); other statuses after the latency, with ``Retry-After``
        only if ``retry_after_s`` is given.

        Raises:
            ValueError: for a status outside 400-599 or a negative count.
        """
        self._state.fail_next(count, status, retry_after_s)

    def reply_next(self, *texts: str) -> None:
        """Answer the next chat completions with ``texts``, in order, instead of the mock reply.

        A scripted failure (``fail_next``) goes first: the reply waits for the
        next request that succeeds. Streamed requests get the text word by word.
        """
        self._state.reply_next(*texts)

    def received(self) -> list[dict[str, Any]]:
        """The JSON bodies of the chat requests received, oldest first (the last 1,000)."""
        return self._state.received()

    def __enter__(self) -> MockLLMServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> MockLLMServer:
        return await to_thread(self.start)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await to_thread(self.stop)

    def __repr__(self) -> str:
        where = self.url if self._sock is not None else "not running"
        return f"<MockLLMServer {where} {self.config}>"
