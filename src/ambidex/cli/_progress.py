"""Every progress display of the command line, in one place.

Library code reports progress as :class:`ambidex.Progress` snapshots to a sink
(``ambidex._progress``); the commands draw them here:

* :func:`progress_bar`: one bar on stderr, for a sim run or sweep, an
  evolution, a job being waited for; :func:`steps` and :func:`fractions`
  adapt the two older callback shapes (``(done, total)`` of ``ax.sim.run`` and
  ``(fraction, message)`` of ``Client.wait``) to it;
* :class:`WorkflowView`: a workflow run's table of nodes, fed its events.

Every text shown (node names, errors, messages) is the user's and is shown
as written, never read as rich markup.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ambidex._progress import ProgressSink, ProgressUpdate, open_progress_bar

if TYPE_CHECKING:  # a sim run's bar should not import the workflows package
    from ambidex.workflows import WorkflowEvent

__all__ = ["WorkflowView", "fractions", "progress_bar", "steps"]

progress_bar = open_progress_bar


def steps(sink: ProgressSink) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback (``ax.sim.run``'s) that reports to ``sink``."""

    def on_step(done: int, total: int) -> None:
        sink(ProgressUpdate(done, total, f"step {done}/{total}"))

    return on_step


def fractions(sink: ProgressSink) -> Callable[[float | None, str | None], None]:
    """A ``progress(fraction, message)`` callback (a job's) that reports to ``sink``.

    A job that has reported no fraction yet shows a spinner and its message.
    """

    def on_progress(fraction: float | None, message: str | None) -> None:
        if fraction is None:
            sink(ProgressUpdate(0.0, None, message or ""))
        else:
            sink(ProgressUpdate(fraction, 1.0, message or ""))

    return on_progress


_STYLE = {
    "pending": "dim",
    "queued": "cyan",
    "running": "yellow",
    "retrying": "magenta",
    "succeeded": "green",
    "restored": "green",
    "failed": "bold red",
    "skipped": "dim",
    "cancelled": "red",
}
_STATE = {  # an event's kind (EventKind's value) to the state it puts its node in
    "queued": "queued",
    "started": "running",
    "retrying": "retrying",
    "finished": "succeeded",
    "failed": "failed",
    "skipped": "skipped",
    "cancelled": "cancelled",
}
_DONE = ("succeeded", "restored", "failed", "skipped", "cancelled")


class WorkflowView:
    """Use as ``with WorkflowView(node_names) as view: wf.run(..., on_event=view)``.

    Shows one row per node (state, attempts, duration, error) and a summary
    line; with more than ``max_rows`` nodes only the running and failed ones
    are listed.
    """

    def __init__(
        self, nodes: list[str], console: Console | None = None, max_rows: int = 30
    ) -> None:
        self.order = list(nodes)
        self.state = dict.fromkeys(nodes, "pending")
        self.detail: dict[str, str] = {}
        self.started: dict[str, float] = {}
        self.duration: dict[str, float] = {}
        self.attempts: dict[str, int] = {}
        self.max_rows = max_rows
        self.run_id = ""
        self.t0 = time.monotonic()
        self.live = Live(
            get_renderable=self.render, console=console, refresh_per_second=8, transient=False
        )

    def __call__(self, event: WorkflowEvent) -> None:
        kind = event.kind.value
        if kind == "run_started":
            self.run_id = event.run_id
            return
        name = event.node
        if name is None or name not in self.state:
            return
        state = _STATE.get(kind)
        if state is None:
            return
        if kind == "finished" and event.reason:
            state = "restored"
        self.state[name] = state
        if kind == "started":
            self.started.setdefault(name, time.monotonic())
            self.attempts[name] = event.attempt
        if event.duration_s is not None:
            self.duration[name] = event.duration_s
        if event.error:
            self.detail[name] = event.error
        elif event.reason:
            self.detail[name] = event.reason

    def render(self) -> RenderableType:
        """The table and the summary line."""
        counts: dict[str, int] = {}
        for state in self.state.values():
            counts[state] = counts.get(state, 0) + 1
        rows = self.order
        if len(rows) > self.max_rows:
            rows = [n for n in rows if self.state[n] in ("running", "retrying", "failed")]
            rows = rows[: self.max_rows]
        table = Table(box=None, pad_edge=False, expand=False)
        for column in ("node", "state", "attempt", "time", "detail"):
            table.add_column(column, justify="right" if column in ("attempt", "time") else "left")
        now = time.monotonic()
        for name in rows:
            state = self.state[name]
            took = self.duration.get(name)
            if took is None and name in self.started and state in ("running", "retrying"):
                took = now - self.started[name]
            table.add_row(
                Text(name),  # a Text, not a str: a node named "[red]x" is shown as such
                Text(state, style=_STYLE.get(state, "")),
                str(self.attempts.get(name, "")),
                "" if took is None else f"{took:.2f} s",
                Text(self.detail.get(name, "")[:80], style="dim"),
            )
        done = sum(counts.get(s, 0) for s in _DONE)
        summary = Text(  # one line, cut at the terminal's edge: the id is printed whole elsewhere
            f"run {self.run_id}  {done}/{len(self.state)} done  "
            + "  ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            + f"  {now - self.t0:.1f} s",
            no_wrap=True,
            overflow="ellipsis",
        )
        return Group(table, summary)

    def __enter__(self) -> WorkflowView:
        self.t0 = time.monotonic()
        self.live.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.live.refresh()
        self.live.stop()
        console = self.live.console
        if not console.is_terminal:  # rich ends the last render without a newline there
            console.line()
