"""Spans with hostile data still export: a failed call's text never breaks an OTLP batch.

An exporter encodes a whole batch of spans (up to 512, any traces) in one
protobuf message; a span whose status text holds a lone surrogate (the message
of an error naming a file whose name is not UTF-8) makes the encoding raise,
and the exporter drops the whole batch. A megabyte error message must not make
a span megabytes (a batch over 64 MiB is dropped too).
"""

from __future__ import annotations

import os

import pytest

import ambidex as ax

pytest.importorskip("opentelemetry.exporter.otlp.proto.common")

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from _otel import one


@ax.io
async def open_odd_name() -> None:
    name = os.fsdecode(b"report-\xff\xfe.txt")  # as os.listdir() gives it: lone surrogates
    raise FileNotFoundError(f"nonexistent: {name}")


@ax.io
async def fail_loudly(size: int) -> None:
    raise ValueError("x" * size)


@ax.io(retries=2, backoff_s=0.001)
async def fail_loudly_thrice(size: int) -> None:
    raise ValueError("x" * size)


def test_an_error_naming_a_non_utf8_file_exports(spans: object) -> None:
    with pytest.raises(FileNotFoundError):
        open_odd_name()
    finished = spans.get_finished_spans()  # type: ignore[attr-defined]
    failed = one(finished, "ambidex.io open_odd_name")
    assert "nonexistent" in (failed.status.description or "")
    encoded = encode_spans(finished)
    (event,) = encoded.resource_spans[0].scope_spans[0].spans[-1].events
    shown = {kv.key: kv.value.string_value for kv in event.attributes}
    # was dropped at export ("Failed to encode key exception.message", logged per batch)
    assert "nonexistent: report-" in shown.get("exception.message", ""), shown.keys()
    assert "\\udcff" in shown["exception.stacktrace"]


def test_a_megabyte_error_message_makes_a_small_span(spans: object) -> None:
    with pytest.raises(ValueError):
        fail_loudly(4_000_000)
    finished = spans.get_finished_spans()  # type: ignore[attr-defined]
    one(finished, "ambidex.io fail_loudly")
    encoded = encode_spans(finished).SerializeToString()
    assert len(encoded) < 100_000, len(encoded)  # was 8 MB: message and stack trace whole


def test_a_status_text_given_to_fail_exports(spans: object) -> None:
    import asyncio

    from ambidex import _otel

    with _otel.span("ambidex.test given") as given:
        _otel.fail(given, RuntimeError("x"), description="upstream said caf\udcc3\udca9")
    with _otel.span("ambidex.test cancelled") as cancelled:
        _otel.fail(cancelled, asyncio.CancelledError(), description="stopped: \udcff")
    finished = spans.get_finished_spans()  # type: ignore[attr-defined]
    assert one(finished, "ambidex.test given").status.description == (
        "upstream said caf\\udcc3\\udca9"
    )
    encode_spans(finished).SerializeToString()  # raised UnicodeEncodeError


def test_retries_of_a_megabyte_error_make_a_small_span(spans: object) -> None:
    with pytest.raises(ValueError):
        fail_loudly_thrice(2_000_000)
    finished = spans.get_finished_spans()  # type: ignore[attr-defined]
    failed = one(finished, "ambidex.io fail_loudly_thrice")
    assert [e.name for e in failed.events].count("retry") == 2
    encoded = encode_spans(finished).SerializeToString()
    assert len(encoded) < 100_000, len(encoded)  # was 4 MB: the message whole in each retry
