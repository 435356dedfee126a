"""The mock OpenAI-compatible server's application (FastAPI): replies, faults, statistics.

Replies are deterministic: derived from a hash of the model and the messages,
so the same request always gets the same reply, and they echo the start of
the last user message. Models named ``mock-code...`` answer like a coding
assistant instead: the last ```python block of the conversation with one
numeric literal changed, as a full replacement (or, for ``mock-code-diff``, as
a SEARCH/REPLACE block). Latency jitter and injected faults come from a
``random.Random(seed)``, so a run with the same seed and the same order of
requests injects the same faults. A test may script the next replies
(``MockState.reply_next``) and faults (``fail_next``), and read back the
requests received. Tokens are counted by splitting on whitespace.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import math
import random
import re
import threading
import time
import tokenize
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

__all__ = ["MockConfig", "MockState", "MockStats", "create_app", "mock_code_reply", "mock_reply"]

MOCK_MODELS = ("mock-llm", "mock-llm-large", "mock-code", "mock-code-diff")

#: Models whose names start with this answer with code (see ``mock_code_reply``).
CODE_MODEL_PREFIX = "mock-code"

_RECEIVED_KEPT = 1000  # request bodies kept for MockState.received: a test looks at a few

_PYTHON_FENCE = re.compile(r"^```(?:python|py)[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_FACTORS = (0.5, 0.8, 0.9, 1.1, 1.25, 2.0)

_WORDS = (
    *("amber", "basil", "cedar", "delta", "ember", "fjord", "garnet", "harbor"),
    *("indigo", "juniper", "kestrel", "lumen", "meadow", "nectar", "onyx", "pebble"),
    *("quartz", "river", "sable", "thistle", "umber", "velvet", "willow", "yarrow"),
    *("zephyr", "acorn", "birch", "comet", "dune", "echo", "fern", "glade"),
)


@dataclass(frozen=True)
class MockConfig:
    """How the mock server behaves.

    Attributes:
        latency_ms: the least time a request takes (before the first byte of a stream).
        jitter_ms: extra latency, uniform in [0, jitter_ms], drawn per request.
        error_rate: fraction of requests answered HTTP 500 (after the latency).
        rate_429: fraction of requests answered HTTP 429 at once, with ``Retry-After``.
        retry_after_s: the ``Retry-After`` of those 429s (whole seconds are sent as
            an integer, as HTTP defines it; fractions as a decimal).
        seed: the seed of the random draws (jitter and faults).

    Raises:
        ValueError: for a negative latency or a rate outside [0, 1] (or summing past 1).
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    rate_429: float = 0.0
    retry_after_s: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("latency_ms", "jitter_ms", "retry_after_s"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("error_rate", "rate_429"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        if self.error_rate + self.rate_429 > 1:
            raise ValueError(
                f"error_rate + rate_429 must be at most 1, got {self.error_rate + self.rate_429:g}"
            )


@dataclass(frozen=True)
class MockStats:
    """What the mock server has seen since it started (or was reset)."""

    requests: int
    """Chat completion requests received."""
    completions: int
    """Requests answered with a completion (streamed or not)."""
    streams: int
    """Of those, streamed ones."""
    errors_500: int
    """HTTP 500s injected (``error_rate`` or ``fail_next``)."""
    errors_429: int
    """HTTP 429s injected (``rate_429`` or ``fail_next``)."""
    errors_other: int
    """Other statuses injected with ``fail_next``."""
    bad_requests: int
    """Requests refused as malformed (HTTP 400)."""
    in_flight: int
    """Requests being handled now."""
    peak_in_flight: int
    """The most requests handled at once."""
    with_api_key: int
    """Requests that carried an ``Authorization: Bearer`` header."""

    def as_dict(self) -> dict[str, int]:
        """The statistics as a plain dict (the ``GET /stats`` body)."""
        return asdict(self)


@dataclass(frozen=True)
class _Fault:
    status: int
    retry_after_s: float | None


class MockState:
    """Counters, the seeded random source, scripted faults and replies; safe across threads."""

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._scripted: deque[_Fault] = deque()
        self._replies: deque[str] = deque()
        self._received: deque[dict[str, Any]] = deque(maxlen=_RECEIVED_KEPT)
        self.reset()

    def reset(self) -> None:
        """Zero the statistics, drop scripted faults, restart the random draws from the seed."""
        with self._lock:
            self._rng = random.Random(self.config.seed)
            self._scripted.clear()
            self._replies.clear()
            self._received.clear()
            self._counts = dict.fromkeys(
                (
                    "requests",
                    "completions",
                    "streams",
                    "errors_500",
                    "errors_429",
                    "errors_other",
                    "bad_requests",
                    "with_api_key",
                    "peak_in_flight",
                ),
                0,
            )
            self._in_flight = 0
            self._serial = 0

    def fail_next(self, count: int, status: int = 500, retry_after_s: float | None = None) -> None:
        """Answer the next ``count`` chat requests with ``status``.

        A 429 is sent at once, other statuses after the latency.

        Raises:
            ValueError: for a status that is not an HTTP error (400-599) or a negative count.
        """
        if not 400 <= status <= 599 or count < 0:
            raise ValueError(f"fail_next needs count >= 0 and a status in 400-599, got {status}")
        if status == 429 and retry_after_s is None:
            retry_after_s = self.config.retry_after_s
        with self._lock:
            self._scripted.extend(_Fault(status, retry_after_s) for _ in range(count))

    def reply_next(self, *texts: str) -> None:
        """Answer the next chat completions with ``texts``, in order, instead of the mock reply."""
        if not all(isinstance(text, str) for text in texts):
            raise TypeError("reply_next takes the reply texts as strings")
        with self._lock:
            self._replies.extend(texts)

    def take_reply(self) -> str | None:
        """The next scripted reply (removed from the script), or None for the mock reply."""
        with self._lock:
            return self._replies.popleft() if self._replies else None

    def record(self, body: dict[str, Any]) -> None:
        """Keep a valid chat request's body for ``received``."""
        with self._lock:
            self._received.append(body)

    def received(self) -> list[dict[str, Any]]:
        """The bodies of the valid chat requests seen, oldest first (the last 1,000)."""
        with self._lock:
            return list(self._received)

    def begin(self, has_key: bool) -> int:
        """Count an arriving request; return its serial number."""
        with self._lock:
            self._serial += 1
            self._counts["requests"] += 1
            self._counts["with_api_key"] += has_key
            self._in_flight += 1
            self._counts["peak_in_flight"] = max(self._counts["peak_in_flight"], self._in_flight)
            return self._serial

    def end(self, outcome: str) -> None:
        """Count a finished request: ``completions``, ``streams``, ``errors_500``..."""
        with self._lock:
            self._in_flight -= 1
            if outcome == "streams":
                self._counts["completions"] += 1
            self._counts[outcome] += 1

    def draw(self) -> tuple[float, _Fault | None]:
        """This request's latency in seconds and its fault, if any."""
        config = self.config
        with self._lock:
            jitter = self._rng.uniform(0.0, config.jitter_ms) if config.jitter_ms else 0.0
            fault = self._scripted.popleft() if self._scripted else None
            if fault is None and (config.error_rate or config.rate_429):
                r = self._rng.random()
                if r < config.error_rate:
                    fault = _Fault(500, None)
                elif r < config.error_rate + config.rate_429:
                    fault = _Fault(429, config.retry_after_s)
        return (config.latency_ms + jitter) / 1000.0, fault

    def stats(self) -> MockStats:
        """A snapshot of the counters."""
        with self._lock:
            return MockStats(in_flight=self._in_flight, **self._counts)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def mock_reply(model: str, messages: list[dict[str, Any]]) -> str:
    """The reply to a request: the same for the same model and messages.

    It names a digest of the request, echoes the first words of the last user
    message and adds a few words chosen by the digest. Models named
    ``mock-code...`` answer with code instead (``mock_code_reply``).
    """
    canonical = json.dumps({"model": model, "messages": messages}, sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    if model.startswith(CODE_MODEL_PREFIX):
        return mock_code_reply(model, messages, digest)
    last_user = next(
        (_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    words = last_user.split()
    echo = " ".join(words[:12]) + (" ..." if len(words) > 12 else "")
    filler = " ".join(_WORDS[b % len(_WORDS)] for b in digest[1 : 4 + digest[0] % 8])
    return f"mock reply {digest.hex()[:8]}: you said {echo!r}. {filler}."


def _last_python_block(messages: list[dict[str, Any]]) -> str | None:
    """The last ```python block of the latest user message that has one."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        blocks = _PYTHON_FENCE.findall(_text_of(message.get("content")))
        if blocks:
            return str(blocks[-1])
    return None


def _number_tokens(code: str) -> list[tokenize.TokenInfo]:
    """The numeric literals of ``code`` (not imaginary ones); [] if it does not tokenize."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError):
        return []
    return [t for t in tokens if t.type == tokenize.NUMBER and t.string[-1] not in "jJ"]


def _changed_number(text: str, digest: bytes) -> str:
    """``text`` (a numeric literal) changed by the digest: ints grow by 1-3, floats scale."""
    try:
        value = int(text, 0)
    except ValueError:
        number = float(text)
        new = number * _FACTORS[digest[5] % len(_FACTORS)] if number else 0.1 * (1 + digest[5] % 5)
        shown = repr(round(new, 6))
        return shown if shown != text and float(shown) != number else repr(number + 1.0)
    return str(value + 1 + digest[4] % 3)


def mock_code_reply(model: str, messages: list[dict[str, Any]], digest: bytes) -> str:
    """The ``mock-code`` reply: the conversation's last python block, one literal changed.

    The literal and the change are chosen by ``digest`` (a hash of the
    request). ``mock-code-diff`` answers with a SEARCH/REPLACE block of the
    changed line, every other ``mock-code...`` model with the whole code in a
    python block. Code without a numeric literal comes back unchanged.
    """
    tag = f"mock-code {digest.hex()[:8]}"
    code = _last_python_block(messages)
    if code is None:
        return f"{tag}: there is no ```python block in the conversation to change."
    numbers = _number_tokens(code)
    if not numbers:
        return (
            f"{tag}: no numeric literal to change; the code is unchanged.\n\n```python\n{code}```\n"
        )
    token = numbers[int.from_bytes(digest[:4], "big") % len(numbers)]
    new = _changed_number(token.string, digest)
    lines = io.StringIO(code).readlines()  # the lines tokenize saw
    row, (start, end) = token.start[0] - 1, (token.start[1], token.end[1])
    old_line = lines[row]
    new_line = old_line[:start] + new + old_line[end:]
    note = f"{tag}: changed {token.string} to {new} on line {row + 1}."
    if model == f"{CODE_MODEL_PREFIX}-diff":
        search, replace = old_line.rstrip("\n"), new_line.rstrip("\n")
        return f"{note}\n\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"
    lines[row] = new_line
    return f"{note}\n\n```python\n{''.join(lines)}```\n"


def _error(status: int, message: str, kind: str, headers: dict[str, str]) -> Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return Response(json.dumps(body), status, headers, media_type="application/json")


def _check_request(body: Any) -> str | None:
    """What is wrong with a chat completion request body, or None."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "'model' is required and must be a non-empty string"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' is required and must be a non-empty list"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"messages[{i}] must be an object with a 'role'"
    return None


def _format_retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _chunk(cid: str, created: int, model: str, delta: dict[str, Any], finish: str | None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    payload = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [choice],
    }
    return f"data: {json.dumps(payload)}\n\n"


def create_app(state: MockState) -> FastAPI:
    """The FastAPI application serving ``state``."""
    app = FastAPI(title="ambidex mock-llm", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats() -> dict[str, int]:
        return state.stats().as_dict()

    @app.post("/stats/reset")
    async def reset() -> dict[str, int]:
        state.reset()
        return state.stats().as_dict()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "ambidex"} for m in MOCK_MODELS
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _handle_chat(state, request)

    return app


async def _handle_chat(state: MockState, request: Request) -> Response:
    """``POST /v1/chat/completions``: validate, maybe inject a fault, wait, answer."""
    auth = request.headers.get("authorization", "")
    serial = state.begin(auth.startswith("Bearer ") and len(auth) > 7)
    headers = {"x-request-id": f"req-mock-{serial}"}
    outcome = "bad_requests"
    try:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        problem = _check_request(body)
        if problem is not None:
            return _error(400, problem, "invalid_request_error", headers)
        state.record(body)
        delay_s, fault = state.draw()
        if fault is not None and fault.retry_after_s is not None:
            headers["retry-after"] = _format_retry_after(fault.retry_after_s)
        if fault is not None and fault.status == 429:
            outcome = "errors_429"
            return _error(429, "rate limited (mock-llm)", "rate_limit_error", headers)
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        if fault is not None:
            outcome = "errors_500" if fault.status == 500 else "errors_other"
            return _error(fault.status, "injected failure (mock-llm)", "server_error", headers)
        reply = state.take_reply()
        if body.get("stream"):
            outcome = "streams"
            return _stream(state, body, serial, headers, reply)
        outcome = "completions"
        return _completion(body, serial, headers, reply)
    finally:
        if outcome != "streams":
            state.end(outcome)


def _answer(body: dict[str, Any], reply: str | None = None) -> tuple[str, str, int, int]:
    """The reply text (``reply`` if scripted), its finish reason, prompt and completion tokens."""
    messages = body["messages"]
    text = mock_reply(body["model"], messages) if reply is None else reply
    words = list(re.finditer(r"\S+", text))
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    finish = "stop"
    if isinstance(limit, int) and 0 < limit < len(words):  # cut after the limit-th word
        text, words, finish = text[: words[limit - 1].end()], words[:limit], "length"
    prompt_tokens = sum(len(_text_of(m.get("content")).split()) for m in messages)
    return text, finish, prompt_tokens, len(words)


def _completion(
    body: dict[str, Any], serial: int, headers: dict[str, str], reply: str | None = None
) -> Response:
    text, finish, prompt_tokens, completion_tokens = _answer(body, reply)
    payload = {
        "id": f"chatcmpl-mock-{serial}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return Response(json.dumps(payload), 200, headers, media_type="application/json")


def _stream(
    state: MockState,
    body: dict[str, Any],
    serial: int,
    headers: dict[str, str],
    reply: str | None = None,
) -> StreamingResponse:
    text, finish, prompt_tokens, completion_tokens = _answer(body, reply)
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    cid, created, model = f"chatcmpl-mock-{serial}", int(time.time()), body["model"]

    async def events() -> AsyncIterator[str]:
        try:
            yield _chunk(cid, created, model, {"role": "assistant", "content": ""}, None)
            for i, word in enumerate(text.split(" ")):
                yield _chunk(cid, created, model, {"content": word if i == 0 else " " + word}, None)
            yield _chunk(cid, created, model, {}, finish)
            if include_usage:
                usage = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                }
                payload = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
                yield f"data: {json.dumps(payload)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            state.end("streams")

    return StreamingResponse(events(), headers=headers, media_type="text/event-stream")
