"""The dashboard in a real browser: Debian's Chromium driven by Playwright's sync API.

Each test starts a real job service on loopback, opens the pages, and waits
(with timeouts, never bare sleeps) for what the page shows to change.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from _server_support import serve_in_thread

import ambidex as ax
from ambidex.jobs import JobEvent, JobManager, WorkloadRegistry
from ambidex.jobs._builtin import register as register_builtins
from ambidex.server import create_app
from ambidex.server._auth import TOKEN_COOKIE
from ambidex.server._dashboard import _event_rows

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


# -- workloads of the tests' own servers ----------------------------------------------


def fails_once(marker: str) -> str:
    """Fail the first time (leaving the file ``marker``), succeed after (on an I/O thread)."""
    if not Path(marker).exists():
        Path(marker).write_text("")
        raise RuntimeError("the first try fails")
    return "second try"


async def always_fails(message: str) -> None:
    raise RuntimeError(message)


async def double(x: float) -> float:
    return x * 2


async def label(x: float) -> str:
    return f"<b>{x}</b>"


def _registry() -> WorkloadRegistry:
    """The built-in workloads, the ones above, and the workflow ``calc`` (double, then label)."""
    reg = WorkloadRegistry()
    register_builtins(reg)
    for fn in (fails_once, always_fails):
        reg.register(fn)
    wf = ax.Workflow("calc", inputs={"x": float})
    doubled = wf.node("double", double, input={"x": wf.inputs.x})
    wf.node("label", label, input={"x": doubled.output})
    reg.register_workflow(wf)
    return reg


@pytest.fixture
def own_url(tmp_path: Path) -> Iterator[str]:
    """A job service running the workloads of ``_registry``."""
    app = create_app(tmp_path / "jobs.sqlite", registry=_registry(), concurrency=4, lease_s=5.0)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def idle_url(tmp_path: Path) -> Iterator[str]:
    """A job service that runs no jobs itself (concurrency 0), and no worker anywhere."""
    app = create_app(tmp_path / "jobs.sqlite", concurrency=0, lease_s=5.0)
    with serve_in_thread(app) as url:
        yield url


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


def _submit(
    url: str, workload: str, input: dict[str, Any], token: str | None = None, **options: Any
) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"workload": workload, "input": input, **options}
    answer = httpx.post(f"{url}/v1/jobs", json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    return job_id


def _run(url: str, workload: str, input: dict[str, Any]) -> dict[str, Any]:
    """Run a job to its end; the finished job."""
    answer = httpx.post(f"{url}/v1/run/{workload}", json=input, timeout=30)
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


def _finished(url: str, job_id: str) -> dict[str, Any]:
    """The job once it has finished (its event stream ends then)."""
    httpx.get(f"{url}/v1/jobs/{job_id}/events", timeout=30)
    job: dict[str, Any] = httpx.get(f"{url}/v1/jobs/{job_id}").json()
    assert job["status"] in ("succeeded", "failed", "cancelled"), job
    return job


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
    expect(row.locator('[data-field="attempts"]')).to_have_text("1")
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


def test_list_pages_to_older_jobs_and_back(own_url: str, page: Page) -> None:
    echoes = [_run(own_url, "echo", {"value": i})["id"] for i in range(5)]
    _run(own_url, "sleep", {"seconds": 0})  # not an echo: the workload filter leaves it out
    newest_first = echoes[::-1]
    rows = page.locator("#job-rows tr")

    def shown() -> None:
        expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=WAIT_MS)

    _open_live_list(page, own_url + "/?workload=echo&limit=2")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_attribute("data-job-id", newest_first[0])
    expect(page.locator("#newer")).to_be_hidden()
    page.click("#older")
    shown()
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_attribute("data-job-id", newest_first[2])
    expect(rows.nth(1)).to_have_attribute("data-job-id", newest_first[3])
    page.click("#older")
    shown()
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job-id", newest_first[4])
    expect(page.locator("#older")).to_be_hidden()
    assert "workload=echo" in page.url

    page.click("#newer")
    shown()
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_attribute("data-job-id", newest_first[2])
    page.click("#newer")
    shown()
    expect(rows.nth(0)).to_have_attribute("data-job-id", newest_first[0])
    expect(rows.nth(1)).to_have_attribute("data-job-id", newest_first[1])
    expect(page.locator("#newer")).to_be_hidden()
    expect(page.locator("#older")).to_be_visible()


def test_list_filters_by_workload_with_the_status(own_url: str, tmp_path: Path, page: Page) -> None:
    async def store_a_job_of_a_gone_workload() -> None:
        reg = WorkloadRegistry()
        reg.register(always_fails, name="retired")
        async with JobManager(tmp_path / "jobs.sqlite", reg, concurrency=0) as jm:
            await jm.submit("retired", {"message": "x"})

    # Playwright's sync API holds this thread's event loop: run the manager in another thread.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(lambda: asyncio.run(store_a_job_of_a_gone_workload())).result()
    echo = _run(own_url, "echo", {"value": 1})["id"]
    failed = _finished(own_url, _submit(own_url, "always_fails", {"message": "no"}))["id"]
    _open_live_list(page, own_url)
    options = page.locator("#workload-select option").evaluate_all(
        "options => options.map(o => o.value)"
    )
    assert options[0] == ""
    assert {"echo", "sleep", "calc", "always_fails", "retired"} <= set(options)
    # This server's worker does not take "retired": its queued job waits, and the list says so.
    expect(page.locator("#queue-banner")).to_be_visible()
    expect(page.locator("#queue-problem")).to_have_text("no live worker takes retired (1 queued).")

    page.select_option("#workload-select", "echo")
    expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    assert "workload=echo" in page.url
    expect(page.locator("#job-rows tr")).to_have_count(1)
    expect(page.locator(f'#job-rows tr[data-job-id="{echo}"]')).to_be_visible()
    expect(page.locator('[data-count="all"]')).to_have_text("1", timeout=WAIT_MS)

    # A status chip keeps the workload; the workload filter keeps the status.
    page.click('#filters a[data-filter="failed"]')
    expect(page.locator("#empty")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#empty")).to_have_text("No failed jobs of echo.")
    page.select_option("#workload-select", "always_fails")
    expect(page.locator(f'#job-rows tr[data-job-id="{failed}"]')).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#job-rows tr")).to_have_count(1)
    assert "status=failed" in page.url
    expect(page.locator('#filters a[data-filter="failed"]')).to_have_class("chip active")

    page.select_option("#workload-select", "")
    expect(page.locator("#job-rows tr")).to_have_count(1, timeout=WAIT_MS)
    assert "workload" not in page.url


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
    expect(page.locator('#fields [data-field="attempts"]')).to_have_text("1")
    expect(page.locator('#fields [data-field="max_attempts"]')).to_have_text("3")
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
    # A write from the page is authorized by the cookie (and its X-Requested-With header).
    row.locator('button[data-action="rerun"]').click()
    expect(page.locator("#action-message")).to_contain_text("re-run as", timeout=WAIT_MS)
    expect(page.locator("#action-message")).to_have_attribute("data-kind", "ok")


# -- actions ---------------------------------------------------------------------------


def _row(page: Page, job_id: str) -> Any:
    return page.locator(f'#job-rows tr[data-job-id="{job_id}"]')


def test_list_retry_runs_a_failed_job_again(own_url: str, tmp_path: Path, page: Page) -> None:
    job_id = _submit(own_url, "fails_once", {"marker": str(tmp_path / "tried")})
    _open_live_list(page, own_url)
    row = _row(page, job_id)
    expect(row).to_have_attribute("data-status", "failed", timeout=WAIT_MS)
    expect(row.locator('[data-field="error"]')).to_have_text("RuntimeError: the first try fails")
    expect(row.locator('button[data-action="cancel"]')).to_be_hidden()
    expect(row.locator('button[data-action="rerun"]')).to_be_visible()

    row.locator('button[data-action="retry"]').click()
    message = page.locator("#action-message")
    expect(message).to_have_attribute("data-kind", "ok", timeout=WAIT_MS)
    expect(message).to_have_text(f"Job {job_id} is back in the queue.")
    expect(row).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
    expect(row.locator('[data-field="error"]')).to_have_text("")
    expect(row.locator('button[data-action="retry"]')).to_be_hidden()
    expect(row.locator('[data-field="duration"]')).to_have_text(re.compile(r"^\d+\.\d\d s$"))
    assert httpx.get(f"{own_url}/v1/jobs/{job_id}").json()["result"] == "second try"


def test_list_rerun_makes_a_new_job_linked_to_the_old(own_url: str, page: Page) -> None:
    old = _run(own_url, "echo", {"value": "again"})["id"]
    _open_live_list(page, own_url)
    expect(_row(page, old).locator('button[data-action="retry"]')).to_be_hidden()
    _row(page, old).locator('button[data-action="rerun"]').click()
    message = page.locator("#action-message")
    expect(message).to_contain_text(f"Job {old} re-run as ", timeout=WAIT_MS)
    new = message.get_attribute("data-new-job-id")
    assert new
    assert new != old
    expect(message.locator(f'a[href="/jobs/{new}"]')).to_have_text(new)
    expect(_row(page, new)).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
    expect(page.locator("#job-rows tr").first).to_have_attribute("data-job-id", new)
    job = httpx.get(f"{own_url}/v1/jobs/{new}").json()
    assert job["rerun_of"] == old
    assert job["result"] == "again"

    message.locator(f'a[href="/jobs/{new}"]').click()
    expect(page.locator('#fields [data-field="rerun_of"] a')).to_have_attribute(
        "href", f"/jobs/{old}"
    )


def test_list_cancel_stops_a_running_job(own_url: str, page: Page) -> None:
    job_id = _submit(own_url, "sleep", {"seconds": 30, "steps": 30})
    _open_live_list(page, own_url)
    row = _row(page, job_id)
    expect(row).to_have_attribute("data-status", "running", timeout=WAIT_MS)
    expect(row.locator('button[data-action="rerun"]')).to_be_hidden()
    row.locator('button[data-action="cancel"]').click()
    expect(row).to_have_attribute("data-status", "cancelled", timeout=WAIT_MS)
    expect(page.locator("#action-message")).to_have_attribute("data-kind", "ok")
    expect(row.locator('button[data-action="cancel"]')).to_be_hidden()
    expect(row.locator('button[data-action="retry"]')).to_be_visible()
    expect(row.locator('button[data-action="rerun"]')).to_be_visible()
    assert httpx.get(f"{own_url}/v1/jobs/{job_id}").json()["status"] == "cancelled"


# -- workers ---------------------------------------------------------------------------


def test_workers_page_lists_this_server_as_a_live_worker(own_url: str, page: Page) -> None:
    page.goto(f"{own_url}/")
    page.click('#nav a[data-nav="workers"]')
    expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    rows = page.locator("#worker-rows tr")
    expect(rows).to_have_count(1)
    worker = rows.first
    expect(worker).to_have_attribute("data-alive", "true")
    expect(worker.locator('[data-field="state"]')).to_have_text("alive")
    expect(worker.locator('[data-field="here"]')).to_be_visible()
    expect(worker.locator('[data-field="held"]')).to_have_text("0/4")
    expect(worker.locator('[data-field="workloads"]')).to_have_text(
        "always_fails, calc, echo, fails_once, primes, sleep"
    )
    expect(worker.locator('[data-field="age"]')).to_have_text(re.compile(r"^\d+\.\d s ago$"))
    expect(page.locator("#queue-banner")).to_be_hidden()
    expect(page.locator('[data-stat="alive"]')).to_have_text("1")

    job_id = _submit(own_url, "sleep", {"seconds": 30, "steps": 30})
    expect(worker.locator('[data-field="held"]')).to_have_text("1/4", timeout=WAIT_MS)
    expect(page.locator('[data-stat="running"]')).to_have_text("1", timeout=WAIT_MS)
    httpx.delete(f"{own_url}/v1/jobs/{job_id}")


def test_without_a_worker_the_pages_say_nothing_consumes_the_queue(
    idle_url: str, page: Page
) -> None:
    page.goto(f"{idle_url}/workers")
    banner = page.locator("#queue-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Nothing consumes the queue")
    expect(page.locator("#queue-problem")).to_have_text(
        "no worker is alive; jobs submitted now will wait."
    )
    expect(page.locator("#worker-command")).to_contain_text("ambidex worker --db ")
    expect(page.locator("#worker-command")).to_contain_text("jobs.sqlite")
    expect(page.locator("#no-workers")).to_be_visible()
    expect(page.locator("#this-server")).to_contain_text("--concurrency 0")

    _open_live_list(page, idle_url)
    expect(page.locator("#queue-banner")).to_be_hidden()  # nothing waits yet
    job_id = _submit(idle_url, "echo", {"value": 1})
    expect(page.locator("#queue-banner")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#queue-problem")).to_have_text("no worker is alive, and 1 job is queued.")
    expect(_row(page, job_id)).to_have_attribute("data-status", "queued")

    page.goto(f"{idle_url}/workers")
    expect(page.locator("#queue-problem")).to_have_text("no worker is alive, and 1 job is queued.")
    expect(page.locator('[data-stat="queued"]')).to_have_text("1")


# -- one job: attempts, tracebacks, summaries ------------------------------------------


def test_job_page_shows_the_traceback_and_every_attempt(own_url: str, page: Page) -> None:
    job_id = _submit(
        own_url, "always_fails", {"message": "bad luck"}, retries=1, retry_backoff_s=0.05
    )
    page.goto(f"{own_url}/jobs/{job_id}")
    job = page.locator("#job")
    expect(job).to_have_attribute("data-status", "failed", timeout=WAIT_MS)
    attempts = page.locator("#attempt-rows tr")
    expect(attempts).to_have_count(2, timeout=WAIT_MS)
    expect(attempts.nth(0)).to_have_attribute("data-outcome", "retrying")
    expect(attempts.nth(1)).to_have_attribute("data-outcome", "failed")
    for i in range(2):
        expect(attempts.nth(i).locator('[data-field="error"]')).to_have_text(
            "RuntimeError: bad luck"
        )
    first_trace = attempts.nth(0).locator('[data-field="traceback"]')
    expect(first_trace).to_be_hidden()  # collapsed until asked for
    attempts.nth(0).locator("summary").click()
    expect(first_trace).to_contain_text("in always_fails")
    expect(page.locator("#error")).to_have_text("RuntimeError: bad luck")
    expect(page.locator("#traceback")).to_be_visible()
    expect(page.locator("#traceback")).to_contain_text("Traceback (most recent call last)")
    expect(page.locator("#traceback")).to_contain_text("RuntimeError: bad luck")
    expect(page.locator('#fields [data-field="retries"]')).to_have_text("1/1")
    expect(page.locator('#fields [data-field="attempts"]')).to_have_text("2")
    expect(page.locator("#cancel")).to_be_hidden()

    # Retried by hand, it runs (and fails) twice more, followed live.
    page.click("#retry")
    expect(page.locator("#job-message")).to_have_text(f"Job {job_id} is back in the queue.")
    expect(attempts).to_have_count(4, timeout=WAIT_MS)
    expect(job).to_have_attribute("data-status", "failed", timeout=WAIT_MS)
    expect(attempts.nth(3)).to_have_attribute("data-outcome", "failed", timeout=WAIT_MS)
    expect(page.locator("#retry")).to_be_visible()


def test_job_page_shows_the_job_options_and_cancels_a_queued_job(idle_url: str, page: Page) -> None:
    key = "<b>order-17</b>"
    job_id = _submit(idle_url, "echo", {"value": 1}, delay_s=3600, priority=5, idempotency_key=key)
    page.goto(f"{idle_url}/jobs/{job_id}")
    fields = page.locator("#fields")
    expect(fields.locator('[data-row="run_at"]')).to_be_visible()
    expect(fields.locator('[data-field="priority"]')).to_have_text("5")
    expect(fields.locator('[data-field="idempotency_key"]')).to_have_text(key)
    expect(fields.locator('[data-field="rerun_of"]')).to_have_text("\u2013")
    expect(page.locator("#no-attempts")).to_be_visible()
    expect(page.locator("#retry")).to_be_hidden()
    expect(page.locator("#rerun")).to_be_hidden()

    page.click("#cancel")
    expect(page.locator("#job")).to_have_attribute("data-status", "cancelled", timeout=WAIT_MS)
    expect(page.locator("#job-message")).to_have_text(f"Job {job_id} cancelled.")
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#retry")).to_be_visible()
    expect(page.locator("#rerun")).to_be_visible()
    expect(fields.locator('[data-row="run_at"]')).to_be_hidden()  # it waits no more


def test_job_page_shows_a_repeated_progress_report_once(idle_url: str, page: Page) -> None:
    job_id = _submit(idle_url, "echo", {"value": 1})  # stays queued: nothing runs it
    reports = [(0.5, "halfway"), (0.5, "halfway"), (0.5, "halfway"), (0.75, "further")]
    stream = "".join(
        f"id: {seq}\nevent: progress\n"
        f'data: {{"seq": {seq}, "job_id": "{job_id}", "kind": "progress", '
        f'"at": "2030-01-01T00:00:00.000Z", "progress": {p}, "message": "{m}"}}\n\n'
        for seq, (p, m) in enumerate(reports, start=100)
    )
    page.route(
        re.compile(rf".*/v1/jobs/{job_id}/events\?after=\d+$"),
        lambda route: route.fulfill(
            status=200, headers={"Content-Type": "text/event-stream"}, body=stream
        ),
    )
    # (When the made-up stream ends, the page reloads the job's record, which has no progress.)
    page.goto(f"{idle_url}/jobs/{job_id}")
    details = page.locator('#event-rows tr[data-kind="progress"] .detail')
    expect(details).to_have_text(["50% \u00b7 halfway", "75% \u00b7 further"], timeout=WAIT_MS)


def test_job_page_renders_a_repeated_progress_report_once() -> None:
    def progress(seq: int, fraction: float) -> JobEvent:
        return JobEvent(seq, "j", "progress", 0.0, {"progress": fraction, "message": "m"})

    started = JobEvent(3, "j", "started", 0.0, {"attempt": 2})
    events = [progress(1, 0.5), progress(2, 0.5), started, progress(4, 0.5), progress(5, 0.5)]
    rows = re.findall(r'data-seq="(\d+)"', _event_rows(events))
    assert rows == ["1", "3", "4"]


def test_workflow_job_page_summarizes_its_nodes(own_url: str, page: Page) -> None:
    job_id = _submit(own_url, "calc", {"x": 2})
    page.goto(f"{own_url}/jobs/{job_id}")
    summary = page.locator("#summary")
    expect(summary).to_be_visible(timeout=WAIT_MS)
    expect(summary).to_have_attribute("data-kind", "workflow")
    expect(page.locator("#summary-head")).to_contain_text("workflow calc")
    nodes = page.locator("#summary-nodes tbody tr")
    expect(nodes).to_have_count(2)
    double_row = page.locator('#summary-nodes tr[data-node="double"]')
    expect(double_row.locator(".badge")).to_have_text("succeeded")
    expect(double_row.locator("td").last).to_have_text("4")
    # A node's output is text, never markup.
    expect(page.locator('#summary-nodes tr[data-node="label"] td').last).to_have_text("<b>4.0</b>")
    expect(page.locator("#summary b")).to_have_count(0)
    # The raw JSON is one click away.
    expect(page.locator("#result")).to_be_hidden()
    page.click("#result-label")
    expect(page.locator("#result")).to_contain_text('"workflow": "calc"')

    # Re-run from the job page: a link to the new job, which names this one.
    page.click("#rerun")
    # While the request is on its way the message links to this job ("Re-running
    # job X..."): wait for the answer, then follow the link to the new one.
    message = page.locator("#job-message")
    expect(message).to_have_attribute("data-kind", "ok", timeout=WAIT_MS)
    new_id = message.get_attribute("data-new-job-id")
    assert new_id
    assert new_id != job_id
    page.locator(f'#job-message a[data-job-id="{new_id}"]').click()
    expect(page.locator("#job")).to_have_attribute("data-job-id", new_id, timeout=WAIT_MS)
    expect(page.locator('#fields [data-field="rerun_of"]')).to_have_text(job_id)
    expect(page.locator("#summary")).to_be_visible(timeout=WAIT_MS)


async def gate_first(gate: str) -> str:
    return gate


def closed(gate: str) -> bool:
    """Whether the gate file exists (a sync helper: the check never blocks for long)."""
    return os.path.exists(gate)


async def gate_held(gate: str) -> int:
    """Wait while the file ``gate`` exists."""
    while closed(gate):
        await asyncio.sleep(0.02)
    return 7


async def gate_last(n: int) -> int:
    return n * 6


@pytest.fixture
def flow_url(tmp_path: Path) -> Iterator[str]:
    """A job service whose workflow ``gated`` holds its middle node while a gate file exists."""
    reg = WorkloadRegistry()
    wf = ax.Workflow("gated", inputs={"gate": str})
    first = wf.node("first", gate_first, input={"gate": wf.inputs.gate})
    held = wf.node("held", gate_held, input={"gate": first.output})
    wf.node("last", gate_last, input={"n": held.output})
    reg.register_workflow(wf)
    app = create_app(tmp_path / "jobs.sqlite", registry=reg, concurrency=2, lease_s=5.0)
    with serve_in_thread(app) as url:
        yield url


def test_workflow_job_page_shows_its_dag_and_nodes_live(
    flow_url: str, tmp_path: Path, page: Page
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    job_id = _submit(flow_url, "gated", {"gate": str(gate)})
    page.goto(f"{flow_url}/jobs/{job_id}")
    graph = page.locator("#workflow-graph")
    expect(graph).to_be_visible()
    expect(graph.locator("g.dag-node")).to_have_count(3)
    expect(graph.locator("path.dag-edge")).to_have_count(2)
    row = lambda node: page.locator(f'#node-rows tr[data-node="{node}"]')  # noqa: E731
    # Live, without a reload: held runs, last waits.
    expect(graph.locator('g[data-node="held"]')).to_have_attribute(
        "data-status", "running", timeout=WAIT_MS
    )
    expect(row("first").locator(".badge")).to_have_text("succeeded", timeout=WAIT_MS)
    expect(row("held").locator(".badge")).to_have_text("running", timeout=WAIT_MS)
    expect(row("last").locator(".badge")).to_have_text("pending")
    expect(row("first").locator('[data-field="attempts"]')).to_have_text("1")
    gate.unlink()
    expect(graph.locator('g[data-node="last"]')).to_have_attribute(
        "data-status", "succeeded", timeout=WAIT_MS
    )
    for node in ("first", "held", "last"):
        expect(row(node).locator(".badge")).to_have_text("succeeded", timeout=WAIT_MS)
        expect(row(node).locator('[data-field="duration"]')).to_have_text(
            re.compile(r"\d+\.\d\d s")
        )
        expect(row(node).locator('[data-field="job_attempt"]')).to_have_text("1")
    expect(page.locator("#status-badge")).to_have_text("succeeded", timeout=WAIT_MS)


SWEEP = {
    "kind": "sweep",
    "model": "Boltzmann",
    "grid": {"n": [10, 100]},
    "replicates": 2,
    "steps": 50,
    "seed": 7,
    "elapsed_s": 0.5,
    "points": [
        {"point": {"n": 10}, "final": {"gini": {"mean": 0.25, "sd": 0.125}}},
        {"point": {"n": 100}, "final": {"gini": {"mean": 0.5, "sd": 0.0625}}},
    ],
}
EVOLUTION = {
    "best": {
        "id": 9,
        "score": 2.5,
        "metrics": {"speed": 3},
        "code": "def f(): ...",
        "iteration": 4,
    },
    "initial_score": 1.0,
    "improved": True,
    "iterations": 10,
    "done": 10,
    "succeeded": 8,
    "failed": 2,
    "failures": {"timeout": 2},
    "elapsed_s": 3.0,
}


def test_sweep_and_evolution_results_are_summarized(server_url: str, page: Page) -> None:
    sweep = _run(server_url, "echo", {"value": SWEEP})["id"]
    page.goto(f"{server_url}/jobs/{sweep}")
    expect(page.locator("#summary")).to_have_attribute("data-kind", "sweep")
    points = page.locator("#summary-points tbody tr")
    expect(points).to_have_count(2)
    expect(points.nth(1).locator("td")).to_have_text(["100", "0.5 \u00b1 0.0625"])

    evolution = _run(server_url, "echo", {"value": EVOLUTION})["id"]
    page.goto(f"{server_url}/jobs/{evolution}")
    expect(page.locator("#summary")).to_have_attribute("data-kind", "evolution")
    expect(page.locator("#summary-head")).to_contain_text("best score 2.5")
    expect(page.locator("#summary-code")).to_have_text("def f(): ...")
    expect(page.locator("#summary-failures")).to_have_text("Failures: timeout: 2")

    plain = _run(server_url, "echo", {"value": {"nodes": 1}})["id"]
    page.goto(f"{server_url}/jobs/{plain}")
    expect(page.locator("#summary")).to_be_hidden()
    expect(page.locator("#result")).to_be_visible()


def test_errors_and_tracebacks_are_shown_as_text_never_run(own_url: str, page: Page) -> None:
    evil = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    job_id = _finished(own_url, _submit(own_url, "always_fails", {"message": evil}))["id"]
    _open_live_list(page, own_url)
    error = _row(page, job_id).locator('[data-field="error"]')
    expect(error).to_have_text(f"RuntimeError: {evil}")
    expect(error).to_have_attribute("title", f"RuntimeError: {evil}")
    expect(page.locator("#job-rows img")).to_have_count(0)
    page.goto(f"{own_url}/jobs/{job_id}")
    expect(page.locator("#error")).to_have_text(f"RuntimeError: {evil}")
    expect(page.locator("#traceback")).to_contain_text(f"RuntimeError: {evil}")
    expect(page.locator('#attempt-rows [data-field="error"]')).to_have_text(f"RuntimeError: {evil}")
    expect(page.locator("#job img")).to_have_count(0)
    expect(page.locator("#job script")).to_have_count(0)
    assert page.evaluate("window.pwned") is None
