"""Library code reports progress in one shape, ``ax.Progress``, wherever it goes."""

from __future__ import annotations

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
