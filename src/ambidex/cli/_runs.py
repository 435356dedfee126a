"""``ambidex runs list|show|resume``: the workflow runs kept in a checkpoint file.

They read the file through ``CheckpointStore``'s public methods (``runs``,
``run_record``, ``node_records``) and never load a node's output, except
``resume``, which runs the workflow again as ``ambidex run --resume`` does: with
the YAML file and inputs the run recorded, from the directory it started in.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ambidex.cli._conventions import AmbidexTyper
from ambidex.cli._errors import fail
from ambidex.cli._json import print_json

__all__ = ["runs_app"]

runs_app = AmbidexTyper(
    name="runs",
    help="List, show and resume workflow runs (the checkpoints `ambidex run` keeps).",
)

DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db", help="The SQLite file of checkpoints (default: runs.sqlite in AMBIDEX_HOME)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
RunIdArgument = Annotated[
    str, typer.Argument(help="The run's id (`ambidex runs list` shows them).")
]

_STYLE = {
    "succeeded": "green",
    "running": "yellow",
    "failed": "bold red",
    "cancelled": "red",
    "skipped": "dim",
    "not finished": "dim",
}


def _shown(text: str) -> str:
    """``text`` for the terminal, every character that is not printable escaped.

    An escape sequence or a newline in a name (or a run's error) is written as
    Python writes it in a string, never sent to the terminal as it is.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _whole(console: Console, text: str | Text) -> None:
    """One line as written, never wrapped by rich (the terminal may wrap it, rich adds no break)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _file_of(run_id: str, db: Path | None) -> Path:
    """The checkpoint file to look ``run_id`` up in (a bad id or no runs: one line, exit 2)."""
    from ambidex.cli._run import check_run_id, checkpoint_file

    check_run_id(run_id, checkpoint_file(db))
    path = _existing(db)
    if path is None:
        raise fail(f"no run {run_id!r} in {checkpoint_file(db)} (it holds no runs)")
    return path


def _existing(db: Path | None) -> Path | None:
    """The checkpoint file to read; None when the default one does not exist yet.

    A ``--db`` that does not exist is a mistake: one line and exit 2.
    """
    from ambidex.cli._run import checkpoint_file

    path = checkpoint_file(db)
    if path.is_file():
        return path if _holds_runs(path) else None
    if db is not None:
        raise fail(f"no checkpoint file at {db}")
    return None


def _by_hand(run_id: str, db: Path | None) -> str:
    """The resume command for a run whose workflow file is not recorded (or gone)."""
    from ambidex.cli._run import shell_join

    return shell_join(
        ["ambidex", "run", "WORKFLOW.yaml", "--resume", run_id, *(["--db", str(db)] if db else [])]
    )


def _holds_runs(path: Path) -> bool:
    """Whether the file has a ``runs`` table, read without writing to it.

    ``runs list|show|resume`` only read: a file that holds no runs (another
    program's database named by mistake, say) is left as it was, not given
    tables or another journal mode. A file that is not SQLite: one line, exit 2.
    """
    import sqlite3
    from urllib.parse import quote

    from ambidex.cli._errors import one_line

    try:
        uri = f"file:{quote(os.fsencode(path))}?mode=ro"  # (bytes: any file name)
        probe = sqlite3.connect(uri, uri=True, timeout=5.0)
        try:
            found = probe.execute(
                "select 1 from sqlite_master where type = 'table' and name = 'runs'"
            ).fetchone()
        finally:
            probe.close()
    except sqlite3.DatabaseError as exc:
        raise fail(f"{path} is not a checkpoint file: {one_line(exc)}") from None
    return found is not None


def _resume_command(run_id: str, db: Path | None) -> str:
    from ambidex.cli._run import shell_join

    return shell_join(["ambidex", "runs", "resume", run_id, *(["--db", str(db)] if db else [])])


@runs_app.command("list")
def list_runs(
    limit: Annotated[int, typer.Option(min=1, help="How many runs (newest first).")] = 20,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """List runs, newest first: id, workflow, status, start, nodes finished of all."""
    from ambidex.cli._run import checkpoint_file, open_store

    path = _existing(db)
    records = []
    if path is not None:
        store = open_store(path)
        try:
            records = store.runs(limit)
        finally:
            store.close()
    if as_json:
        print_json({"runs": [r.as_dict() for r in records]})
        return
    console = Console()
    if not records:
        _whole(console, f"no runs in {checkpoint_file(db)}")
        return
    rows = [
        (
            _shown(r.run_id),
            _shown(r.workflow),
            r.status,
            _when(r.started_at),
            f"{r.finished}/{len(r.nodes) if r.nodes else '?'}",
        )
        for r in records
    ]
    header = ("run", "workflow", "status", "started", "nodes")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    titles = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    _whole(console, Text(titles.rstrip(), "bold"))
    for row in rows:  # one line a run, never wrapped: an id is meant to be copied
        line = Text()
        for i, (cell, width) in enumerate(zip(row, widths, strict=True)):
            style = _STYLE.get(cell, "") if i == 2 else ""
            line.append(cell.ljust(width) if i < len(row) - 1 else cell, style)
            if i < len(row) - 1:
                line.append("  ")
        _whole(console, line)


@runs_app.command("show")
def show(run_id: RunIdArgument, as_json: JsonOption = False, db: DbOption = None) -> None:
    """Show a run: where it came from, and each node's status, attempts, time and error."""
    from ambidex.cli._run import open_store

    path = _file_of(run_id, db)
    store = open_store(path)
    try:
        record = store.run_record(run_id)
        nodes = store.node_records(run_id)
        latest = [r.run_id for r in store.runs(5)] if record is None else []
    finally:
        store.close()
    if record is None:
        raise fail(_unknown(run_id, path, latest))
    stored = {n.node: n for n in nodes}
    order = [*record.nodes, *(n.node for n in nodes if n.node not in record.nodes)]
    if as_json:
        listed = [
            stored[name].as_dict()
            if name in stored
            else {
                "node": name,
                "status": "not finished",
                "attempts": None,
                "duration_s": None,
                "error": None,
                "finished_at": None,
            }
            for name in order
        ]
        print_json({"run": record.as_dict(), "nodes": listed})
        return
    console = Console()
    total = len(record.nodes) if record.nodes else "?"
    fields = [
        ("run", _shown(record.run_id)),
        ("workflow", _shown(record.workflow)),
        (
            "file",
            _shown(record.source or "- (not recorded: run from Python, or by an older ambidex)"),
        ),
        ("directory", _shown(record.workdir or "-")),
        ("status", record.status),
        ("started", _when(record.started_at)),
        ("updated", _when(record.updated_at)),
        ("nodes", f"{record.finished} of {total} finished"),
    ]
    if record.error:
        fields.append(("error", _shown(" ".join(record.error.split()))))
    for name, value in fields:  # whole lines: ids and paths are meant to be copied
        line = Text(f"{name + ':':<11}", "bold")
        line.append(value, _STYLE.get(value, "") if name == "status" else "")
        _whole(console, line)
    table = Table(box=None, pad_edge=False)
    for column in ("node", "status", "attempts", "time", "error"):
        table.add_column(
            column,
            justify="right" if column in ("attempts", "time") else "left",
            overflow="fold",
        )
    for name in order:
        node = stored.get(name)
        status = node.status if node else "not finished"
        took = node.duration_s if node else None
        error = (node.error or "").strip().splitlines() if node else []
        table.add_row(
            Text(_shown(name)),
            Text(status, _STYLE.get(status, "")),
            str(node.attempts) if node else "-",
            "-" if took is None else f"{took:.2f} s",
            Text(_shown(error[0]) if error else "", "dim"),
        )
    console.print()
    console.print(table)
    if record.status != "succeeded" or (record.nodes and record.finished < len(record.nodes)):
        console.print()
        # `runs resume` needs the recorded workflow file; without one, `run --resume` does it
        command = (
            _resume_command(record.run_id, db)
            if record.source is not None and os.path.isfile(record.source)
            else _by_hand(record.run_id, db)
        )
        _whole(console, f"resume with: {command}")


def _unknown(run_id: str, path: Path, latest: list[str]) -> str:
    hint = f" (latest: {', '.join(latest)})" if latest else " (it holds no runs)"
    return f"no run {run_id!r} in {path}{hint}"


@runs_app.command("resume")
def resume(
    run_id: RunIdArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    db: DbOption = None,
    max_parallel: Annotated[
        int | None, typer.Option(min=1, help="Run at most this many nodes at once.")
    ] = None,
) -> None:
    """Resume a run with its recorded workflow file and inputs: finished nodes are not run again.

    It runs from the directory the run started in (the workflow's import paths
    resolve from there), with the same progress view as `ambidex run`.
    """
    import ambidex as ax
    from ambidex.cli._run import (
        definition_problem,
        execute,
        open_store,
        resume_check,
    )

    path = _file_of(run_id, db)
    store = open_store(path)
    try:
        record = store.run_record(run_id)
        if record is None:
            raise fail(_unknown(run_id, path, [r.run_id for r in store.runs(5)]))
        by_hand = _by_hand(run_id, db)
        if record.source is None:
            raise fail(
                f"run {run_id} of workflow {record.workflow!r} has no recorded workflow file "
                f"(it ran from Python, or under an older ambidex); resume it with: {by_hand}"
            )
        if not os.path.isfile(record.source):
            raise fail(
                f"run {run_id}: its workflow file {record.source} is not there any more "
                f"(moved or deleted); resume it with: {by_hand}"
            )
        if record.workdir and os.path.isdir(record.workdir):
            os.chdir(record.workdir)  # where the run's import paths and relative files resolve
        try:
            wf = ax.Workflow.from_yaml(record.source)
            prior = resume_check(store, wf, run_id, {})
        except ax.WorkflowDefinitionError as exc:
            raise fail(definition_problem(exc)) from None
    finally:
        store.close()
    execute(
        wf,
        {},
        checkpoint=path,
        run_id=run_id,
        prior=prior,
        resume_command=_resume_command(run_id, db),
        as_json=as_json,
        max_parallel=max_parallel,
    )
