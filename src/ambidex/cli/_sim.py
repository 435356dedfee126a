"""``ambidex sim``: run a model, sweep it over a grid, write an HTML report of a record.

A model is named as ``path/to/file.py`` (the one Model class in it),
``file.py:Class`` or ``package.module:Class``. Runs and sweeps are recorded
(default: ``sim/<model>-<time>.sqlite`` in AMBIDEX_HOME). An error prints one
red line, ``error: ...``, and exits 2 for a mistake on the command line (a bad
model, parameter or record path) and 1 otherwise.

numpy and matplotlib are imported inside the commands, so ``ambidex --help``
stays quick.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ambidex.cli._conventions import AmbidexTyper
from ambidex.cli._errors import fail, one_line, os_error_code
from ambidex.cli._json import plain_json, print_json

if TYPE_CHECKING:
    from ambidex.sim import Model, RunResult, SweepResult

__all__ = ["parse_grid", "parse_params", "sim_app"]

sim_app = AmbidexTyper(
    name="sim",
    help="Run simulation models, sweep them over parameter grids, and report on records.",
)

ModelArgument = Annotated[
    str,
    typer.Argument(
        help="The model: path/to/file.py, file.py:Class or package.module:Class.",
        show_default=False,
    ),
]
ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="A parameter: key=value (repeatable).", show_default=False),
]
StepsOption = Annotated[int, typer.Option(min=0, help="Steps per run.")]
SeedOption = Annotated[int, typer.Option(min=0, help="The root seed.")]
RecordOption = Annotated[
    Path | None,
    typer.Option(
        help="Where to record: a new *.sqlite / *.db file or *.parquet directory "
        "(default: sim/<model>-<time>.sqlite in AMBIDEX_HOME).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
ReportOption = Annotated[
    bool, typer.Option("--report", help="Also write the record's HTML report.")
]

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@sim_app.callback()
def _needs_numpy() -> None:
    """Run simulation models, sweep them over parameter grids, and report on records."""
    try:
        import ambidex.sim  # noqa: F401
    except ImportError as exc:
        raise fail(f"{exc}") from None


def parse_params(items: list[str], option: str = "--param") -> dict[str, str]:
    """``key=value`` items to a dict of strings (the model's defaults give their types).

    Raises:
        ValueError: an item without ``=``, with an empty key, or a key given twice.
    """
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"{option} {item!r}: expected key=value")
        if not key:
            raise ValueError(f"{option} {item!r}: the parameter name before '=' is empty")
        if key in values:
            raise ValueError(f"{option} {key} is given twice")
        values[key] = value
    return values


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``key=v1,v2,v3`` items (or ``key=[json, list]``) to a dict of value lists.

    Raises:
        ValueError: an item without ``=``, an empty name or value, or a name given twice.
    """
    grid: dict[str, list[str]] = {}
    for key, text in parse_params(items, "--grid").items():
        text = text.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                raise ValueError(f"--grid {key}={text}: not a valid JSON list") from None
            if not isinstance(parsed, list):
                raise ValueError(f"--grid {key}={text}: not a valid JSON list")
            values = [json.dumps(v) if not isinstance(v, str) else v for v in parsed]
        else:
            values = [v.strip() for v in text.split(",")]
        if not values or any(v == "" for v in values):
            raise ValueError(f"--grid {key}={text}: expected {key}=v1,v2,... with no empty value")
        grid[key] = values
    return grid


def _load_model(spec: str) -> type[Model]:
    """The model ``spec`` names; ``package.module:Class`` is found from the current directory.

    As ``ambidex run`` finds a workflow's ``package.module:function`` nodes
    (``search_also``): the console script's ``sys.path`` lacks the current directory.
    """
    from ambidex._imports import search_also
    from ambidex.sim import ModelError, load_model

    search_also(Path.cwd())
    try:
        return load_model(spec)
    except ModelError as exc:
        raise fail(str(exc)) from None


def _resolve(cls: type[Model], params: list[str] | None) -> dict[str, Any]:
    """The given ``--param`` values, typed by the model's defaults (an error exits 2)."""
    from ambidex.sim import ModelError, resolve_params

    try:
        given = parse_params(params or [])
        resolved = resolve_params(cls, given)
    except (ValueError, ModelError) as exc:
        raise fail(str(exc)) from None
    return {key: resolved[key] for key in given}


def _record_path(record: Path | None, model: str, kind: str) -> Path:
    """The record to write: ``--record`` (which must not exist yet) or a fresh default."""
    if record is not None:
        if record.exists():
            raise fail(f"{record} exists already; name a new record (or delete that one)")
        if record.suffix not in (".sqlite", ".sqlite3", ".db", ".parquet"):
            raise fail(
                f"--record {record}: name it *.sqlite or *.db (SQLite) or *.parquet (Parquet)"
            )
        return record
    from ambidex._paths import data_dir

    folder = data_dir() / "sim"
    stem = f"{_SAFE_NAME.sub('_', model)}{'-sweep' if kind == 'sweep' else ''}"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = folder / f"{stem}-{stamp}.sqlite"
    n = 2
    while path.exists():
        path = folder / f"{stem}-{stamp}-{n}.sqlite"
        n += 1
    return path


@contextmanager
def _errors(record: Path, model: type[Model]) -> Iterator[None]:
    """Model, record and sweep errors as one line; Ctrl-C as exit 130.

    An exception raised in the model's own code is one line saying where,
    followed by the model's part of the traceback (exit 1).
    """
    from ambidex.sim import ModelError, RecordError, SweepError

    try:
        yield
    except ModelError as exc:
        raise fail(str(exc)) from None
    except RecordError as exc:
        raise fail(str(exc)) from None
    except SweepError as exc:
        raise fail(str(exc), 1) from None
    except KeyboardInterrupt:
        raise fail(f"interrupted; what was recorded so far is in {record}", 130) from None
    except (Exception, SystemExit) as exc:  # SystemExit: the model called sys.exit()
        frames = _model_frames(exc, model)
        if frames:
            _print_model_failure(exc, model, frames)
            raise typer.Exit(1) from None
        if isinstance(exc, OSError):  # the record's folder or file
            raise fail(f"cannot write {record}: {one_line(exc)}", os_error_code(exc)) from None
        raise


def _model_frames(exc: BaseException, model: type[Model]) -> list[traceback.FrameSummary]:
    """The frames of ``exc``'s traceback from the first in the model's file on (none: not it)."""
    try:
        source = inspect.getsourcefile(model)
    except TypeError:  # a class without a file
        return []
    if source is None:
        return []
    frames = traceback.extract_tb(exc.__traceback__)
    first = next((i for i, f in enumerate(frames) if f.filename == source), None)
    return [] if first is None else frames[first:]


def _print_model_failure(
    exc: BaseException, model: type[Model], frames: list[traceback.FrameSummary]
) -> None:
    """One line naming the model's file and line that raised, then the model's traceback."""
    source = frames[0].filename
    last = [f for f in frames if f.filename == source][-1]
    try:
        shown = os.path.relpath(source)
    except ValueError:  # another drive
        shown = source
    if shown.startswith(".."):
        shown = source
    message = " ".join(str(exc).split())
    fail(
        f"model {model.__name__} raised {type(exc).__name__}"
        f"{': ' + message if message else ''} ({shown}, line {last.lineno}, in {last.name})",
        1,
    )
    sys.stderr.write("".join(traceback.format_list(frames) + traceback.format_exception_only(exc)))


def _write_report(record: Path) -> Path:
    from ambidex.sim import RecordError, report

    try:
        return report(record)
    except RecordError as exc:
        raise fail(str(exc), 1) from None
    except OSError as exc:
        raise fail(f"cannot write the report: {one_line(exc)}", 1) from None


def _per_second(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "-"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@sim_app.command("run")
def run_command(
    model: ModelArgument,
    param: ParamOption = None,
    steps: StepsOption = 100,
    seed: SeedOption = 0,
    record: RecordOption = None,
    snapshot_every: Annotated[
        int | None,
        typer.Option(min=1, help="Record the agents every K steps.", show_default=False),
    ] = None,
    as_json: JsonOption = False,
    make_report: ReportOption = False,
) -> None:
    """Run a model once, with a progress bar; show its final metrics and where it was recorded."""
    from ambidex.cli._progress import progress_bar
    from ambidex.cli._progress import steps as progress_steps
    from ambidex.sim import Recorder, run

    cls = _load_model(model)
    given = _resolve(cls, param)
    name = cls.model_name()
    path = _record_path(record, name, "run")
    with _errors(path, cls), Recorder(path) as recorder, progress_bar(name) as bar:
        recorder.set_meta(kind="run", model=name, steps=steps, seed=seed, params=plain_json(given))
        result = run(
            cls,
            given,
            steps=steps,
            seed=seed,
            record=recorder,
            snapshot_every=snapshot_every,
            progress=progress_steps(bar),
        )
    _finish(
        result.summary(), path, make_report, as_json, lambda html: _show_run(result, path, html)
    )


def _finish(
    summary: dict[str, Any],
    path: Path,
    make_report: bool,
    as_json: bool,
    show: Callable[[Path | None], None],
) -> None:
    """What ``run`` and ``sweep`` end with: the report if asked, then JSON or tables."""
    html = _write_report(path) if make_report else None
    if as_json:
        summary["record"] = str(path)
        if html is not None:
            summary["report"] = str(html)
        print_json(summary)
        return
    show(html)


def _show_run(result: RunResult, path: Path, html: Path | None) -> None:
    console = Console()
    table = Table(title=f"{escape(result.model)}: final metrics", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.metrics.last().items():
        if key != "step":
            table.add_row(escape(key), _number(value))
    console.print(table)
    console.print(
        f"{result.steps} steps in {result.elapsed_s:.3f} s "
        f"({_per_second(result.steps, result.elapsed_s)} steps/s), seed {result.seed}",
        highlight=False,
    )
    console.print(f"record: {escape(str(path))}", highlight=False, soft_wrap=True)
    if html is not None:
        console.print(f"report: {escape(str(html))}", highlight=False, soft_wrap=True)


def _typed_grid(cls: type[Model], grid: dict[str, list[str]]) -> dict[str, list[Any]]:
    """Grid values typed by the model's defaults; a bad one exits 2 naming it."""
    from ambidex.sim import ModelError, resolve_params

    typed: dict[str, list[Any]] = {}
    try:
        for key, values in grid.items():
            typed[key] = [resolve_params(cls, {key: v})[key] for v in values]
    except ModelError as exc:
        raise fail(f"--grid: {exc}") from None
    return typed


@sim_app.command("sweep")
def sweep_command(
    model: ModelArgument,
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid",
            "-g",
            help="A swept parameter: key=v1,v2,v3 or a JSON list, key='[1, 2]' (repeatable; "
            "every combination is a grid point).",
            show_default=False,
        ),
    ] = None,
    param: ParamOption = None,
    replicates: Annotated[
        int, typer.Option("--replicates", "-r", min=1, help="Runs per grid point.")
    ] = 1,
    steps: StepsOption = 100,
    seed: SeedOption = 0,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Runs at once (default: one per usable CPU).", show_default=False),
    ] = None,
    record: RecordOption = None,
    as_json: JsonOption = False,
    make_report: ReportOption = False,
) -> None:
    """Run a model at every point of a grid, in parallel; show the final metrics per point."""
    import ambidex as ax
    from ambidex.cli._progress import progress_bar
    from ambidex.sim import sweep

    cls = _load_model(model)
    fixed = _resolve(cls, param)
    try:
        raw_grid = parse_grid(grid or [])
    except ValueError as exc:
        raise fail(str(exc)) from None
    typed = _typed_grid(cls, raw_grid)
    both = sorted(set(typed) & set(fixed))
    if both:
        raise fail(f"{', '.join(both)}: given both as --grid and as --param; choose one")
    name = cls.model_name()
    path = _record_path(record, name, "sweep")
    try:
        rt = ax.Runtime(cpu_workers=workers)
    except ValueError as exc:
        raise fail(str(exc)) from None
    with _errors(path, cls), rt, progress_bar(name) as bar:
        result = sweep(
            cls,
            typed,
            replicates=replicates,
            steps=steps,
            seed=seed,
            params=fixed,
            record=path,
            workers=workers,
            progress=bar,  # a SweepProgress is an ax.Progress report
        )
    _finish(
        result.summary(), path, make_report, as_json, lambda html: _show_sweep(result, path, html)
    )


def _show_sweep(result: SweepResult, path: Path, html: Path | None) -> None:
    console = Console()
    metrics = [c for c in result.runs[0].metrics.columns if c != "step"] if result.runs else []
    swept = list(result.grid)
    title = f"{escape(result.model)}: final metrics per grid point"
    if result.replicates > 1:
        title += f" (mean ± sd over {result.replicates} replicates)"
    console.print(f"[bold]{title}[/]", highlight=False, soft_wrap=True)
    table = Table()
    table.add_column("point", justify="right")
    for key in swept:
        table.add_column(escape(key), justify="right")
    for metric in metrics:
        table.add_column(escape(metric), justify="right")
    finals = {m: result.final(m) for m in metrics}
    for i, point in enumerate(result.points):
        cells = [str(i), *(escape(str(point[k])) for k in swept)]
        for metric in metrics:
            values = finals[metric][i]
            mean = _number(float(values.mean()))
            cells.append(mean if result.replicates == 1 else f"{mean} ± {values.std():.3g}")
        table.add_row(*cells)
    console.print(table)
    total_steps = sum(r.steps for r in result.runs)
    console.print(
        f"{len(result.runs)} runs ({len(result.points)} points x {result.replicates} "
        f"replicates) in {result.elapsed_s:.2f} s on {result.workers} worker(s), "
        f"{_per_second(total_steps, result.elapsed_s)} steps/s",
        highlight=False,
    )
    console.print(f"digest: {result.digest()}", highlight=False)
    console.print(f"record: {escape(str(path))}", highlight=False, soft_wrap=True)
    if html is not None:
        console.print(f"report: {escape(str(html))}", highlight=False, soft_wrap=True)


@sim_app.command("report")
def report_command(
    record: Annotated[
        Path,
        typer.Argument(
            help="A record: an SQLite file or Parquet directory written by run or sweep.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="The HTML file to write (default: <record>.html next to the record).",
            show_default=False,
        ),
    ] = None,
    title: Annotated[
        str | None, typer.Option(help="The report's title.", show_default=False)
    ] = None,
    traces: Annotated[
        bool,
        typer.Option(
            "--traces",
            help="Draw only every replicate's own line in a sweep's plots over time "
            "(without it: a min-max band around each point's mean, and a checkbox in "
            "the page that shows the replicates' lines instead).",
        ),
    ] = False,
) -> None:
    """Write a self-contained HTML report of a record (plots embedded); print its path."""
    from ambidex.sim import RecordError, report

    try:
        written = report(record, out, title=title, traces=traces)
    except RecordError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot write the report: {one_line(exc)}", os_error_code(exc)) from None
    typer.echo(str(written))
