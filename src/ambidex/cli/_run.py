"""``ambidex run WORKFLOW.yaml``: run a workflow with a live progress view."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

__all__ = ["parse_inputs", "run_workflow"]


def parse_inputs(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs and ``@file.json`` objects, later ones winning.

    Values stay strings; the workflow's declared input types convert them
    (``"12.5"`` for a float input becomes 12.5).

    Raises:
        typer.BadParameter: an item is neither form, or a file cannot be read.
    """
    values: dict[str, Any] = {}
    for item in items:
        if item.startswith("@"):
            path = Path(item[1:])
            try:
                data = json.loads(path.read_text())
            except OSError as exc:
                raise typer.BadParameter(f"{item}: cannot read {path}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise typer.BadParameter(f"{item}: {path} is not UTF-8 text") from None
            except json.JSONDecodeError as exc:
                raise typer.BadParameter(
                    f"{item}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
                ) from None
            if not isinstance(data, dict):
                raise typer.BadParameter(f"{item}: expected a JSON object of input values")
            values.update(data)
        elif "=" in item:
            key, _, value = item.partition("=")
            if not key:
                raise typer.BadParameter(f"{item!r}: the input name before '=' is empty")
            values[key.strip()] = value
        else:
            raise typer.BadParameter(f"{item!r}: expected key=value or @file.json")
    return values


def run_workflow(
    workflow: Annotated[Path, typer.Argument(help="The workflow's YAML file.")],
    input: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="key=value, or @file.json with an object of inputs."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    resume: Annotated[
        str | None, typer.Option(help="Resume this run id: finished nodes are not run again.")
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option(help="SQLite file for checkpoints (default: runs.sqlite in AMBIDEX_HOME)."),
    ] = None,
    max_parallel: Annotated[
        int | None, typer.Option(min=1, help="Run at most this many nodes at once.")
    ] = None,
) -> None:
    """Run a workflow; every node's result is checkpointed so a failed run can be resumed."""
    import ambidex as ax
    from ambidex._paths import data_dir
    from ambidex.workflows._progress import ProgressView
    from ambidex.workflows._validate import check_inputs

    err = Console(stderr=True)
    values = parse_inputs(input or [])
    checkpoint = str(db if db is not None else data_dir() / "runs.sqlite")
    try:
        wf = ax.Workflow.from_yaml(str(workflow))
        if resume is None:
            check_inputs(wf, values)  # before the progress view starts
    except ax.WorkflowDefinitionError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    view = None if as_json else ProgressView(list(wf.nodes), console=Console(stderr=True))
    try:
        if view is not None:
            with view:
                result = wf.run(
                    values,
                    on_event=view,
                    checkpoint=checkpoint,
                    resume=resume,
                    max_parallel=max_parallel,
                )
        else:
            result = wf.run(values, checkpoint=checkpoint, resume=resume, max_parallel=max_parallel)
    except ax.WorkflowDefinitionError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except ax.WorkflowError as exc:
        failed = getattr(exc, "result", None)
        if as_json and failed is not None:
            typer.echo(json.dumps(failed.as_dict(), indent=2))
        err.print(f"[bold red]failed:[/] {exc}", highlight=False)
        err.print(
            f"resume with: ambidex run {workflow} --resume {exc.run_id}"
            + (f" --db {db}" if db is not None else ""),
            highlight=False,
        )
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    out = Console()
    out.print(f"[bold green]succeeded[/] in {result.elapsed_s:.2f} s (run {result.run_id})")
    sinks = [n for n in wf.nodes if not any(n in other.deps for other in wf.nodes.values())]
    for name in sinks:
        if name in result.outputs:
            out.print(f"[bold]{name}[/]:", result.outputs[name])
