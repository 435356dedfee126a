"""The dashboard: server-rendered HTML pages over the job service, live in the browser.

``GET /`` lists the latest jobs: filters by status (with counts) and by
workload, duration and error columns, paging both ways, per-row Retry /
Re-run / Cancel, and a form to submit a job; the table is kept current by
polling ``/v1/jobs`` every second. ``GET /workers`` lists the workers sharing
the store, live from ``/v1/workers``. Both pages say plainly when nothing
consumes the queue (no live worker, or none that takes a queued workload) and
how to start a worker. ``GET /jobs/{job_id}`` shows one job: its fields,
every attempt with its error and traceback, its result (a readable summary for
workflows, simulations and evolutions, the raw JSON alongside), its events
(followed live over server-sent events), and the actions its status allows;
for a workflow job, its nodes as a picture of the DAG (inline SVG drawn here,
``_dag``) and a table (status, attempts, duration, error), both kept current
from ``/v1/jobs/{id}/nodes`` on every event of the job and every second while
it runs.
Nothing is fetched from outside: the stylesheet and scripts in ``static/`` are
inlined into each page.

With a token set on the app, opening ``/?token=<token>`` (any dashboard page
works) stores the token in an HTTP-only cookie and redirects to the same page
without it, so that the page's own calls to ``/v1`` are authorized (writes
also send ``X-Requested-With``). Every value that comes from a job is escaped
in the HTML and set with ``textContent`` in the scripts; a per-page nonce in
the Content-Security-Policy keeps any script that slipped through from running.
"""

from __future__ import annotations

import functools
import hmac
import html
import json
import math
import secrets
import shlex
import time
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ambidex._job_model import TERMINAL, iso
from ambidex.jobs import (
    Attempt,
    Job,
    JobEvent,
    JobManager,
    JobNotFoundError,
    JobStatus,
    QueueState,
    WorkerInfo,
    WorkflowNode,
)
from ambidex.server._auth import TOKEN_COOKIE, require_token
from ambidex.server._dag import MAX_DRAWN, dag_svg

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_DEFAULT_LIMIT = 50
_DASH = "\u2013"  # shown for a value not known yet
# The traceback of a failed attempt is in the attempts table; run_at repeats delay_s.
_EVENT_HIDDEN_KEYS = frozenset({"seq", "job_id", "kind", "at", "traceback", "run_at"})
# A job's attempts count every start (retries too); max_attempts bounds only the starts
# after a lost worker, so the two are shown apart, never as "attempts/max_attempts".
_MAX_ATTEMPTS = "starts allowed while its workers keep stopping (failures use retries)"
# What a page can do to a job, and in which states (the scripts' AX.ACTIONS).
_ACTIONS: dict[str, tuple[str, frozenset[JobStatus]]] = {
    "retry": ("Retry", frozenset({JobStatus.FAILED, JobStatus.CANCELLED})),
    "rerun": ("Re-run", TERMINAL),
    "cancel": ("Cancel", frozenset({JobStatus.QUEUED, JobStatus.RUNNING})),
}


def _e(value: object) -> str:
    """``value`` as text safe anywhere in HTML, attribute values included."""
    return html.escape("" if value is None else str(value), quote=True)


def _hidden(flag: bool) -> str:
    return " hidden" if flag else ""


def _number(x: float) -> str:
    """A number written as the scripts' ``String(x)`` writes it (``1``, not ``1.0``)."""
    return str(int(x)) if x.is_integer() else repr(x)


def _duration(seconds: float | None) -> str:
    """``1.23 s``, ``4 min 5 s``, ``2 h 3 min`` (the scripts' ``AX.duration``)."""
    if seconds is None or not math.isfinite(seconds):
        return _DASH
    if seconds < 60:
        return f"{seconds:.2f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def _first_line(text: str | None) -> str:
    return text.split("\n", 1)[0] if text else ""


@functools.cache
def _asset(name: str) -> str:
    return (resources.files("ambidex.server") / "static" / name).read_text("utf-8")


# -- pages and their frame -----------------------------------------------------------


def _page(
    title: str,
    body: str,
    *,
    scripts: tuple[str, ...] = (),
    status_code: int = 200,
    section: str = "",
) -> Response:
    nonce = secrets.token_urlsafe(16)
    code = "\n".join(_asset(name) for name in ("common.js", *scripts)) if scripts else ""
    script = f'<script nonce="{nonce}">\n{code}\n</script>' if code else ""
    nav = "".join(
        f'<a href="{href}" data-nav="{name}"{" class=active" if name == section else ""}>'
        f"{label}</a>"
        for name, label, href in (("jobs", "Jobs", "/"), ("workers", "Workers", "/workers"))
    )
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
<nav class="nav" id="nav">{nav}</nav>
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


# -- pieces shared by the pages ------------------------------------------------------


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


def _badge(status: str, *, element_id: str = "", field_name: str = "status") -> str:
    ident = f' id="{element_id}"' if element_id else ""
    return (
        f'<span{ident} class="badge s-{_e(status)}" data-field="{field_name}" '
        f'data-status="{_e(status)}">{_e(status)}</span>'
    )


def _time(stamp: str | None, field_name: str, *, compact: bool = False) -> str:
    """An ISO timestamp; the scripts show it in the browser's time zone.

    ``compact``: without the date when it is today (in the tables).
    """
    kind = ' class="compact"' if compact else ""
    return f'<time{kind} data-field="{field_name}" datetime="{_e(stamp)}">{_e(stamp)}</time>'


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _action_buttons(job: Job, *, ids: bool = False) -> str:
    """Retry / Re-run / Cancel, each hidden unless the job's status allows it."""
    buttons = []
    for action, (label, allowed) in _ACTIONS.items():
        ident = f' id="{action}"' if ids else ""
        style = ' class="danger"' if action == "cancel" else ' class="secondary"'
        disabled = ""
        if action == "cancel" and job.cancel_requested and not job.status.terminal:
            disabled = ' disabled title="cancel requested; waiting for the worker"'
        buttons.append(
            f'<button type="button"{ident}{style} data-action="{action}"'
            f"{_hidden(job.status not in allowed)}{disabled}>{label}</button>"
        )
    return "".join(buttons)


# -- whether anything consumes the queue ---------------------------------------------


def _state_fields(state: QueueState) -> dict[str, Any]:
    """What the scripts read of the queue's state (``/dashboard/state``)."""
    return {"workers_alive": state.alive, "queued": state.queued, "orphaned": _orphaned(state)}


def _orphaned(state: QueueState) -> dict[str, int]:
    """Queued jobs no live worker takes, when some worker is alive (else the banner says more)."""
    return state.unserved if state.alive else {}


def _queue_problem(state: QueueState, *, always: bool) -> str:
    """Why the queue is not worked, or ``""`` (the scripts' ``queueProblem``).

    ``always``: say so when no worker is alive even if nothing is queued.
    """
    n = state.queued
    jobs = f"{n} job{'' if n == 1 else 's'}"
    if state.alive == 0:
        if n > 0:
            return f"no worker is alive, and {jobs} {'is' if n == 1 else 'are'} queued."
        return "no worker is alive; jobs submitted now will wait." if always else ""
    orphaned = _orphaned(state)
    if not orphaned:
        return ""
    waiting = sum(orphaned.values())
    return f"no live worker takes {', '.join(orphaned)} ({waiting} queued)."


def _db_argument(jm: JobManager) -> str:
    """The ``--db`` a worker needs to share this store (a password is masked)."""
    url: str = jm.store.url
    if url.startswith("sqlite:///"):
        return shlex.quote(url.removeprefix("sqlite:///"))
    from sqlalchemy.engine import make_url

    shown = make_url(url).render_as_string(hide_password=True)
    return shlex.quote(shown.replace("postgresql+psycopg://", "postgresql://", 1))


def _queue_banner(jm: JobManager, state: QueueState, *, workers_page: bool) -> str:
    """The warning that nothing consumes (part of) the queue, with how to start a worker.

    On the workers page it shows even when nothing is queued.
    """
    problem = _queue_problem(state, always=workers_page)
    here, more = "", ""
    if not workers_page:
        more = ' <a href="/workers">See the workers.</a>'
        if jm.concurrency == 0:
            here = "This server runs no jobs itself (<code>--concurrency 0</code>). "
    return f"""<div class="banner warn" id="queue-banner" role="alert"{_hidden(not problem)}>
<strong>Nothing consumes the queue:</strong> <span id="queue-problem">{_e(problem)}</span>
<div class="hint">{here}Start a worker on this store, with the workloads this server has:
<code id="worker-command">ambidex worker --db {_e(_db_argument(jm))} --workloads …</code>,
or run <code>ambidex serve</code> with <code>--concurrency</code> above 0.{more}</div></div>"""


@router.get("/dashboard/state", dependencies=[Depends(require_token)])
async def dashboard_state(
    request: Request, workload: Annotated[str | None, Query(max_length=200)] = None
) -> dict[str, Any]:
    """The list page's counts by status (of one workload, if given) and the queue's state."""
    jm = _manager(request)
    by_workload = await jm.counts_by_workload()
    state = QueueState.of(await jm.workers(), by_workload, time.time())
    counts = {s.value: 0 for s in JobStatus}
    for (wl, status), n in by_workload.items():
        if not workload or wl == workload:
            counts[status.value] += n
    return {"counts": {"all": sum(counts.values()), **counts}, **_state_fields(state)}


# -- the job list --------------------------------------------------------------------


@dataclass(frozen=True)
class _ListView:
    """What the list shows: its filters and page (the query string of ``GET /``)."""

    status: JobStatus | None
    workload: str | None
    limit: int
    cursor: str | None

    def href(self, **changes: Any) -> str:
        """The address of this list with ``changes`` (a filter change starts at the newest page)."""
        values = {
            "status": None if self.status is None else self.status.value,
            "workload": self.workload,
            "limit": None if self.limit == _DEFAULT_LIMIT else self.limit,
            "cursor": self.cursor,
        }
        values.update(changes)
        query = {k: v for k, v in values.items() if v not in (None, "")}
        return f"/?{urlencode(query)}" if query else "/"

    def nothing(self) -> str:
        """What the table says when no job is shown."""
        if self.status is None and self.workload is None:
            return "No jobs yet."
        status = f"{self.status.value} " if self.status else ""
        of = f" of {self.workload}" if self.workload else ""
        return f"No {status}jobs{of}."


@router.get("/", response_class=HTMLResponse)
async def jobs_page(
    request: Request,
    status: Annotated[str | None, Query(max_length=20)] = None,
    workload: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = _DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The latest jobs, live; filters by status and workload; paging; actions; a submit form."""
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
    view = _ListView(wanted, workload or None, limit, cursor or None)
    try:
        page = await jm.list(
            status=None if wanted is None else [wanted],
            workload=view.workload,
            limit=limit,
            cursor=view.cursor,
        )
    except ValueError as exc:
        return _notice(400, "Bad cursor", _e(exc))
    by_workload = await jm.counts_by_workload()
    state = QueueState.of(await jm.workers(), by_workload, time.time())
    names = sorted({*await jm.workloads_seen(), *jm.registry.names()})
    rows = "".join(_job_row(job) for job in page.jobs)
    body = f"""<div class="row"><h1>Jobs</h1></div>
{_queue_banner(jm, state, workers_page=False)}
<div class="filter-bar">{_filters(view, by_workload)}{_workload_filter(view, names)}</div>
{_submit_form(jm)}
<p id="action-message" class="msg" role="status"></p>
<div class="panel scroll">
<table id="jobs" class="jobs" data-status-filter="{_e(status or "")}"
 data-workload-filter="{_e(view.workload or "")}" data-limit="{limit}"
 data-cursor="{_e(view.cursor or "")}">
<thead><tr><th>Job</th><th>Workload</th><th>Status</th><th>Progress</th><th>Attempts</th>
<th>Duration</th><th>Error</th><th>Created</th><th>Finished</th>
<th class="actions">Actions</th></tr></thead>
<tbody id="job-rows">{rows}</tbody>
</table>
<p id="empty" class="empty"{_hidden(bool(page.jobs))}>{_e(view.nothing())}</p>
</div>
{_pager(view, page.prev_cursor, page.next_cursor)}
<template id="row-template">{_job_row(None)}</template>"""
    return _page("Jobs", body, scripts=("jobs.js",), section="jobs")


def _filters(view: _ListView, by_workload: dict[tuple[str, JobStatus], int]) -> str:
    counts = dict.fromkeys(JobStatus, 0)
    for (wl, status), n in by_workload.items():
        if view.workload is None or wl == view.workload:
            counts[status] += n
    chips = [
        f'<a class="chip{" active" if view.status is None else ""}" '
        f'href="{_e(view.href(status=None, cursor=None))}" data-filter="">'
        f'all <span class="n" data-count="all">{sum(counts.values())}</span></a>'
    ]
    for status in JobStatus:
        active = " active" if status is view.status else ""
        href = _e(view.href(status=status.value, cursor=None))
        chips.append(
            f'<a class="chip{active}" href="{href}" data-filter="{status.value}">'
            f'<span class="dot s-{status.value}"></span>{status.value} '
            f'<span class="n" data-count="{status.value}">{counts[status]}</span></a>'
        )
    return f'<nav class="filters" id="filters">{"".join(chips)}</nav>'


def _workload_filter(view: _ListView, names: list[str]) -> str:
    """A select of the workloads (registered or seen in stored jobs); it reloads the list."""
    if view.workload and view.workload not in names:
        names = sorted([*names, view.workload])
    options = ['<option value="">all workloads</option>']
    options += [
        f'<option value="{_e(name)}"{" selected" if name == view.workload else ""}>'
        f"{_e(name)}</option>"
        for name in names
    ]
    keep = {"status": None if view.status is None else view.status.value}
    if view.limit != _DEFAULT_LIMIT:
        keep["limit"] = str(view.limit)
    hidden = "".join(
        f'<input type="hidden" name="{k}" value="{_e(v)}">' for k, v in keep.items() if v
    )
    return f"""<form class="workload-filter" id="workload-filter" method="get" action="/">
{hidden}<label for="workload-select">Workload</label>
<select id="workload-select" name="workload">{"".join(options)}</select>
<noscript><button type="submit" class="secondary">Filter</button></noscript></form>"""


def _pager(view: _ListView, prev_cursor: str | None, next_cursor: str | None) -> str:
    newer = _e(view.href(cursor=prev_cursor)) if prev_cursor else ""
    older = _e(view.href(cursor=next_cursor)) if next_cursor else ""
    return (
        '<nav class="pager" id="pager">'
        f'<a id="newer" href="{newer}"{_hidden(not prev_cursor)}>← Newer</a>'
        f'<a id="older" href="{older}"{_hidden(not next_cursor)}>Older →</a></nav>'
    )


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
        f'<td class="num" data-field="attempts">{job.attempts}</td>'
        f'<td class="num" data-field="duration">{_duration(job.duration_s)}</td>'
        f'<td class="err"><span class="clip" data-field="error" title="{_e(job.error)}">'
        f"{_e(_first_line(job.error))}</span></td>"
        f'<td class="when">{_time(created, "created_at", compact=True)}</td>'
        f'<td class="when">{_time(finished, "finished_at", compact=True)}</td>'
        f'<td class="actions">{_action_buttons(job)}</td>'
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


# -- the workers ---------------------------------------------------------------------


@router.get("/workers", response_class=HTMLResponse)
async def workers_page(request: Request) -> Response:
    """The workers sharing the store, live; says so when nothing consumes the queue."""
    denied = await _gate(request)
    if denied is not None:
        return denied
    jm = _manager(request)
    state = await jm.queue_state()
    workers, running = state.workers, state.running
    now = time.time()
    here = (
        "This server runs no jobs itself (<code>--concurrency 0</code>): "
        "only the workers below consume the queue."
        if jm.concurrency == 0
        else f"This server is worker <code>{_e(jm.worker_id)}</code> "
        f"(concurrency {jm.concurrency})."
    )
    rows = "".join(_worker_row(w, now, here=w.id == jm.worker_id) for w in workers)
    body = f"""<div class="row"><h1>Workers</h1>
<p class="stats" id="worker-stats"><span data-stat="alive">{state.alive}</span> alive ·
<span data-stat="queued">{state.queued}</span> queued ·
<span data-stat="running">{running}</span> running</p></div>
{_queue_banner(jm, state, workers_page=True)}
<p class="hint" id="this-server">{here}</p>
<div class="panel scroll">
<table id="workers" class="jobs workers" data-here="{_e(jm.worker_id if jm.concurrency else "")}">
<thead><tr><th>Worker</th><th>State</th><th>Host</th><th>PID</th><th>Jobs held</th>
<th>Heartbeat</th><th>Started</th><th>Lease</th><th>Workloads</th><th>Version</th></tr></thead>
<tbody id="worker-rows">{rows}</tbody>
</table>
<p id="no-workers" class="empty"{_hidden(bool(workers))}>No worker has reported to this
store in the last hour.</p>
</div>
<template id="worker-template">{_worker_row(None, now)}</template>"""
    return _page("Workers", body, scripts=("workers.js",), section="workers")


def _age(seconds: float) -> str:
    """How long ago a heartbeat was (the scripts' ``age``)."""
    return f"{seconds:.1f} s ago" if seconds < 60 else f"{_duration(seconds)} ago"


def _worker_row(worker: WorkerInfo | None, now: float, *, here: bool = False) -> str:
    """A row of the workers table; with ``None``, the empty row the script clones."""
    if worker is None:
        worker = WorkerInfo("", "", 0, now, now, 0, 0, [], 0.0, "")
    alive = worker.alive(now)
    state = "alive" if alive else "silent"
    names = ", ".join(worker.workloads)
    return (
        f'<tr data-worker-id="{_e(worker.id)}" data-alive="{str(alive).lower()}">'
        f'<td class="mono"><span data-field="id">{_e(worker.id)}</span>'
        f'<span class="tag" data-field="here"{_hidden(not here)}>this server</span></td>'
        f'<td><span class="badge s-{state}" data-field="state">{state}</span></td>'
        f'<td data-field="host">{_e(worker.host)}</td>'
        f'<td class="num" data-field="pid">{worker.pid}</td>'
        f'<td class="num" data-field="held">{worker.running}/{worker.concurrency}</td>'
        f'<td class="num" data-field="age">{_age(max(now - worker.heartbeat_at, 0.0))}</td>'
        f'<td class="when">{_time(iso(worker.started_at), "started_at", compact=True)}</td>'
        f'<td class="num" data-field="lease">{worker.lease_s:g} s</td>'
        f'<td><span class="clip" data-field="workloads" title="{_e(names)}">{_e(names)}</span></td>'
        f'<td data-field="version">{_e(worker.version)}</td></tr>'
    )


# -- one job -------------------------------------------------------------------------


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: str) -> Response:
    """One job: fields, attempts, result (summarized), live progress and events; actions."""
    denied = await _gate(request)
    if denied is not None:
        return denied
    jm = _manager(request)
    try:
        job = await jm.get(job_id)
    except JobNotFoundError:
        return _notice(404, "No such job", f"There is no job <code>{_e(job_id)}</code>.")
    events = await jm.events(job_id)
    attempts = await jm.attempts(job_id)
    last_seq = events[-1].seq if events else 0
    kind = jm.registry.get(job.workload).kind if job.workload in jm.registry else ""
    nodes = await jm.workflow_nodes(job_id)  # a workflow's (as registered here), or none
    jid = _e(job.id)
    body = f"""<article id="job" data-job-id="{jid}" data-status="{job.status.value}"
 data-last-seq="{last_seq}" data-workload="{_e(job.workload)}" data-workload-kind="{_e(kind)}">
<div class="job-head">
<a href="/">← all jobs</a>
<h1>Job <code id="job-id">{jid}</code></h1>
{_badge(job.status.value, element_id="status-badge")}
<div class="actions" id="job-actions">{_action_buttons(job, ids=True)}</div>
</div>
<p id="job-message" class="msg" role="status"></p>
<div class="grid">
<section class="panel">{_fields(job)}</section>
<div>
<section class="panel card"><h2>Progress</h2>{_progress(job, big=True)}
<p id="progress-message" class="hint" data-field="message">{_e(job.message)}</p></section>
{_workflow_card(nodes)}
{_outcome(job)}
{_attempts_card(attempts)}
<section class="panel card"><h2>Input</h2>
<pre id="input" class="json">{_e(_pretty(job.input))}</pre></section>
<section class="panel card"><h2>Events</h2>
<table class="events"><thead><tr><th>#</th><th>At</th><th>Event</th><th>Detail</th></tr></thead>
<tbody id="event-rows">{_event_rows(events)}</tbody></table>
<p id="no-events" class="muted"{_hidden(bool(events))}>No events yet.</p>
</section>
</div>
</div>
</article>
<template id="event-template">{_event_row(None)}</template>
<template id="attempt-template">{_attempt_row(None)}</template>
<template id="node-template">{_node_row(None, 0.0)}</template>"""
    return _page(f"Job {job.id}", body, scripts=("summary.js", "job.js"), section="jobs")


def _fields(job: Job) -> str:
    def row(label: str, name: str, value: str, *, hidden: bool = False, title: str = "") -> str:
        hint = f' title="{_e(title)}"' if title else ""
        return (
            f'<div data-row="{name}"{_hidden(hidden)}><dt{hint}>{label}</dt>'
            f'<dd data-field="{name}">{value}</dd></div>'
        )

    fields = job.as_dict()
    waits = job.status is JobStatus.QUEUED and (job.run_at or 0.0) > time.time()
    rerun_of = (
        f'<a class="mono" href="/jobs/{_e(job.rerun_of)}">{_e(job.rerun_of)}</a>'
        if job.rerun_of
        else _DASH
    )
    return (
        '<dl class="fields" id="fields">'
        + row("Workload", "workload", _e(job.workload))
        + row("Attempts", "attempts", str(job.attempts))
        + row("Retries", "retries", f"{job.retried}/{job.retry.retries}")
        + row("Max attempts", "max_attempts", str(job.max_attempts), title=_MAX_ATTEMPTS)
        + row("Priority", "priority", str(job.priority))
        + row("Worker", "worker", _e(job.worker or _DASH))
        + row("Created", "created_at", _time(fields["created_at"], "created_at"))
        + row("Runs at", "run_at", _time(fields["run_at"], "run_at"), hidden=not waits)
        + row("Started", "started_at", _time(fields["started_at"], "started_at"))
        + row("Finished", "finished_at", _time(fields["finished_at"], "finished_at"))
        + row("Duration", "duration_s", _duration(job.duration_s))
        + row("Timeout", "timeout_s", _DASH if job.timeout_s is None else f"{job.timeout_s:g} s")
        + row("Re-run of", "rerun_of", rerun_of)
        + row("Idempotency key", "idempotency_key", _e(job.idempotency_key or _DASH))
        + row("Cancel requested", "cancel_requested", "yes" if job.cancel_requested else "no")
        + "</dl>"
    )


def _outcome(job: Job) -> str:
    """The result card: error and traceback, a summary (drawn by summary.js) and the JSON."""
    done = job.status.terminal
    result = _pretty(job.result) if job.status is JobStatus.SUCCEEDED else ""
    return f"""<section class="panel card" id="outcome"><h2>Result</h2>
<p id="result-pending" class="muted"{_hidden(done)}>Not finished yet.</p>
<pre id="error" class="error"{_hidden(not job.error)}>{_e(job.error)}</pre>
<details id="traceback-box" class="traceback" open{_hidden(not job.traceback)}>
<summary>Traceback</summary><pre id="traceback" class="trace">{_e(job.traceback)}</pre></details>
<div id="summary" class="summary" hidden></div>
<details id="result-box" class="raw" open{_hidden(not result)}>
<summary id="result-label">JSON</summary><pre id="result" class="json">{_e(result)}</pre></details>
</section>"""


def _workflow_card(nodes: list[WorkflowNode]) -> str:
    """A workflow job's nodes: the DAG as a picture, then the table (none for other jobs)."""
    if not nodes:
        return ""
    picture = dag_svg(nodes)
    note = (
        ""
        if picture
        else f'<p class="muted">{len(nodes)} nodes: over {MAX_DRAWN}, too many to draw.</p>'
    )
    now = time.time()
    rows = "".join(_node_row(node, now) for node in nodes)
    return f"""<section class="panel card" id="workflow-card"><h2>Nodes</h2>
<div class="dag-wrap scroll">{picture}</div>{note}
<table class="events nodes" id="node-table"><thead><tr><th>Node</th><th>Status</th>
<th>Attempts</th><th>Duration</th><th title="the start of the job that ran it">Job attempt</th>
<th>Error</th></tr></thead>
<tbody id="node-rows">{rows}</tbody></table></section>"""


def _node_row(node: WorkflowNode | None, now: float) -> str:
    """A row of the nodes table; with ``None``, the empty row the script clones.

    A running node's duration is the time since it started (the script's too).
    """
    if node is None:
        node = WorkflowNode(node="", status="pending")
    seconds = node.duration_s
    if seconds is None and node.status == "running" and node.started_at is not None:
        seconds = max(now - node.started_at, 0.0)
    return (
        f'<tr data-node="{_e(node.node)}" data-status="{_e(node.status)}">'
        f'<td class="mono" data-field="node">{_e(node.node)}</td>'
        f"<td>{_badge(node.status)}</td>"
        f'<td class="num" data-field="attempts">{node.attempts or _DASH}</td>'
        f'<td class="num" data-field="duration">{_duration(seconds)}</td>'
        f'<td class="num" data-field="job_attempt">{node.job_attempt or _DASH}</td>'
        f'<td class="detail"><span class="error-text" data-field="error">{_e(node.error)}</span>'
        "</td></tr>"
    )


def _attempts_card(attempts: list[Attempt]) -> str:
    rows = "".join(_attempt_row(a) for a in attempts)
    return f"""<section class="panel card" id="attempts-card"><h2>Attempts</h2>
<table class="events attempts"><thead><tr><th>#</th><th>Worker</th><th>Started</th>
<th>Duration</th><th>Outcome</th><th>Error</th></tr></thead>
<tbody id="attempt-rows">{rows}</tbody></table>
<p id="no-attempts" class="muted"{_hidden(bool(attempts))}>Not started yet.</p></section>"""


def _attempt_row(attempt: Attempt | None) -> str:
    """A row of the attempts table; with ``None``, the empty row the script clones."""
    data: dict[str, Any] = {} if attempt is None else attempt.as_dict()
    outcome = data.get("outcome") or "running"
    trace = data.get("traceback")
    return (
        f'<tr data-number="{_e(data.get("number", ""))}" data-outcome="{_e(outcome)}">'
        f'<td class="seq" data-field="number">{_e(data.get("number", ""))}</td>'
        f'<td class="mono" data-field="worker">{_e(data.get("worker") or _DASH)}</td>'
        f'<td class="at">{_time(data.get("started_at"), "started_at", compact=True)}</td>'
        f'<td class="at" data-field="duration">{_duration(data.get("duration_s"))}</td>'
        f"<td>{_badge(outcome, field_name='outcome')}</td>"
        f'<td class="detail"><span data-field="error" class="error-text">'
        f"{_e(data.get('error'))}</span>"
        f'<details data-field="traceback-box"{_hidden(not trace)}><summary>traceback</summary>'
        f'<pre class="trace" data-field="traceback">{_e(trace)}</pre></details></td></tr>'
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


def _event_rows(events: list[JobEvent]) -> str:
    """The event log; a progress event that says what the row above says is left out."""
    rows: list[str] = []
    before: tuple[str, str] | None = None
    for event in events:
        data = event.as_dict()
        said = (event.kind, _event_detail(data))
        if event.kind == "progress" and said == before:
            continue
        rows.append(_event_row(data))
        before = said
    return "".join(rows)


def _event_row(data: dict[str, Any] | None) -> str:
    """A row of the event log; with ``None``, the empty row the script clones."""
    data = data or {}
    kind = _e(data.get("kind", ""))
    return (
        f'<tr data-seq="{_e(data.get("seq", ""))}" data-kind="{kind}">'
        f'<td class="seq">{_e(data.get("seq", ""))}</td>'
        f'<td class="at">{_time(data.get("at"), "at", compact=True)}</td>'
        f'<td class="kind k-{kind}">{kind}</td>'
        f'<td class="detail">{_e(_event_detail(data))}</td></tr>'
    )
