"""The tracing switch: off (the default) costs a module attribute read; on, ``ambidex._otel``.

Hot paths read ``_observe.on`` (one attribute of a module, ~20 ns) and take their
traced branch only when it is true; nothing here imports OpenTelemetry, so
``import ambidex`` never does while tracing is off. ``instrument()`` (or
``AMBIDEX_OTEL=1`` when ambidex is first imported) loads ``ambidex._otel``, which
holds everything that needs the ``opentelemetry`` packages (the ``otel`` extra).

Which process decides: the one that calls ``instrument()``. cpu worker processes
and Ray tasks receive the caller's trace context with each call and record their
spans only for calls that carry one, shipping them back with the reply
(``ambidex.runtime._spans``); a job worker (``ambidex worker``) turns tracing on
from ``AMBIDEX_OTEL`` like any other process. What each area records, and the
names: docs/observability.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = [
    "add_metric_source",
    "carrier",
    "env_wants_tracing",
    "instrument",
    "instrument_from_env",
    "metric_sources",
    "on",
    "uninstrument",
]

on: bool = False
"""Whether ambidex records spans and trace context (set by ``instrument``)."""

_TRUE = frozenset({"1", "true", "yes", "on"})


def env_wants_tracing() -> bool:
    """Whether ``AMBIDEX_OTEL`` asks for tracing (``1``, ``true``, ``yes``, ``on``)."""
    return os.environ.get("AMBIDEX_OTEL", "").strip().lower() in _TRUE


def instrument(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Turn tracing on: spans for ambidex's work, context across every hop, log ids.

    Args:
        tracer_provider: an OpenTelemetry ``TracerProvider``; default: the global
            one, or, when none was set, one built from the standard ``OTEL_*``
            environment variables (``OTEL_TRACES_EXPORTER``, default ``otlp``).
        meter_provider: an OpenTelemetry ``MeterProvider`` for the runtime's
            metrics; default: the global one (when none was set, metrics stay
            Prometheus-only; see docs/observability.md).

    Raises:
        ImportError: the ``opentelemetry`` packages are not installed; the
            message names the extra (``pip install 'ambidex[otel]'``).
    """
    global on
    try:
        from ambidex import _otel
    except ImportError as exc:
        raise ImportError(
            f"ambidex tracing needs OpenTelemetry ({exc.name or exc} is missing): "
            "pip install 'ambidex[otel]'"
        ) from None
    _otel.setup(tracer_provider=tracer_provider, meter_provider=meter_provider)
    on = True


def uninstrument() -> None:
    """Turn tracing off again (spans already recorded stay with their exporter)."""
    global on
    if not on:
        return
    on = False
    from ambidex import _otel

    _otel.teardown()


def instrument_from_env() -> None:
    """``instrument()`` when ``AMBIDEX_OTEL`` asks for it; otherwise nothing.

    A process that cannot trace (no ``opentelemetry``, an exporter ambidex cannot
    build) says why in one line on stderr and runs untraced: an environment
    variable must not stop a service from starting.
    """
    if on or not env_wants_tracing() or os.environ.get("AMBIDEX_IN_WORKER"):
        return
    try:
        instrument()
    except (ImportError, ValueError) as exc:
        import sys

        print(f"ambidex: AMBIDEX_OTEL is set but tracing is off: {exc}", file=sys.stderr)


def carrier() -> dict[str, str] | None:
    """The current trace context as W3C headers (``traceparent``), or None when off or empty."""
    if not on:
        return None
    from ambidex import _otel

    return _otel.inject()


# -- metrics -------------------------------------------------------------------------

metric_sources: list[Callable[[Any], None]] = []
"""Functions ``_otel.setup`` calls with the ``meter_provider`` given to ``instrument()``."""


def add_metric_source(register: Callable[[Any], None]) -> None:
    """Have ``register(meter_provider)`` called at each ``instrument()``, and now if on.

    How a package above this bottom layer (the runtime) offers OpenTelemetry
    metrics without ``_otel`` importing it: layers point down. ``register`` gets
    the provider ``instrument()`` was given (None: the global one's to use) and
    must import OpenTelemetry only inside.
    """
    metric_sources.append(register)
    if on:
        from ambidex import _otel

        register(_otel.meter_provider())
