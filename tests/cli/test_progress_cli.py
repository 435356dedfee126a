"""The one progress protocol (``ax.Progress``) and the one module that draws it."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console
from rich.text import Text

import ambidex as ax
from ambidex._progress import ProgressUpdate, fraction_of, open_progress_bar
from ambidex.cli._progress import WorkflowView, fractions, progress_bar, steps
from ambidex.workflows import EventKind, WorkflowEvent


def _terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=160, color_system=None), out


def _shown(out: io.StringIO) -> str:
    return Text.from_ansi(out.getvalue()).plain


class _Recorder:
    def __init__(self) -> None:
        self.reports: list[ax.Progress] = []

    def __call__(self, progress: ax.Progress) -> None:
        self.reports.append(progress)


def test_progress_update_is_a_progress_report_when_checked_structurally() -> None:
    update = ax.ProgressUpdate(3, 10, "three")
    assert isinstance(update, ax.Progress)
    assert (update.done, update.total, update.message) == (3, 10, "three")
    assert not isinstance(object(), ax.Progress)


@pytest.mark.parametrize(
    ("done", "total", "expected"),
    [(3, 10, 0.3), (0, None, None), (5, 0, None), (12, 10, 1.0), (-1, 10, 0.0)],
)
def test_fraction_of_a_report_is_clamped_and_none_without_a_total(
    done: float, total: float | None, expected: float | None
) -> None:
    assert fraction_of(ProgressUpdate(done, total)) == expected


def test_bar_shows_description_and_message_as_written_not_as_markup() -> None:
    console, out = _terminal()
    with open_progress_bar("model [bold]x[/bold]", console=console) as bar:
        bar(ProgressUpdate(5, 10, "pip install 'ambidex[fast]'"))
        bar.bar.refresh()  # type: ignore[attr-defined]
        shown = _shown(out)
    assert "model [bold]x[/bold]" in shown
    assert "pip install 'ambidex[fast]'" in shown
    assert "50%" in shown


def test_bar_skips_reports_closer_than_a_redraw_but_never_the_last() -> None:
    console, _ = _terminal()
    with open_progress_bar("run", console=console) as bar:
        task = bar.task  # type: ignore[attr-defined]
        progress = bar.bar  # type: ignore[attr-defined]
        bar(ProgressUpdate(1, 100))
        bar(ProgressUpdate(2, 100))  # within the redraw interval: dropped
        assert progress.tasks[task].completed == 1
        bar(ProgressUpdate(100, 100))  # the end is always drawn
        assert progress.tasks[task].completed == 100
        time.sleep(0.06)
        bar(ProgressUpdate(3, None, "unknown total"))
        assert progress.tasks[task].total is None


def test_disabled_bar_draws_nothing_and_accepts_reports() -> None:
    console, out = _terminal()
    with open_progress_bar("quiet", console=console, enabled=False) as bar:
        bar(ProgressUpdate(1, 2, "hidden"))
    assert out.getvalue() == ""


def test_cli_module_draws_with_the_same_bar() -> None:
    assert progress_bar is open_progress_bar


def test_steps_adapter_reports_done_of_total_steps() -> None:
    sink = _Recorder()
    steps(sink)(4, 8)
    assert sink.reports == [ProgressUpdate(4, 8, "step 4/8")]


def test_fractions_adapter_reports_a_jobs_fraction_and_message() -> None:
    sink = _Recorder()
    on_progress = fractions(sink)
    on_progress(None, "starting")
    on_progress(0.25, None)
    assert sink.reports == [ProgressUpdate(0.0, None, "starting"), ProgressUpdate(0.25, 1.0, "")]


def _event(kind: EventKind, node: str | None, **fields: object) -> WorkflowEvent:
    values: dict[str, object] = {
        "kind": kind,
        "run_id": "r1",
        "node": node,
        "elapsed_s": 0.0,
    }
    values.update(fields)
    return WorkflowEvent(**values)  # type: ignore[arg-type]


def test_workflow_view_shows_node_names_and_errors_literally() -> None:
    console, out = _terminal()
    view = WorkflowView(["[red]fetch", "summarize"], console=console)
    view(_event(EventKind.RUN_STARTED, None))
    view(_event(EventKind.STARTED, "[red]fetch", attempt=1))
    view(_event(EventKind.FAILED, "[red]fetch", error="KeyError: '[x]'", duration_s=0.5))
    view(_event(EventKind.SKIPPED, "summarize", reason="a dependency failed"))
    console.print(view.render())
    shown = _shown(out)
    assert "[red]fetch" in shown
    assert "KeyError: '[x]'" in shown
    assert "run r1  2/2 done" in shown
    assert view.state == {"[red]fetch": "failed", "summarize": "skipped"}
