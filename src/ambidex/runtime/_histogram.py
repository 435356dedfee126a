"""Wait times counted into buckets where the wait happens, read when metrics are scraped.

The runtime measures a wait only on the slow path, once it knows the caller
waits (every I/O thread busy, a limit full, every cpu worker busy): a
``time.perf_counter()`` pair there and one ``observe`` after. ``observe`` takes
no lock of its own: each histogram is written under a lock its owner already
holds at that point (the pool's, the limit's) or from one thread only (the
cpu backend's loop), so measuring adds no lock round trip to any call. Readers
(``statistics()``, a Prometheus scrape, an OpenTelemetry collection) copy the
counts without a lock; a copy taken while a wait is being recorded may hold
that wait in its bucket and not yet in the total, an error of one wait that the
next reading corrects.
"""

from __future__ import annotations

import bisect

__all__ = ["WAIT_BUCKETS_S", "WaitHistogram"]

WAIT_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds (seconds, inclusive) of the wait buckets; one more bucket holds longer waits."""


class WaitHistogram:
    """How many waits fell in each bucket of ``bounds``, and their total in seconds."""

    __slots__ = ("bounds", "counts", "total_s")

    def __init__(self, bounds: tuple[float, ...] = WAIT_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total_s = 0.0

    def observe(self, wait_s: float) -> None:
        """Count a wait of ``wait_s`` seconds (under the owner's lock, or by its one writer)."""
        self.counts[bisect.bisect_left(self.bounds, wait_s)] += 1
        self.total_s += wait_s

    @property
    def count(self) -> int:
        """Waits counted so far."""
        return sum(self.counts)

    def snapshot(self) -> tuple[list[int], float]:
        """A copy of the bucket counts (the last one: longer than every bound) and the total."""
        return list(self.counts), self.total_s
