"""An HTML report of a record: one self-contained file with its plots embedded.

``report("boltzmann.sqlite")`` reads a record written by ``run`` or ``sweep``
(SQLite or Parquet) and writes ``boltzmann.html`` next to it:

* a header: model, kind, runs, steps, seed, params, record path, time, and
  whether every run finished (a run stopped by Ctrl-C or an error is named,
  with the step it reached);
* every metric over time (a sweep: one line per grid point, the mean over its
  replicates, with their min-max band, and a checkbox that shows every
  replicate's own line instead; ``traces=True`` draws those alone). Metrics
  the model groups in its ``charts`` attribute
  (``{"population": ["sheep", "wolves"]}``) share one chart;
* for a sweep, the final value of every metric against every swept parameter
  (mean and standard deviation over replicates; a heatmap for two parameters);
* the final metrics per grid point and every run's status, time (marked when
  it includes numba compiling the model's kernels) and digest;
* with agent snapshots, the agents in space with a slider over the steps
  (``_report_space``);
* a CSV download of every table and of every step's metrics (``data:`` links).

Plots are drawn with matplotlib's Agg canvas on ``Figure`` objects (pyplot and
its global state are never touched) and embedded as base64 PNG, so the file
can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ambidex._html import (
    REPORT_CSS,
    esc,
    html_table,
    img_tag,
    mpl_text,
    new_figure,
    number_text,
    png_base64,
)
from ambidex.sim._recorder import Record, RecordError, RunRow, RunStatus, open_record
from ambidex.sim._report_space import space_section
from ambidex.sim._table import MetricsTable

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["report"]

_LEGEND_MAX = 12
"""More lines than this in a plot get no legend (the colours then run along a colormap)."""
_SERIES_MAX = 8
"""More combinations of the other swept parameters than this are pooled in an across plot."""
_ANNOTATE_CELLS = 64
"""Heatmaps with at most this many cells show their values."""


# -- the record, arranged ------------------------------------------------------


@dataclass
class _RunMetrics:
    """One recorded run: its row (model, params, seed) and its metrics table."""

    row: RunRow
    table: MetricsTable

    def final(self, metric: str) -> float:
        if metric not in self.table or len(self.table) == 0:
            return math.nan
        return float(self.table[metric][-1])


@dataclass
class _Group:
    """A grid point (a sweep) or a single run: the runs one line in a plot stands for."""

    label: str
    point: int | None
    values: dict[str, Any]
    runs: list[_RunMetrics] = field(default_factory=list)

    def finals(self, metric: str) -> np.ndarray[Any, Any]:
        return np.array([r.final(metric) for r in self.runs], dtype=np.float64)


@dataclass
class _Data:
    path: Path
    record: Record
    kind: str
    runs: list[_RunMetrics]
    skipped: list[int]
    """Runs of the record without metrics (unfinished or failed)."""
    metrics: list[str]
    swept: list[str]
    groups: list[_Group]
    rows: list[RunRow] = field(default_factory=list)
    """Every run of the record, with metrics or not."""
    traces: bool = False
    """Draw every run's line, not only each grid point's mean and band."""

    @property
    def is_sweep(self) -> bool:
        return self.kind == "sweep"


def _key(value: Any) -> str:
    """A hashable stand-in for a parameter value (lists and dicts included)."""
    return json.dumps(value, sort_keys=True, default=str)


def _load(path: Path, traces: bool) -> _Data:
    record = open_record(path)
    if not record.runs:
        raise RecordError(f"{path}: the record holds no runs")
    runs: list[_RunMetrics] = []
    skipped: list[int] = []
    for row in record.runs:
        try:
            runs.append(_RunMetrics(row, record.metrics(row.run_id)))
        except RecordError:  # stopped before its metrics were written: in the status only
            skipped.append(row.run_id)
    metrics = [m for m in record.metric_names() if m != "step"]
    kind = str(record.meta.get("kind") or "")
    if not kind:
        kind = "sweep" if any(r.point is not None for r in record.runs) else "run"
    swept = _swept(record.meta, runs) if kind == "sweep" and runs else []
    groups = _groups(kind, runs, swept)
    data = _Data(path, record, kind, runs, skipped, metrics, swept, groups, record.runs)
    data.traces = traces
    return data


def _swept(meta: Mapping[str, Any], runs: Sequence[_RunMetrics]) -> list[str]:
    """The swept parameters: the grid's keys, else the parameters that vary between runs."""
    grid = meta.get("grid")
    if isinstance(grid, Mapping) and grid:
        return [str(k) for k in grid]
    names: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(run.row.params))
    return [name for name in names if len({_key(r.row.params.get(name)) for r in runs}) > 1]


def _groups(kind: str, runs: Sequence[_RunMetrics], swept: Sequence[str]) -> list[_Group]:
    groups: dict[tuple[str, int], _Group] = {}
    for run in runs:
        row = run.row
        if kind == "sweep" and row.point is not None:
            key = ("point", row.point)
            if key not in groups:
                values = {p: row.params.get(p) for p in swept}
                label = ", ".join(f"{p}={_value(v)}" for p, v in values.items())
                groups[key] = _Group(label or f"point {row.point}", row.point, values)
        else:
            key = ("run", row.run_id)
            values = {p: row.params.get(p) for p in swept}
            groups[key] = _Group(f"run {row.run_id}", row.point, values)
        groups[key].runs.append(run)
    return list(groups.values())


# -- numbers and text ----------------------------------------------------------


@contextmanager
def _quiet() -> Iterator[None]:
    """No warnings for all-NaN slices (a metric a model left NaN is shown as nan)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _stats(values: np.ndarray[Any, Any]) -> tuple[float, float]:
    """Mean and (population) standard deviation, ignoring NaN; as ``SweepResult.summary``."""
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return math.nan, math.nan
    mean = float(finite.mean())
    sd = float(finite.std())
    return mean, sd


def _value(value: Any) -> str:
    """A parameter value as shown: numbers short, lists and dicts as JSON."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- plots ---------------------------------------------------------------------


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    if n <= 10:
        cmap = colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    cmap = colormaps["viridis"]
    return [cmap(i / (n - 1)) for i in range(n)]


def _legend(ax: Axes, entries: int, title: str | None = None, *, one: bool = False) -> None:
    """A legend for 2 to ``_LEGEND_MAX`` labelled lines (or a single one, if ``one``)."""
    if (1 if one else 2) <= entries <= _LEGEND_MAX:
        ax.legend(
            fontsize="small",
            title=mpl_text(title) if title else None,
            title_fontsize="small",
            ncols=2 if entries > 6 else 1,
            framealpha=0.8,
        )


def _stack(
    runs: Sequence[_RunMetrics], metric: str
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Steps of the longest run, and one row of values per run (NaN past a run's end)."""
    have = [r for r in runs if metric in r.table]
    longest = max(have, key=lambda r: len(r.table))
    steps = longest.table["step"]
    values = np.full((len(have), len(steps)), np.nan)
    for i, run in enumerate(have):
        column = run.table[metric].astype(np.float64)
        values[i, : len(column)] = column
    return steps, values


_STYLES = ("-", "--", ":", "-.")


def _time_plot(data: _Data, metrics: Sequence[str], title: str, traces: bool) -> str:
    """One chart over time: one metric (a colour per group) or several (a colour per metric).

    With several metrics and several grid points, a point's lines share a line style.
    ``traces``: every run's own thin line instead of the min-max band around the mean.
    """
    fig = new_figure()
    ax = fig.subplots()
    groups = [g for g in data.groups if any(m in r.table for m in metrics for r in g.runs)]
    single = len(metrics) == 1
    lines = 0
    colors = _colors(len(groups) if single else len(metrics))
    for gi, group in enumerate(groups):
        for mi, metric in enumerate(metrics):
            if not any(metric in r.table for r in group.runs):
                continue
            color = colors[gi if single else mi]
            style = "-" if single else _STYLES[gi % len(_STYLES)]
            steps, values = _stack(group.runs, metric)
            with _quiet():
                mean = np.nanmean(values, axis=0)
                if values.shape[0] > 1 and not traces:
                    lo, hi = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
                    ax.fill_between(steps, lo, hi, color=color, alpha=0.18, linewidth=0)
            if traces and values.shape[0] > 1:
                for trace in values:
                    ax.plot(steps, trace, color=color, linewidth=0.6, alpha=0.35, linestyle=style)
            if single:
                label = group.label
            else:
                label = metric if len(groups) == 1 else f"{metric}, {group.label}"
            ax.plot(steps, mean, color=color, linewidth=1.5, linestyle=style, label=mpl_text(label))
            lines += 1
    ax.set_title(mpl_text(title))
    ax.set_xlabel("step")
    ax.set_ylabel(mpl_text(metrics[0] if single else title))
    ax.grid(alpha=0.3)
    if single and len(groups) > _LEGEND_MAX:  # a colour bar says which line is which point
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        scale = ScalarMappable(Normalize(0, len(groups) - 1), cmap="viridis")
        fig.colorbar(scale, ax=ax, label="grid point (table order)")
    else:
        _legend(ax, lines, one=not single)
    return png_base64(fig)


def _charts(data: _Data) -> list[tuple[str, list[str]]]:
    """The time charts: the model's ``charts`` (metrics present only), then one per other metric."""
    charts: list[tuple[str, list[str]]] = []
    grouped: set[str] = set()
    declared = data.record.meta.get("charts")
    if isinstance(declared, Mapping):
        for title, names in declared.items():
            present = [m for m in names if m in data.metrics and m not in grouped]
            if present:
                charts.append((str(title), present))
                grouped.update(present)
    charts.extend((m, [m]) for m in data.metrics if m not in grouped)
    return charts


def _unknown_chart_metrics(data: _Data) -> list[str]:
    """Names in the model's ``charts`` that no recorded metric has (a typo drew nothing)."""
    declared = data.record.meta.get("charts")
    if not isinstance(declared, Mapping):
        return []
    named = [str(m) for names in declared.values() for m in names]
    return list(dict.fromkeys(m for m in named if m not in data.metrics))


def _ordered(values: Sequence[Any]) -> list[Any]:
    """Distinct values in first-seen order, or ascending when all are numbers."""
    seen: dict[str, Any] = {}
    for v in values:
        seen.setdefault(_key(v), v)
    distinct = list(seen.values())
    if all(_is_number(v) for v in distinct):
        distinct.sort()
    return distinct


def _x_axis(ax: Axes, values: Sequence[Any]) -> list[float]:
    """Positions of ``values`` on the x axis: the numbers themselves, or 0..n-1 with labels.

    A few numbers get a tick each; numbers spanning two decades or more a log scale.
    """
    labels = [mpl_text(_value(v)) for v in values]
    if not all(_is_number(v) for v in values):
        positions = [float(i) for i in range(len(values))]
        ax.set_xticks(positions, labels)
        return positions
    positions = [float(v) for v in values]
    if len(positions) > 2 and min(positions) > 0 and max(positions) / min(positions) >= 100:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    if len(positions) <= _LEGEND_MAX:
        ax.set_xticks(positions, labels)
    return positions


def _across_plot(data: _Data, metric: str, param: str) -> str:
    xs = _ordered([g.values.get(param) for g in data.groups])
    others = [p for p in data.swept if p != param]
    series: dict[str, tuple[str, dict[str, list[_Group]]]] = {}
    for group in data.groups:
        rest = {p: group.values.get(p) for p in others}
        label = ", ".join(f"{p}={_value(v)}" for p, v in rest.items())
        entry = series.setdefault(_key(rest), (label, {}))
        entry[1].setdefault(_key(group.values.get(param)), []).append(group)
    pooled = len(series) > _SERIES_MAX
    if pooled:  # too many lines: pool the other parameters
        merged: dict[str, list[_Group]] = {}
        for _, cells in series.values():
            for x, members in cells.items():
                merged.setdefault(x, []).extend(members)
        series = {"all": (f"pooled over {', '.join(others)}", merged)}
    fig = new_figure()
    ax = fig.subplots()
    positions = _x_axis(ax, xs)
    for (label, cells), color in zip(series.values(), _colors(len(series)), strict=True):
        px, means, sds = [], [], []
        for pos, x in zip(positions, xs, strict=True):
            at_x = cells.get(_key(x))
            if not at_x:
                continue
            mean, sd = _stats(np.concatenate([g.finals(metric) for g in at_x]))
            px.append(pos)
            means.append(mean)
            sds.append(sd)
        ax.errorbar(
            px,
            means,
            yerr=sds,
            color=color,
            marker="o",
            markersize=4,
            capsize=3,
            linewidth=1.2,
            label=mpl_text(label) if label else None,
        )
    ax.set_title(mpl_text(f"final {metric} vs {param}"))
    ax.set_xlabel(mpl_text(param))
    ax.set_ylabel(mpl_text(f"final {metric}"))
    ax.grid(alpha=0.3)
    _legend(ax, len(series) if others else 0, None if pooled else ", ".join(others), one=pooled)
    return png_base64(fig)


def _heatmap(data: _Data, metric: str, px: str, py: str) -> str | None:
    xs = _ordered([g.values.get(px) for g in data.groups])
    ys = _ordered([g.values.get(py) for g in data.groups])
    xi = {_key(v): i for i, v in enumerate(xs)}
    yi = {_key(v): i for i, v in enumerate(ys)}
    cells: dict[tuple[int, int], list[np.ndarray[Any, Any]]] = {}
    for group in data.groups:
        at = (yi[_key(group.values.get(py))], xi[_key(group.values.get(px))])
        cells.setdefault(at, []).append(group.finals(metric))
    grid = np.full((len(ys), len(xs)), np.nan)
    for (j, i), finals in cells.items():
        grid[j, i] = _stats(np.concatenate(finals))[0]
    if np.isnan(grid).all():
        return None
    fig = new_figure(6.4, 4.2)
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(xs)), [mpl_text(_value(v)) for v in xs])
    ax.set_yticks(range(len(ys)), [mpl_text(_value(v)) for v in ys])
    ax.set_xlabel(mpl_text(px))
    ax.set_ylabel(mpl_text(py))
    ax.set_title(mpl_text(f"final {metric} (mean over replicates)"))
    fig.colorbar(image, ax=ax, label=mpl_text(f"final {metric}"))
    if grid.size <= _ANNOTATE_CELLS:
        lo, hi = float(np.nanmin(grid)), float(np.nanmax(grid))
        for (j, i), value in np.ndenumerate(grid):
            if math.isnan(value):
                continue
            shade = (value - lo) / (hi - lo) if hi > lo else 0.5
            ax.text(
                i,
                j,
                number_text(value),
                ha="center",
                va="center",
                fontsize="small",
                color="white" if shade < 0.55 else "black",
            )
    return png_base64(fig)


# -- HTML ----------------------------------------------------------------------


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in params.items()) or "(none)"


def _common_params(rows: Sequence[RunRow]) -> tuple[dict[str, Any], list[str]]:
    """Parameters equal in every run, and the names of those that vary."""
    first = rows[0].params
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row.params))
    common: dict[str, Any] = {}
    varying: list[str] = []
    for name in names:
        if len({_key(r.params.get(name)) for r in rows}) == 1:
            common[name] = first.get(name)
        else:
            varying.append(name)
    return common, varying


def _distinct_text(values: Sequence[Any]) -> str:
    distinct = _ordered([v for v in values if v is not None])
    return ", ".join(_value(v) for v in distinct) or "-"


def _meta_or(meta: Mapping[str, Any], key: str, values: list[Any]) -> list[Any]:
    return [meta[key]] if meta.get(key) is not None else values


def _header(data: _Data, generated: str) -> str:
    meta = data.record.meta
    models = _distinct_text([r.model for r in data.rows])
    common, varying = _common_params(data.rows)
    rows: list[tuple[str, str]] = [
        ("model", models),
        ("kind", data.kind),
        ("runs", str(len(data.rows))),
        ("status", _status_line(data)),
        ("steps", _distinct_text(_meta_or(meta, "steps", [r.steps for r in data.rows]))),
        ("seed", _distinct_text(_meta_or(meta, "seed", [r.seed for r in data.rows]))),
    ]
    if data.is_sweep:
        replicates = meta.get("replicates") or max((len(g.runs) for g in data.groups), default=0)
        rows.append(("grid points", str(len(data.groups))))
        rows.append(("replicates", str(replicates)))
        grid = "; ".join(
            f"{p}: {_distinct_text([g.values.get(p) for g in data.groups])}" for p in data.swept
        )
        rows.append(("grid", grid or "(none: replicates only)"))
        common = {k: v for k, v in common.items() if k not in data.swept}
        varying = [v for v in varying if v not in data.swept]
    rows.append(("params", _params_text(common)))
    if varying:
        rows.append(("params that vary", ", ".join(varying)))
    rows.append(("record", f"{data.path.resolve()} ({data.record.format})"))
    rows.append(("generated", generated))
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows)
    return f'<dl class="meta">{items}</dl>' + _status_banner(data)


def _status_line(data: _Data) -> str:
    """``all 8 finished``, or how many finished and what stopped the others."""
    total = len(data.rows)
    done = sum(r.status == RunStatus.DONE for r in data.rows)
    if done == total:
        return "finished" if total == 1 else f"all {total} finished"
    counts = {
        status: sum(r.status == status for r in data.rows)
        for status in (RunStatus.INTERRUPTED, RunStatus.FAILED, RunStatus.RUNNING)
    }
    words = {RunStatus.RUNNING: "cut off (never closed)"}
    stopped = ", ".join(
        f"{n} {words.get(status, status.value)}" for status, n in counts.items() if n
    )
    return f"{done} of {total} finished; {stopped}"


def _stopped_text(row: RunRow) -> str:
    """``was interrupted at step 9 of 1000`` (or ``failed ...``, or ``was cut off ...``)."""
    word = {
        RunStatus.RUNNING.value: "was cut off (its process ended without closing the record)",
        RunStatus.INTERRUPTED.value: "was interrupted",
    }.get(row.status, row.status)
    where = "before its first step" if not row.steps else f"at step {row.steps}"
    return f"{word} {where}" + (f" of {row.steps_asked}" if row.steps_asked is not None else "")


def _status_banner(data: _Data) -> str:
    """A warning paragraph when not every run finished, naming the ones that did not."""
    stopped = [r for r in data.rows if r.status != RunStatus.DONE]
    if not stopped:
        return ""
    if len(data.rows) == 1:
        text = f"This run {_stopped_text(stopped[0])}" + (
            "; the steps before are recorded and shown." if stopped[0].steps else "."
        )
    else:
        interrupted = any(r.status == RunStatus.INTERRUPTED for r in stopped)
        failed = any(r.status == RunStatus.FAILED for r in stopped)
        head = "Interrupted" if interrupted else "Failed" if failed else "Cut off"
        finished = len(data.rows) - len(stopped)
        named = "; ".join(
            f"run {r.run_id}"
            + (f" (point {r.point}, replicate {r.replicate})" if r.point is not None else "")
            + f" {_stopped_text(r)}"
            for r in stopped[:10]
        )
        more = f"; and {len(stopped) - 10} more" if len(stopped) > 10 else ""
        text = (
            f"{head}: {finished} of {len(data.rows)} runs finished; {named}{more}. "
            "The plots and tables show the finished runs and the steps the others recorded."
        )
    return f'<p class="warn">{esc(text)}</p>'


def _time_section(data: _Data) -> str:
    if not data.metrics:
        return '<h2>Metrics over time</h2><p class="note">The record holds no metrics.</p>'
    toggle = False
    if data.is_sweep:
        reps = max(len(g.runs) for g in data.groups)
        note = f"One line per grid point: the mean over its {reps} replicate(s)"
        if reps > 1 and data.traces:
            note += "; the thin lines are the replicates themselves."
        elif reps > 1:
            toggle = True
            note += (
                "; the band spans their minimum to maximum (tick 'every replicate' to see "
                "each replicate's own line instead)."
            )
        else:
            note += "."
    elif len(data.runs) > 1:
        note = "One line per run."
    else:
        note = "The run's metrics, step 0 being the state after setup."
    if len(data.groups) > _LEGEND_MAX:
        note += " The colour bar gives each line's grid point, numbered as in the table below."
    charts = _charts(data)
    if any(len(names) > 1 for _, names in charts):
        note += " Metrics the model groups in its charts attribute share a chart."
    unknown = _unknown_chart_metrics(data)
    if unknown:
        note += (
            f" The model's charts attribute names metric(s) the record does not hold: "
            f"{', '.join(unknown)} (metrics: {', '.join(data.metrics)})."
        )
    figures = []
    for title, names in charts:
        alt = _chart_alt(title, names)
        if not toggle:
            figures.append(img_tag(_time_plot(data, names, title, data.traces), alt))
            continue
        banded = _time_plot(data, names, title, False)
        traced = _time_plot(data, names, title, True)
        figures.append(
            f'<figure class="banded"><img src="data:image/png;base64,{banded}" '
            f'alt="{esc(alt)}"></figure>'
            f'<figure class="traced" hidden><img src="data:image/png;base64,{traced}" '
            f'alt="{esc(alt + ", every replicate")}"></figure>'
        )
    return (
        f'<h2>Metrics over time</h2><p class="note">{esc(note)} '
        f"{_metrics_csv(data)}</p>"
        + (_TRACES_TOGGLE if toggle else "")
        + f'<div class="plots">{"".join(figures)}</div>'
    )


_TRACES_TOGGLE = (
    '<p><label><input type="checkbox" id="traces-toggle"> every replicate</label></p>'
    "<script>(function(){"
    'var box=document.getElementById("traces-toggle");'
    'box.addEventListener("change",function(){'
    'document.querySelectorAll("figure.banded").forEach(function(f){f.hidden=box.checked;});'
    'document.querySelectorAll("figure.traced").forEach(function(f){f.hidden=!box.checked;});'
    "});})();</script>"
)
"""A sweep's band-or-traces switch: both pictures are in the page, one shown at a time."""


def _chart_alt(title: str, names: Sequence[str]) -> str:
    if len(names) == 1:
        return f"{names[0]} over time"
    return f"{title} over time: {', '.join(names)}"


def _csv_link(name: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A link that downloads ``rows`` as ``name`` (a CSV file in a ``data:`` URL)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([_csv_text(h) for h in headers])
    writer.writerows([_csv_text("" if v is None else v) for v in row] for row in rows)
    b64 = base64.b64encode(buffer.getvalue().encode("utf-8")).decode("ascii")
    return (
        f'<a class="csv" download="{esc(name)}" '
        f'href="data:text/csv;charset=utf-8;base64,{b64}">download {esc(name)}</a>'
    )


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run as a formula.

    Text (a parameter value, a metric name) that starts like a formula gets a
    leading ``'`` (OWASP's advice); numbers, ``-1.5`` included, are left as they are.
    """
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


def _csv_number(value: Any) -> Any:
    """A number for CSV: full precision (``repr``), NaN as empty."""
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else repr(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value


def _metrics_csv(data: _Data) -> str:
    """Every recorded step's metrics: ``run, point, replicate, step, <metrics>``."""
    rows: list[list[Any]] = []
    for run in data.runs:
        table = run.table
        columns = [table[m] if m in table.columns else None for m in data.metrics]
        for i, step in enumerate(table["step"].tolist()):
            values = [_csv_number(c[i]) if c is not None else "" for c in columns]
            rows.append([run.row.run_id, run.row.point, run.row.replicate, step, *values])
    headers = ["run", "point", "replicate", "step", *data.metrics]
    return _csv_link("metrics.csv", headers, rows)


def _across_section(data: _Data) -> str:
    params = [p for p in data.swept if len(_ordered([g.values.get(p) for g in data.groups])) > 1]
    if not data.is_sweep or not params or not data.metrics:
        return ""
    parts = [
        "<h2>Across the sweep</h2>",
        '<p class="note">Final value of each metric against each swept parameter: the mean '
        "over replicates, error bars one standard deviation.</p>",
    ]
    for metric in data.metrics:
        figures = [img_tag(_across_plot(data, metric, p), f"final {metric} vs {p}") for p in params]
        if len(params) == 2:
            heat = _heatmap(data, metric, params[0], params[1])
            if heat is not None:
                figures.append(img_tag(heat, f"final {metric} over {params[0]} and {params[1]}"))
        parts.append(f'<h3>{esc(metric)}</h3><div class="plots">{"".join(figures)}</div>')
    return "".join(parts)


def _points_section(data: _Data) -> str:
    if not data.is_sweep or not data.groups:
        return ""
    headers = [
        "point",
        *(esc(p) for p in data.swept),
        "runs",
        *(esc(m) for m in data.metrics),
    ]
    rows = []
    csv_rows = []
    for i, group in enumerate(data.groups):
        point = group.point if group.point is not None else i
        cells = [esc(point)]
        cells += [esc(_value(group.values.get(p))) for p in data.swept]
        cells.append(str(len(group.runs)))
        csv_row: list[Any] = [point, *(_value(group.values.get(p)) for p in data.swept)]
        csv_row.append(len(group.runs))
        for metric in data.metrics:
            mean, sd = _stats(group.finals(metric))
            cells.append(
                esc(
                    number_text(mean)
                    if len(group.runs) == 1
                    else f"{number_text(mean)} ± {number_text(sd)}"
                )
            )
            csv_row += [_csv_number(mean), _csv_number(sd)]
        rows.append(cells)
        csv_rows.append(csv_row)
    csv_headers = ["point", *data.swept, "runs"]
    csv_headers += [f"{m} {stat}" for m in data.metrics for stat in ("mean", "sd")]
    return (
        "<h2>Final metrics per grid point</h2>"
        '<p class="note">Mean ± standard deviation over the replicates of each point. '
        f"{_csv_link('points.csv', csv_headers, csv_rows)}</p>"
        + html_table(headers, rows, 1 + len(data.swept))
    )


_COMPILE_SHOWN_S = 0.01
"""Compile time below this (a few small kernels loaded from numba's cache) is not marked."""


def _elapsed_text(row: RunRow) -> str:
    if row.elapsed_s is None:
        return "-"
    text = f"{row.elapsed_s:.3g} s"
    if row.compile_s is not None and row.compile_s >= _COMPILE_SHOWN_S:
        text += f" (incl. {row.compile_s:.3g} s numba compilation)"
    return text


def _runs_section(data: _Data) -> str:
    sweep = data.is_sweep
    headers = ["run", *(["point", "replicate"] if sweep else []), "seed", "spawn key", "status"]
    headers += ["steps", "elapsed", *(esc(m) for m in data.metrics), "digest"]
    tables = {run.row.run_id: run for run in data.runs}
    rows = []
    csv_rows = []
    for row in data.rows:
        run = tables.get(row.run_id)
        finals = [run.final(m) if run is not None else math.nan for m in data.metrics]
        cells = [str(row.run_id)]
        if sweep:
            cells += [esc(number_text(row.point)), esc(number_text(row.replicate))]
        cells += [
            esc(row.seed),
            esc(json.dumps(row.spawn_key)),
            esc(row.status),
            esc(number_text(row.steps)),
            esc(_elapsed_text(row)),
        ]
        cells += [esc(number_text(v)) for v in finals]
        digest = row.digest or "-"
        cells.append(f'<span class="mono" title="{esc(digest)}">{esc(digest[:16])}</span>')
        rows.append(cells)
        csv_rows.append(
            [
                row.run_id,
                *([row.point, row.replicate] if sweep else []),
                row.seed,
                json.dumps(row.spawn_key),
                row.status,
                row.steps,
                _csv_number(row.elapsed_s),
                _csv_number(row.compile_s),
                *(_csv_number(v) for v in finals),
                row.digest,
            ]
        )
    title = "Runs" if sweep else "Final metrics"
    note = "Final metrics of every run; equal digests mean bit-identical metrics tables."
    if any(r.compile_s is not None and r.compile_s >= _COMPILE_SHOWN_S for r in data.rows):
        note += (
            " A time marked 'incl. numba compilation' includes compiling the model's "
            "kernels (or loading them from numba's cache): the first run in each process "
            "pays for it, later runs reuse them."
        )
    if data.skipped:
        note += f" No metrics were recorded for run(s) {', '.join(map(str, data.skipped))}."
    csv_headers = ["run", *(["point", "replicate"] if sweep else []), "seed", "spawn_key"]
    csv_headers += ["status", "steps", "elapsed_s", "compile_s", *data.metrics, "digest"]
    link = _csv_link("runs.csv", csv_headers, csv_rows)
    return f'<h2>{title}</h2><p class="note">{esc(note)} {link}</p>' + html_table(headers, rows, 1)


_EXTRA_CSS = """
p.warn{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:.5rem .8rem;
margin:1rem 0}
a.csv{white-space:nowrap}
"""


def _render(data: _Data, title: str | None) -> str:
    generated = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    if title is None:
        title = f"{_distinct_text([r.model for r in data.rows])}: {data.kind} report"
    body = "".join(
        [
            f"<h1>{esc(title)}</h1>",
            _header(data, generated),
            _time_section(data),
            _across_section(data),
            _points_section(data),
            _runs_section(data),
            space_section(data.record, data.rows),
            f"<footer>Written by ambidex.sim.report from {esc(data.path)}.</footer>",
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{REPORT_CSS}{_EXTRA_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _out_path(record: Path, out: str | Path | None) -> Path:
    default_name = record.with_suffix(".html").name
    if out is None:
        return record.parent / default_name
    target = Path(out)
    return target / default_name if target.is_dir() else target


def report(
    record: str | Path,
    out: str | Path | None = None,
    *,
    title: str | None = None,
    traces: bool = False,
) -> Path:
    """Write one self-contained HTML report of a record; return its path.

    Args:
        record: an SQLite file or Parquet directory written by ``run`` or ``sweep``.
        out: the HTML file to write (a directory: the file goes in it); default
            ``<record stem>.html`` next to the record.
        title: the page's title; default from the model and the kind of record.
        traces: in a sweep's plots over time, draw only every replicate's own
            line (thin) around each point's mean. Without it the page holds both
            pictures, the min-max band shown and an "every replicate" checkbox
            that swaps them.

    Raises:
        RecordError: no record at the path, not a record, or a record without runs.
            A record whose runs were stopped midway is reported, saying so.
    """
    path = Path(record)
    data = _load(path, traces)
    page = _render(data, title)
    target = _out_path(path, out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target
