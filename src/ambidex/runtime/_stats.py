"""Counters behind ``Runtime.statistics()``."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from ambidex.runtime._limits import LimitStatistics, RateLimitStatistics
from ambidex.runtime._procpool import ProcessPoolStatistics
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
    cpu_workers: ProcessPoolStatistics | None
    """None until the first cpu call starts the process pool."""
    loop_running: bool
    backend: str = "local"
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain dicts and numbers, ready for JSON."""
        return asdict(self)


class CallCounters:
    """Thread-safe counters, one row per kind."""

    _FIELDS = ("calls", "succeeded", "failed", "in_flight", "timeouts", "retries")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, dict[str, int]] = {
            kind: dict.fromkeys(self._FIELDS, 0) for kind in KIND_NAMES
        }

    def started(self, kind: str) -> None:
        with self._lock:
            row = self._rows[kind]
            row["calls"] += 1
            row["in_flight"] += 1

    def finished(self, kind: str, ok: bool) -> None:
        with self._lock:
            row = self._rows[kind]
            row["in_flight"] -= 1
            row["succeeded" if ok else "failed"] += 1

    def bump(self, kind: str, what: str) -> None:
        with self._lock:
            self._rows[kind][what] += 1

    def snapshot(self) -> dict[str, KindStatistics]:
        with self._lock:
            return {kind: KindStatistics(**row) for kind, row in self._rows.items()}
