"""Counters behind ``Runtime.statistics()``."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

from ambidex import _observe
from ambidex.runtime._backends import CpuStatistics
from ambidex.runtime._limits import LimitStatistics, RateLimitStatistics
from ambidex.runtime._threads import ThreadPoolStatistics

__all__ = ["KIND_NAMES", "CallCounters", "KindStatistics", "RuntimeStatistics"]

KIND_NAMES = ("io", "blocking", "cpu")


@dataclass(frozen=True)
class KindStatistics:
    """Calls of one kind of work (io, blocking or cpu) since the runtime started."""

    calls: int = 0
    """Calls made (a retried call counts once)."""
    succeeded: int = 0
    failed: int = 0
    in_flight: int = 0
    """Calls started and not yet finished, including those waiting for a limit."""
    timeouts: int = 0
    """Attempts that ran past ``timeout_s``."""
    retries: int = 0
    """Attempts repeated after a failure."""


@dataclass(frozen=True)
class RuntimeStatistics:
    """A snapshot of a runtime: calls by kind, limits, pools."""

    kinds: dict[str, KindStatistics]
    limits: dict[str, LimitStatistics]
    rate_limits: dict[str, RateLimitStatistics]
    io_threads: ThreadPoolStatistics
    cpu_workers: CpuStatistics | None
    """None until the first cpu call (or ``put``) opens the cpu backend."""
    loop_running: bool
    backend: str = "local"
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain dicts and numbers, ready for JSON."""
        return asdict(self)


_FIELDS = ("calls", "succeeded", "failed", "timeouts", "retries")


def _value(counter: itertools.count[int]) -> int:
    # itertools.count has no getter; its repr is documented as "count(N)".
    return int(repr(counter)[6:-1])


class CallCounters:
    """Counters by kind; in flight = calls - succeeded - failed.

    ``next()`` on an ``itertools.count`` is a single C call, atomic under the
    GIL, so the counters on every call's path need no lock (a lock round trip
    was a measurable share of a 10,000-call fan-out).
    """

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, itertools.count[int]]] = {
            kind: {name: itertools.count() for name in _FIELDS} for kind in KIND_NAMES
        }
        self._calls = {kind: c["calls"] for kind, c in self._counts.items()}
        self._ok = {kind: c["succeeded"] for kind, c in self._counts.items()}
        self._failed = {kind: c["failed"] for kind, c in self._counts.items()}

    def started(self, kind: str) -> None:
        next(self._calls[kind])

    def finished(self, kind: str, ok: bool) -> None:
        next((self._ok if ok else self._failed)[kind])

    def bump(self, kind: str, what: str) -> None:
        next(self._counts[kind][what])

    def snapshot(self) -> dict[str, KindStatistics]:
        out = {}
        for kind, counts in self._counts.items():
            # Read finished before calls so in_flight is never negative.
            succeeded, failed = _value(counts["succeeded"]), _value(counts["failed"])
            calls = _value(counts["calls"])
            out[kind] = KindStatistics(
                calls=calls,
                succeeded=succeeded,
                failed=failed,
                in_flight=calls - succeeded - failed,
                timeouts=_value(counts["timeouts"]),
                retries=_value(counts["retries"]),
            )
        return out


def _offer_otel_metrics(meter_provider: Any) -> None:
    """The runtime's OpenTelemetry metrics, on ``instrument()`` (see ``runtime._metrics``)."""
    from ambidex.runtime._metrics import register_otel_metrics

    register_otel_metrics(meter_provider)


_observe.add_metric_source(_offer_otel_metrics)
