"""``JobProgress``: the sink a running job reports its progress to.

Job code reports; the worker running the job listens. A report replaces the
one before it (only the latest matters), may come from any thread, as often
as the job likes: the worker is told one arrived and writes the latest to the
store at most a few times a second, never a report that says what the last
written one said. ``JobContext`` is a ``JobProgress``, so a workload reports
through the context it is handed (``ctx.progress(0.5, "halfway")``), and hands
``ctx.report`` to ambidex library code that takes a progress sink (a sweep, an
evolution) to have their reports become the job's.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from ambidex._progress import Progress, fraction_of

__all__ = ["JobProgress", "ProgressReport"]

Latest = tuple[float | None, str | None]
"""A report as stored: the fraction done (None: not known) and the message."""


ProgressReport = Progress
"""What ``JobProgress.report`` reads: ``ax.Progress``, ``done`` of ``total`` and a message."""


def _fraction(report: ProgressReport) -> float | None:
    """``done / total`` within 0..1, or None when it is not known or cannot be computed."""
    try:
        fraction = fraction_of(report)
    except (TypeError, ValueError, ArithmeticError):  # no numbers, or too large for a float
        return None
    if fraction is None or not math.isfinite(fraction):  # NaN survives the clamp
        return None
    return fraction


def _ignore() -> None:
    """The listener of a sink no worker listens to (yet)."""


class JobProgress:
    """How far a running job is, as its code last said (thread-safe).

    A job reports with ``progress(fraction, message)``, or hands ``report`` to
    code that reports progress objects (``done``, ``total``, ``message``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: Latest | None = None
        self._notify: Callable[[], None] = _ignore

    def progress(self, fraction: float | None = None, message: str | None = None) -> None:
        """Report how far the job is: ``fraction`` in 0..1 and/or a short message.

        Call it from any thread and as often as you like; the latest value is
        written to the store at most a few times a second.

        Raises:
            ValueError: ``fraction`` outside 0..1.
        """
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be within 0..1, got {fraction!r}")
        with self._lock:
            self._latest = (None if fraction is None else float(fraction), message)
        self._notify()

    def report(self, report: ProgressReport) -> None:
        """Report a progress object: ``done / total`` as the fraction, and its message.

        A progress sink (a callable taking reports) for library code that
        reports objects with ``done``, ``total`` and ``message``; while the
        total is not known (None or 0), or the fraction cannot be computed
        from what was counted (NaN, infinities, no numbers), only the message
        is reported: a sink never fails the code that reports to it over a count.

        Raises:
            TypeError: ``report`` is not a progress object (no ``done``, ``total``, ``message``).
        """
        if not all(hasattr(report, name) for name in ("done", "total", "message")):
            raise TypeError(
                "ctx.report takes a progress object (done, total, message), "
                f"got {type(report).__name__}; use ctx.progress(fraction, message) for a number"
            )
        message = report.message
        self.progress(_fraction(report), str(message) if message else None)

    def _listen(self, notify: Callable[[], None]) -> None:
        """Call ``notify`` (from the reporting thread) after each report."""
        self._notify = notify

    def _take(self) -> Latest | None:
        """The latest report not taken yet (None: none since the last take)."""
        with self._lock:
            latest, self._latest = self._latest, None
        return latest
