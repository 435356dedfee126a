"""The dashboard: server-rendered HTML pages over the job service, live in the browser.

``GET /`` lists the latest jobs (a status filter with counts, a form to submit
a job) and keeps the table current by polling ``/v1/jobs`` every second;
``GET /jobs/{job_id}`` shows one job, follows its server-sent events and can
cancel it. Nothing is fetched from outside: the stylesheet and scripts in
``static/`` are inlined into each page.

With a token set on the app, opening ``/?token=<token>`` (any dashboard page
works) stores the token in an HTTP-only cookie and redirects to the same page
without it, so that the page's own calls to ``/v1`` are authorized. Every value
that comes from a job is escaped in the HTML and set with ``textContent`` in
the scripts; a per-page nonce in the Content-Security-Policy keeps any script
that slipped through from running.
"""

from __future__ import annotations

import functools
import hmac
import html
import json
import math
import secrets
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ambidex.jobs import Job, JobEvent, JobManager, JobNotFoundError, JobStatus
from ambidex.jobs._model import iso
from ambidex.server._auth import TOKEN_COOKIE, require_token

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_DEFAULT_LIMIT = 50
_DASH = "\u2013"  # shown for a value not known yet
_EVENT_HIDDEN_KEYS = frozenset({"seq", "job_id", "kind", "at"})


def _e(value: object) -> str:
    """``value`` as text safe anywhere in HTML, attribute values included."""
    return html.escape("" if value is None else str(value), quote=True)


def _hidden(flag: bool) -> str:
    return " hidden" if flag else ""


def _number(x: float) -> str:
    """A number written as the scripts' ``String(x)`` writes it (``1``, not ``1.0``)."""
    return str(int(x)) if x.is_integer() else repr(x)


@functools.cache
def _asset(name: str) -> str:
    return (resources.files("ambidex.server") / "static" / name).read_text("utf-8")


# -- pages and their frame -----------------------------------------------------------


def _page(
    title: str, body: str, *, scripts: tuple[str, ...] = (), status_code: int = 200
) -> Response:
    nonce = secrets.token_urlsafe(16)
    code = "\n".join(_asset(name) for name in ("common.js", *scripts)) if scripts else ""
    script = f'<script nonce="{nonce}">\n{code}\n</script>' if code else ""
    document = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} · ambidex</title>
<link rel="icon" href="data:,">
<style>
{_asset("dashboard.css")}
</style>
</head>
<body>
<header class="top"><a class="brand" href="/">ambidex</a><span class="sub">job service</span>
<span id="live" class="live" data-state="idle"></span></header>
<main>
{body}
</main>
{script}
</body>
</html>
"""
    headers = {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'"
        ),
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    return HTMLResponse(document, status_code=status_code, headers=headers)


def _notice(status_code: int, title: str, text_html: str) -> Response:
    """A page that only says something (``text_html`` must be escaped already)."""
    body = (
        f'<section class="panel notice" id="notice" data-code="{status_code}">'
        f"<h1>{_e(title)}</h1><p>{text_html}</p>"
        '<p><a href="/">← all jobs</a></p></section>'
    )
    return _page(title, body, status_code=status_code)


async def _gate(request: Request) -> Response | None:
    """None when the request may see the dashboard; otherwise the answer to send.

    ``?token=`` is checked and, when right, traded for a cookie and a redirect to
    the same page without it (so the token leaves the address bar and history).
    """
    expected: str | None = request.app.state.token
    if expected is None:
        return None
    offered = request.query_params.get("token")
    if offered is not None:
        if not hmac.compare_digest(offered.encode(), expected.encode()):
            return _unauthorized()
        url = request.url.remove_query_params("token")
        redirect = RedirectResponse(url.path + (f"?{url.query}" if url.query else ""), 303)
        redirect.set_cookie(
            TOKEN_COOKIE,
            expected,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
        )
        return redirect
    try:
        await require_token(request)
    except HTTPException:
        return _unauthorized()
    return None


def _unauthorized() -> Response:
    return _notice(
        401,
        "Unauthorized",
        "This job service needs its token. Open the dashboard as "
        "<code>/?token=&lt;token&gt;</code> once; the browser keeps it in a cookie.",
    )


def _manager(request: Request) -> JobManager:
    manager: JobManager = request.app.state.manager
    return manager


# -- pieces shared by both pages ------------------------------------------------------


def _clamp(progress: object) -> float | None:
    if isinstance(progress, int | float) and not isinstance(progress, bool):
        return min(max(float(progress), 0.0), 1.0)
    return None


def _fraction(job: Job) -> float | None:
    if job.progress is not None:
        return _clamp(job.progress)
    return 1.0 if job.status is JobStatus.SUCCEEDED else None


def _percent(fraction: float | None) -> str:
    # floor(x + .5) rounds halves up, as the scripts' Math.round does.
    return _DASH if fraction is None else f"{math.floor(fraction * 100 + 0.5)}%"


def _progress(job: Job, *, big: bool = False) -> str:
    fraction = _fraction(job)
    width = 0.0 if fraction is None else fraction * 100
    return (
        f'<div class="progress{" big" if big else ""}" data-field="progress" '
        f'data-progress="{"" if fraction is None else _number(fraction)}">'
        f'<div class="bar" data-status="{job.status.value}">'
        f'<div class="fill" style="width:{width:.1f}%"></div></div>'
        f'<span class="pct">{_percent(fraction)}</span></div>'
    )


def _badge(status: str, *, element_id: str = "") -> str:
    ident = f' id="{element_id}"' if element_id else ""
    return (
        f'<span{ident} class="badge s-{_e(status)}" data-field="status" '
        f'data-status="{_e(status)}">{_e(status)}</span>'
    )


def _time(stamp: str | None, field: str) -> str:
    """An ISO timestamp; the scripts show it in the browser's time zone."""
    return f'<time data-field="{field}" datetime="{_e(stamp)}">{_e(stamp)}</time>'


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


# -- the job list --------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def jobs_page(
    request: Request,
    status: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = _DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The latest jobs, live; a status filter with counts; a form to submit a job."""
    denied = await _gate(request)
    if denied is not None:
        return denied
    jm = _manager(request)
    wanted = None
    if status:
        try:
            wanted = JobStatus(status)
        except ValueError:
            known = ", ".join(s.value for s in JobStatus)
            return _notice(400, "Unknown status", f"Unknown status {_e(status)}: use {known}.")
    try:
        jobs, next_cursor, _ = await jm.list(
            status=None if wanted is None else [wanted], limit=limit, cursor=cursor
        )
    except ValueError as exc:
        return _notice(400, "Bad cursor", _e(exc))
    counts = await jm.counts()
    rows = "".join(_job_row(job) for job in jobs)
    older = ""
    if next_cursor is not None:
        query = {"limit": limit, "cursor": next_cursor, **({"status": status} if status else {})}
        href = _e(f"/?{urlencode(query)}")
        older = f'<nav class="pager"><a id="older" href="{href}">Older jobs →</a></nav>'
    body = f"""<div class="row"><h1>Jobs</h1></div>
{_filters(wanted, counts)}
{_submit_form(jm)}
<div class="panel">
<table id="jobs" class="jobs" data-status-filter="{_e(status or "")}" data-limit="{limit}"
 data-cursor="{_e(cursor or "")}">
<thead><tr><th>Job</th><th>Workload</th><th>Status</th><th>Progress</th><th>Attempts</th>
<th>Created</th><th>Finished</th></tr></thead>
<tbody id="job-rows">{rows}</tbody>
</table>
<p id="empty" class="empty"{_hidden(bool(jobs))}>No jobs {_e(status) if status else "yet"}.</p>
</div>
{older}
<template id="row-template">{_job_row(None)}</template>"""
    return _page("Jobs", body, scripts=("jobs.js",))


def _filters(wanted: JobStatus | None, counts: dict[JobStatus, int]) -> str:
    total = sum(counts.values())
    chips = [
        f'<a class="chip{" active" if wanted is None else ""}" href="/" data-filter="">'
        f'all <span class="n" data-count="all">{total}</span></a>'
    ]
    for status in JobStatus:
        active = " active" if status is wanted else ""
        chips.append(
            f'<a class="chip{active}" href="/?status={status.value}" data-filter="{status.value}">'
            f'<span class="dot s-{status.value}"></span>{status.value} '
            f'<span class="n" data-count="{status.value}">{counts.get(status, 0)}</span></a>'
        )
    return f'<nav class="filters" id="filters">{"".join(chips)}</nav>'


def _job_row(job: Job | None) -> str:
    """A row of the jobs table; with ``None``, the empty row the script clones."""
    if job is None:
        job = Job(id="", workload="", input=None, status=JobStatus.QUEUED)
        created = finished = None
    else:
        created, finished = iso(job.created_at), iso(job.finished_at)
    jid = _e(job.id)
    return (
        f'<tr data-job-id="{jid}" data-status="{job.status.value}">'
        f'<td class="mono"><a data-field="id" href="/jobs/{jid}">{jid}</a></td>'
        f'<td data-field="workload">{_e(job.workload)}</td>'
        f"<td>{_badge(job.status.value)}</td>"
        f"<td>{_progress(job)}</td>"
        f'<td class="num" data-field="attempts">{job.attempts}/{job.max_attempts}</td>'
        f'<td class="when">{_time(created, "created_at")}</td>'
        f'<td class="when">{_time(finished, "finished_at")}</td>'
        "</tr>"
    )


def _submit_form(jm: JobManager) -> str:
    options = []
    for wl in jm.registry:
        schema: dict[str, Any] = wl.input_schema()
        example = {name: prop.get("default") for name, prop in schema.get("properties", {}).items()}
        summary = (wl.description or "").strip().splitlines()
        options.append(
            f'<option value="{_e(wl.name)}" data-example="{_e(json.dumps(example))}" '
            f'data-description="{_e(summary[0] if summary else "")}">{_e(wl.name)}</option>'
        )
    if not options:
        return ""
    return f"""<details class="panel submit" id="submit" open>
<summary>Submit a job</summary>
<form id="submit-form" class="submit-form">
<label>Workload<select id="submit-workload" name="workload">{"".join(options)}</select>
<span id="submit-hint" class="hint"></span></label>
<label>Input (JSON)
<textarea id="submit-input" name="input" rows="3" spellcheck="false">{{}}</textarea></label>
<div><button type="submit" id="submit-button">Submit</button></div>
</form>
<p id="submit-message" class="msg" role="status"></p>
</details>"""


@router.get("/dashboard/counts", dependencies=[Depends(require_token)])
async def status_counts(request: Request) -> dict[str, int]:
    """How many jobs are in each state (the list page's filter counts)."""
    counts = await _manager(request).counts()
    return {"all": sum(counts.values()), **{s.value: n for s, n in counts.items()}}


# -- one job -------------------------------------------------------------------------


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: str) -> Response:
    """One job: its fields, input, result or error, live progress and events; Cancel."""
    denied = await _gate(request)
    if denied is not None:
        return denied
    jm = _manager(request)
    try:
        job = await jm.get(job_id)
    except JobNotFoundError:
        return _notice(404, "No such job", f"There is no job <code>{_e(job_id)}</code>.")
    events = await jm.events(job_id)
    last_seq = events[-1].seq if events else 0
    fields = job.as_dict()
    done = job.status.terminal
    result = _pretty(job.result) if done and job.status is JobStatus.SUCCEEDED else ""
    jid = _e(job.id)
    body = f"""<article id="job" data-job-id="{jid}" data-status="{job.status.value}"
 data-last-seq="{last_seq}">
<div class="job-head">
<a href="/">← all jobs</a>
<h1>Job <code id="job-id">{jid}</code></h1>
{_badge(job.status.value, element_id="status-badge")}
<div class="actions">
<button type="button" id="cancel" class="danger"{_hidden(done)}>Cancel job</button></div>
</div>
<p id="job-message" class="msg" role="status"></p>
<div class="grid">
<section class="panel">{_fields(fields)}</section>
<div>
<section class="panel card"><h2>Progress</h2>{_progress(job, big=True)}
<p id="progress-message" class="hint" data-field="message">{_e(job.message)}</p></section>
<section class="panel card"><h2>Result</h2>
<p id="result-pending" class="muted"{_hidden(done)}>Not finished yet.</p>
<pre id="result" class="json"{_hidden(not result)}>{_e(result)}</pre>
<pre id="error" class="error"{_hidden(not job.error)}>{_e(job.error)}</pre>
</section>
<section class="panel card"><h2>Input</h2>
<pre id="input" class="json">{_e(_pretty(job.input))}</pre></section>
<section class="panel card"><h2>Events</h2>
<table class="events"><thead><tr><th>#</th><th>At</th><th>Event</th><th>Detail</th></tr></thead>
<tbody id="event-rows">{"".join(_event_row(ev) for ev in events)}</tbody></table>
<p id="no-events" class="muted"{_hidden(bool(events))}>No events yet.</p>
</section>
</div>
</div>
</article>
<template id="event-template">{_event_row(None)}</template>"""
    return _page(f"Job {job.id}", body, scripts=("job.js",))


def _fields(fields: dict[str, Any]) -> str:
    def row(label: str, name: str, value: str) -> str:
        return f'<dt>{label}</dt><dd data-field="{name}">{value}</dd>'

    timeout = fields["timeout_s"]
    return (
        '<dl class="fields" id="fields">'
        + row("Workload", "workload", _e(fields["workload"]))
        + row("Attempts", "attempts", f"{fields['attempts']}/{fields['max_attempts']}")
        + row("Worker", "worker", _e(fields["worker"] or _DASH))
        + row("Created", "created_at", _time(fields["created_at"], "created_at"))
        + row("Started", "started_at", _time(fields["started_at"], "started_at"))
        + row("Finished", "finished_at", _time(fields["finished_at"], "finished_at"))
        + row("Timeout", "timeout_s", _DASH if timeout is None else f"{timeout:g} s")
        + row("Cancel requested", "cancel_requested", "yes" if fields["cancel_requested"] else "no")
        + "</dl>"
    )


def _event_detail(data: dict[str, Any]) -> str:
    """What an event says beyond its kind and time (the scripts' ``eventDetail``)."""
    parts: list[str] = []
    if data.get("kind") == "progress":
        parts.append(_percent(_clamp(data.get("progress"))))
        if data.get("message"):
            parts.append(str(data["message"]))
        return " · ".join(parts)
    for key, value in data.items():
        if key in _EVENT_HIDDEN_KEYS or value is None:
            continue
        shown = value if isinstance(value, str) else json.dumps(value)
        parts.append(f"{key}: {shown}")
    return " · ".join(parts)


def _event_row(event: JobEvent | None) -> str:
    """A row of the event log; with ``None``, the empty row the script clones."""
    data = {} if event is None else event.as_dict()
    kind = _e(data.get("kind", ""))
    return (
        f'<tr data-seq="{_e(data.get("seq", ""))}" data-kind="{kind}">'
        f'<td class="seq">{_e(data.get("seq", ""))}</td>'
        f'<td class="at">{_time(data.get("at"), "at")}</td>'
        f'<td class="kind k-{kind}">{kind}</td>'
        f'<td class="detail">{_e(_event_detail(data))}</td></tr>'
    )
