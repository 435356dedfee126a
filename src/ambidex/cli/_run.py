"""``ambidex run WORKFLOW.yaml``: run a workflow with a live progress view."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ambidex.cli._errors import fail, one_line

__all__ = ["INPUT_HELP", "input_value", "parse_inputs", "run_workflow"]


def input_value(text: str) -> Any:
    """The value of ``--input key=VALUE``: VALUE read as JSON where it is JSON, else the text.

    ``3`` is a number, ``true`` a boolean, ``[1, 2]`` a list, ``{"a": 1}`` an
    object, ``"3"`` (quoted) the text 3; ``Ada`` or ``01`` are not JSON and stay
    text. NaN and Infinity stay text too: JSON has no such numbers.
    """
    try:
        return json.loads(text, parse_constant=_not_json)
    except ValueError:
        return text


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def parse_inputs(items: list[str], text_inputs: Collection[str] = ()) -> dict[str, Any]:
    """``key=value`` pairs and ``@file.json`` objects, later ones winning.

    A value is read as JSON where it parses as JSON, and stays text otherwise
    (:func:`input_value`); the inputs named in ``text_inputs`` (a workflow's
    ``str`` inputs) always get the text as given.

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
            key = key.strip()
            if not key:
                raise typer.BadParameter(f"{item!r}: the input name before '=' is empty")
            values[key] = value if key in text_inputs else input_value(value)
        else:
            raise typer.BadParameter(f"{item!r}: expected key=value or @file.json")
    return values


INPUT_HELP = (
    "An input: key=VALUE, VALUE read as JSON where it is JSON and as text otherwise "
    """(n=3, tags='["a", "b"]', name=Ada; quote text that looks like JSON: id='"42"'), """
    "or @file.json with an object of inputs (repeatable)."
)


def run_workflow(
    workflow: Annotated[Path, typer.Argument(help="The workflow's YAML file.")],
    input: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help=INPUT_HELP, show_default=False),
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
    from ambidex.cli._progress import WorkflowView
    from ambidex.workflows import check_inputs

    err = Console(stderr=True)
    checkpoint = db if db is not None else data_dir() / "runs.sqlite"
    try:  # a folder that cannot be made is a mistake in the path, found before the run
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"cannot keep checkpoints in {checkpoint}: {one_line(exc)}") from None
    try:
        wf = ax.Workflow.from_yaml(str(workflow))
        text_inputs = {name for name, spec in wf.input_specs.items() if spec.type is str}
        values = parse_inputs(input or [], text_inputs)
        if resume is None:  # before the progress view starts
            check_inputs(wf, values)
        else:
            _check_resumable(checkpoint, resume)
    except typer.BadParameter as exc:
        raise fail(f"--input {exc.message}") from None
    except ax.WorkflowDefinitionError as exc:
        raise fail(str(exc)) from None
    view = None if as_json else WorkflowView(list(wf.nodes), console=Console(stderr=True))
    try:
        if view is not None:
            with view:
                result = wf.run(
                    values,
                    on_event=view,
                    checkpoint=str(checkpoint),
                    resume=resume,
                    max_parallel=max_parallel,
                )
        else:
            result = wf.run(
                values, checkpoint=str(checkpoint), resume=resume, max_parallel=max_parallel
            )
    except ax.WorkflowDefinitionError as exc:
        raise fail(str(exc)) from None
    except ax.WorkflowError as exc:
        failed = getattr(exc, "result", None)
        if as_json and failed is not None:
            typer.echo(json.dumps(failed.as_dict(), indent=2))
        err.print(f"[bold red]failed:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        err.print(
            f"resume with: ambidex run {workflow} --resume {exc.run_id}"
            + (f" --db {db}" if db is not None else ""),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    out = Console()
    out.print(f"[bold green]succeeded[/] in {result.elapsed_s:.2f} s (run {escape(result.run_id)})")
    sinks = [n for n in wf.nodes if not any(n in other.deps for other in wf.nodes.values())]
    for name in sinks:
        if name in result.outputs:
            output = result.outputs[name]  # text is shown as it is, not read as markup
            out.print(
                f"[bold]{escape(name)}[/]:", escape(output) if isinstance(output, str) else output
            )


def _check_resumable(checkpoint: Path, run_id: str) -> None:
    """Raise WorkflowDefinitionError when ``checkpoint`` holds no run ``run_id``."""
    from ambidex.workflows import CheckpointStore

    store = CheckpointStore(checkpoint)
    try:
        store.load_run(run_id)
    finally:
        store.close()
