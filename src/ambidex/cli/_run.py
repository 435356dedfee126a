"""``ambidex run WORKFLOW.yaml``: run a workflow with a live progress view.

:func:`execute` is the run itself, shared with ``ambidex runs resume``: the
run id on stderr before anything runs (a terminal or not), the progress view,
and on a failure or Ctrl-C the command that resumes the run. Lines meant to be
copied (the run id, paths, the resume command) are printed whole, never
wrapped by rich, whatever the terminal's width.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ambidex.cli._errors import fail, one_line
from ambidex.cli._json import print_json

if TYPE_CHECKING:
    import ambidex as ax
    from ambidex.workflows import CheckpointStore, RunRecord

__all__ = [
    "INPUT_HELP",
    "check_run_id",
    "checkpoint_file",
    "definition_problem",
    "execute",
    "input_value",
    "open_store",
    "parse_inputs",
    "resume_check",
    "run_workflow",
    "shell_join",
]


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


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def shell_join(words: list[str]) -> str:
    """``words`` as one shell command to copy, as ``shlex.join`` writes it.

    A word of bytes that are not UTF-8 (a surrogate-escaped file name) is
    written as bash's ``$'...'``, so the command names that very file.
    """
    return " ".join(_shell_word(word) for word in words)


def _shell_word(word: str) -> str:
    try:
        word.encode()
    except UnicodeEncodeError:
        raw = os.fsencode(word)
        keep = {*range(0x20, 0x7F)} - {ord("'"), ord("\\")}
        return "$'" + "".join(chr(b) if b in keep else f"\\x{b:02x}" for b in raw) + "'"
    return shlex.quote(word)


def check_run_id(run_id: str, checkpoint: Path) -> None:
    """Refuse a run id to look up that no run can have: one line, exit 2.

    A run id (``--resume``, ``runs show|resume``) of undecodable bytes on the
    command line is not UTF-8 text, and SQLite cannot even compare it.
    """
    try:
        run_id.encode()
    except UnicodeEncodeError:
        raise fail(f"no run {run_id!r} in {checkpoint}: a run id is UTF-8 text") from None


def checkpoint_file(db: Path | None) -> Path:
    """``--db``, else ``runs.sqlite`` in ``AMBIDEX_HOME``: absolute, so a resume may change dirs."""
    from ambidex._paths import data_dir

    return (db if db is not None else data_dir() / "runs.sqlite").absolute()


def open_store(checkpoint: Path) -> CheckpointStore:
    """The checkpoint store in ``checkpoint`` (its folder made); a bad path exits with one line."""
    import sqlite3

    from ambidex.workflows import CheckpointStore

    try:  # a folder that cannot be made is a mistake in the path, found before the run
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"cannot keep checkpoints in {checkpoint}: {one_line(exc)}") from None
    try:
        return CheckpointStore(checkpoint)
    except sqlite3.DatabaseError as exc:  # not SQLite, or another program's tables
        raise fail(f"{checkpoint} is not a checkpoint file: {one_line(exc)}") from None
    except OSError as exc:
        raise fail(f"cannot open {checkpoint}: {one_line(exc)}") from None


def definition_problem(exc: ax.WorkflowDefinitionError) -> str:
    """A ``WorkflowDefinitionError`` as one line: its file, then every problem, ``; ``-separated."""
    where = f"{exc.source}: " if exc.source else ""
    problems = [" ".join(problem.split()) for problem in exc.problems]
    if len(problems) == 1:
        return f"{where}{problems[0]}"
    return f"{where}{len(problems)} problems: " + "; ".join(problems)


def _print_line(console: Console, text: str) -> None:
    """``text`` as written (no markup, no highlighting), never wrapped: meant to be copied."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def execute(
    wf: ax.Workflow,
    values: dict[str, Any],
    *,
    checkpoint: Path,
    run_id: str,
    prior: RunRecord | None,
    resume_command: str,
    as_json: bool,
    max_parallel: int | None,
) -> None:
    """Run (``prior`` None) or resume ``wf`` as ``run_id``, show it, and exit as the CLI does.

    Exit codes: 0 succeeded, 1 the run failed, 2 the run could not start (a
    mistake), 130 Ctrl-C; after 1 and 130 ``resume_command`` is printed.
    """
    import ambidex as ax
    from ambidex.cli._progress import WorkflowView

    err = Console(stderr=True)
    if prior is None:
        started = f"run {run_id} of workflow {wf.name!r} started"
    else:
        total = len(prior.nodes) if prior.nodes else len(wf.nodes)
        started = (
            f"run {run_id} of workflow {wf.name!r} resumed "
            f"({prior.finished} of {total} nodes had finished)"
        )
    _print_line(err, f"{started}; checkpoints in {checkpoint}")
    view = None if as_json else WorkflowView(list(wf.nodes), console=Console(stderr=True))
    options: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "max_parallel": max_parallel,
        **({"run_id": run_id} if prior is None else {"resume": run_id}),
    }
    try:
        if view is not None:
            with view:
                result = wf.run(values, on_event=view, **options)
        else:
            result = wf.run(values, **options)
    except ax.WorkflowDefinitionError as exc:
        raise fail(definition_problem(exc)) from None
    except ax.WorkflowError as exc:
        failed = getattr(exc, "result", None)
        if as_json and failed is not None:
            print_json(failed.as_dict())
        err.print(f"[bold red]failed:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        _print_line(err, f"resume with: {resume_command}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print(
            f"[yellow]interrupted:[/] run {escape(run_id)} stopped; "
            f"the nodes that finished are kept in {escape(str(checkpoint))}",
            highlight=False,
            soft_wrap=True,
        )
        _print_line(err, f"resume with: {resume_command}")
        raise typer.Exit(130) from None
    if as_json:
        print_json(result.as_dict())
        return
    out = Console()
    out.print(f"[bold green]succeeded[/] in {result.elapsed_s:.2f} s (run {escape(result.run_id)})")
    sinks = [n for n in wf.nodes if not any(n in other.deps for other in wf.nodes.values())]
    for name in sinks:
        if name in result.outputs:
            output = result.outputs[name]  # text is shown as it is, not read as markup
            try:
                out.print(
                    f"[bold]{escape(name)}[/]:",
                    escape(output) if isinstance(output, str) else output,
                )
            except Exception as exc:  # its repr raised: the run still succeeded
                from ambidex._text import describe_exception

                why = describe_exception(exc)
                shown = f"<{type(output).__qualname__} object; showing it raised {why}>"
                out.print(f"[bold]{escape(name)}[/]:", escape(shown))


def resume_check(
    store: CheckpointStore, wf: ax.Workflow, run_id: str, values: dict[str, Any]
) -> RunRecord:
    """The stored run ``run_id``, once it is known to resume ``wf`` with ``values``.

    Raises:
        WorkflowDefinitionError: no such run, a run of another workflow, or
            inputs (the stored ones, ``values`` over them) that do not fit.
    """
    import ambidex as ax
    from ambidex.workflows import check_inputs

    stored = store.load_run(run_id)  # says which runs the file holds when it has no such run
    if stored.workflow != wf.name:
        raise ax.WorkflowDefinitionError(
            [f"run {run_id!r} belongs to workflow {stored.workflow!r}, not {wf.name!r}"],
            wf.source,
        )
    check_inputs(wf, {**stored.inputs, **values})
    record = store.run_record(run_id)
    assert record is not None  # load_run found it
    return record


def run_workflow(
    workflow: Annotated[Path, typer.Argument(help="The workflow's YAML file.")],
    input: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help=INPUT_HELP, show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Resume this run id: finished nodes are not run again, its stored inputs "
            "are used (an --input given replaces one)."
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            help="The new run's id (default: a random one); refused if the file has it already."
        ),
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option(help="SQLite file for checkpoints (default: runs.sqlite in AMBIDEX_HOME)."),
    ] = None,
    max_parallel: Annotated[
        int | None, typer.Option(min=1, help="Run at most this many nodes at once.")
    ] = None,
) -> None:
    """Run a workflow; every node's result is checkpointed so a failed run can be resumed.

    The run id is printed first; a failed or interrupted (Ctrl-C) run prints the
    command that resumes it. `ambidex runs` lists, shows and resumes runs.
    """
    import ambidex as ax
    from ambidex.workflows import check_inputs

    if run_id is not None and not _RUN_ID.fullmatch(run_id):
        raise fail(
            f"--run-id {run_id!r}: use letters, digits, '.', '_', ':' and '-' "
            "(at most 128 characters, starting with a letter or digit)"
        )
    if run_id is not None and resume is not None and run_id != resume:
        raise fail(f"--run-id {run_id} and --resume {resume} name two runs: give one")
    checkpoint = checkpoint_file(db)
    if resume is not None:
        check_run_id(resume, checkpoint)
    try:  # every mistake is found before the progress view starts
        wf = ax.Workflow.from_yaml(str(workflow))
        text_inputs = {name for name, spec in wf.input_specs.items() if spec.type is str}
        values = parse_inputs(input or [], text_inputs)
        if resume is None:
            check_inputs(wf, values)
        store = open_store(checkpoint)
        try:
            prior = None
            if resume is not None:
                prior = resume_check(store, wf, resume, values)
            elif run_id is not None and store.run_record(run_id) is not None:
                raise fail(
                    f"run {run_id} already exists in {checkpoint}: resume it with --resume "
                    f"{run_id}, or choose another --run-id"
                )
        finally:
            store.close()
    except typer.BadParameter as exc:
        raise fail(f"--input {exc.message}") from None
    except ax.WorkflowDefinitionError as exc:
        raise fail(definition_problem(exc)) from None
    the_id = resume or run_id or secrets.token_hex(8)
    command = ["ambidex", "run", str(workflow), "--resume", the_id]
    if db is not None:
        command += ["--db", str(db)]
    execute(
        wf,
        values,
        checkpoint=checkpoint,
        run_id=the_id,
        prior=prior,
        resume_command=shell_join(command),
        as_json=as_json,
        max_parallel=max_parallel,
    )
