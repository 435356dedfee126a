"""A live terminal view of a workflow run, driven by its events."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ambidex.workflows._events import EventKind, WorkflowEvent

__all__ = ["ProgressView"]

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
_STATE = {
    EventKind.QUEUED: "queued",
    EventKind.STARTED: "running",
    EventKind.RETRYING: "retrying",
    EventKind.FINISHED: "succeeded",
    EventKind.FAILED: "failed",
    EventKind.SKIPPED: "skipped",
    EventKind.CANCELLED: "cancelled",
}


class ProgressView:
    """Use as ``with ProgressView(node_names) as view: wf.run(..., on_event=view)``.

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
        if event.kind is EventKind.RUN_STARTED:
            self.run_id = event.run_id
            return
        name = event.node
        if name is None or name not in self.state:
            return
        state = _STATE.get(event.kind)
        if state is None:
            return
        if event.kind is EventKind.FINISHED and event.reason:
            state = "restored"
        self.state[name] = state
        if event.kind is EventKind.STARTED:
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
                name,
                Text(state, style=_STYLE.get(state, "")),
                str(self.attempts.get(name, "")),
                "" if took is None else f"{took:.2f} s",
                Text(self.detail.get(name, "")[:80], style="dim"),
            )
        done = sum(
            counts.get(s, 0) for s in ("succeeded", "restored", "failed", "skipped", "cancelled")
        )
        summary = Text(
            f"run {self.run_id}  {done}/{len(self.state)} done  "
            + "  ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            + f"  {now - self.t0:.1f} s"
        )
        return Group(table, summary)

    def __enter__(self) -> ProgressView:
        self.t0 = time.monotonic()
        self.live.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.live.refresh()
        self.live.stop()
