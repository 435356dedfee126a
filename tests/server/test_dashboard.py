"""The dashboard in a real browser: Debian's Chromium driven by Playwright's sync API.

Each test starts a real job service on loopback, opens the pages, and waits
(with timeouts, never bare sleeps) for what the page shows to change.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _server_support import serve_in_thread

from ambidex.server import create_app
from ambidex.server._auth import TOKEN_COOKIE

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - playwright is in the dev extra
    pytest.skip("playwright is not installed", allow_module_level=True)

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():  # pragma: no cover - .ci/run installs it when it can
    pytest.skip(
        f"{CHROMIUM} is missing (apt-get install chromium); the browser tests need it",
        allow_module_level=True,
    )

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000
TOKEN = "s3cret-dashboard-token"

# Records, per job id, the statuses its row has shown (each change once).
_WATCH_ROWS = """() => {
  window.seenStatuses = {};
  const note = () => {
    for (const tr of document.querySelectorAll("#job-rows tr[data-job-id]")) {
      const seen = (window.seenStatuses[tr.dataset.jobId] ||= []);
      if (seen[seen.length - 1] !== tr.dataset.status) seen.push(tr.dataset.status);
    }
  };
  note();
  new MutationObserver(note).observe(document.getElementById("job-rows"), {
    subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"],
  });
}"""


@pytest.fixture
def token_server_url(tmp_path: Path) -> Iterator[str]:
    """A job service that needs a token."""
    app = create_app(tmp_path / "jobs.sqlite", concurrency=2, lease_s=5.0, token=TOKEN)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module (each test gets its own context)."""
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page with its own cookies; fails the test if a script on it threw.

    Tests ask for their server first, so the page closes (and its streams end)
    before the server stops.
    """
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        tab = context.new_page()
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        yield tab
    finally:
        context.close()
    assert not errors, f"scripts on the page threw: {errors}"


def _submit(url: str, workload: str, input: dict[str, Any], token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = httpx.post(
        f"{url}/v1/jobs", json={"workload": workload, "input": input}, headers=headers
    )
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    return job_id


def _event_seqs(url: str, job_id: str) -> list[int]:
    """The seqs of a finished job's events, read from its server-sent event stream."""
    with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", timeout=10) as stream:
        return [int(line[4:]) for line in stream.iter_lines() if line.startswith("id: ")]


def _status(page: Page, url: str) -> int:
    """Open ``url``; the HTTP status the page was answered with."""
    answer = page.goto(url)
    assert answer is not None
    return answer.status


def _open_live_list(page: Page, url: str) -> None:
    page.goto(url if "?" in url else f"{url}/")
    expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=WAIT_MS)


def test_list_shows_a_submitted_job_running_then_succeeded(server_url: str, page: Page) -> None:
    _open_live_list(page, server_url)
    page.evaluate(_WATCH_ROWS)
    expect(page.locator("#empty")).to_be_visible()

    job_id = _submit(server_url, "sleep", {"seconds": 2.0, "steps": 5})

    row = page.locator(f'#job-rows tr[data-job-id="{job_id}"]')
    expect(row).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#empty")).to_be_hidden()
    expect(row).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
    seen = page.evaluate("id => window.seenStatuses[id]", job_id)
    assert "running" in seen, seen
    assert seen[-1] == "succeeded"
    assert seen.index("running") < seen.index("succeeded")

    expect(row.locator('[data-field="status"]')).to_have_text("succeeded")
    expect(row.locator('[data-field="status"]')).to_have_class("badge s-succeeded")
    expect(row.locator('[data-field="progress"]')).to_have_attribute("data-progress", "1")
    expect(row.locator(".pct")).to_have_text("100%")
    expect(row.locator('[data-field="workload"]')).to_have_text("sleep")
    expect(row.locator('[data-field="attempts"]')).to_have_text("1/3")
    expect(row.locator('[data-field="finished_at"]')).not_to_have_text("")
    expect(page.locator('[data-count="succeeded"]')).to_have_text("1", timeout=WAIT_MS)
    expect(page.locator('[data-count="all"]')).to_have_text("1")
    expect(row.locator('a[data-field="id"]')).to_have_attribute("href", f"/jobs/{job_id}")


def test_list_filters_by_status(server_url: str, page: Page) -> None:
    done = _submit(server_url, "echo", {"value": 1})
    long = _submit(server_url, "sleep", {"seconds": 30, "steps": 30})
    page.goto(f"{server_url}/?status=running")
    expect(page.locator('#filters a[data-filter="running"]')).to_have_class("chip active")
    expect(page.locator(f'#job-rows tr[data-job-id="{long}"]')).to_be_visible(timeout=WAIT_MS)
    expect(page.locator(f'#job-rows tr[data-job-id="{done}"]')).to_have_count(0)
    httpx.delete(f"{server_url}/v1/jobs/{long}")
    # Cancelled, the job leaves the "running" page without a reload.
    expect(page.locator("#job-rows tr")).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator('[data-count="cancelled"]')).to_have_text("1", timeout=WAIT_MS)


def test_list_pages_back_to_older_jobs(server_url: str, page: Page) -> None:
    oldest, middle, newest = (_submit(server_url, "echo", {"value": i}) for i in range(3))
    _open_live_list(page, server_url + "/?limit=2")
    rows = page.locator("#job-rows tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-job-id", newest)
    page.click("#older")
    expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job-id", oldest)
    expect(page.locator("#older")).to_have_count(0)
    assert middle not in page.content()


def test_submit_form_submits_a_job_and_reports_bad_input(server_url: str, page: Page) -> None:
    _open_live_list(page, server_url)
    page.select_option("#submit-workload", "echo")
    expect(page.locator("#submit-input")).to_have_value('{"value": null}')
    page.fill("#submit-input", '{"value": [1, "two"]}')
    page.click("#submit-button")
    link = page.locator("#submitted-job")
    expect(link).to_be_visible(timeout=WAIT_MS)
    job_id = link.get_attribute("data-job-id")
    assert job_id
    row = page.locator(f'#job-rows tr[data-job-id="{job_id}"]')
    expect(row).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
    assert httpx.get(f"{server_url}/v1/jobs/{job_id}").json()["result"] == [1, "two"]

    message = page.locator("#submit-message")
    page.fill("#submit-input", "not json")
    page.click("#submit-button")
    expect(message).to_have_attribute("data-kind", "error")
    expect(message).to_contain_text("not JSON")

    page.select_option("#submit-workload", "sleep")
    page.fill("#submit-input", '{"seconds": "soon"}')
    page.click("#submit-button")
    expect(message).to_contain_text("seconds", timeout=WAIT_MS)
    expect(message).to_have_attribute("data-kind", "error")


def test_job_page_streams_events_and_shows_the_result(server_url: str, page: Page) -> None:
    job_id = _submit(server_url, "sleep", {"seconds": 2.5, "steps": 5})
    page.goto(f"{server_url}/jobs/{job_id}")
    job = page.locator("#job")
    rendered_last_seq = int(job.get_attribute("data-last-seq") or 0)
    assert job.get_attribute("data-status") in ("queued", "running")
    expect(page.locator("#cancel")).to_be_visible()
    expect(page.locator("#result-pending")).to_be_visible()
    expect(page.locator("#input")).to_contain_text('"seconds": 2.5')

    expect(page.locator('#event-rows tr[data-kind="succeeded"]')).to_have_count(1, timeout=WAIT_MS)
    expect(job).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#status-badge")).to_have_text("succeeded")
    expect(page.locator("#result")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#result")).to_contain_text('"steps": 5')
    expect(page.locator("#result-pending")).to_be_hidden()
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator('.progress[data-field="progress"] .pct')).to_have_text("100%")
    expect(page.locator('#fields [data-field="attempts"]')).to_have_text("1/3")
    expect(page.locator('#fields [data-field="worker"]')).not_to_have_text("\u2013")
    expect(page.locator("#live")).to_have_text("finished")

    # Every event once, in order: those rendered with the page, then those streamed.
    shown = [
        int(s)
        for s in page.locator("#event-rows tr").evaluate_all("rows => rows.map(r => r.dataset.seq)")
    ]
    assert shown == _event_seqs(server_url, job_id)
    assert shown[-1] > rendered_last_seq, "no event arrived live"
    kinds = page.locator("#event-rows tr").evaluate_all("rows => rows.map(r => r.dataset.kind)")
    assert kinds[0] == "submitted"
    assert "started" in kinds
    assert "progress" in kinds
    expect(page.locator('#event-rows tr[data-kind="progress"] .detail').last).to_have_text(
        "100% \u00b7 step 5 of 5"
    )


def test_job_page_cancel_button_cancels_a_running_job(server_url: str, page: Page) -> None:
    job_id = _submit(server_url, "sleep", {"seconds": 60, "steps": 60})
    page.goto(f"{server_url}/jobs/{job_id}")
    job = page.locator("#job")
    expect(job).to_have_attribute("data-status", "running", timeout=WAIT_MS)
    page.click("#cancel")
    expect(job).to_have_attribute("data-status", "cancelled", timeout=WAIT_MS)
    expect(page.locator('#event-rows tr[data-kind="cancelled"]')).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator('#event-rows tr[data-kind="cancel_requested"]')).to_have_count(1)
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#error")).to_contain_text("cancelled by request", timeout=WAIT_MS)
    assert httpx.get(f"{server_url}/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_finished_job_page_shows_its_error_without_streaming(server_url: str, page: Page) -> None:
    job_id = _submit(server_url, "sleep", {"seconds": -1})
    httpx.get(f"{server_url}/v1/jobs/{job_id}/events", timeout=10)  # returns once it finished
    page.goto(f"{server_url}/jobs/{job_id}")
    expect(page.locator("#job")).to_have_attribute("data-status", "failed")
    expect(page.locator("#error")).to_contain_text("ValueError: seconds must be >= 0")
    expect(page.locator("#result")).to_be_hidden()
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator('#event-rows tr[data-kind="failed"]')).to_have_count(1)


def test_unknown_job_and_bad_filter_answer_error_pages(server_url: str, page: Page) -> None:
    assert _status(page, f"{server_url}/jobs/%3Cb%3Enope%3Cb%3E") == 404
    expect(page.locator("#notice")).to_contain_text("No such job")
    expect(page.locator("#notice code")).to_have_text("<b>nope<b>")
    expect(page.locator("#notice b")).to_have_count(0)

    assert _status(page, f"{server_url}/?status=%3Ci%3Ebad%3C%2Fi%3E") == 400
    expect(page.locator("#notice")).to_contain_text("<i>bad</i>")
    expect(page.locator("#notice i")).to_have_count(0)


def test_values_from_jobs_are_shown_as_text_never_run(server_url: str, page: Page) -> None:
    evil = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    job_id = _submit(server_url, "echo", {"value": {"note": evil}})
    _open_live_list(page, server_url)
    expect(page.locator(f'#job-rows tr[data-job-id="{job_id}"]')).to_have_attribute(
        "data-status", "succeeded", timeout=WAIT_MS
    )
    page.goto(f"{server_url}/jobs/{job_id}")
    expect(page.locator("#result")).to_contain_text('<img src=x onerror=\\"window.pwned=1\\">')
    expect(page.locator("#input")).to_contain_text("<script>window.pwned=2</script>")
    expect(page.locator("#job img")).to_have_count(0)
    expect(page.locator("#job script")).to_have_count(0)
    assert page.evaluate("window.pwned") is None


def test_token_is_needed_then_kept_in_a_cookie(token_server_url: str, page: Page) -> None:
    url = token_server_url
    assert _status(page, f"{url}/") == 401
    expect(page.locator("#notice")).to_contain_text("token")
    assert _status(page, f"{url}/?token=wrong") == 401
    assert _status(page, f"{url}/jobs/anything") == 401

    assert _status(page, f"{url}/?token={TOKEN}") == 200
    assert page.url == f"{url}/", "the token should leave the address bar"
    cookie = next(c for c in page.context.cookies() if c["name"] == TOKEN_COOKIE)
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Lax"
    expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=WAIT_MS)

    job_id = _submit(url, "sleep", {"seconds": 2.0, "steps": 4}, token=TOKEN)
    row = page.locator(f'#job-rows tr[data-job-id="{job_id}"]')
    expect(row).to_be_visible(timeout=WAIT_MS)
    row.locator('a[data-field="id"]').click()
    expect(page.locator("#job")).to_have_attribute("data-job-id", job_id)
    expect(page.locator('#event-rows tr[data-kind="succeeded"]')).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#result")).to_contain_text('"steps": 4', timeout=WAIT_MS)
    page.goto(f"{url}/")
    expect(row).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
