"""How far something is: the one shape library code reports progress in.

A long call (a run, a sweep, an evolution, a job being waited for) reports
snapshots, not increments: each report says how much is done of how much, and
a short message. A report is any object with the three read-only attributes of
:class:`Progress` (``SweepProgress`` and ``EvolveProgress`` are, with more
fields of their own); :class:`ProgressUpdate` is the plain one. Whoever asked
for reports passes a :data:`ProgressSink`, a callable that takes them.

Snapshots rather than ``start``/``advance``/``finish`` calls because a report
can then be dropped, repeated or read from another thread without the drawing
going wrong: a display that redraws ten times a second keeps the last one.

Library code only reports; drawing is the command line's
(``ambidex.cli._progress``), through :func:`open_progress_bar` here, which
is also what ``ax.sim.sweep(progress=True)`` draws from plain Python.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Progress", "ProgressSink", "ProgressUpdate", "fraction_of", "open_progress_bar"]


@runtime_checkable
class Progress(Protocol):
    """A progress report: ``done`` of ``total`` (None: not known yet), and what is going on."""

    @property
    def done(self) -> float:
        """How much is done, in the same unit as ``total`` (steps, runs, candidates)."""
        ...

    @property
    def total(self) -> float | None:
        """How much there is to do; None while that is not known."""
        ...

    @property
    def message(self) -> str:
        """One line on what is going on (may be empty)."""
        ...


ProgressSink = Callable[[Progress], None]
"""Where progress reports go: called from any thread, often; must return quickly."""


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    """A plain progress report, for code with nothing more to say than the three fields."""

    done: float
    total: float | None = None
    message: str = ""


def fraction_of(progress: Progress) -> float | None:
    """``done / total`` within 0..1; None while the total is unknown (or zero)."""
    total = progress.total
    if total is None or total <= 0:
        return None
    return min(max(progress.done / total, 0.0), 1.0)


_REDRAW_S = 0.05  # at most 20 redraws a second: a run reports every step


class _Bar:
    """A sink that moves one rich progress bar; reports closer than ``_REDRAW_S`` are skipped."""

    def __init__(self, bar: Any, task: Any) -> None:
        self.bar = bar
        self.task = task
        self.last = 0.0

    def __call__(self, progress: Progress) -> None:
        total = progress.total
        finished = total is not None and progress.done >= total
        now = time.monotonic()
        if now - self.last < _REDRAW_S and not finished:
            return
        self.last = now
        if total is None:  # rich's update() reads total=None as "unchanged", not "unknown"
            for task in self.bar.tasks:
                if task.id == self.task:
                    task.total = None
        self.bar.update(
            self.task,
            total=None if total is None else max(total, 1),
            completed=progress.done,
            message=progress.message,
        )


@contextlib.contextmanager
def open_progress_bar(
    description: str, *, console: Console | None = None, enabled: bool = True
) -> Iterator[ProgressSink]:
    """A progress bar on stderr for as long as the block runs; yields the sink that moves it.

    ``description`` is shown as text, never read as rich markup. With
    ``enabled=False`` the sink does nothing (so ``--json`` output stays clean).
    The bar is removed when the block ends: what it showed was temporary.
    """
    if not enabled:
        yield _ignore
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        # the message is the workload's or the user's text: never markup
        TextColumn("{task.fields[message]}", markup=False),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console if console is not None else Console(stderr=True),
        transient=True,
    )
    task = bar.add_task(escape(description), total=None, message="")
    with bar:
        yield _Bar(bar, task)


def _ignore(progress: Progress) -> None:
    """The sink of a bar that is not shown."""
