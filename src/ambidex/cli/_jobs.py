"""``ambidex jobs``: jobs of a job service from a shell; ``prune`` for a store.

List, show, submit, cancel, retry and re-run jobs; see the workers.

Every command but ``prune`` talks to a running service (``--url``, default
``AMBIDEX_URL`` or http://127.0.0.1:8000; ``--token``, default
``AMBIDEX_TOKEN``). ``prune`` opens the job store itself. A job may be named
by its id or by a prefix of it that names one job only. An error prints one
line, ``error: ...``, and exits 1 (2 for a mistake on the command line, an
unknown workload, an input or option that does not fit, an ambiguous prefix).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ambidex.cli._conventions import AmbidexTyper
from ambidex.cli._errors import fail
from ambidex.cli._json import print_json
from ambidex.cli._run import INPUT_HELP

if TYPE_CHECKING:
    from ambidex.client import Client
    from ambidex.jobs import Attempt, Job, JobEvent

__all__ = ["jobs_app", "parse_duration"]

jobs_app = AmbidexTyper(
    name="jobs",
    help="List, show, submit, cancel, retry and re-run jobs of an ambidex job service; "
    "see its workers; prune a store.",
)

UrlOption = Annotated[
    str,
    typer.Option("--url", envvar="AMBIDEX_URL", help="The job service's base URL."),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="AMBIDEX_TOKEN",
        help="Its bearer token, if it has one.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]

_DEFAULT_URL = "http://127.0.0.1:8000"
_STATUS_STYLE = {
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
}
_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*$", re.IGNORECASE)
_SHOW_EVENTS = 10
_SHORT_ID = 10  # 50 random bits: a prefix this long names one job in any real store
_FULL_ID_WIDTH = 110  # a terminal at least this wide shows whole ids in `jobs list`
JobIdArgument = Annotated[
    str, typer.Argument(help="The job's id, or a prefix of it that names one job.")
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    return fail(message, code)  # exit 1 by default here: most failures are the service's


@contextmanager
def _open_client(url: str, token: str | None) -> Iterator[Client]:
    """A client; the job errors of the block become one line and an exit code."""
    from ambidex.client import Client
    from ambidex.jobs import (
        JobError,
        JobInputError,
        JobOptionError,
        JobServiceError,
        UnknownWorkloadError,
    )

    try:
        client = Client(url, token=token)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    try:
        with client:
            yield client
    except (UnknownWorkloadError, JobInputError, JobOptionError) as exc:
        raise _fail(str(exc), 2) from None
    except JobServiceError as exc:
        # 422: the service refused an option this command sent as given (a cursor, say)
        raise _fail(str(exc), 2 if exc.status_code == 422 else 1) from None
    except JobError as exc:
        raise _fail(str(exc)) from None
    except ValueError as exc:  # a bad option value, found by the client before sending
        raise _fail(str(exc), 2) from None


def _resolve(client: Client, given: str) -> str:
    """The id of the one job ``given`` names: its whole id, or a prefix of one id only.

    Raises:
        typer.Exit: no job, or several, start so (exit 2 for an ambiguous prefix).
    """
    from ambidex.jobs import JobNotFoundError

    if not given.strip():
        raise _fail("give a job id, or the start of one", 2)
    try:
        return client.get(given).id
    except JobNotFoundError:
        pass
    if not given or given.startswith("-"):
        raise _fail(f"no job with id {given!r}")
    page = client.list(id_prefix=given, limit=5)
    if not page.jobs:
        raise _fail(f"no job with id {given!r}")
    if len(page.jobs) > 1:
        shown = ", ".join(j.id for j in page.jobs[:4])
        raise _fail(f"{given!r} is the start of several job ids ({shown}...): give more of it", 2)
    return page.jobs[0].id


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _status(job: Job) -> str:
    value = job.status.value
    text = f"{value} (cancel requested)" if job.cancel_requested and value == "running" else value
    return f"[{_STATUS_STYLE.get(value, 'white')}]{text}[/]"


def _percent(job: Job) -> str:
    return "-" if job.progress is None else f"{100 * job.progress:.0f}%"


@jobs_app.command("list")
def list_jobs(
    status: Annotated[
        list[str] | None,
        typer.Option(help="Only jobs in this state (repeatable, or comma-separated)."),
    ] = None,
    workload: Annotated[str | None, typer.Option(help="Only jobs of this workload.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many jobs (newest first).")] = 20,
    cursor: Annotated[
        str | None, typer.Option(help="Continue after a previous page (its next cursor).")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = _DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """List jobs, newest first."""
    with _open_client(url, token) as client:
        page = client.list(status=status, workload=workload, limit=limit, cursor=cursor)
    if as_json:
        print_json({"jobs": [j.as_dict() for j in page.jobs], "next_cursor": page.next_cursor})
        return
    console = Console()
    if not page.jobs:
        console.print("no jobs")
        return
    # Whole ids on a wide terminal; on a narrow one, prefixes that show, cancel,
    # retry and rerun accept. An id is never wrapped or cut with an ellipsis.
    whole = console.width >= _FULL_ID_WIDTH
    table = Table()
    table.add_column("id" if whole else "id (prefix)", no_wrap=True, overflow="ignore")
    for column in ("workload", "status", "progress", "attempts", "took", "created", "error"):
        table.add_column(
            column,
            justify="right" if column in ("progress", "attempts", "took") else "left",
            overflow="fold",
            max_width=40 if column == "error" else None,
        )
    for job in page.jobs:
        table.add_row(
            job.id if whole else job.id[:_SHORT_ID],
            escape(job.workload),
            _status(job),
            _percent(job),
            str(job.attempts),
            "-" if job.duration_s is None else f"{job.duration_s:.2f} s",
            _when(job.created_at),
            escape((job.error or "").splitlines()[0] if job.error else ""),
        )
    console.print(table)
    if not whole:
        console.print(
            f"ids shortened to {_SHORT_ID} characters; every jobs command accepts them "
            "(--json prints them whole)",
            highlight=False,
        )
    if page.next_cursor:
        console.print(
            f"older: ambidex jobs list --cursor {page.next_cursor}", markup=False, highlight=False
        )


def _print_attempts(console: Console, attempts: list[Attempt]) -> None:
    table = Table(title="attempts", title_justify="left")
    for column in ("#", "started", "took", "outcome", "error"):
        table.add_column(column, justify="right" if column in ("#", "took") else "left")
    for a in attempts:
        took = "-" if a.ended_at is None else f"{a.ended_at - a.started_at:.2f} s"
        table.add_row(
            str(a.number),
            _when(a.started_at),
            took,
            a.outcome or "running",
            escape((a.error or "").splitlines()[0] if a.error else ""),
        )
    console.print(table)


def _event_details(event: JobEvent) -> str:
    data = {
        k: v
        for k, v in event.data.items()
        if (k != "status" or event.kind == "requeued") and k != "traceback"
    }
    if event.kind == "progress":
        fraction, message = data.get("progress"), data.get("message")
        shown = "" if fraction is None else f"{100 * float(fraction):.0f}%"
        return f"{shown} {message or ''}".strip()
    return ", ".join(f"{k}={v}" for k, v in data.items())


@jobs_app.command("show")
def show(
    job_id: JobIdArgument,
    as_json: JsonOption = False,
    url: UrlOption = _DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Show a job: its fields, result or error and traceback, its attempts and last events."""
    with _open_client(url, token) as client:
        job = client.get(_resolve(client, job_id))
        events = client.history(job.id)[-_SHOW_EVENTS:]
        attempts = client.attempts(job.id)
    if as_json:
        print_json(
            {
                "job": job.as_dict(),
                "attempts": [a.as_dict() for a in attempts],
                "events": [e.as_dict() for e in events],
            }
        )
        return
    console = Console()
    fields = Table(show_header=False, box=None, pad_edge=False)
    fields.add_column(style="bold")
    fields.add_column(overflow="fold")
    for name, value in _job_rows(job):
        fields.add_row(name, value)
    console.print(fields)
    if len(attempts) > 1:
        _print_attempts(console, attempts)
    if job.traceback:
        console.print("[bold]traceback[/]")
        console.print(escape(job.traceback.rstrip()), highlight=False, soft_wrap=True)
    if events:
        table = Table(title=f"last {len(events)} event(s)", title_justify="left")
        for column in ("seq", "at", "kind", "details"):
            table.add_column(column, justify="right" if column == "seq" else "left")
        for event in events:
            table.add_row(
                str(event.seq), _when(event.at), event.kind, escape(_event_details(event))
            )
        console.print(table)


def _job_rows(job: Job) -> list[tuple[str, str]]:
    """The fields ``show`` prints, as (name, rich markup)."""
    rows: list[tuple[str, str]] = [
        ("id", job.id),
        ("workload", escape(job.workload)),
        ("status", _status(job)),
        ("progress", _percent(job) + (f"  {escape(job.message)}" if job.message else "")),
        (
            "attempts",
            f"{job.attempts} ({job.lost} lost with their worker; max_attempts {job.max_attempts})",
        ),
        ("retries", f"{job.retried} of {job.retry.retries}" if job.retry.retries else "none"),
        ("priority", str(job.priority)),
        ("timeout", "-" if job.timeout_s is None else f"{job.timeout_s:g} s"),
        ("created", _when(job.created_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
        ("worker", escape(job.worker or "-")),
        ("input", escape(json.dumps(job.input))),
    ]
    if job.run_at is not None and job.status.value == "queued" and job.run_at > job.created_at:
        rows.insert(5, ("runs at", _when(job.run_at)))
    if job.rerun_of:
        rows.append(("re-run of", job.rerun_of))
    if job.idempotency_key:
        rows.append(("idempotency key", escape(job.idempotency_key)))
    if job.status.value == "succeeded":
        rows.append(("result", escape(json.dumps(job.result))))
    if job.error:
        rows.append(("error", f"[red]{escape(job.error)}[/]"))
    return rows


@jobs_app.command("submit")
def submit(
    workload: Annotated[str, typer.Argument(help="A workload the service offers.")],
    input: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help=INPUT_HELP, show_default=False),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the job to its end, then print its result.")
    ] = False,
    priority: Annotated[
        int | None, typer.Option(help="Higher starts first (default: the workload's).")
    ] = None,
    delay: Annotated[
        str | None,
        typer.Option(
            help="Start no sooner than this from now: 30s, 5m, 2h, 1d.", show_default=False
        ),
    ] = None,
    run_at: Annotated[
        str | None,
        typer.Option(
            help="Start no sooner than this time: ISO 8601 with a zone, YYYY-MM-DDTHH:MMZ.",
            show_default=False,
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help="Submitting the same key again returns the first job.", show_default=False
        ),
    ] = None,
    retries: Annotated[
        int | None,
        typer.Option(min=0, help="Failures retried, with backoff (default: the workload's)."),
    ] = None,
    retry_on: Annotated[
        list[str] | None,
        typer.Option(
            help="An exception type name to retry (repeatable; default: any).", show_default=False
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
    url: UrlOption = _DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Submit a job; with --wait, show its progress and print its result."""
    from ambidex.cli._run import parse_inputs

    try:
        values = parse_inputs(input or [])
        delay_s = None if delay is None else parse_duration(delay, "--delay")
        when = None if run_at is None else _parse_time(run_at)
    except typer.BadParameter as exc:
        raise _fail(f"--input {exc.message}", 2) from None
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    with _open_client(url, token) as client:
        job = client.submit(
            workload,
            values,
            priority=priority,
            delay_s=delay_s,
            run_at=when,
            idempotency_key=idempotency_key,
            retries=retries,
            retry_on=retry_on or None,
        )
        if wait:
            # on stderr, so that the id is known even if the wait is cut short
            typer.echo(f"submitted job {job.id} ({job.workload}); waiting for it", err=True)
            job = _follow(client, job)
    if as_json:
        print_json(job.as_dict())
    if not wait:
        if not as_json:
            typer.echo(f"submitted job {job.id} ({job.workload}): {job.status.value}")
            typer.echo(f"follow it with: ambidex jobs show {job.id}")
        return
    if job.status.value == "succeeded":
        if not as_json:
            print_json(job.result)
        return
    if job.status.value == "failed":
        raise _fail(f"job {job.id} ({job.workload}) failed: {job.error}")
    raise _fail(f"job {job.id} ({job.workload}) was {job.status.value}")


def _follow(client: Client, job: Job) -> Job:
    from ambidex.cli._progress import fractions, progress_bar

    try:
        with progress_bar(f"{job.workload} {job.id}") as bar:
            return client.wait(job.id, on_progress=fractions(bar))
    except KeyboardInterrupt:
        raise _fail(
            f"stopped waiting; job {job.id} goes on (cancel it: ambidex jobs cancel {job.id})",
            130,
        ) from None


@jobs_app.command("cancel")
def cancel(
    job_id: JobIdArgument,
    as_json: JsonOption = False,
    url: UrlOption = _DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Cancel a job: a queued one at once, a running one as soon as its worker sees it."""
    with _open_client(url, token) as client:
        job = client.cancel(_resolve(client, job_id))
    if as_json:
        print_json(job.as_dict())
    elif job.status.value == "cancelled":
        typer.echo(f"job {job.id} ({job.workload}): cancelled")
    elif job.status.terminal:
        typer.echo(f"job {job.id} ({job.workload}) had already {job.status.value}: unchanged")
    else:
        typer.echo(f"job {job.id} ({job.workload}): cancel requested; its worker stops it")


@jobs_app.command("retry")
def retry(
    job_id: JobIdArgument,
    as_json: JsonOption = False,
    url: UrlOption = _DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Put a failed or cancelled job back in the queue, as it is (same id and input)."""
    with _open_client(url, token) as client:
        job = client.retry(_resolve(client, job_id))
    if as_json:
        print_json(job.as_dict())
    else:
        typer.echo(f"job {job.id} ({job.workload}): back in the queue")


@jobs_app.command("rerun")
def rerun(
    job_id: JobIdArgument,
    as_json: JsonOption = False,
    url: UrlOption = _DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Run a finished job again: a new job with the same workload and input."""
    with _open_client(url, token) as client:
        job = client.rerun(_resolve(client, job_id))
    if as_json:
        print_json(job.as_dict())
    else:
        typer.echo(f"job {job.id} ({job.workload}) re-runs {job.rerun_of}: {job.status.value}")


@jobs_app.command("workers")
def workers(
    as_json: JsonOption = False,
    url: UrlOption = _DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """List the workers sharing the service's store: heartbeat, jobs held, concurrency."""
    import time

    with _open_client(url, token) as client:
        found = client.workers()
    now = time.time()
    if as_json:
        print_json({**found, "workers": [w.as_dict(now) for w in found["workers"]]})
        return
    console = Console()
    table = Table()
    for column in ("worker", "alive", "heartbeat", "running", "workloads"):
        table.add_column(column, overflow="fold", no_wrap=column == "worker")
    for w in found["workers"]:
        table.add_row(
            escape(w.id),
            "[green]yes[/]" if w.alive(now) else "[red]no[/]",
            f"{max(now - w.heartbeat_at, 0):.1f} s ago",
            f"{w.running}/{w.concurrency}",
            escape(", ".join(w.workloads)),
        )
    if found["workers"]:
        console.print(table)
    if not found["alive"]:
        queued = found.get("queued", 0)
        console.print(
            f"[bold red]no live worker[/]: nothing consumes the queue ({queued} job(s) queued). "
            "Start one: ambidex worker --db ... (or serve with --concurrency above 0)",
            highlight=False,
        )
    elif found.get("unserved"):
        names = ", ".join(f"{escape(w)} ({n} queued)" for w, n in found["unserved"].items())
        console.print(f"[bold yellow]no live worker takes[/] {names}", highlight=False)


def _parse_time(text: str) -> datetime:
    """An aware datetime from ISO 8601 text (``--run-at``).

    Raises:
        ValueError: not ISO 8601, or without a time zone.
    """
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--run-at {text!r}: expected an ISO 8601 time with a zone, YYYY-MM-DDTHH:MM:SSZ"
        ) from None
    if when.tzinfo is None:
        raise ValueError(f"--run-at {text!r}: give a time zone, e.g. Z or +02:00 at the end")
    return when


def parse_duration(text: str, option: str = "--older-than") -> float:
    """Seconds from ``7d``, ``12h``, ``30m``, ``3600s`` or a bare number of seconds.

    Raises:
        ValueError: anything else, or a negative duration.
    """
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(f"{option} {text!r}: expected a duration such as 7d, 12h, 30m or 3600s")
    return float(found.group(1)) * _UNITS_S[(found.group(2) or "s").lower()]


@jobs_app.command("prune")
def prune(
    older_than: Annotated[
        str, typer.Option(help="Delete finished jobs older than this: 7d, 12h, 30m or 3600s.")
    ] = "7d",
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Job store: a file, sqlite:///FILE or postgresql://USER@HOST:PORT/DB "
            "(default: jobs.sqlite in AMBIDEX_HOME or the XDG data directory).",
        ),
    ] = None,
) -> None:
    """Delete finished jobs (and their events) from a job store; queued and running jobs stay."""
    from ambidex.jobs import JobStore

    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    missing = _missing_sqlite_file(db)
    if missing is not None:  # pruning must not create an empty store at a mistyped path
        raise _fail(f"no job store at {missing}: check --db", 2)
    try:
        store = JobStore(db)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    except Exception as exc:  # the database is unreachable or unusable
        raise _fail(f"cannot open the job store {_shown(db or '(default)')}: {exc}") from None
    try:
        removed = store.prune(seconds)
    except Exception as exc:
        raise _fail(f"pruning {_shown(store.url)} failed: {exc}") from None
    finally:
        store.close()
    typer.echo(f"pruned {removed} finished job(s) older than {older_than} from {_shown(store.url)}")


def _missing_sqlite_file(db: str | None) -> str | None:
    """The path of the SQLite file ``db`` names, if that file does not exist."""
    from pathlib import Path

    from ambidex.jobs import normalize_url

    try:
        url = normalize_url(db)
    except ValueError:
        return None  # JobStore says what is wrong with it
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return None if path.exists() else str(path)


def _shown(db: str) -> str:
    """A database URL fit to print: its password masked."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(db).render_as_string(hide_password=True)
    except Exception:  # a file path rather than a URL
        return db
