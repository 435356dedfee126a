"""Errors raised by the LLM client.

::

    LLMError                  (an AmbidexError) base of everything the client raises
    ├── LLMConfigError        (also a ValueError) bad base_url, missing API key, bad option
    ├── LLMConnectionError    (also a ConnectionError) the server could not be reached
    ├── LLMTimeoutError       (also a TimeoutError) an attempt ran past timeout_s
    ├── LLMHTTPError          the server answered with an error status
    └── LLMResponseError      the server's answer was not a chat completion

Connection errors, timeouts and retryable statuses (408, 429, 5xx) are raised
only after the client's retries are used up; the message says how many
attempts were made.
"""

from __future__ import annotations

import json
from typing import Any

from ambidex.exceptions import AmbidexError

__all__ = [
    "LLMConfigError",
    "LLMConnectionError",
    "LLMError",
    "LLMHTTPError",
    "LLMResponseError",
    "LLMTimeoutError",
]

#: How much of an error response's body is kept on ``LLMHTTPError.body``.
BODY_EXCERPT_CHARS = 500

_HINTS = {
    401: "check OPENAI_API_KEY or the api_key= argument",
    403: "the API key is not allowed to use this model or endpoint",
    404: "is base_url right? OpenAI-compatible servers usually serve under /v1, "
    "and the model must exist there",
    429: "rate limited; declare a smaller ax.limits(llm=N) or pass rate=ax.Rate(...)",
}


class LLMError(AmbidexError):
    """Base class of every error the LLM client raises."""


class LLMConfigError(LLMError, ValueError):
    """The client was set up wrongly: a bad ``base_url``, a missing API key, a bad option."""


class LLMConnectionError(LLMError, ConnectionError):
    """The server could not be reached (connection refused, unknown host, dropped connection)."""


class LLMTimeoutError(LLMError, TimeoutError):
    """An attempt ran past ``timeout_s`` (and so did every retry)."""


class LLMResponseError(LLMError):
    """The server answered, but not with a chat completion (not JSON, or fields missing)."""


def excerpt(text: str, limit: int = BODY_EXCERPT_CHARS) -> str:
    """``text`` cut to ``limit`` characters, marking the cut."""
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _server_message(body: str) -> str | None:
    """The ``error.message`` of an OpenAI-style error body, if there is one."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(data.get("detail"), str):
            return str(data["detail"])
    return None


class LLMHTTPError(LLMError):
    """The server answered with an error status (after retries, for retryable ones).

    Attributes:
        status: the HTTP status code.
        body: the start of the response body (at most 500 characters).
        request_id: the server's ``x-request-id`` header, if it sent one.
        url: the URL that was requested.
        attempts: how many requests were made, retries included.
    """

    def __init__(
        self,
        status: int,
        body: str,
        request_id: str | None,
        url: str,
        attempts: int = 1,
        detail: str = "",
    ) -> None:
        self.status = status
        self.body = excerpt(body)
        self.request_id = request_id
        self.url = url
        self.attempts = attempts
        self.detail = detail
        parts = [f"{url} answered HTTP {status}"]
        message = _server_message(body)
        if message:
            parts.append(f": {excerpt(message, 200)}")
        elif self.body:
            parts.append(f": {excerpt(self.body, 200)}")
        if request_id:
            parts.append(f" (request id {request_id})")
        if attempts > 1:
            parts.append(f"; gave up after {attempts} attempts")
        if detail:
            parts.append(f"; {detail}")
        hint = _HINTS.get(status)
        if hint:
            parts.append(f" [{hint}]")
        super().__init__("".join(parts))

    def __reduce__(self) -> tuple[object, ...]:
        return (
            type(self),
            (self.status, self.body, self.request_id, self.url, self.attempts, self.detail),
        )
