"""A cpu call's worker-side spans: what is shipped back when user code makes too many.

A worker ships at most ``MAX_KEPT`` finished spans per call. The call's own span
(``ambidex.cpu.run``) ends last, so when user code made that many it was the one
dropped: the user's spans arrived pointing at a parent the trace never got.
"""

from __future__ import annotations

from typing import Any

import pytest

import ambidex as ax

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace

from _otel import one, parent_of


@ax.cpu
def makes_spans(n: int) -> int:
    tracer = trace.get_tracer("user-code")
    for _ in range(n):
        with tracer.start_as_current_span("user step"):
            pass
    return n


def test_the_calls_own_span_ships_whatever_user_code_made(spans: Any) -> None:
    from ambidex.runtime._spans import MAX_KEPT

    assert makes_spans(MAX_KEPT + 5) == MAX_KEPT + 5
    finished = spans.get_finished_spans()
    run = one(finished, "ambidex.cpu.run makes_spans")  # was: dropped
    caller = one(finished, "ambidex.cpu makes_spans")
    assert parent_of(run, finished) is caller
    steps = [s for s in finished if s.name == "user step"]
    assert len(steps) == MAX_KEPT - 1
    assert all(parent_of(s, finished) is run for s in steps[:10])
    assert run.attributes is not None
    assert run.attributes["ambidex.spans_dropped"] == 6
