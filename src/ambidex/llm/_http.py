"""HTTP plumbing: base URLs, API keys, Retry-After, backoff, one httpx pool per event loop."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import math
import os
import socket
import ssl
import threading
import weakref
from collections.abc import AsyncGenerator, Callable

import httpx

from ambidex._urls import checked_http_url, is_loopback_host
from ambidex.llm._errors import LLMConfigError, LLMConnectionError

__all__ = [
    "DEFAULT_BASE_URL",
    "MOCK_LLM_PORT",
    "MOCK_LLM_URL",
    "SHARD_REQUESTS",
    "LoopPool",
    "LoopPools",
    "connection_error",
    "make_headers",
    "parse_retry_after",
    "resolve_api_key",
    "resolve_base_url",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"

#: The port ``ambidex mock-llm`` listens on by default (``ambidex serve`` has 8000).
MOCK_LLM_PORT = 8001
#: The ``base_url`` of ``ambidex mock-llm`` on its default port.
MOCK_LLM_URL = f"http://127.0.0.1:{MOCK_LLM_PORT}/v1"

#: How long closing another loop's pool may take before it is dropped.
_CLOSE_OTHER_LOOP_S = 5.0


def resolve_base_url(base_url: str | None) -> str:
    """``base_url``, else ``OPENAI_BASE_URL``, else OpenAI's; checked, without a trailing ``/``.

    Raises:
        LLMConfigError: when it is not an absolute http(s) URL with a host.
    """
    source = "base_url"
    if base_url is None:
        env = os.environ.get("OPENAI_BASE_URL", "").strip()
        if env:
            base_url, source = env, "OPENAI_BASE_URL"
        else:
            base_url = DEFAULT_BASE_URL
    example = f"expected e.g. '{MOCK_LLM_URL}' or 'https://api.openai.com/v1'"
    return checked_http_url(base_url, f"{source}={base_url!r}", example, LLMConfigError)


def resolve_api_key(api_key: str | None, base_url: str) -> str | None:
    """``api_key``, else ``OPENAI_API_KEY``; None means no Authorization header.

    A loopback server may be used without a key. ``api_key=""`` says
    explicitly that the server needs none.

    Raises:
        LLMConfigError: when there is no key and the server is not on loopback.
    """
    if api_key is None:
        api_key = os.environ.get("OPENAI_API_KEY") or None
        source = "OPENAI_API_KEY"
        if api_key is None and not is_loopback_host(httpx.URL(base_url).host):
            local = (
                f"; or, for a local mock LLM, run `ambidex mock-llm` (it serves "
                f"{MOCK_LLM_URL}) and set OPENAI_BASE_URL={MOCK_LLM_URL}"
                if base_url == DEFAULT_BASE_URL
                else ""
            )
            raise LLMConfigError(
                f"no API key for {base_url}: set OPENAI_API_KEY or pass api_key=... "
                f"(api_key='' sends none, for a server that needs no key){local}"
            )
    else:
        source = "api_key"
    if api_key and not (api_key.isascii() and api_key.isprintable() and " " not in api_key):
        # Do not show the key: say what is wrong with it.
        raise LLMConfigError(
            f"{source} contains spaces, control or non-ASCII characters (a trailing newline?); "
            "an API key is a single printable ASCII word"
        )
    return api_key or None


def parse_retry_after(headers: httpx.Headers, now: dt.datetime | None = None) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, else ``Retry-After``.

    ``Retry-After`` may be a number of seconds or an HTTP date. Returns None
    when neither header is present or readable.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())


def connection_error(
    exc: httpx.TransportError, base_url: str, attempts: int, where: str = ""
) -> LLMConnectionError:
    """An ``LLMConnectionError`` that says what failed: refused, unknown host, dropped."""
    cause: BaseException | None = exc
    reason = str(exc) or type(exc).__name__
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            reason = "connection refused; is the server running and is the port right?"
            break
        if isinstance(cause, socket.gaierror):
            reason = f"cannot resolve the host name ({cause.strerror or cause})"
            break
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        reason = f"the connection broke: {exc}"
    tries = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
    return LLMConnectionError(f"could not reach {base_url}{where}: {reason}{tries}")


_ssl_lock = threading.Lock()
_ssl_context: ssl.SSLContext | None = None


def _default_ssl_context() -> ssl.SSLContext:
    """One verifying SSL context for every pool (building one costs ~20 ms)."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = ssl.create_default_context()
        return _ssl_context


def _start(agen: AsyncGenerator[None, None]) -> None:
    """Run ``agen`` to its first ``yield`` now, on the running loop's thread.

    Its first iteration registers it with the running loop (the loop's
    async-generator hooks), so ``loop.shutdown_asyncgens()`` will close it.
    """
    step = agen.asend(None)
    try:
        step.send(None)
    except StopIteration:
        return
    step.close()  # pragma: no cover - the generator awaited before its first yield
    raise RuntimeError("the pool closer must yield before awaiting anything")


async def _close_generator(agen: AsyncGenerator[None, None]) -> None:
    await agen.aclose()


#: Requests one ``httpx.AsyncClient`` carries at once before another is opened.
SHARD_REQUESTS = 4


class _Shard:
    __slots__ = ("client", "in_flight")

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.in_flight = 0


class LoopPool:
    """The connections of one event loop: httpx clients carrying up to 4 requests each.

    httpcore 1.0's connection pool does work proportional to the square of
    its connection count on every request it starts and every response it
    closes (encode/httpcore#1035): at 256 connections that is ~65,000 checks
    per request, tens of milliseconds of CPU. Spreading requests over clients
    of at most ``SHARD_REQUESTS`` connections keeps that cost flat. Only the
    loop's own thread touches a ``LoopPool``, so it needs no lock.
    """

    def __init__(self, new_client: Callable[[], httpx.AsyncClient]) -> None:
        self._new_client = new_client
        self.shards: list[_Shard] = []

    def checkout(self) -> _Shard:
        """A client with room for one more request; give it back with ``checkin``."""
        for shard in self.shards:
            if shard.in_flight < SHARD_REQUESTS:
                break
        else:
            shard = _Shard(self._new_client())
            self.shards.append(shard)
        shard.in_flight += 1
        return shard

    @staticmethod
    def checkin(shard: _Shard) -> None:
        """The request that checked ``shard`` out is done with it."""
        shard.in_flight -= 1

    async def aclose(self) -> None:
        """Close every client of this loop."""
        shards, self.shards = self.shards, []
        for shard in shards:
            await shard.client.aclose()


class LoopPools:
    """One ``LoopPool`` per event loop: an httpx client must not cross loops.

    The runtime's loop thread (the sync face) and each user loop get their own
    pool, created on first use there. Each pool is tied to its loop by a small
    async generator started on that loop, so the loop's
    ``shutdown_asyncgens()`` (run by ``asyncio.run``, ``asyncio.Runner`` and
    ambidex's loop thread before they close a loop) closes the pool: a client
    used across several ``asyncio.run`` calls leaves no open connections
    behind. Connection counts are not capped here: ambidex's ``llm`` limit
    bounds how many requests run at once.
    """

    def __init__(self, headers: dict[str, str], timeout_s: float | None) -> None:
        self._headers = headers
        self._timeout = httpx.Timeout(timeout_s)
        self._lock = threading.Lock()
        self._pools: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[LoopPool, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()

    def _new_client(self) -> httpx.AsyncClient:
        # No connection caps: with caps, httpcore queues requests in the pool, where
        # its bookkeeping grows with the queue too; our limits bound concurrency.
        return httpx.AsyncClient(
            headers=self._headers,
            timeout=self._timeout,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
            verify=_default_ssl_context(),
            follow_redirects=False,
        )

    async def _closer(
        self, loop: asyncio.AbstractEventLoop, pool: LoopPool
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                entry = self._pools.get(loop)
                if entry is not None and entry[0] is pool:
                    del self._pools[loop]
            await pool.aclose()

    def get(self) -> LoopPool:
        """The pool of the running loop, created on first use."""
        loop = asyncio.get_running_loop()
        entry = self._pools.get(loop)
        if entry is not None:
            return entry[0]
        with self._lock:
            for old in [lp for lp in self._pools if lp.is_closed()]:
                del self._pools[old]
            entry = self._pools.get(loop)
            if entry is None:
                pool = LoopPool(self._new_client)
                closer = self._closer(loop, pool)
                _start(closer)
                entry = self._pools[loop] = (pool, closer)
            return entry[0]

    def __len__(self) -> int:
        with self._lock:
            return len(self._pools)

    async def aclose(self) -> None:
        """Close every pool: this loop's here, a running other loop's on that loop.

        A pool whose loop is stopped or closed without ``shutdown_asyncgens``
        cannot be closed properly any more; it is dropped.
        """
        current = asyncio.get_running_loop()
        with self._lock:
            pools = list(self._pools.items())
            self._pools.clear()
        for loop, (_, closer) in pools:
            if loop is current:
                await closer.aclose()
            elif loop.is_running() and not loop.is_closed():
                closing = _close_generator(closer)
                try:
                    done = asyncio.run_coroutine_threadsafe(closing, loop)
                except RuntimeError:  # that loop closed meanwhile
                    closing.close()
                    continue
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.wrap_future(done), _CLOSE_OTHER_LOOP_S)


def make_headers(api_key: str | None, user_agent: str) -> dict[str, str]:
    """Request headers; the key only ever goes into ``Authorization``."""
    headers = {"user-agent": user_agent, "accept": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers
