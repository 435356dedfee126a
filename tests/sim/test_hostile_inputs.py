"""Careless and hostile calls into the simulation kernels and spaces (issue 17 review).

numba checks no bounds: each kernel mistake below crashed the interpreter (SIGSEGV)
or wrote outside an array before it was checked. Each runs in its own process, so a
regression fails the test with the crash instead of taking the test run down.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ambidex as ax

_CELLS = """
import numpy as np, ambidex as ax
from ambidex.sim import cells
space = ax.sim.ContinuousSpace(10.0, 10.0)
pos = np.ascontiguousarray(space.random_positions(np.random.default_rng(0), 5))
state = space.cells(pos, 1.0)
out = np.empty(5, dtype=np.int64)
"""
_GRID = """
import numpy as np, ambidex as ax
from ambidex.sim import grid_kernels as gk
dx, dy = ax.sim.Grid(50, 50).offsets_array(3)
"""
_NET = """
import numpy as np, ambidex as ax
space = ax.sim.NetworkSpace(3, [0, 1], [1, 2])
"""

# (setup, the careless call, the one line it must raise)
KERNEL_MISTAKES = {
    "cells.neighbors_of, agent past the end": (
        _CELLS,
        "cells.neighbors_of(state, 10**9, 1.0, out)",
        "neighbors_of: agent is not a row of state.pos",
    ),
    "cells.neighbors_of, negative agent": (
        _CELLS,
        "cells.neighbors_of(state, -1, 1.0, out)",
        "neighbors_of: agent is not a row of state.pos",
    ),
    "cells.move, agent past the end": (
        _CELLS,
        "cells.move(state, 10**7, 1.0, 1.0)",
        "move: agent is not a row of state.pos",
    ),
    "cells.move, agent == n": (
        _CELLS,
        "cells.move(state, 5, 1.0, 1.0)",
        "move: agent is not a row of state.pos",
    ),
    "cells.move, NaN x": (
        _CELLS,
        "cells.move(state, 0, float('nan'), 1.0)",
        "move: x and y must be finite (got NaN or infinity)",
    ),
    "cells.move, infinite y": (
        _CELLS,
        "cells.move(state, 0, 1.0, float('inf'))",
        "move: x and y must be finite (got NaN or infinity)",
    ),
    "grid_kernels.neighbors_of, out too small": (
        _GRID,
        "gk.neighbors_of(0, dx, dy, 50, 50, True, np.empty(1, dtype=np.int64))",
        "neighbors_of: out is shorter than the offsets (needs len(dx) slots)",
    ),
    "grid_kernels.neighbors_of, dy shorter than dx": (
        _GRID,
        "gk.neighbors_of(0, dx, dy[:1], 50, 50, True, np.empty(len(dx), dtype=np.int64))",
        "neighbors_of: dx and dy must have the same length",
    ),
    "random_neighbor, node past the end": (
        _NET,
        "ax.sim.random_neighbor(space.indptr, space.indices, 10**6, np.random.default_rng(0))",
        "random_neighbor: v is not a node id",
    ),
    "node_neighbors, node == n_nodes": (
        _NET,
        "ax.sim.node_neighbors(space.indptr, space.indices, 3)",
        "node_neighbors: v is not a node id",
    ),
    "node_neighbors, negative node": (
        _NET,
        "ax.sim.node_neighbors(space.indptr, space.indices, -1)",
        "node_neighbors: v is not a node id",
    ),
}


@pytest.mark.parametrize("case", sorted(KERNEL_MISTAKES))
def test_kernel_mistake_raises_one_clear_error_instead_of_corrupting_memory(case: str) -> None:
    setup, call, message = KERNEL_MISTAKES[case]
    code = textwrap.dedent(setup) + textwrap.dedent(f"""
        try:
            {call}
        except ValueError as exc:
            print("ValueError:", exc)
        else:
            print("no error")
        """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    assert proc.returncode == 0, f"{case}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    assert proc.stdout.strip() == f"ValueError: {message}"


def test_kernels_still_answer_the_last_row_and_node() -> None:
    """The new checks refuse only what is outside: the last agent and node still work."""
    from ambidex.sim import cells

    space = ax.sim.ContinuousSpace(10.0, 10.0)
    pos = np.ascontiguousarray([[1.0, 1.0], [1.5, 1.0], [9.0, 9.0]])
    state = space.cells(pos, 1.0)
    out = np.empty(3, dtype=np.int64)
    assert cells.neighbors_of(state, 2, 1.0, out) == 0
    cells.move(state, 2, 1.2, 1.2)
    k = cells.neighbors_of(state, 2, 1.0, out)
    assert sorted(out[:k].tolist()) == [0, 1]
    net = ax.sim.NetworkSpace(3, [0, 1], [1, 2])
    assert ax.sim.node_neighbors(net.indptr, net.indices, 2).tolist() == [1]
    assert ax.sim.random_neighbor(net.indptr, net.indices, 2, np.random.default_rng(0)) == 1


@pytest.mark.parametrize("p", [1e-18, 1e-300, 5e-324])
def test_erdos_renyi_with_a_tiny_p_draws_no_edges_instead_of_failing(p: float) -> None:
    """numpy's geometric draws saturate at 2**63 - 1 for a tiny p; the sum of such gaps
    overflowed into negative ranks, and the build refused its own edges."""
    space = ax.sim.NetworkSpace.erdos_renyi(100_000, p, np.random.default_rng(0))
    assert space.n_nodes == 100_000
    assert space.n_edges == 0


def test_erdos_renyi_draws_are_unchanged_by_the_overflow_cap() -> None:
    """Capping the gaps at the last pair changes no graph an ordinary p draws."""
    rng = np.random.default_rng(7)
    n, p = 300, 0.05
    space = ax.sim.NetworkSpace.erdos_renyi(n, p, rng)
    again = np.random.default_rng(7)
    pairs = n * (n - 1) // 2
    ranks, last = [], -1
    while True:  # the draw written out plainly, one gap at a time
        last += int(again.geometric(p))
        if last >= pairs:
            break
        ranks.append(last)
    src, dst = space.edges()
    v, w = dst, src  # edges() gives src < dst; ranks are v (v - 1) / 2 + w, w < v
    assert sorted((v * (v - 1) // 2 + w).tolist()) == ranks


# -- recording: careless snapshots ------------------------------------------------------


def _record(path: Path, snaps: list[dict[str, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    with ax.sim.Recorder(path) as rec:
        run_id = rec.start_run("M", {}, 0, (), len(snaps))
        for step, columns in enumerate(snaps):
            rec.snapshot(run_id, step, columns)
    return ax.sim.open_record(path).agents(run_id, len(snaps) - 1)


@pytest.mark.parametrize("fmt", ["sqlite", "parquet"])
def test_text_field_that_grows_longer_is_read_back_whole(tmp_path: Path, fmt: str) -> None:
    """The meta keeps the first snapshot's text width (<U2); a longer text was cut to it."""
    back = _record(
        tmp_path / f"r.{fmt}",
        [{"state": np.array(["ok", "ok"])}, {"state": np.array(["infected", "ok"])}],
    )
    assert back["state"].tolist() == ["infected", "ok"]


@pytest.mark.parametrize("fmt", ["sqlite", "parquet"])
@pytest.mark.parametrize(
    ("first", "then"),
    [
        (np.array([1, 2], dtype=np.int8), np.array([1000, 2], dtype=np.int64)),  # wrapped
        (np.array([1, 2]), np.array([0.5, 2.5])),  # truncated
    ],
)
def test_numeric_field_whose_dtype_changes_is_refused_when_snapshot(
    tmp_path: Path, fmt: str, first: Any, then: Any
) -> None:
    """Read back with the first dtype, 1000 came back as -24 and 0.5 as 0, silently."""
    with pytest.raises(ax.sim.RecordError, match=r"keep each field's dtype") as info:
        _record(tmp_path / f"r.{fmt}", [{"w": first}, {"w": then}])
    assert "\n" not in str(info.value)


def test_same_dtype_in_the_other_byte_order_is_still_recorded(tmp_path: Path) -> None:
    back = _record(
        tmp_path / "r.sqlite", [{"w": np.array([1.0, 2.0])}, {"w": np.array([3.0, 4.0], ">f8")}]
    )
    assert back["w"].tolist() == [3.0, 4.0]


@pytest.mark.parametrize(
    "columns",
    [
        {"wealth": np.arange(3), "Wealth": np.arange(3)},
        {"Step": np.arange(3)},
        {"RUN_ID": np.arange(3)},
        {"POS": np.zeros((3, 2)), "pos_0": np.arange(3)},
    ],
    ids=["Wealth-wealth", "Step", "RUN_ID", "POS-pos_0"],
)
def test_sqlite_columns_equal_but_for_case_are_refused_when_snapshot(
    tmp_path: Path, columns: dict[str, Any]
) -> None:
    """SQLite's column names ignore ASCII case: these failed only at the flush, with
    sqlite3's 'duplicate column name' inside a write error, after the run went on."""
    with ax.sim.Recorder(tmp_path / "r.sqlite") as rec:
        run_id = rec.start_run("M", {}, 0, (), 1)
        with pytest.raises(ax.sim.RecordError, match=r"SQLite column names ignore case"):
            rec.snapshot(run_id, 0, columns)


def test_parquet_and_non_ascii_case_keep_fields_apart(tmp_path: Path) -> None:
    """Parquet columns are case-sensitive, and SQLite folds ASCII letters only."""
    back = _record(tmp_path / "r.parquet", [{"wealth": np.arange(3), "Wealth": np.arange(3) + 1}])
    assert back["Wealth"].tolist() == [1, 2, 3]
    back = _record(tmp_path / "r.sqlite", [{"é": np.arange(3), "É": np.arange(3) + 1}])
    assert back["É"].tolist() == [1, 2, 3]


# -- the report: typos and spreadsheet formulas ---------------------------------------


class Typo(ax.sim.Model):
    """A charts attribute with a misspelt metric, and a formula in a text parameter."""

    defaults = {"label": '=HYPERLINK("http://x","y")', "n": 3}
    charts = {"population": ["sheep", "wolfs"]}

    def setup(self, params: Any) -> None:
        self.sheep, self.wolves = 10.0, 2.0

    def step(self) -> None:
        self.sheep -= 0.5
        self.wolves += 0.25

    def metrics(self) -> dict[str, float]:
        return {"sheep": self.sheep, "wolves": self.wolves, "-x": -1.5}


def _csv_tables(page: str) -> dict[str, list[list[str]]]:
    import base64
    import csv
    import io
    import re

    link = re.compile(r'download="([^"]+)" href="data:text/csv;charset=utf-8;base64,([^"]+)"')
    return {
        name: list(csv.reader(io.StringIO(base64.b64decode(b64).decode("utf-8"))))
        for name, b64 in link.findall(page)
    }


def test_report_says_when_charts_name_a_metric_the_record_lacks(tmp_path: Path) -> None:
    """A typo in ``charts`` used to draw nothing for it, without a word."""
    from ambidex.sim._report import report

    record = tmp_path / "typo.sqlite"
    ax.sim.run(Typo, steps=3, seed=1, record=record)
    page = report(record).read_text(encoding="utf-8")
    assert "names metric(s) the record does not hold: wolfs (metrics: sheep, wolves, -x)" in page


def test_report_csv_cells_that_look_like_formulas_are_quoted(tmp_path: Path) -> None:
    """A text parameter (or metric name) starting with '=' was a live spreadsheet formula."""
    from ambidex.sim._report import report

    record = tmp_path / "typo.sqlite"
    ax.sim.sweep(Typo, {"n": [1, 2]}, steps=3, seed=1, record=record, workers=1)
    tables = _csv_tables(report(record).read_text(encoding="utf-8"))
    every_cell = [c for rows in tables.values() for row in rows for c in row]
    assert not [c for c in every_cell if c.startswith(("=", "+", "@"))]
    assert "'-x" in tables["metrics.csv"][0]  # a name: quoted
    assert "-1.5" in tables["metrics.csv"][1]  # a number: as it is


# -- to_pandas: column names that clash -------------------------------------------------


class Population(ax.sim.Model):
    """A metric ``n`` (agents alive) beside the parameter ``n`` (agents at the start)."""

    defaults = {"n": 3}
    metric_names = ("n",)

    def setup(self, params: Any) -> None:
        self.alive = float(params.n)

    def step(self) -> None:
        self.alive -= 0.5

    def metrics(self) -> dict[str, float]:
        return {name: self.alive for name in self.metric_names}


class RunMetric(Population):
    metric_names = ("alive", "run")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (Population, r"^to_pandas\(\): 'n' is both a swept parameter and a metric; rename"),
        (RunMetric, r"^to_pandas\(\): 'run' is both a column of the frame and a metric; rename"),
    ],
)
def test_sweep_to_pandas_names_a_metric_that_clashes_with_a_column(
    model: type[ax.sim.Model], message: str
) -> None:
    """pandas got columns of different lengths: 'All arrays must be of the same length'."""
    pytest.importorskip("pandas")
    result = ax.sim.sweep(model, {"n": [1, 2]}, steps=2, seed=1, workers=1)
    with pytest.raises(ValueError, match=message):
        result.to_pandas()
    frame = result.runs[0].to_pandas()  # the way round it the message names
    assert frame[model.metric_names[-1]].tolist() == [1.0, 0.5, 0.0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_report_draws_agents_when_a_position_is_not_finite(tmp_path: Path, bad: float) -> None:
    """A NaN or infinite position (an agent marked dead) became the axis limits:
    'Axis limits cannot be NaN or Inf' (or a NaN figure size), and no report."""
    from ambidex.sim._report import report

    path = tmp_path / "r.sqlite"
    with ax.sim.Recorder(path) as rec:
        run_id = rec.start_run("M", {}, 0, (), 1)
        for step in (0, 1):
            rec.snapshot(
                run_id,
                step,
                {
                    "pos": np.array([[0.0, 1.0], [bad, 2.0], [3.0, 4.0]]),
                    "energy": np.array([1.0, bad, 3.0]),
                },
            )
    page = report(path).read_text(encoding="utf-8")
    assert "<h2>Agents</h2>" in page
    assert 'id="space-frame" src="data:image/png;base64,' in page


# -- kernels.shuffle -----------------------------------------------------------------------


def test_shuffle_refuses_a_2d_array_instead_of_duplicating_rows() -> None:
    """values[i], values[j] = values[j], values[i] swaps views in numba: the rows of a
    2-D array came back duplicated ([[0, 1], [2, 3], [4, 5], [0, 1], [0, 1]])."""
    from ambidex.sim._kernel_rng import kernel_generator
    from ambidex.sim.kernels import shuffle

    rows = np.arange(10).reshape(5, 2)
    with pytest.raises(ValueError, match=r"values must be 1-D"):
        shuffle(rows, kernel_generator(3))
    assert rows.tolist() == np.arange(10).reshape(5, 2).tolist()  # untouched
    flat = shuffle(np.arange(10), kernel_generator(3))
    assert sorted(flat.tolist()) == list(range(10))


def test_permutation_refuses_a_negative_length_as_numpy_does() -> None:
    """It returned an empty order, hiding a caller's off-by-one."""
    from ambidex.sim._kernel_rng import kernel_generator
    from ambidex.sim.kernels import permutation

    with pytest.raises(ValueError, match=r"n must not be negative"):
        permutation(-3, kernel_generator(1))
    assert permutation(0, kernel_generator(1)).tolist() == []
    assert sorted(permutation(5, kernel_generator(1)).tolist()) == [0, 1, 2, 3, 4]


# -- ContinuousSpace: extreme radii and extents --------------------------------------------


@pytest.mark.parametrize("radius", [5e-324, 1e-320, 1e-300])
def test_a_tiny_radius_finds_only_points_at_the_same_spot(radius: float) -> None:
    """width / radius was infinite for a subnormal radius: math.floor raised OverflowError
    in neighbors, pairs, within and cells."""
    from ambidex.sim import cells

    space = ax.sim.ContinuousSpace(10.0, 10.0)
    pos = space.random_positions(np.random.default_rng(0), 50)
    pos[1] = pos[0]  # two agents at one spot: within any radius of each other
    start, index = space.neighbors(pos, radius)
    assert index.tolist() == [1, 0]
    assert start[:3].tolist() == [0, 1, 2]
    i, j = space.pairs(pos, radius)
    assert (i.tolist(), j.tolist()) == ([0], [1])
    start, index = space.within(pos, pos[:2], radius)
    assert index.tolist() == [0, 1, 0, 1]
    state = space.cells(np.ascontiguousarray(pos), radius)
    out = np.empty(len(pos), dtype=np.int64)
    assert cells.neighbors_of(state, 0, radius, out) == 1
    assert out[0] == 1


def test_an_extent_whose_distances_overflow_is_refused() -> None:
    """A 1e308 x 1e308 space squared its distances to infinity: nearest() said every
    point had no other point (-1, inf)."""
    with pytest.raises(ValueError, match=r"^width must be at most 1e\+150 .*got 1e\+308$"):
        ax.sim.ContinuousSpace(1e308, 1.0)
    space = ax.sim.ContinuousSpace(1e150, 1e150)
    pos = np.array([[0.0, 0.0], [3e149, 0.0], [9e149, 0.0]])
    index, distance = space.nearest(pos)
    assert index.tolist() == [2, 0, 0]  # on the torus 9e149 is 1e149 from 0
    assert np.isfinite(distance).all()


# -- NetworkSpace: careless arguments ---------------------------------------------------------


@pytest.mark.parametrize("directed", ["no", None, 0, "False"])
def test_network_directed_must_be_a_bool(directed: Any) -> None:
    """directed='no' was truthy: the graph became directed without a word."""
    with pytest.raises(ValueError, match=r"^directed must be True or False, got "):
        ax.sim.NetworkSpace(3, [0], [1], directed=directed)
    assert ax.sim.NetworkSpace(3, [0], [1], directed=np.bool_(True)).directed


@pytest.mark.parametrize("rng", [42, None, np.random.PCG64(1)])
def test_network_draws_need_a_generator(rng: Any) -> None:
    """An int seed or a bit generator raised AttributeError ('int' object has no
    attribute 'geometric') from inside the draw."""
    with pytest.raises(ValueError, match=r"^rng must be a numpy.random.Generator"):
        ax.sim.NetworkSpace.erdos_renyi(10, 0.5, rng)
    with pytest.raises(ValueError, match=r"^rng must be a numpy.random.Generator"):
        ax.sim.NetworkSpace(3, [0], [1]).random_nodes(rng, 2)


def test_a_model_module_named_like_a_loaded_module_says_which_file_it_read() -> None:
    """'random:Walk' beside the user's random.py finds the standard library's random
    (already imported); the error said only 'random has no Model class ...'."""
    import random

    with pytest.raises(ax.sim.ModelError) as info:
        ax.sim.load_model("random:Walk")
    assert str(info.value) == (
        f"random (imported from {random.__file__}) has no Model class 'Walk' (models: none)"
    )


@pytest.mark.parametrize("fmt", ["sqlite", "parquet"])
def test_text_with_a_nul_inside_is_recorded_whole(tmp_path: Path, fmt: str) -> None:
    """pyarrow cut a numpy str array at its first NUL: Parquet kept 'a' of 'a\\x00b'."""
    text = np.array(["a\x00b", "plain", "'); drop table agents; --"])
    back = _record(tmp_path / f"r.{fmt}", [{"note": text}])
    assert back["note"].tolist() == text.tolist()


@pytest.mark.parametrize("fmt", ["sqlite", "parquet"])
def test_agents_of_a_run_the_record_lacks_is_an_error_not_an_empty_snapshot(
    tmp_path: Path, fmt: str
) -> None:
    """A mistyped run id read as a snapshot of no agents (metrics() raised for it)."""
    path = tmp_path / f"r.{fmt}"
    _record(path, [{"w": np.arange(3)}])
    record = ax.sim.open_record(path)
    with pytest.raises(ax.sim.RecordError, match=r"no run 99 \(runs: 1\)$"):
        record.agents(99)
    assert record.agents(1, 5)["w"].tolist() == []  # a step without a snapshot: no rows
    assert record.agents(1)["w"].tolist() == [0, 1, 2]


# -- Grid: a radius past the grid ------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "kind", "radius", "widest"),
    [(1, 1, "moore", 10**6, 1), (100, 100, "moore", 10**4, 100), (3, 4, "von_neumann", 8, 7)],
)
def test_grid_radius_past_the_grid_is_refused_before_building_offsets(
    width: int, height: int, kind: str, radius: int, widest: int
) -> None:
    """Grid(1, 1).neighbors(10**6) built a Python list of 4e12 offsets (MemoryError under
    a 3 GB limit, the machine's memory without one)."""
    grid = ax.sim.Grid(width, height, neighborhood=kind)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"^radius {radius} reaches past the .* radius {widest} "):
        grid.neighbors(radius)
    with pytest.raises(ValueError, match=r"^radius must be an integer, got 2.5$"):
        grid.offsets(2.5)  # type: ignore[arg-type]
    if grid.size <= 100:  # the widest radius still works: every other cell, on any edge
        _, counts = grid.neighbors(widest)
        assert (counts == grid.size - 1).all()
