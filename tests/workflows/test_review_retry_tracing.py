"""A traced node retries exactly as an untraced one, whatever its error's ``str()`` does.

The retry event read ``str(exc)``: an exception whose ``__str__`` raises made the
node fail with that error instead of retrying (untraced, it retried and succeeded).
"""

from __future__ import annotations

from typing import Any

import pytest

import ambidex as ax

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

from _otel import one


class Unprintable(ConnectionError):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


_attempts: dict[str, int] = {}


async def flaky() -> str:
    _attempts["flaky"] = _attempts.get("flaky", 0) + 1
    if _attempts["flaky"] == 1:
        raise Unprintable()
    return "ok"


async def test_an_unprintable_error_is_retried(spans: Any) -> None:
    _attempts.clear()
    wf = ax.Workflow("unprintable")
    wf.node("flaky", flaky, retries=1)
    result = await wf.arun()  # raised RuntimeError('no text for you')
    assert result.nodes["flaky"].attempts == 2
    node = one(spans.get_finished_spans(), "ambidex.node flaky")
    (retry,) = [e for e in node.events if e.name == "ambidex.node.retry"]
    assert retry.attributes is not None
    assert retry.attributes["error.type"] == "Unprintable"
    assert retry.attributes["exception.message"] == "<unprintable Unprintable object>"
