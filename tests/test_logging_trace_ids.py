"""Log lines logged inside a span carry its trace and span ids; others are unchanged."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from ambidex import _observe
from ambidex.cli._logging import LOG_FORMAT, LogLevel, TraceIdFormatter, setup_logging


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through the command line's formatter into a string."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TraceIdFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("ambidex.test_trace_ids")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_line_inside_a_span_ends_with_its_ids(
    spans: Any, log: tuple[logging.Logger, io.StringIO]
) -> None:
    from ambidex import _otel

    logger, out = log
    with _otel.span("ambidex.test logging"):
        logger.info("inside")
    logger.info("outside")
    [span] = spans.get_finished_spans()
    trace_id = format(span.context.trace_id, "032x")
    span_id = format(span.context.span_id, "016x")
    assert out.getvalue().splitlines() == [
        f"INFO ambidex.test_trace_ids: inside trace_id={trace_id} span_id={span_id}",
        "INFO ambidex.test_trace_ids: outside",
    ]


def test_ids_end_the_first_line_before_a_traceback(
    spans: Any, log: tuple[logging.Logger, io.StringIO]
) -> None:
    from ambidex import _otel

    logger, out = log
    with _otel.span("ambidex.test logging"):
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    first, *rest = out.getvalue().splitlines()
    assert first.startswith("ERROR ambidex.test_trace_ids: failed trace_id=")
    assert rest[-1] == "ValueError: boom"


def test_lines_unchanged_with_tracing_off(log: tuple[logging.Logger, io.StringIO]) -> None:
    assert not _observe.on
    logger, out = log
    logger.info("plain")
    assert out.getvalue() == "INFO ambidex.test_trace_ids: plain\n"


def test_command_line_logging_uses_the_trace_id_formatter() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(LogLevel.info, replace=True)
        [handler] = root.handlers
        assert isinstance(handler.formatter, TraceIdFormatter)
        assert handler.formatter._fmt == LOG_FORMAT
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_own_format_with_trace_id_works_with_tracing_on_and_off(spans: Any) -> None:
    # What docs/observability.md tells library users to write: defaults for the two
    # fields, so that the same format works while tracing is off.
    from ambidex import _otel

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        logging.Formatter("%(message)s [%(trace_id)s]", defaults={"trace_id": "", "span_id": ""})
    )
    logger = logging.getLogger("ambidex.test_own_format")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with _otel.span("ambidex.test logging"):
            logger.warning("on")
        _observe.uninstrument()
        logger.warning("off")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    [span] = spans.get_finished_spans()
    assert out.getvalue().splitlines() == [
        f"on [{format(span.context.trace_id, '032x')}]",
        "off []",
    ]
