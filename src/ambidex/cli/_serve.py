"""``ambidex serve`` (the job service with in-process workers) and ``ambidex worker``.

Both log through ``logging`` in the command line's one format, at
``--log-level`` (default ``info``, or ``AMBIDEX_LOG_LEVEL``, or ``ambidex
--log-level``): a job that fails is logged with its traceback, a retried one
with its error; uvicorn's own lines take the same format (its access log only
at ``debug``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from typing import TYPE_CHECKING, Annotated

import typer

from ambidex.cli._errors import fail as _fail
from ambidex.cli._errors import one_line
from ambidex.cli._logging import LogLevel, chosen_level, setup_logging

if TYPE_CHECKING:
    from ambidex.jobs import JobManager, JobStore

__all__ = ["serve", "worker"]

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Job store: a file, sqlite:///FILE or postgresql://USER@HOST:PORT/DB "
        "(default: jobs.sqlite in AMBIDEX_HOME or the XDG data directory).",
    ),
]
WorkloadsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--workloads",
        "-w",
        help="Module, .py file or workflow .yaml whose workloads to offer (repeatable). "
        "Built in: sleep, echo, primes.",
    ),
]
ConcurrencyOption = Annotated[
    int, typer.Option(min=0, max=10_000, help="Jobs run at once by this process (0: none).")
]
RetentionOption = Annotated[
    float,
    typer.Option(
        "--retention-days", min=0.0, help="Delete finished jobs older than this (0: keep them)."
    ),
]
LeaseOption = Annotated[
    float,
    typer.Option("--lease-s", min=0.5, help="Seconds a job stays a worker's without a renewal."),
]
ScheduleOption = Annotated[
    list[str] | None,
    typer.Option(
        "--schedule",
        help="Run a workload at every tick of a cron expression (UTC), e.g. "
        "'report=*/5 * * * *', or 'report=0 * * * *;{\"x\": 1}' with an input (repeatable). "
        "Each tick fires once across all processes sharing the store.",
        show_default=False,
    ),
]


LogLevelOption = Annotated[
    LogLevel | None,
    typer.Option(
        envvar="AMBIDEX_LOG_LEVEL",
        case_sensitive=False,
        help="How much to log (default: info, or what ambidex --log-level says; "
        "failing jobs are logged with their traceback at info).",
        show_default=False,
    ),
]


def _load(specs: list[str] | None, schedules: list[str] | None = None) -> None:
    """Load the workloads and add the schedules; a mistake in either exits 2 with one line."""
    from ambidex.jobs import default_registry, load_workloads, parse_schedule_option

    registry = default_registry()
    for spec in specs or []:
        try:
            load_workloads(spec, registry)
        except ValueError as exc:
            raise _fail(str(exc)) from None
    try:
        for text in schedules or []:
            name, schedule = parse_schedule_option(text)
            registry.schedule(name, schedule)
        registry.check_schedules()
    except ValueError as exc:
        raise _fail(str(exc)) from None


def _open_store(db: str | None) -> JobStore:
    from ambidex.jobs import JobStore, normalize_url

    try:
        return JobStore(db)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except Exception as exc:  # the database is unreachable or unusable
        shown = _shown_url(normalize_url(db)) if db else "(default)"
        raise _fail(f"cannot open the job store {shown}: {one_line(exc)}", 1) from None


def _shown_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _setup_logging(given: LogLevel | None) -> LogLevel:
    """Log at the level given here, else at ``ambidex --log-level``'s, else at info."""
    level = given or chosen_level() or LogLevel.info
    setup_logging(level, replace=True)
    return level


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")
    ] = 8000,
    db: DbOption = None,
    workloads: WorkloadsOption = None,
    concurrency: ConcurrencyOption = 32,
    lease_s: LeaseOption = 15.0,
    retention_days: RetentionOption = 7.0,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="AMBIDEX_TOKEN",
            help="Bearer token every request must carry; required off loopback.",
        ),
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option(min=1024, help="Larger request bodies are refused with 413.")
    ] = 1_048_576,
    schedule: ScheduleOption = None,
    log_level: LogLevelOption = None,
) -> None:
    """Serve the job service over HTTP, running jobs in this process.

    The dashboard is at /, the API under /v1 (OpenAPI at /docs). Jobs are kept
    in SQLite by default; pass --db postgresql://... to share the queue with
    `ambidex worker` processes.
    """
    from ambidex._urls import is_loopback_host

    if not token and not is_loopback_host(host):
        raise _fail(
            f"refusing to serve on {host} without a token: anyone who can reach it could run "
            "jobs. Pass --token (or set AMBIDEX_TOKEN), or bind 127.0.0.1."
        )
    _load(workloads, schedule)  # a mistake exits before logging is set up
    level = _setup_logging(log_level)
    import uvicorn

    from ambidex.jobs import JobManager, default_registry
    from ambidex.server import create_app

    store = _open_store(db)
    manager = JobManager(
        store,
        default_registry(),
        concurrency=concurrency,
        lease_s=lease_s,
        retention_s=retention_days * 86400 or None,
    )
    app = create_app(manager=manager, token=token, max_body_bytes=max_body_bytes)
    try:
        sock = socket.create_server(
            (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET
        )
    except OSError as exc:  # in use, not an address of this machine, a privileged port
        store.close()
        raise _fail(f"cannot listen on {host}:{port}: {one_line(exc)}") from None
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"ambidex job service on http://{shown}:{bound_port}", err=False)
    typer.echo(
        f"  store: {_shown_url(store.url)}  workloads: {', '.join(default_registry().names())}  "
        f"concurrency: {concurrency}  auth: {'bearer token' if token else 'none (loopback)'}"
    )
    typer.echo(
        f"  dashboard http://{shown}:{bound_port}/   API docs http://{shown}:{bound_port}/docs"
    )
    config = uvicorn.Config(
        app,
        log_level=level.value,
        log_config=None,  # uvicorn's lines go through the root logger: one format
        access_log=level is LogLevel.debug,
        # event streams and /v1/run waits would otherwise hold the shutdown (and the
        # release of running jobs) until the jobs they follow finish
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    _freeze_startup_objects()
    try:
        server.run(sockets=[sock])
    finally:
        store.close()


def worker(
    db: DbOption = None,
    workloads: WorkloadsOption = None,
    concurrency: ConcurrencyOption = 32,
    lease_s: LeaseOption = 15.0,
    retention_days: RetentionOption = 7.0,
    schedule: ScheduleOption = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve this worker's Prometheus metrics on this port (127.0.0.1).",
            show_default=False,
        ),
    ] = None,
    log_level: LogLevelOption = None,
) -> None:
    """Run jobs from a shared store (PostgreSQL, or an SQLite file on this machine).

    Several workers (and `ambidex serve --concurrency 0` as the front end) can
    share one PostgreSQL database: each job is claimed by one worker at a time,
    and a job whose worker dies is picked up by another after --lease-s.
    Stops cleanly on SIGINT/SIGTERM, giving its running jobs back to the queue.
    """
    if concurrency < 1:
        raise _fail("a worker needs --concurrency of at least 1")
    _load(workloads, schedule)  # a mistake exits before logging is set up
    _setup_logging(log_level)
    from ambidex.jobs import JobManager, default_registry

    store = _open_store(db)

    async def run() -> list[str]:
        """Work until SIGINT/SIGTERM; return what broke if the worker stopped on its own."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with JobManager(
            store,
            default_registry(),
            concurrency=concurrency,
            lease_s=lease_s,
            retention_s=retention_days * 86400 or None,
        ) as manager:
            if metrics_port is not None:
                _serve_metrics(manager, metrics_port)
            _freeze_startup_objects()
            typer.echo(
                f"ambidex worker {manager.worker_id} (pid {os.getpid()}) "
                f"on {_shown_url(store.url)}: "
                f"up to {concurrency} jobs of {', '.join(manager.registry.names())}",
                err=True,
            )
            problems: list[str] = []
            while not stop.is_set() and not problems:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await stop.wait()
                problems = manager.problems()
            typer.echo(f"stopping: giving back {manager.running_here} running job(s)", err=True)
            return problems

    try:
        problems = asyncio.run(run())
    finally:
        store.close()
    if problems:  # a supervisor sees a failed process, and restarts it
        raise _fail(f"the worker stopped: {'; '.join(problems)}", 1)


def _freeze_startup_objects() -> None:
    """Keep what start-up made (modules, classes, the app and its routes) out of full GCs.

    A full collection traverses every tracked object. Measured on the 2-CPU
    machine, ``serve --concurrency 0`` under 64 clients of single submits ran 55
    full collections in 10 s over ~110,000 start-up objects: 2.6 s, a quarter of
    its CPU. Frozen, the same 55 took 0.5 s (docs/benchmarks.md §7d). Objects
    made later are collected as before; a start-up object that later becomes
    cyclic garbage is never freed, which for a module, a class or the app (alive
    as long as the process) does not happen.
    """
    gc.collect()
    gc.freeze()


def _serve_metrics(manager: JobManager, port: int) -> None:
    """Expose ``manager``'s metrics at ``http://127.0.0.1:PORT/metrics`` (a daemon thread)."""
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr="127.0.0.1", registry=manager.metrics.registry)
    except OSError as exc:
        raise _fail(f"cannot serve metrics on 127.0.0.1:{port}: {one_line(exc)}") from None
    logging.getLogger("ambidex.jobs").info("metrics on http://127.0.0.1:%d/metrics", port)
