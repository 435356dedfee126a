"""Server-sent events: the ``data`` of each event in a stream of lines."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

__all__ = ["iter_sse_data"]


async def iter_sse_data(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """Yield the data of each event; an event ends at a blank line.

    Follows the SSE format: ``data:`` lines of one event are joined with
    newlines, one space after the colon is dropped, comment lines (``:``)
    and other fields (``event``, ``id``, ``retry``) are ignored. ``lines`` is
    closed (if it can be) when this generator ends or is closed.
    """
    data: list[str] = []
    try:
        async for raw in lines:
            line = raw.rstrip("\r\n")
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if name == "data":
                data.append(value.removeprefix(" "))
        if data:
            yield "\n".join(data)
    finally:
        aclose = getattr(lines, "aclose", None)
        if aclose is not None:
            await aclose()
