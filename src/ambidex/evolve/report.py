"""An evolution database for people: its best programs, failures, lineages and an HTML report.

``ambidex evolve show DB`` and ``ambidex evolve lineage DB ID`` read a program
database through these functions, and ``--json`` prints what ``summary`` and
``lineage`` return. ``open_database`` opens an existing database with the
settings stored in it, and refuses a path that is not one.

The HTML report (``write_html``) draws its plot with the helpers the simulation
report uses too (``ambidex._html``): matplotlib's Agg canvas on a ``Figure``
(pyplot's global state is never touched), embedded as a base64 PNG, in the same
page style. That keeps one plotting path in the project: an inline SVG drawn by
hand would need axes, ticks and scaling of its own and would look unlike the sim
reports. The cost is that ``--html`` needs the ``sim`` extra, and says so in one line
(``pip install 'ambidex[sim]'``) when matplotlib is missing; the text and JSON
views need nothing beyond the core install.
"""

from __future__ import annotations

import difflib
import html
import json
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ambidex._html import (
    REPORT_CSS,
    html_table,
    img_tag,
    mpl_text,
    new_figure,
    number_text,
    png_base64,
)
from ambidex.evolve._database import DatabaseError, Program, ProgramDatabase

__all__ = [
    "Snapshot",
    "diff",
    "failure_text",
    "lineage",
    "open_database",
    "read",
    "summary",
    "write_html",
]

_EXAMPLE_CHARS = 120
"""A failure's example reason is cut to this many characters in the one-line summary."""


# -- opening -------------------------------------------------------------------


def _stored_settings(path: Path) -> dict[str, Any]:
    """The settings stored in an evolve database, read without writing to it.

    Raises:
        DatabaseError: not an SQLite file, or an SQLite file of something else.
    """
    not_one = f"{path} is not an evolve database"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open {path}: {exc}") from None
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if not {"programs", "meta"} <= tables:
            raise DatabaseError(f"{not_one} (it has no programs and meta tables)")
        meta = {
            key: json.loads(value)
            for key, value in conn.execute(
                "SELECT key, value FROM meta WHERE key IN "
                "('metric', 'maximize', 'islands', 'features', 'seed')"
            )
        }
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"{not_one} ({exc})") from None
    finally:
        conn.close()
    if not isinstance(meta.get("metric"), str) or not isinstance(meta.get("islands"), int):
        raise DatabaseError(f"{not_one} (it stores no metric and islands)")
    return meta


def open_database(path: str | Path) -> ProgramDatabase:
    """An existing program database, opened with the settings stored in it.

    Raises:
        DatabaseError: nothing at ``path``, a directory, or a file that is not
            an evolve database.
    """
    p = Path(path)
    if not p.exists():
        raise DatabaseError(f"no evolve database at {p}")
    if p.is_dir():
        raise DatabaseError(f"{p} is a directory, not an evolve database")
    meta = _stored_settings(p)
    features = {str(k): (v[0], v[1], v[2]) for k, v in (meta.get("features") or {}).items()}
    seed = meta.get("seed")
    return ProgramDatabase(
        p,
        metric=meta["metric"],
        maximize=bool(meta.get("maximize", True)),
        islands=meta["islands"],
        features=features,
        seed=seed if isinstance(seed, int) else 0,
    )


# -- reading -------------------------------------------------------------------


@dataclass
class Snapshot:
    """What ``summary`` and ``write_html`` read from a database, read once."""

    path: Path
    metric: str
    maximize: bool
    programs: list[Program]
    """Every program, in the order added."""
    failures: list[tuple[str, int, str]]
    """``(kind, count, example error)``, most frequent first."""
    iterations_done: int
    target_file: str | None

    @property
    def initial(self) -> Program | None:
        """The program as written (the first one stored)."""
        return self.programs[0] if self.programs else None

    def ranked(self, n: int | None = None) -> list[Program]:
        """The best successful programs, best first, each code once (the earliest of a tie)."""
        ok = [p for p in self.programs if p.ok and p.score is not None]
        sign = -1.0 if self.maximize else 1.0
        ok.sort(key=lambda p: (sign * (p.score or 0.0), p.id or 0))
        out: list[Program] = []
        seen: set[str] = set()
        for program in ok:
            if program.code not in seen:
                seen.add(program.code)
                out.append(program)
                if n is not None and len(out) >= n:
                    break
        return out


def read(db: ProgramDatabase) -> Snapshot:
    """Every program of ``db`` and its failures by kind."""
    done = db.get_meta("iterations_done", 0)
    target = db.get_meta("target_file")
    return Snapshot(
        path=db.path,
        metric=db.metric,
        maximize=db.maximize,
        programs=db.history(),
        failures=db.failure_kinds(),
        iterations_done=done if isinstance(done, int) else 0,
        target_file=target if isinstance(target, str) else None,
    )


def failure_text(failures: Sequence[tuple[str, int, str]]) -> str:
    """``crash 3 (e.g. "crashed: ZeroDivisionError: ..."), timeout 1 (e.g. "...")``."""
    parts = []
    for kind, count, example in failures:
        if len(example) > _EXAMPLE_CHARS:
            example = example[: _EXAMPLE_CHARS - 3] + "..."
        parts.append(f"{kind} {count}" + (f" (e.g. {json.dumps(example)})" if example else ""))
    return ", ".join(parts)


def _program_row(program: Program, rank: int | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {} if rank is None else {"rank": rank}
    row.update(
        id=program.id,
        score=program.score,
        ok=program.ok,
        iteration=program.iteration,
        island=program.island,
        parent_id=program.parent_id,
        proposer=program.proposer,
        note=program.note,
        error=program.error,
        metrics=program.metrics,
        code=program.code,
    )
    return row


def summary(snap: Snapshot, top: int = 5) -> dict[str, Any]:
    """JSON-ready: counts, the ``top`` best programs (code included), failures by kind."""
    succeeded = sum(1 for p in snap.programs if p.ok)
    initial = snap.initial
    return {
        "db": str(snap.path),
        "target_file": snap.target_file,
        "metric": snap.metric,
        "maximize": snap.maximize,
        "iterations_done": snap.iterations_done,
        "programs": len(snap.programs),
        "succeeded": succeeded,
        "failed": len(snap.programs) - succeeded,
        "initial": None
        if initial is None
        else {"id": initial.id, "score": initial.score, "code": initial.code},
        "best": [_program_row(p, rank) for rank, p in enumerate(snap.ranked(top), 1)],
        "failures": [
            {"kind": kind, "count": count, "example": example}
            for kind, count, example in snap.failures
        ],
    }


def diff(before: Program, after: Program) -> str:
    """A unified diff of two programs' code (empty when the code is the same)."""
    return "".join(
        difflib.unified_diff(
            before.code.splitlines(keepends=True),
            after.code.splitlines(keepends=True),
            fromfile=f"#{before.id}",
            tofile=f"#{after.id}",
            n=2,
        )
    )


def lineage(
    db: ProgramDatabase, program_id: int, *, with_diff: bool = False
) -> list[dict[str, Any]]:
    """The chain of parents of a program back to the initial one, root first, JSON-ready.

    With ``with_diff``, each program after the first carries ``diff``: its
    code against its parent's.

    Raises:
        KeyError: no such program (the message says which ids there are).
    """
    try:
        chain = db.lineage(program_id)
    except KeyError:
        first, last = db.history(limit=1), db.history(limit=1, newest=True)
        held = f"it holds ids {first[0].id} to {last[0].id}" if first and last else "it is empty"
        raise KeyError(f"no program #{program_id} in {db.path} ({held})") from None
    rows = []
    for i, program in enumerate(chain):
        row = _program_row(program)
        if with_diff and i > 0:
            row["diff"] = diff(chain[i - 1], program)
        rows.append(row)
    return rows


# -- the HTML report -------------------------------------------------------------


def _score_plot(snap: Snapshot) -> str | None:
    """Every candidate's score by iteration, the best so far as a step line; failures as ticks."""
    ordered = sorted(snap.programs, key=lambda p: (p.iteration, p.id or 0))
    ok = [p for p in ordered if p.ok and p.score is not None and math.isfinite(p.score)]
    if not ok:
        return None
    xs = [p.iteration for p in ok]
    ys = [p.score or 0.0 for p in ok]  # all set: ``ok`` holds only programs with a score
    better = max if snap.maximize else min
    best_y: list[float] = []
    for y in ys:
        best_y.append(y if not best_y else better(best_y[-1], y))
    fig = new_figure(7.2, 3.8)
    ax = fig.subplots()
    ax.scatter(
        xs,
        ys,
        s=12,
        color="#8c959f",
        alpha=0.7,
        label="a candidate",
        zorder=2,
    )
    ax.step(xs, best_y, where="post", color="tab:blue", linewidth=1.8, label="best so far")
    failed = [p.iteration for p in ordered if not p.ok]
    if failed:  # along the bottom edge, whatever the scores' range
        ax.scatter(
            failed,
            [0.02] * len(failed),
            transform=ax.get_xaxis_transform(),
            marker="|",
            s=60,
            color="tab:red",
            alpha=0.6,
            label="a failure",
        )
    direction = "higher" if snap.maximize else "lower"
    ax.set_title(mpl_text(f"{snap.metric} over iterations ({direction} is better)"))
    ax.set_xlabel("iteration")
    ax.set_ylabel(mpl_text(snap.metric))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", framealpha=0.8)
    return png_base64(fig)


def _render(snap: Snapshot, top: int, title: str) -> str:
    def e(text: Any) -> str:
        return html.escape(str(text), quote=True)

    data = summary(snap, top)
    best = snap.ranked(top)
    initial = snap.initial
    header = [
        ("database", str(snap.path.resolve())),
        ("target", snap.target_file or "-"),
        ("metric", f"{snap.metric} ({'maximised' if snap.maximize else 'minimised'})"),
        ("iterations done", str(snap.iterations_done)),
        ("programs", f"{data['programs']}: {data['succeeded']} ok, {data['failed']} failed"),
        ("initial score", number_text(None if initial is None else initial.score)),
        ("best score", number_text(best[0].score) + f" (#{best[0].id})" if best else "-"),
        ("generated", datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")),
    ]
    parts = [
        f"<h1>{e(title)}</h1>",
        '<dl class="meta">' + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in header),
        "</dl><h2>Score over iterations</h2>",
    ]
    plot = _score_plot(snap)
    if plot is None:
        parts.append('<p class="note">No program evaluated successfully yet.</p>')
    else:
        parts.append(f'<div class="plots">{img_tag(plot, f"{snap.metric} over iterations")}</div>')
    parts.append(f"<h2>The best programs (top {len(best)})</h2>")
    if best:
        rows = [
            [
                str(i),
                f"#{p.id}",
                e(number_text(p.score)),
                str(p.iteration),
                str(p.island),
                e(p.note),
            ]
            for i, p in enumerate(best, 1)
        ]
        headers = ["rank", "id", e(snap.metric), "iteration", "island", "note"]
        parts.append(html_table(headers, rows, 0))
        for i, p in enumerate(best, 1):
            opened = " open" if i == 1 else ""
            parts.append(
                f"<details{opened}><summary>#{p.id}: {e(snap.metric)} {e(number_text(p.score))}"
                f"</summary><pre><code>{e(p.code)}</code></pre></details>"
            )
    parts.append("<h2>Failures</h2>")
    if snap.failures:
        rows = [[e(kind), str(n), e(example)] for kind, n, example in snap.failures]
        parts.append(html_table(["kind", "count", "latest reason"], rows, 1))
    else:
        parts.append('<p class="note">None.</p>')
    parts.append(f"<footer>Written by ambidex evolve show from {e(snap.path)}.</footer>")
    css = REPORT_CSS + (
        "pre{background:#f6f8fa;padding:.8rem;border-radius:6px;overflow-x:auto}"
        "td:last-child,th:last-child{text-align:left;white-space:normal}"  # notes, reasons
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(title)}</title>\n<style>{css}</style>\n</head>\n"
        f"<body>\n{''.join(parts)}\n</body>\n</html>\n"
    )


def write_html(snap: Snapshot, out: str | Path, *, top: int = 5, title: str | None = None) -> Path:
    """Write a self-contained HTML report of an evolution (the plot embedded); return its path.

    Raises:
        ImportError: matplotlib (the ``sim`` extra) is not installed.
        OSError: the file cannot be written.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(
            "the HTML report is drawn with matplotlib: pip install 'ambidex[sim]'"
        ) from None
    if title is None:
        name = Path(snap.target_file).name if snap.target_file else snap.path.name
        title = f"evolution of {name}"
    page = _render(snap, top, title)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target
