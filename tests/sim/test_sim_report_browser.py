"""A sim report in a real browser (headless Chromium): the agents' slider and the CSV links."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

import ambidex as ax
from ambidex.sim._report import report

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - playwright is in the dev extra
    pytest.skip("playwright is not installed", allow_module_level=True)

from sim_toy_models import Herd

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():  # pragma: no cover - .ci/run installs it when it can
    pytest.skip(f"{CHROMIUM} is missing; the browser tests need it", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page that fails the test if a script on it threw."""
    errors: list[str] = []
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, errors


def test_the_slider_steps_through_the_agents_and_the_csv_links_download(
    tmp_path: Path, page: Page
) -> None:
    record = tmp_path / "herd.sqlite"
    result = ax.sim.run(Herd, steps=10, seed=5, record=record, snapshot_every=5)
    page.goto(report(record).as_uri())

    frame = page.locator("#space-frame")
    first = frame.get_attribute("src")
    assert page.locator("#space-label").text_content() == "step 0"
    page.locator("#space-step").fill("2")
    assert page.locator("#space-label").text_content() == "step 10"
    assert frame.get_attribute("alt") == "agents at step 10"
    last = frame.get_attribute("src")
    assert last != first
    assert last is not None
    assert last.startswith("data:image/png;base64,")
    # the picture shown is a real image the browser decoded, not a broken one
    assert frame.evaluate("img => img.complete && img.naturalWidth > 100")

    with page.expect_download() as caught:
        page.locator('a[download="metrics.csv"]').click()
    download = caught.value
    assert download.suggested_filename == "metrics.csv"
    rows = list(csv.reader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert rows[0] == ["run", "point", "replicate", "step", "a", "b", "c"]
    assert [int(r[3]) for r in rows[1:]] == list(range(11))
    assert [float(r[6]) for r in rows[1:]] == result.metrics["c"].tolist()


def test_the_runs_table_downloads_and_the_replicates_show_on_demand(
    tmp_path: Path, page: Page
) -> None:
    record = tmp_path / "sweep.sqlite"
    result = ax.sim.sweep(Herd, {"n": [10, 20]}, replicates=2, steps=3, record=record, workers=1)
    page.goto(report(record).as_uri())
    shown = page.locator("h2:text('Runs') ~ div.scroll table").first.locator("tbody tr")
    assert shown.count() == 4
    with page.expect_download() as caught:
        page.locator('a[download="runs.csv"]').click()
    rows = list(csv.reader(io.StringIO(Path(caught.value.path()).read_text(encoding="utf-8"))))
    assert len(rows) == 1 + shown.count()
    digest = rows[0].index("digest")
    assert [r[digest] for r in rows[1:]] == [run.metrics.digest() for run in result.runs]

    # the checkbox swaps each chart's min-max band for every replicate's own line
    band = page.locator("figure.banded").first
    every = page.locator("figure.traced").first
    assert band.is_visible()
    assert not every.is_visible()
    page.locator("#traces-toggle").check()
    assert every.is_visible()
    assert not band.is_visible()
    assert every.locator("img").evaluate("img => img.naturalWidth > 100")
    page.locator("#traces-toggle").uncheck()
    assert band.is_visible()
