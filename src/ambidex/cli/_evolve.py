"""``ambidex evolve FILE``: evolve a marked function with a live progress view."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ambidex.cli._errors import fail

if TYPE_CHECKING:
    from ambidex.evolve import EvolveProgress, EvolveResult

__all__ = ["evolve_command"]


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
    timeout_s: Annotated[
        float,
        typer.Option(min=0.1, help="Wall-clock limit per candidate (its processes are killed)."),
    ] = 30.0,
    memory_mb: Annotated[int, typer.Option(min=16, help="Memory limit per candidate.")] = 1024,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Evolve a function: propose, evaluate in a sandbox, keep the best; resumable."""
    import ambidex as ax
    from ambidex.evolve import TargetError
    from ambidex.evolve._coordinator import EvolveError, default_db_path

    if proposer not in ("offline", "llm"):
        raise fail(f"--proposer must be 'offline' or 'llm', got {proposer!r}")
    try:
        target = ax.evolve.load_target(file)
    except TargetError as exc:
        raise fail(str(exc)) from None
    db_path = db or default_db_path(target.path)
    err = Console(stderr=True)
    if not as_json:
        err.print(
            f"[bold]evolving[/] {escape(target.name)} in {escape(str(file))}: "
            f"{escape(target.spec.goal)}\n"
            f"metric {target.spec.metric} ({'max' if target.spec.maximize else 'min'}), "
            f"{iterations} iterations, {parallel} in flight, proposer {proposer}, db {db_path}"
        )
    view = _LiveView(err, enabled=True)
    try:
        with view:
            result = ax.evolve.evolve(
                target,
                iterations=iterations,
                parallel=parallel,
                proposer=proposer,
                model=model,
                db=db_path,
                fresh=fresh,
                seed=seed,
                timeout_s=timeout_s,
                memory_mb=memory_mb,
                on_progress=view.update,
            )
    except (TargetError, EvolveError) as exc:
        raise fail(str(exc), 1) from None
    except KeyboardInterrupt:
        err.print(
            f"[yellow]stopped[/]; everything finished so far is in {db_path}: "
            "run the same command again to continue"
        )
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(result.summary(), indent=2))
        return
    _show(result)


class _LiveView:
    """A one-line live status: done, in flight, success rate, best score."""

    def __init__(self, console: Console, enabled: bool) -> None:
        from rich.live import Live

        self.console = console
        self.live = Live("", console=console, refresh_per_second=8, transient=True)
        self.enabled = enabled
        self.last = 0.0

    def __enter__(self) -> _LiveView:
        if self.enabled:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.live.__exit__(*exc)

    def update(self, p: EvolveProgress) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and p.done < p.iterations:
            return
        self.last = now
        bar_width = 24
        filled = int(bar_width * p.done / max(p.iterations, 1))
        bar = "█" * filled + "░" * (bar_width - filled)
        self.live.update(f"{bar} {escape(p.line())}  {p.elapsed_s:.0f} s")


def _show(result: EvolveResult) -> None:
    console = Console()
    best = result.best
    initial = result.initial
    console.print(
        f"{result.done}/{result.iterations} candidates"
        f"{f' ({result.resumed_from} from an earlier run)' if result.resumed_from else ''}, "
        f"{result.succeeded} ok, {result.failed} failed"
        f"{' ' + str(result.failures) if result.failures else ''}, "
        f"{result.elapsed_s:.1f} s"
    )
    if best is None:
        console.print("[red]no program evaluated successfully[/]")
        return
    start = "-" if initial is None or initial.score is None else f"{initial.score:.6g}"
    console.print(
        f"best: #{best.id} score [bold]{best.score:.6g}[/] (start {start}), "
        f"found at iteration {best.iteration}"
    )
    console.print(best.code, markup=False, highlight=False)
    console.print(f"database: {result.db_path}")
