"""``ambidex evolve``: run an evolution with a live view; look into its database afterwards.

* ``ambidex evolve FILE [options]`` (the same as ``ambidex evolve run FILE``)
  evolves the file's ``@ax.evolve.target`` function;
* ``ambidex evolve show DB`` prints the best programs, the failures by kind
  (``--html PATH`` also writes a report with the score over iterations);
* ``ambidex evolve lineage DB ID`` prints a program's chain of parents back to
  the initial program (``--diff``: what each step changed).

``evolve`` is a group whose first argument, when it is not a subcommand's
name (or ``--help``), is handed to ``run``: ``ambidex evolve packing.py`` and
every option of the single command it used to be keep working. A target file
named like a subcommand is run with ``ambidex evolve run show``.

An error prints one red line, ``error: ...``: exit 2 for a mistake (a missing
or bad target or database, an unknown program, no API key for ``--proposer
llm``), 1 when the evolution itself cannot go on. Ctrl-C exits 130, saying
what the database kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ambidex.cli._conventions import AmbidexTyper, Group
from ambidex.cli._errors import fail, one_line, os_error_code
from ambidex.cli._json import print_json

if TYPE_CHECKING:
    from ambidex.evolve import EvolveResult, ProgramDatabase
    from ambidex.evolve.report import Snapshot

__all__ = ["evolve_app", "evolve_command", "lineage_command", "show_command"]


class _RunByDefault(Group):
    """A group whose unknown first argument (a target file, an option) goes to ``run``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


evolve_app = AmbidexTyper(
    name="evolve",
    cls=_RunByDefault,
    help="Evolve a function, then look into its program database.\n\n"
    "ambidex evolve FILE [OPTIONS] is short for ambidex evolve run FILE [OPTIONS]; "
    "ambidex evolve FILE --help lists the run's options.",
    short_help="Evolve a function (ambidex evolve FILE), then look into its database.",
    subcommand_metavar="FILE | COMMAND [ARGS]...",
)

DbArgument = Annotated[
    Path,
    typer.Argument(
        metavar="DB",
        help="The program database (the path a run prints; --db of the run).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


@evolve_app.command("run")
def evolve_command(
    file: Annotated[Path, typer.Argument(help="The file with an @ax.evolve.target function.")],
    iterations: Annotated[
        int, typer.Option(min=1, help="Candidates to try in all (a resumed run does the rest).")
    ] = 50,
    parallel: Annotated[int, typer.Option(min=1, max=256, help="Candidates in flight (K).")] = 4,
    proposer: Annotated[
        str, typer.Option(help="offline (no network) or llm (OPENAI_BASE_URL / OPENAI_API_KEY).")
    ] = "offline",
    model: Annotated[str | None, typer.Option(help="The LLM proposer's model.")] = None,
    db: Annotated[
        Path | None,
        typer.Option(
            help="The program database (default: evolve/<file>-<hash>.sqlite in AMBIDEX_HOME)."
        ),
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Start over: delete the database.")
    ] = False,
    seed: Annotated[int, typer.Option(min=0, help="Seeds sampling and proposals.")] = 0,
    deterministic: Annotated[
        bool,
        typer.Option(
            "--deterministic/--free-running",
            help="Store candidates in iteration order so the same seed gives the same run"
            " (default), or as they finish (a little faster, not reproducible).",
        ),
    ] = True,
    timeout_s: Annotated[
        float,
        typer.Option(min=0.1, help="Wall-clock limit per candidate (its processes are killed)."),
    ] = 30.0,
    memory_mb: Annotated[int, typer.Option(min=16, help="Memory limit per candidate.")] = 1024,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Evolve a function: propose, evaluate in a sandbox, keep the best; resumable."""
    import ambidex as ax
    from ambidex.cli._progress import progress_bar
    from ambidex.evolve import EvolveError, TargetError, default_db_path, make_proposer
    from ambidex.llm import LLMConfigError

    if proposer not in ("offline", "llm"):
        raise fail(f"--proposer must be 'offline' or 'llm', got {proposer!r}")
    try:
        target = ax.evolve.load_target(file)
    except TargetError as exc:
        raise fail(str(exc)) from None
    try:  # before the run starts: a missing API key is a mistake, not a failed proposal
        chosen = make_proposer(proposer, model)
    except LLMConfigError as exc:
        raise fail(f"--proposer llm: {exc}") from None
    db_path = db or default_db_path(target.path)
    err = Console(stderr=True)
    if not as_json:
        err.print(
            f"[bold]evolving[/] {escape(target.name)} in {escape(str(file))}: "
            f"{escape(target.spec.goal)}\n"
            f"metric {escape(target.spec.metric)} ({'max' if target.spec.maximize else 'min'}), "
            f"{iterations} iterations, {parallel} in flight, proposer {proposer}, "
            f"db {escape(str(db_path))}",
            highlight=False,
        )
    try:
        with progress_bar(f"evolve {target.name}", console=err) as bar:
            result = ax.evolve.evolve(
                target,
                iterations=iterations,
                parallel=parallel,
                proposer=chosen,
                db=db_path,
                fresh=fresh,
                seed=seed,
                deterministic=deterministic,
                timeout_s=timeout_s,
                memory_mb=memory_mb,
                on_progress=bar,  # an EvolveProgress is an ax.Progress report
            )
    except (TargetError, EvolveError) as exc:
        raise fail(str(exc), 1) from None
    except KeyboardInterrupt:
        err.print(f"[yellow]stopped[/]: {escape(_kept(db_path, iterations))}", highlight=False)
        raise typer.Exit(130) from None
    _close(chosen)
    examples = _failure_examples(result.db_path)
    if as_json:
        print_json({**result.summary(), "failure_examples": examples})
        return
    _show_result(result, examples)


def _close(proposer: Any) -> None:
    """Close the proposer's client (an LLM proposer's connections), on the loop it used."""
    import ambidex as ax

    aclose = getattr(proposer, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            ax.current_runtime().call(aclose())


def _kept(db_path: Path, iterations: int) -> str:
    """What an interrupted run leaves behind, in one line."""
    from ambidex.evolve import DatabaseError
    from ambidex.evolve.report import open_database

    again = "run the same command again to continue"
    try:
        with open_database(db_path) as db:
            done = int(db.get_meta("iterations_done") or 0)
            best = db.best()
    except DatabaseError:
        return f"nothing was stored yet; {again}"
    shown = "" if best is None else f", best #{best.id} ({db.metric} {best.score:.6g})"
    return f"{done} of {iterations} candidates are kept in {db_path}{shown}; {again}"


def _failure_examples(db_path: Path) -> dict[str, str]:
    """The latest error of each failure kind in the database (empty if it cannot be read)."""
    from ambidex.evolve import DatabaseError
    from ambidex.evolve.report import open_database

    try:
        with open_database(db_path) as db:
            return {kind: example for kind, _, example in db.failure_kinds()}
    except DatabaseError:
        return {}


def _show_result(result: EvolveResult, examples: dict[str, str]) -> None:
    from ambidex.evolve.report import failure_text

    console = Console()
    best = result.best
    initial = result.initial
    console.print(
        f"{result.done}/{result.iterations} candidates"
        f"{f' ({result.resumed_from} from an earlier run)' if result.resumed_from else ''}, "
        f"{result.succeeded} ok, {result.failed} failed, {result.elapsed_s:.1f} s",
        highlight=False,
    )
    if result.failures:
        kinds = sorted(result.failures.items(), key=lambda kv: (-kv[1], kv[0]))
        text = failure_text([(kind, n, examples.get(kind, "")) for kind, n in kinds])
        console.print(f"failures: {escape(text)}", highlight=False, soft_wrap=True)
    if best is None:
        console.print("[red]no program evaluated successfully[/]")
        return
    start = "-" if initial is None or initial.score is None else f"{initial.score:.6g}"
    console.print(
        f"best: #{best.id} score [bold]{best.score:.6g}[/] (start {start}), "
        f"found at iteration {best.iteration}"
    )
    console.print(best.code, markup=False, highlight=False)
    console.print(f"database: {escape(str(result.db_path))}", highlight=False, soft_wrap=True)


# -- looking into a database ---------------------------------------------------


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[ProgramDatabase]:
    """The database at ``path``; not one (or not there) exits 2 in one line."""
    from ambidex.evolve import DatabaseError
    from ambidex.evolve.report import open_database

    try:
        db = open_database(path)
    except DatabaseError as exc:
        raise fail(str(exc)) from None
    with db:
        yield db


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


@evolve_app.command("show")
def show_command(
    db: DbArgument,
    top: Annotated[int, typer.Option(min=1, help="How many of the best programs to list.")] = 5,
    html: Annotated[
        Path | None,
        typer.Option(
            help="Also write an HTML report (score over iterations, best programs, failures) "
            "here; needs matplotlib (pip install 'ambidex[sim]').",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show the best programs of an evolution database, the best one's code and its failures."""
    from ambidex.evolve.report import read, summary, write_html

    with _opened(db) as database:
        snap = read(database)
    written = None
    if html is not None:
        try:
            written = write_html(snap, html, top=top)
        except ImportError as exc:
            raise fail(str(exc)) from None
        except OSError as exc:
            raise fail(f"cannot write the report: {one_line(exc)}", os_error_code(exc)) from None
    data = summary(snap, top)
    if as_json:
        if written is not None:
            data["report"] = str(written)
        print_json(data)
        return
    _show_snapshot(snap, data, written)


def _show_snapshot(snap: Snapshot, data: dict[str, Any], report: Path | None) -> None:
    from ambidex.evolve.report import failure_text

    console = Console()
    target = f"{snap.target_file}: " if snap.target_file else ""
    console.print(
        f"{escape(target)}metric {escape(snap.metric)} ({'max' if snap.maximize else 'min'}), "
        f"{data['iterations_done']} iterations done, {data['programs']} programs: "
        f"{data['succeeded']} ok, {data['failed']} failed",
        highlight=False,
        soft_wrap=True,
    )
    if snap.failures:
        console.print(
            f"failures: {escape(failure_text(snap.failures))}", highlight=False, soft_wrap=True
        )
    best = snap.ranked(len(data["best"]))
    if not best:
        console.print("[red]no program evaluated successfully yet[/]")
    else:
        table = Table(title=f"the best {len(best)} (each code once)", title_justify="left")
        for column in ("rank", "id", snap.metric, "iteration", "island", "note"):
            table.add_column(escape(column), justify="left" if column == "note" else "right")
        for rank, p in enumerate(best, 1):
            table.add_row(
                str(rank),
                f"#{p.id}",
                _score(p.score),
                str(p.iteration),
                str(p.island),
                escape(p.note),
            )
        console.print(table)
        initial = snap.initial
        console.print(
            f"best: #{best[0].id} score [bold]{_score(best[0].score)}[/] "
            f"(start {_score(None if initial is None else initial.score)}), "
            f"found at iteration {best[0].iteration}",
            highlight=False,
        )
        console.print(best[0].code, markup=False, highlight=False)
    console.print(f"database: {escape(str(snap.path))}", highlight=False, soft_wrap=True)
    if report is not None:
        console.print(f"report: {escape(str(report))}", highlight=False, soft_wrap=True)


@evolve_app.command("lineage")
def lineage_command(
    db: DbArgument,
    program_id: Annotated[
        int, typer.Argument(metavar="ID", help="The program's id.", show_default=False)
    ],
    with_diff: Annotated[
        bool, typer.Option("--diff", help="Show what each program changed in its parent.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Show a program's chain of parents back to the initial program, root first."""
    from ambidex.evolve.report import lineage

    with _opened(db) as database:
        try:
            chain = lineage(database, program_id, with_diff=with_diff)
        except KeyError as exc:
            raise fail(str(exc.args[0])) from None
    if as_json:
        print_json(chain)
        return
    console = Console()
    console.print(
        f"lineage of #{program_id}: {len(chain)} program(s), the initial one first",
        highlight=False,
    )
    for row in chain:
        outcome = _score(row["score"]) if row["ok"] else f"failed: {row['error']}"
        console.print(
            f"#{row['id']}  iteration {row['iteration']}  island {row['island']}  "
            f"{outcome}  {row['proposer']}: {row['note']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        if "diff" in row:
            _print_diff(console, row["diff"])


def _print_diff(console: Console, text: str) -> None:
    if not text:
        console.print("    (the same code)", style="dim", highlight=False)
        return
    for line in text.splitlines():
        style = None
        if line.startswith("+") and not line.startswith("+++"):
            style = "green"
        elif line.startswith("-") and not line.startswith("---"):
            style = "red"
        console.print(f"    {line}", style=style, markup=False, highlight=False, soft_wrap=True)
