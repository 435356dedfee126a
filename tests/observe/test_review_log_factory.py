"""``uninstrument()`` leaves a log record factory installed after ``instrument()`` in place.

``logging`` has one record factory; libraries wrap whatever is installed. Turning
tracing off put back the factory of before ``instrument()``, silently removing
any factory another library had installed meanwhile (its attributes gone from
every later record).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from ambidex import _observe

pytest.importorskip("opentelemetry.sdk")


@pytest.fixture
def factory_kept() -> Iterator[None]:
    """The factory of before the test (and its ``spans``: ask for this one first), put back."""
    before = logging.getLogRecordFactory()
    try:
        yield
    finally:
        logging.setLogRecordFactory(before)


def _install_library_factory() -> None:
    inner = logging.getLogRecordFactory()

    def library(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = inner(*args, **kwargs)
        record.library = "mine"
        return record

    logging.setLogRecordFactory(library)


def _record() -> logging.LogRecord:
    return logging.getLogRecordFactory()("x", logging.INFO, __file__, 1, "m", None, None)


def test_a_factory_installed_while_on_survives_uninstrument(factory_kept: None, spans: Any) -> None:
    from ambidex import _otel

    _install_library_factory()
    with _otel.span("ambidex.test factory"):
        inside = _record()
    assert inside.library == "mine"  # type: ignore[attr-defined]
    assert inside.trace_id  # type: ignore[attr-defined]
    _observe.uninstrument()
    with _otel.span("ambidex.test factory"):  # ambidex's tracer is a no-op now
        after = _record()
    assert getattr(after, "library", None) == "mine"  # was: the library's factory removed
    assert getattr(after, "trace_id", "") == ""
    _observe.instrument()  # again: ids again
    with _otel.span("ambidex.test factory"):
        again = _record()
    assert again.library == "mine"  # type: ignore[attr-defined]
    assert again.trace_id  # type: ignore[attr-defined]


def test_uninstrument_restores_the_factory_when_none_came_after(
    factory_kept: None, spans: Any
) -> None:
    _observe.uninstrument()
    before = logging.getLogRecordFactory()
    _observe.instrument()
    assert logging.getLogRecordFactory() is not before
    _observe.uninstrument()
    assert logging.getLogRecordFactory() is before
    _observe.instrument()  # the fixture's teardown turns it off


def test_instrument_after_the_factory_was_put_back_by_another_adds_ids(
    factory_kept: None, spans: Any
) -> None:
    from ambidex import _otel

    logging.setLogRecordFactory(logging.LogRecord)  # someone restores the stdlib's
    _observe.uninstrument()
    _observe.instrument()
    with _otel.span("ambidex.test factory"):
        assert _record().trace_id  # type: ignore[attr-defined]
