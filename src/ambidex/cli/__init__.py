"""The ``ambidex`` command (typer + rich)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import ambidex as ax
from ambidex.cli._conventions import AmbidexTyper, RootGroup
from ambidex.cli._environment import event_loop_name, installed_version
from ambidex.cli._errors import fail
from ambidex.cli._json import print_json
from ambidex.cli._logging import LogLevel, choose_level

__all__ = ["app", "main"]

app = AmbidexTyper(
    name="ambidex",
    help="Run io, blocking and cpu work where it belongs, from sync or async code.",
    cls=RootGroup,
    # --install-completion / --show-completion: shown in `ambidex -h` only
    add_completion=True,
)
console = Console()


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"ambidex {installed_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            expose_value=False,
            callback=_print_version,
            help="Print the installed version and exit.",
        ),
    ] = False,
    log_level: Annotated[
        LogLevel | None,
        typer.Option(
            envvar="AMBIDEX_LOG_LEVEL",
            case_sensitive=False,
            help="How much every command logs on stderr "
            "(default: warning; info for serve and worker).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run io, blocking and cpu work where it belongs, from sync or async code."""
    choose_level(log_level)


def _open_runtime(default: bool = True) -> ax.Runtime:
    """The runtime a command uses; a bad setting exits with a one-line error."""
    try:
        return ax.current_runtime() if default else ax.Runtime()
    except ValueError as exc:
        raise fail(str(exc)) from None


@app.command()
def demo(
    scale: Annotated[
        float, typer.Option(min=0.01, max=100.0, help="Multiply the amount of work.")
    ] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Run io, blocking and cpu work together; show where each ran and how long it took."""
    from ambidex.cli._demo import run_demo

    rt = _open_runtime()
    if not as_json:
        console.print(
            f"[bold]ambidex demo[/]: {rt.usable_cpus} usable CPU(s), "
            f"{rt.io_threads} I/O threads, {rt.cpu_workers} cpu worker processes"
        )
    start = time.perf_counter()
    with console.status("running io, blocking and cpu work at once...", spinner="dots"):
        rows = run_demo(scale)
    total_s = time.perf_counter() - start
    stats = rt.statistics()
    if as_json:
        payload = {
            "rows": [asdict(r) for r in rows],
            "total_s": total_s,
            "statistics": stats.as_dict(),
        }
        print_json(payload)
        return
    table = Table(title="what ran where")
    for column in ("kind", "calls", "ran on", "wall", "one after another", "speed-up"):
        table.add_column(column, justify="left" if column == "ran on" else "right")
    for r in rows:
        table.add_row(
            r.kind,
            str(r.calls),
            _places(r.kind, r.ran_on),
            f"{r.wall_s:.2f} s",
            f"{r.busy_s:.2f} s",
            f"{r.busy_s / r.wall_s:.1f}x" if r.wall_s > 0 else "-",
        )
    console.print(table)
    console.print(
        f"all three kinds ran concurrently: {total_s:.2f} s in total; "
        f"cpu workers started: {stats.cpu_workers.started if stats.cpu_workers else 0}"
    )


def _places(kind: str, ran_on: list[str]) -> str:
    if kind == "cpu":
        return f"{len(ran_on)} worker process(es): " + ", ".join(
            p.removeprefix("pid ") for p in ran_on
        )
    if len(ran_on) == 1:
        return f"thread {ran_on[0]}"
    return f"{len(ran_on)} threads: {ran_on[0]} .. {ran_on[-1]}"


@app.command()
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show the CPUs this process may use and the pool sizes ambidex would pick."""
    from ambidex.runtime import cgroup_cpu_quota

    rt = _open_runtime(default=False)
    try:
        loop = event_loop_name()
    except ValueError as exc:
        raise fail(str(exc)) from None
    quota = cgroup_cpu_quota()
    tracing = _tracing()
    facts = {
        "ambidex": installed_version(),
        "usable_cpus": rt.usable_cpus,
        "cgroup_cpu_quota": quota,
        "io_threads": rt.io_threads,
        "io_threads_max": rt.io_threads_max,
        "cpu_workers": rt.cpu_workers,
        "backend": rt.backend,
        "event_loop": loop,
        "tracing": tracing,
    }
    rt.close()
    if as_json:
        print_json(facts)
        return
    table = Table(show_header=False)
    table.add_row("ambidex", str(facts["ambidex"]))
    table.add_row("usable CPUs (affinity, cgroup quota)", str(rt.usable_cpus))
    table.add_row("cgroup CPU quota", "none" if quota is None else f"{quota:g} CPUs")
    table.add_row("I/O threads (AMBIDEX_IO_THREADS)", str(rt.io_threads))
    table.add_row("elastic I/O threads, at most (AMBIDEX_IO_THREADS_MAX)", str(rt.io_threads_max))
    table.add_row("cpu workers (AMBIDEX_CPU_WORKERS)", str(rt.cpu_workers))
    table.add_row("backend (AMBIDEX_BACKEND)", escape(rt.backend))
    if loop == "asyncio" and not _has_uvloop():
        loop = "asyncio (pip install 'ambidex[fast]' for uvloop)"
    table.add_row("event loop (AMBIDEX_LOOP)", escape(loop))
    table.add_row("tracing (AMBIDEX_OTEL)", escape(_describe_tracing(tracing)))
    console.print(table)


def _tracing() -> dict[str, Any]:
    """Whether this process traces, and where its spans would go (docs/observability.md)."""
    import importlib.util
    import os

    from ambidex import _observe

    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    endpoint = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"),
    )
    return {
        "on": _observe.on,
        "installed": importlib.util.find_spec("opentelemetry") is not None
        and importlib.util.find_spec("opentelemetry.sdk") is not None,
        "exporter": exporter,
        "endpoint": endpoint if "otlp" in exporter else None,
    }


def _describe_tracing(facts: dict[str, Any]) -> str:
    if not facts["installed"]:
        return "off (pip install 'ambidex[otel]', then AMBIDEX_OTEL=1)"
    if not facts["on"]:
        return "off (AMBIDEX_OTEL=1 turns it on)"
    where = f" to {facts['endpoint']}" if facts["endpoint"] else ""
    return f"on, exporter {facts['exporter']}{where}"


def _has_uvloop() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def _register() -> None:
    from ambidex.cli._evolve import evolve_app
    from ambidex.cli._jobs import jobs_app
    from ambidex.cli._llm import mock_llm
    from ambidex.cli._run import run_workflow
    from ambidex.cli._runs import runs_app
    from ambidex.cli._serve import serve, worker
    from ambidex.cli._sim import sim_app

    app.command("run")(run_workflow)
    app.command("serve")(serve)
    app.command("worker")(worker)
    app.command("mock-llm")(mock_llm)
    app.add_typer(evolve_app, name="evolve")
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(runs_app, name="runs")
    app.add_typer(sim_app, name="sim")


_register()


def main() -> None:
    """Entry point of the ``ambidex`` script (and of ``python -m ambidex``)."""
    app(prog_name="ambidex")
