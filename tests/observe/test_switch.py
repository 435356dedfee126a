"""The tracing switch: off costs no import; on from the environment or ``ax.instrument()``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import ambidex as ax
from ambidex import _observe


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if k != "AMBIDEX_OTEL" and not k.startswith("OTEL_")
    }
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
    )


def test_tracing_off_imports_no_opentelemetry_even_after_calls() -> None:
    done = _python(
        """
        import json, sys
        import ambidex as ax

        @ax.io
        async def echo(x):
            return x

        @ax.blocking
        def block(x):
            return x

        assert echo(1) == 1 and block(2) == 2
        import ambidex.workflows, ambidex.jobs, ambidex.client, ambidex.agents
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("opentelemetry"))))
        """
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_ambidex_otel_1_turns_tracing_on_at_import() -> None:
    done = _python(
        """
        import ambidex as ax
        from ambidex import _observe
        from opentelemetry import trace
        print(_observe.on, type(trace.get_tracer_provider()).__name__)
        """,
        AMBIDEX_OTEL="1",
        OTEL_TRACES_EXPORTER="none",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "TracerProvider"]


def test_ambidex_otel_0_leaves_it_off() -> None:
    done = _python(
        "import ambidex, sys; print(ambidex._observe.on, 'opentelemetry' in sys.modules)",
        AMBIDEX_OTEL="0",
    )
    assert done.stdout.split() == ["False", "False"], done.stderr


def test_without_opentelemetry_the_variable_warns_and_instrument_names_the_extra() -> None:
    # sys.modules[name] = None makes any import of it fail, as if not installed.
    done = _python(
        """
        import sys
        sys.modules["opentelemetry"] = None
        import ambidex as ax
        print("on:", ax._observe.on)
        try:
            ax.instrument()
        except ImportError as exc:
            print("error:", exc)
        """,
        AMBIDEX_OTEL="1",
    )
    assert done.returncode == 0, done.stderr
    assert "on: False" in done.stdout
    assert "pip install 'ambidex[otel]'" in done.stdout
    assert "AMBIDEX_OTEL is set but tracing is off" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_exporter_is_one_clear_line_and_the_process_goes_on() -> None:
    done = _python(
        "import ambidex; print(ambidex._observe.on)",
        AMBIDEX_OTEL="1",
        OTEL_TRACES_EXPORTER="zipkin",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]
    assert "OTEL_TRACES_EXPORTER='zipkin'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_span_records_the_error_and_reraises(spans: Any) -> None:
    from ambidex import _otel

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    with pytest.raises(Unprintable), _otel.span("ambidex.test"):
        raise Unprintable
    (span,) = spans.get_finished_spans()
    assert span.status.status_code.name == "ERROR"
    assert (
        span.attributes["error.type"]
        == "test_span_records_the_error_and_reraises.<locals>.Unprintable"
    )


def test_carrier_round_trips_and_garbage_gives_an_empty_context(spans: Any) -> None:
    from opentelemetry import trace

    from ambidex import _otel

    assert _observe.carrier() is None  # no span: nothing to carry
    with _otel.span("outer") as outer:
        carrier = _observe.carrier()
        assert carrier is not None
        with _otel.attached(carrier):
            assert trace.get_current_span().get_span_context().span_id == (
                outer.get_span_context().span_id
            )
    for garbage in ({"traceparent": "00-zz"}, {"traceparent": "\x00" * 10_000}, {}, None):
        assert not trace.get_current_span(_otel.extract(garbage)).get_span_context().is_valid
        assert _otel.link_to(garbage) == []


def test_log_records_carry_the_ids_of_the_current_span(
    spans: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from ambidex import _otel

    log = logging.getLogger("ambidex.test_observe")
    with caplog.at_level(logging.INFO, logger="ambidex.test_observe"):
        with _otel.span("outer") as outer:
            log.info("inside")
        log.info("outside")
    inside, outside = caplog.records
    ctx = outer.get_span_context()
    assert (inside.trace_id, inside.span_id) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert (outside.trace_id, outside.span_id) == ("", "")


def test_instrument_twice_and_uninstrument_are_safe(spans: Any) -> None:
    ax.instrument()
    assert _observe.on
    ax.uninstrument()
    ax.uninstrument()
    assert not _observe.on
    assert not hasattr(logging.getLogRecordFactory()("n", 20, "p", 1, "m", (), None), "trace_id")
    ax.instrument()  # the fixture turns it off again


def test_ambidex_info_says_whether_this_process_traces_and_where_to() -> None:
    code = "from ambidex.cli import main; main()"
    done = _python(
        f"import sys; sys.argv = ['ambidex', 'info', '--json']; {code}",
        AMBIDEX_OTEL="1",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318",
    )
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)["tracing"]
    assert facts == {
        "on": True,
        "installed": True,
        "exporter": "otlp",
        "endpoint": "http://collector:4318",
    }


def test_a_huge_error_message_is_cut_on_the_span(spans: Any) -> None:
    from ambidex import _otel

    with pytest.raises(ValueError), _otel.span("ambidex.test"):
        raise ValueError("x" * 1_000_000)
    (span,) = spans.get_finished_spans()
    assert len(span.status.description) == 1000
    assert span.status.description.endswith("…")
