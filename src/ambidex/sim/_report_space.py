"""The report's spatial view: a run's recorded agent snapshots, one picture per step, a slider.

Agents are placed by what the record holds:

* in the plane: a ``pos`` vector field of two elements (or else the first
  two-element float vector field), within the recorded ``ContinuousSpace``'s
  width and height when there is one;
* on a grid: a ``cell`` field with the recorded ``Grid``'s size (cells are
  numbered ``x * height + y``), each agent jittered inside its cell by its id,
  so that agents sharing a cell stay visible and keep their spot over time.

They are coloured by the first other scalar field (``kind`` in Wolf-Sheep,
``wealth`` in Boltzmann): as categories when it holds at most ten integer
values, else on one colour scale fixed across all pictures. The pictures are
PNGs drawn like the report's plots; a range input with a few lines of inline
JavaScript shows one at a time (no framework, no network).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ambidex._html import esc, mpl_text, new_figure, png_base64
from ambidex.sim._record_fields import Field
from ambidex.sim._recorder import Record, RunRow

__all__ = ["space_section"]

FRAMES_MAX = 24
"""At most this many snapshots are drawn (evenly spread over the recorded steps)."""
_CATEGORIES_MAX = 10
_R2 = (0.7548776662466927, 0.5698402909980532)
"""The R2 low-discrepancy sequence's steps: agent ``i``'s spot in its cell is ``i * _R2 mod 1``."""


@dataclass(frozen=True)
class _Placement:
    kind: str  # "plane" or "grid"
    field: str
    width: float | None
    height: float | None

    def xy(self, snap: Mapping[str, np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
        """``(n, 2)`` positions of a snapshot's agents."""
        if self.kind == "plane":
            return np.asarray(snap[self.field], dtype=np.float64)[:, :2]
        assert self.height is not None
        cell = np.asarray(snap[self.field], dtype=np.int64)
        ids = np.asarray(snap.get("id", np.arange(len(cell))), dtype=np.float64)
        jitter_x = 0.15 + 0.7 * ((ids * _R2[0]) % 1.0)
        jitter_y = 0.15 + 0.7 * ((ids * _R2[1]) % 1.0)
        height = int(self.height)
        return np.column_stack([cell // height + jitter_x, cell % height + jitter_y])

    def describe(self) -> str:
        if self.kind == "grid":
            size = f"{int(self.width or 0)}x{int(self.height or 0)}"
            return f"on the {size} grid by their {self.field!r}"
        return f"in the plane by their {self.field!r}"


def _placement(fields: Mapping[str, Field], space: Any) -> _Placement | None:
    space = space if isinstance(space, Mapping) else {}
    width, height = space.get("width"), space.get("height")
    planar = [f for f in fields.values() if f.shape == (2,) and f.dtype.kind in "fiu"]
    planar.sort(key=lambda f: (f.name != "pos", f.dtype.kind != "f"))
    if planar:
        known = space.get("kind") == "continuous"
        return _Placement(
            "plane", planar[0].name, width if known else None, height if known else None
        )
    cell = fields.get("cell")
    if (
        cell is not None
        and not cell.shape
        and cell.dtype.kind in "iu"
        and space.get("kind") == "grid"
    ):
        return _Placement("grid", "cell", float(width), float(height))
    return None


def _color_field(fields: Mapping[str, Field], placement: _Placement) -> str | None:
    for field in fields.values():
        scalar_number = not field.shape and field.dtype.kind in "biuf"
        if scalar_number and field.name not in ("id", "cell", placement.field):
            return field.name
    return None


def _spread(steps: Sequence[int], most: int) -> list[int]:
    """At most ``most`` of ``steps``, evenly spread, the first and the last always in."""
    if len(steps) <= most:
        return list(steps)
    picks = np.unique(np.linspace(0, len(steps) - 1, most).round().astype(int))
    return [steps[i] for i in picks]


def space_section(record: Record, rows: Sequence[RunRow]) -> str:
    """The ``Agents`` section: a slider over the first run's snapshots, or nothing."""
    fields = record.agent_fields()
    if not fields:
        return ""
    run, steps = None, []
    for row in rows:
        steps = record.snapshot_steps(row.run_id)
        if steps:
            run = row
            break
    if run is None:
        return ""
    placement = _placement(fields, record.meta.get("space"))
    head = "<h2>Agents</h2>"
    if placement is None:
        return head + (
            '<p class="note">The record holds agent snapshots, but nothing to place them by: '
            "a two-element vector field (<code>pos=(np.float64, 2)</code>), or a "
            "<code>cell</code> field of a model with a <code>Grid</code>.</p>"
        )
    shown = _spread(steps, FRAMES_MAX)
    snaps = [record.agents(run.run_id, step) for step in shown]
    frames = _frames(snaps, placement, _color_field(fields, placement))
    of = (
        f"{len(shown)} of its {len(steps)} snapshots"
        if len(shown) < len(steps)
        else "its snapshots"
    )
    note = (
        f"Run {run.run_id}, {of}: agents placed {placement.describe()}. "
        "Drag the slider to step through time."
    )
    return head + f'<p class="note">{esc(note)}</p>' + _viewer(frames, shown)


def _frames(
    snaps: Sequence[Mapping[str, np.ndarray[Any, Any]]], placement: _Placement, color: str | None
) -> list[str]:
    points = [placement.xy(s) for s in snaps]
    every = np.concatenate(points) if points else np.zeros((0, 2))
    # Limits from the finite points only: a NaN or infinite position (an agent
    # marked dead, say) is left out of the picture, not made the axis' limit.
    every = every[np.isfinite(every).all(axis=1)]
    if placement.width is not None and placement.height is not None:
        xlim, ylim = (0.0, placement.width), (0.0, placement.height)
    elif len(every):
        lo, hi = every.min(axis=0), every.max(axis=0)
        pad = np.maximum((hi - lo) * 0.03, 1e-9)
        xlim, ylim = (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])
    else:
        xlim, ylim = (0.0, 1.0), (0.0, 1.0)
    values = [np.asarray(s[color]) for s in snaps] if color else []
    pooled = np.concatenate(values) if values else np.zeros(0)
    categories: list[Any] | None = None
    if color and pooled.dtype.kind in "biu":
        distinct = np.unique(pooled)
        if len(distinct) <= _CATEGORIES_MAX:
            categories = distinct.tolist()
    finite = pooled[np.isfinite(pooled)] if pooled.dtype.kind == "f" else pooled
    vmin = float(finite.min()) if len(finite) else 0.0
    vmax = float(finite.max()) if len(finite) else 1.0
    # The picture follows the space's shape, within 1:3 either way (a 10 x 1000 space
    # is drawn squeezed, not 560 inches tall).
    aspect = float(np.clip((ylim[1] - ylim[0]) / max(xlim[1] - xlim[0], 1e-9), 1 / 3, 3))
    out = []
    for i, (snap, xy) in enumerate(zip(snaps, points, strict=True)):
        fig = new_figure(5.6, 5.6 * aspect + 0.4)
        ax = fig.subplots()
        size = float(np.clip(3000 / max(len(xy), 1), 1.0, 30.0))
        if color is None:
            ax.scatter(xy[:, 0], xy[:, 1], s=size, linewidths=0, color="tab:blue")
        elif categories is not None:
            from matplotlib import colormaps

            cmap = colormaps["tab10"]
            for j, value in enumerate(categories):
                at = values[i] == value
                label = mpl_text(f"{color}={value}")
                ax.scatter(xy[at, 0], xy[at, 1], s=size, linewidths=0, color=cmap(j), label=label)
            ax.legend(fontsize="small", loc="upper right", framealpha=0.8)
        else:
            image = ax.scatter(
                xy[:, 0],
                xy[:, 1],
                c=values[i],
                s=size,
                linewidths=0,
                cmap="viridis",
                vmin=vmin,
                vmax=vmax,
            )
            fig.colorbar(image, ax=ax, label=mpl_text(color))
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal" if 1 / 3 < aspect < 3 else "auto")
        ax.set_title(f"step {int(snap['step'][0]) if len(snap['step']) else '?'}: {len(xy)} agents")
        out.append(png_base64(fig))
    return out


def _viewer(frames: Sequence[str], steps: Sequence[int]) -> str:
    last = len(frames) - 1
    data = json.dumps({"frames": list(frames), "steps": list(steps)})
    return (
        '<figure class="space" style="max-width:640px">'
        f'<img id="space-frame" src="data:image/png;base64,{frames[0]}" '
        f'alt="agents at step {steps[0]}">'
        '<figcaption><input type="range" id="space-step" min="0" '
        f'max="{last}" value="0" step="1" aria-label="snapshot" style="width:80%"> '
        f'<output id="space-label" for="space-step">step {steps[0]}</output></figcaption>'
        "</figure>"
        f'<script type="application/json" id="space-data">{data}</script>'
        "<script>(function(){"
        'var d=JSON.parse(document.getElementById("space-data").textContent);'
        'var img=document.getElementById("space-frame"),'
        'range=document.getElementById("space-step"),'
        'label=document.getElementById("space-label");'
        'range.addEventListener("input",function(){var i=+range.value;'
        'img.src="data:image/png;base64,"+d.frames[i];'
        'img.alt="agents at step "+d.steps[i];label.textContent="step "+d.steps[i];});'
        "})();</script>"
    )
