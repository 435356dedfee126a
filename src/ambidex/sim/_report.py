"""An HTML report of a record: one self-contained file with its plots embedded.

``report("boltzmann.sqlite")`` reads a record written by ``run`` or ``sweep``
(SQLite or Parquet) and writes ``boltzmann.html`` next to it:

* a header: model, kind, runs, steps, seed, params, record path, time;
* every metric over time (a sweep: one line per grid point, the mean over its
  replicates, with their min-max band);
* for a sweep, the final value of every metric against every swept parameter
  (mean and standard deviation over replicates; a heatmap for two parameters);
* the final metrics per grid point and every run's digest.

Plots are drawn with matplotlib's Agg canvas on ``Figure`` objects (pyplot and
its global state are never touched) and embedded as base64 PNG, so the file
can be mailed or archived on its own.
"""

from __future__ import annotations

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
from ambidex.sim._recorder import Record, RecordError, RunRow, open_record
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

    @property
    def is_sweep(self) -> bool:
        return self.kind == "sweep"


def _key(value: Any) -> str:
    """A hashable stand-in for a parameter value (lists and dicts included)."""
    return json.dumps(value, sort_keys=True, default=str)


def _load(path: Path) -> _Data:
    record = open_record(path)
    if not record.runs:
        raise RecordError(f"{path}: the record holds no runs")
    runs: list[_RunMetrics] = []
    skipped: list[int] = []
    for row in record.runs:
        try:
            runs.append(_RunMetrics(row, record.metrics(row.run_id)))
        except RecordError:
            skipped.append(row.run_id)
    if not runs:
        raise RecordError(f"{path}: none of the record's {len(record.runs)} run(s) has metrics")
    metrics = [m for m in record.metric_names() if m != "step"]
    kind = str(record.meta.get("kind") or "")
    if not kind:
        kind = "sweep" if any(r.row.point is not None for r in runs) else "run"
    swept = _swept(record.meta, runs) if kind == "sweep" else []
    groups = _groups(kind, runs, swept)
    return _Data(path, record, kind, runs, skipped, metrics, swept, groups)


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


def _time_plot(data: _Data, metric: str) -> str:
    fig = new_figure()
    ax = fig.subplots()
    groups = [g for g in data.groups if any(metric in r.table for r in g.runs)]
    for group, color in zip(groups, _colors(len(groups)), strict=True):
        steps, values = _stack(group.runs, metric)
        with _quiet():
            mean = np.nanmean(values, axis=0)
            if values.shape[0] > 1:
                lo, hi = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
                ax.fill_between(steps, lo, hi, color=color, alpha=0.18, linewidth=0)
        ax.plot(steps, mean, color=color, linewidth=1.5, label=mpl_text(group.label))
    ax.set_title(mpl_text(metric))
    ax.set_xlabel("step")
    ax.set_ylabel(mpl_text(metric))
    ax.grid(alpha=0.3)
    if len(groups) > _LEGEND_MAX:  # no legend: a colour bar says which line is which point
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        scale = ScalarMappable(Normalize(0, len(groups) - 1), cmap="viridis")
        fig.colorbar(scale, ax=ax, label="grid point (table order)")
    else:
        _legend(ax, len(groups))
    return png_base64(fig)


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


def _common_params(runs: Sequence[_RunMetrics]) -> tuple[dict[str, Any], list[str]]:
    """Parameters equal in every run, and the names of those that vary."""
    first = runs[0].row.params
    names: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(run.row.params))
    common: dict[str, Any] = {}
    varying: list[str] = []
    for name in names:
        if len({_key(r.row.params.get(name)) for r in runs}) == 1:
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
    models = _distinct_text([r.row.model for r in data.runs])
    common, varying = _common_params(data.runs)
    rows: list[tuple[str, str]] = [
        ("model", models),
        ("kind", data.kind),
        ("runs", str(len(data.runs))),
        ("steps", _distinct_text(_meta_or(meta, "steps", [r.row.steps for r in data.runs]))),
        ("seed", _distinct_text(_meta_or(meta, "seed", [r.row.seed for r in data.runs]))),
    ]
    if data.is_sweep:
        replicates = meta.get("replicates") or max(len(g.runs) for g in data.groups)
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
    return f'<dl class="meta">{items}</dl>'


def _time_section(data: _Data) -> str:
    if not data.metrics:
        return '<h2>Metrics over time</h2><p class="note">The record holds no metrics.</p>'
    if data.is_sweep:
        reps = max(len(g.runs) for g in data.groups)
        note = f"One line per grid point: the mean over its {reps} replicate(s)" + (
            "; the band spans their minimum to maximum." if reps > 1 else "."
        )
    elif len(data.runs) > 1:
        note = "One line per run."
    else:
        note = "The run's metrics, step 0 being the state after setup."
    if len(data.groups) > _LEGEND_MAX:
        note += " The colour bar gives each line's grid point, numbered as in the table below."
    figures = "".join(img_tag(_time_plot(data, m), f"{m} over time") for m in data.metrics)
    return (
        f'<h2>Metrics over time</h2><p class="note">{esc(note)}</p>'
        f'<div class="plots">{figures}</div>'
    )


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
    if not data.is_sweep:
        return ""
    headers = [
        "point",
        *(esc(p) for p in data.swept),
        "runs",
        *(esc(m) for m in data.metrics),
    ]
    rows = []
    for i, group in enumerate(data.groups):
        cells = [esc(group.point if group.point is not None else i)]
        cells += [esc(_value(group.values.get(p))) for p in data.swept]
        cells.append(str(len(group.runs)))
        for metric in data.metrics:
            mean, sd = _stats(group.finals(metric))
            cells.append(
                esc(
                    number_text(mean)
                    if len(group.runs) == 1
                    else f"{number_text(mean)} ± {number_text(sd)}"
                )
            )
        rows.append(cells)
    return (
        "<h2>Final metrics per grid point</h2>"
        '<p class="note">Mean ± standard deviation over the replicates of each point.</p>'
        + html_table(headers, rows, 1 + len(data.swept))
    )


def _runs_section(data: _Data) -> str:
    sweep = data.is_sweep
    headers = ["run", *(["point", "replicate"] if sweep else []), "seed", "spawn key"]
    headers += ["steps", "elapsed", *(esc(m) for m in data.metrics), "digest"]
    rows = []
    for run in data.runs:
        row = run.row
        cells = [str(row.run_id)]
        if sweep:
            cells += [esc(number_text(row.point)), esc(number_text(row.replicate))]
        cells += [
            esc(row.seed),
            esc(json.dumps(row.spawn_key)),
            esc(number_text(row.steps)),
        ]
        cells.append("-" if row.elapsed_s is None else esc(f"{row.elapsed_s:.3g} s"))
        cells += [esc(number_text(run.final(m))) for m in data.metrics]
        digest = row.digest or "-"
        cells.append(f'<span class="mono" title="{esc(digest)}">{esc(digest[:16])}</span>')
        rows.append(cells)
    title = "Runs" if sweep else "Final metrics"
    note = "Final metrics of every run; equal digests mean bit-identical metrics tables."
    if data.skipped:
        note += f" Left out, having no metrics: run(s) {', '.join(map(str, data.skipped))}."
    return f'<h2>{title}</h2><p class="note">{esc(note)}</p>' + html_table(headers, rows, 1)


def _render(data: _Data, title: str | None) -> str:
    generated = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    if title is None:
        title = f"{_distinct_text([r.row.model for r in data.runs])}: {data.kind} report"
    body = "".join(
        [
            f"<h1>{esc(title)}</h1>",
            _header(data, generated),
            _time_section(data),
            _across_section(data),
            _points_section(data),
            _runs_section(data),
            f"<footer>Written by ambidex.sim.report from {esc(data.path)}.</footer>",
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{REPORT_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _out_path(record: Path, out: str | Path | None) -> Path:
    default_name = record.with_suffix(".html").name
    if out is None:
        return record.parent / default_name
    target = Path(out)
    return target / default_name if target.is_dir() else target


def report(record: str | Path, out: str | Path | None = None, *, title: str | None = None) -> Path:
    """Write one self-contained HTML report of a record; return its path.

    Args:
        record: an SQLite file or Parquet directory written by ``run`` or ``sweep``.
        out: the HTML file to write (a directory: the file goes in it); default
            ``<record stem>.html`` next to the record.
        title: the page's title; default from the model and the kind of record.

    Raises:
        RecordError: no record at the path, not a record, or a record without runs.
    """
    path = Path(record)
    data = _load(path)
    page = _render(data, title)
    target = _out_path(path, out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target
