"""What the client returns (ChatResponse, Usage, UsageTotals) and how messages are read."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeAlias

from ambidex.llm._errors import LLMResponseError, excerpt

__all__ = [
    "ChatResponse",
    "Messages",
    "Usage",
    "UsageCounter",
    "UsageTotals",
    "normalize_messages",
    "parse_completion",
]

#: A prompt (sent as one user message) or a list of ``{"role": ..., "content": ...}`` dicts.
Messages: TypeAlias = str | Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Usage:
    """Tokens one response used, as the server reported them (zeros if it did not)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True)
class ChatResponse:
    """One chat completion.

    Attributes:
        text: the assistant message's content (``""`` if the server sent none,
            e.g. for a tool call; see ``raw``).
        model: the model that answered, as the server named it.
        finish_reason: ``"stop"``, ``"length"``, ``"tool_calls"``... or None.
        usage: the tokens this response used.
        cached: True when the answer came from the client's cache (no request sent).
        raw: the whole response body, parsed.
    """

    text: str
    model: str
    finish_reason: str | None
    usage: Usage
    cached: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class UsageTotals:
    """What a client has used since it was created (a snapshot).

    Tokens count responses received from the server; answers from the cache
    cost nothing and count only in ``cache_hits``. ``requests`` counts HTTP
    requests sent, retries included.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    requests: int = 0
    retries: int = 0
    cache_hits: int = 0

    def as_dict(self) -> dict[str, int]:
        """The totals as a plain dict (for JSON)."""
        return asdict(self)


class UsageCounter:
    """Thread-safe running totals behind ``AsyncLLM.usage``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._prompt = self._completion = self._total = 0
        self._requests = self._retries = self._cache_hits = 0

    def add_tokens(self, usage: Usage) -> None:
        """Count the tokens of one response from the server."""
        with self._lock:
            self._prompt += usage.prompt_tokens
            self._completion += usage.completion_tokens
            self._total += usage.total_tokens

    def add_request(self) -> None:
        """Count one HTTP request sent."""
        with self._lock:
            self._requests += 1

    def add_retry(self) -> None:
        """Count one retry."""
        with self._lock:
            self._retries += 1

    def add_cache_hit(self) -> None:
        """Count one answer served from the cache."""
        with self._lock:
            self._cache_hits += 1

    def snapshot(self) -> UsageTotals:
        """The totals now."""
        with self._lock:
            return UsageTotals(
                prompt_tokens=self._prompt,
                completion_tokens=self._completion,
                total_tokens=self._total,
                requests=self._requests,
                retries=self._retries,
                cache_hits=self._cache_hits,
            )


def normalize_messages(messages: Messages) -> list[dict[str, Any]]:
    """The messages as a list of dicts; a string becomes one user message.

    Raises:
        TypeError: when ``messages`` is neither a string nor a sequence of
            mappings with a ``"role"``.
        ValueError: when the list is empty.
    """
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if isinstance(messages, (bytes, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError(
            "messages must be a str or a list of {'role': ..., 'content': ...} dicts, "
            f"got {type(messages).__name__}"
        )
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise TypeError(
                f"messages[{i}] must be a dict with a 'role' (e.g. {{'role': 'user', "
                f"'content': 'hi'}}), got {message!r:.80}"
            )
        out.append(dict(message))
    if not out:
        raise ValueError("messages is empty: give at least one message")
    return out


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_usage(data: Any) -> Usage:
    """A ``Usage`` from a response's ``usage`` object (zeros for what is missing)."""
    if not isinstance(data, Mapping):
        return Usage()
    prompt = _int(data.get("prompt_tokens"))
    completion = _int(data.get("completion_tokens"))
    total = _int(data.get("total_tokens")) or prompt + completion
    return Usage(prompt, completion, total)


def parse_completion(data: Any, *, cached: bool, url: str) -> ChatResponse:
    """A ``ChatResponse`` from a parsed ``chat.completion`` body.

    Raises:
        LLMResponseError: when the body has no ``choices[0].message``.
    """
    choices = data.get("choices") if isinstance(data, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        raise LLMResponseError(
            f"{url} answered with JSON that is not a chat completion (no choices[0].message): "
            f"{excerpt(repr(data), 300)}"
        )
    content = message.get("content")
    finish = first.get("finish_reason") if isinstance(first, dict) else None
    model = data.get("model")
    return ChatResponse(
        text=content if isinstance(content, str) else "",
        model=model if isinstance(model, str) else "",
        finish_reason=finish if isinstance(finish, str) else None,
        usage=parse_usage(data.get("usage")),
        cached=cached,
        raw=data,
    )
