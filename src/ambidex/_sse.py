"""Server-sent events: one decoder for the job client's event streams and the LLM client's.

Dependency-free, so the job client (which depends on wire types only) and the
LLM client can both use it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

__all__ = ["SSEDecoder", "ServerSentEvent", "iter_sse_data"]


@dataclass(frozen=True)
class ServerSentEvent:
    """One server-sent event."""

    event: str
    data: str
    id: str | None


class SSEDecoder:
    """Server-sent events from a stream's lines, fed one at a time (without line endings).

    Follows the SSE format: an event ends at a blank line; its ``data:``
    lines are joined with newlines; one space after the colon is dropped;
    comment lines (``:``) such as keepalives are skipped; the ``id`` is kept
    as the stream's last event id.
    """

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self.last_event_id: str | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        """Take one line; return the event it completes, if any."""
        line = line.rstrip("\r\n")
        if not line:
            if not self._data:
                self._event = ""
                return None
            sse = ServerSentEvent(
                self._event or "message", "\n".join(self._data), self.last_event_id
            )
            self._event, self._data = "", []
            return sse
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        return None

    def end(self) -> ServerSentEvent | None:
        """The stream ended: the event its last lines began, if no blank line closed it."""
        return self.feed("") if self._data else None


async def iter_sse_data(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """The ``data`` of each event in ``lines`` (an unclosed last event included).

    ``lines`` is closed (if it can be) when this generator ends or is closed.
    """
    decoder = SSEDecoder()
    try:
        async for line in lines:
            event = decoder.feed(line)
            if event is not None:
                yield event.data
        last = decoder.end()
        if last is not None:
            yield last.data
    finally:
        aclose = getattr(lines, "aclose", None)
        if aclose is not None:
            await aclose()
