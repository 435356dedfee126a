"""Library code reports progress in one shape, ``ax.Progress``, wherever it goes."""

from __future__ import annotations

import logging

import pytest

import ambidex as ax
import ambidex.jobs


def test_jobs_progress_report_is_the_one_protocol() -> None:
    assert ambidex.jobs.ProgressReport is ax.Progress


def test_a_job_stores_a_reports_fraction_and_message() -> None:
    sink = ambidex.jobs.JobProgress()
    sink.report(ax.ProgressUpdate(3, 4, "three of four"))
    assert sink._take() == (0.75, "three of four")
    sink.report(ax.ProgressUpdate(3, None, "counting"))
    assert sink._take() == (None, "counting")


def test_a_sweeps_report_is_an_ax_progress() -> None:
    from ambidex.sim import SweepProgress

    report = SweepProgress(
        runs_done=2, runs_total=8, steps_done=250, steps_total=800, elapsed_s=1.0
    )
    assert isinstance(report, ax.Progress)
    assert (report.done, report.total, report.message) == (250, 800, "2/8 runs")
    no_steps = SweepProgress(runs_done=3, runs_total=4, steps_done=0, steps_total=0, elapsed_s=0)
    assert (no_steps.done, no_steps.total) == (3, 4)


def test_an_evolutions_report_is_an_ax_progress() -> None:
    from ambidex.evolve import EvolveProgress

    report = EvolveProgress(
        iterations=100,
        done=12,
        in_flight=4,
        succeeded=9,
        failed=3,
        best_score=2.5,
        best_id=7,
        elapsed_s=6.0,
    )
    assert isinstance(report, ax.Progress)
    assert (report.done, report.total) == (12, 100)
    assert report.message == report.line()
    assert report.message.startswith("12/100 done")


def test_a_job_takes_a_sweeps_reports_through_its_sink() -> None:
    from ambidex.sim import SweepProgress

    sink = ambidex.jobs.JobProgress()
    sink.report(SweepProgress(1, 2, 50, 200, 0.5))
    assert sink._take() == (0.25, "1/2 runs")


def test_failed_candidates_are_logged_first_of_a_kind_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from ambidex.evolve._coordinator import _log_failure
    from ambidex.evolve._database import Program

    failed = Program(code="", metrics={}, score=None, ok=False, error="Traceback\nKeyError: 'x'")
    with caplog.at_level(logging.DEBUG, logger="ambidex.evolve"):
        _log_failure(failed, "error", first=True)
        _log_failure(failed, "error", first=False)
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert records == [
        (logging.INFO, "candidate 0 failed (error, the first of its kind): KeyError: 'x'"),
        (logging.DEBUG, "candidate 0 failed (error): KeyError: 'x'"),
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ambidex.evolve"):
        _log_failure(failed, "timeout", first=True)
    assert caplog.records == []
