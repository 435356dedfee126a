"""A Grid inside numba kernels: geometry and per-cell member lists agree with ``Grid``."""

from __future__ import annotations

import itertools
import tracemalloc

import numba
import numpy as np
import pytest

import ambidex as ax
from ambidex.sim import grid_kernels as gk

GRIDS = [
    (5, 7, False, "moore", 1),
    (5, 7, True, "von_neumann", 2),
    (30, 20, False, "moore", 2),
    (1, 4, True, "moore", 1),  # narrower than the neighbourhood: repeats dropped
    (2, 9, True, "moore", 3),
    (3, 3, True, "moore", 2),
]


@pytest.mark.parametrize(("width", "height", "torus", "kind", "radius"), GRIDS)
def test_neighbors_of_gives_each_row_of_the_neighbor_table(
    width: int, height: int, torus: bool, kind: str, radius: int
) -> None:
    grid = ax.sim.Grid(width, height, torus=torus, neighborhood=kind)  # type: ignore[arg-type]
    table, counts = grid.neighbors(radius)
    dx, dy = grid.offsets_array(radius)
    out = np.empty(len(dx), dtype=np.int64)
    for c in range(grid.size):
        k = gk.neighbors_of(c, dx, dy, width, height, torus, out)
        assert k == counts[c]
        assert list(out[:k]) == list(table[c, :k])
        assert set(table[c, k:]) <= {-1}


def test_geometry_round_trips_and_wraps() -> None:
    w, h = 7, 5
    for c in range(w * h):
        x, y = gk.cell_xy(c, h)
        assert gk.cell_of(x, y, h) == c
        assert gk.wrap_cell(x - w, y + h, w, h, True) == c
    assert gk.wrap_cell(-1, 0, w, h, False) == -1
    assert gk.wrap_cell(0, h, w, h, False) == -1
    assert gk.wrap_cell(-1, -1, w, h, True) == (w - 1) * h + (h - 1)


def test_neighbor_table_is_int32_and_its_build_peaks_below_twice_its_size() -> None:
    grid = ax.sim.Grid(400, 300, torus=False, neighborhood="moore")
    tracemalloc.start()
    try:
        table, counts = grid.neighbors(2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert table.dtype == np.int32
    assert counts.dtype == np.int32
    assert table.shape == (grid.size, 24)
    assert peak <= 2 * (table.nbytes + counts.nbytes), peak


def _members(lists: tuple[np.ndarray, ...], c: int) -> list[int]:
    head, nxt = lists[0], lists[1]
    out = []
    a = head[c]
    while a >= 0:
        out.append(int(a))
        a = nxt[a]
    return out


def test_cell_lists_match_the_compiled_build_and_members() -> None:
    grid = ax.sim.Grid(6, 4)
    rng = np.random.default_rng(3)
    cells = grid.random_cells(rng, 50)
    lists = grid.cell_lists(cells)
    head, counts = np.full(grid.size, 7), np.full(grid.size, 7)
    nxt, prv = np.full(51, 7), np.full(51, 7)  # one scratch slot past the 50 rows
    gk.lists_build(cells, 50, head, nxt, prv, counts)
    assert len(lists.nxt) == len(lists.prv) == 51
    assert np.array_equal(lists.head, head)
    assert np.array_equal(lists.counts, counts)
    assert np.array_equal(lists.nxt[:50], nxt[:50])  # the last slot is scratch
    assert np.array_equal(lists.prv[:50], prv[:50])
    start, order = grid.members(cells)
    for c in range(grid.size):
        got = _members(lists, c)
        assert got == sorted(order[start[c] : start[c + 1]], reverse=True)  # highest row first
        assert lists.counts[c] == len(got)
        assert gk.lists_nth(lists.head, lists.nxt, c, len(got)) == -1


@numba.njit
def _random_moves(
    cells: np.ndarray,
    head: np.ndarray,
    nxt: np.ndarray,
    prv: np.ndarray,
    counts: np.ndarray,
    moves: np.ndarray,
    dest: np.ndarray,
) -> None:
    for i in range(len(moves)):
        a = moves[i]
        gk.lists_move(head, nxt, prv, counts, a, cells[a], dest[i])
        cells[a] = dest[i]


def test_moves_inside_a_kernel_keep_the_lists_exact() -> None:
    grid = ax.sim.Grid(9, 9, torus=True)
    rng = np.random.default_rng(11)
    n = 200
    cells = grid.random_cells(rng, n)
    lists = grid.cell_lists(cells)
    moves = rng.integers(0, n, size=5000)
    dest = grid.random_cells(rng, 5000)
    _random_moves(cells, *lists, moves, dest)
    assert np.array_equal(lists.counts, grid.occupancy(cells))
    for c in range(grid.size):
        members = _members(lists, c)
        assert sorted(members) == list(np.flatnonzero(cells == c))
        for a, b in itertools.pairwise(members):
            assert lists.prv[b] == a
            assert lists.nxt[a] == b
        if members:
            assert lists.prv[members[0]] == -1


def test_insert_and_remove_track_births_and_deaths() -> None:
    grid = ax.sim.Grid(3, 3)
    cells = np.array([4, 4, 0])
    lists = grid.cell_lists(cells, capacity=5)
    gk.lists_insert(*lists, 3, 4)  # a newborn in cell 4
    assert _members(lists, 4) == [3, 1, 0]
    gk.lists_remove(*lists, 1, 4)  # a death in the middle of the list
    assert _members(lists, 4) == [3, 0]
    assert lists.counts[4] == 2
    gk.lists_remove(*lists, 3, 4)  # and at the head
    assert _members(lists, 4) == [0]
    assert lists.head[4] == 0
    assert gk.lists_nth(lists.head, lists.nxt, 4, 0) == 0


def test_cell_lists_refuses_cells_off_the_grid_and_short_capacity() -> None:
    grid = ax.sim.Grid(3, 3)
    with pytest.raises(ValueError, match="cell 9 is outside the 3x3 grid"):
        grid.cell_lists([0, 9])
    with pytest.raises(ValueError, match="capacity 1 is below the 2 agents"):
        grid.cell_lists([0, 1], capacity=1)
    with pytest.raises(ValueError, match="1-D array of cell numbers"):
        grid.cell_lists([0.5, 1.0])
    with pytest.raises(ValueError, match="1-D array of cell numbers"):
        grid.cell_lists([[0, 1]])
    assert grid.cell_lists([]).counts.sum() == 0
