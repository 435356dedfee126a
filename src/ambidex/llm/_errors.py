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

An error that says the client is configured so that no request can ever
succeed has ``retryable = False``: ``LLMConfigError``, and ``LLMHTTPError`` for
401, 403 and 404 (``CONFIG_STATUSES``: a wrong key, a key without access, a
wrong base URL or an unknown model). Every retry ambidex makes (a workflow
node's, an agent's or a marked function's ``retries``, a job's) leaves those
alone: another attempt would fail the same way.
"""

from __future__ import annotations

import json
from typing import Any

from ambidex.exceptions import AmbidexError

__all__ = [
    "CONFIG_STATUSES",
    "LLMConfigError",
    "LLMConnectionError",
    "LLMError",
    "LLMHTTPError",
    "LLMResponseError",
    "LLMTimeoutError",
]

#: HTTP statuses that say the client's configuration is wrong (key, access, URL or
#: model): never retried, by the client or by any retry of ambidex's around it.
CONFIG_STATUSES = frozenset({401, 403, 404})

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
    """Base class of every error the LLM client raises.

    ``retryable`` is False when another attempt cannot succeed (see the module).
    """

    retryable: bool = True


class LLMConfigError(LLMError, ValueError):
    """The client was set up wrongly: a bad ``base_url``, a missing API key, a bad option.

    Never retried (``retryable`` is False): the same setup fails the same way.
    """

    retryable = False


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
        retryable: False for 401, 403 and 404 (``CONFIG_STATUSES``): the key,
            the access, the base URL or the model is wrong, and no retry of
            ambidex's (a node's, an agent's, a job's) tries again.
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
        self.retryable = status not in CONFIG_STATUSES
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
