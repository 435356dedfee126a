"""ContinuousSpace inside numba kernels: cell lists that follow moves, and the geometry.

Every query is checked against brute force over all points, after moves made in
compiled code, so a cell list that went stale would show up as a wrong answer.
"""

from __future__ import annotations

import subprocess
import sys

import numba
import numpy as np
import pytest

from ambidex.sim import cells
from ambidex.sim._continuous import ContinuousSpace

SPACES = [
    pytest.param(10.0, 7.0, True, id="torus"),
    pytest.param(10.0, 7.0, False, id="bounded"),
    pytest.param(3.0, 50.0, True, id="thin-torus"),
    pytest.param(2.0, 2.0, True, id="one-cell-torus"),
]


def brute_near(space: ContinuousSpace, p: np.ndarray, x: float, y: float, r: float) -> set[int]:
    d = p - np.array([x, y])
    if space.torus:
        extent = np.array([space.width, space.height])
        d = d - extent * np.round(d / extent)
    return set(np.flatnonzero(np.sqrt(d[:, 0] ** 2 + d[:, 1] ** 2) <= r).tolist())


@numba.njit
def _all_neighbors(state: cells.Cells, radius: float) -> tuple[np.ndarray, np.ndarray]:
    n = len(state.pos)
    out = np.empty(n, dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    found = np.zeros((n, n), dtype=np.bool_)
    for a in range(n):
        k = cells.neighbors_of(state, a, radius, out)
        counts[a] = k
        for i in range(k):
            found[a, out[i]] = True
    return counts, found


@numba.njit
def _random_walk(state: cells.Cells, rng: np.random.Generator, steps: int, size: float) -> None:
    n = len(state.pos)
    for _ in range(steps):
        a = int(rng.random() * n)
        x = state.pos[a, 0] + size * (2.0 * rng.random() - 1.0)
        y = state.pos[a, 1] + size * (2.0 * rng.random() - 1.0)
        cells.move(state, a, x, y)


@numba.njit
def _near(state: cells.Cells, x: float, y: float, radius: float, out: np.ndarray) -> int:
    return cells.near(state, x, y, radius, out)


@numba.njit
def _geometry(
    geo: cells.Geometry, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(a)
    disp = np.empty((n, 2))
    dist = np.empty(n)
    wrapped = np.empty((n, 2))
    for i in range(n):
        disp[i, 0], disp[i, 1] = cells.displacement(geo, a[i, 0], a[i, 1], b[i, 0], b[i, 1])
        dist[i] = cells.distance(geo, a[i, 0], a[i, 1], b[i, 0], b[i, 1])
        wrapped[i, 0], wrapped[i, 1] = cells.wrap(geo, b[i, 0], b[i, 1])
    return disp, dist, wrapped


def assert_cells_true(space: ContinuousSpace, state: cells.Cells, radius: float) -> None:
    """Every agent's neighbours from the cells equal brute force; lists hold every agent once."""
    p = state.pos
    counts, found = _all_neighbors(state, radius)
    for a in range(len(p)):
        want = brute_near(space, p, p[a, 0], p[a, 1], radius) - {a}
        assert set(np.flatnonzero(found[a]).tolist()) == want, f"agent {a}"
        assert counts[a] == len(want)  # nobody listed twice
    members = []
    for c in range(state.mx * state.my):
        b = state.head[c]
        while b >= 0:
            assert state.cell[b] == c
            members.append(int(b))
            b = state.nxt[b]
    assert sorted(members) == list(range(len(p)))


@pytest.mark.parametrize(("width", "height", "torus"), SPACES)
@pytest.mark.parametrize("radius", [0.4, 1.0, 3.6])
def test_neighbors_of_matches_brute_force_after_moves_in_a_kernel(
    width: float, height: float, torus: bool, radius: float
) -> None:
    space = ContinuousSpace(width, height, torus=torus)
    p = space.random_positions(np.random.default_rng(1), 150)
    state = space.cells(p, radius)
    assert state.pos is p  # the model's own array, not a copy
    assert_cells_true(space, state, radius)
    # Some moves cross edges, some stay in their cell.
    _random_walk(state, np.random.default_rng(2), 2000, 1.5)
    assert ((p >= 0) & (p <= np.array([width, height]))).all()
    assert_cells_true(space, state, radius)
    assert_cells_true(space, state, radius / 3)  # smaller radii use the same cells


@pytest.mark.parametrize(("width", "height", "torus"), SPACES)
def test_near_a_point_matches_brute_force(width: float, height: float, torus: bool) -> None:
    space = ContinuousSpace(width, height, torus=torus)
    rng = np.random.default_rng(3)
    p = space.random_positions(rng, 200)
    state = space.cells(p, 1.2)
    out = np.empty(len(p), dtype=np.int64)
    for x, y in space.random_positions(rng, 40):
        k = _near(state, x, y, 1.2, out)
        assert set(out[:k].tolist()) == brute_near(space, p, x, y, 1.2)
        assert k == len(set(out[:k].tolist()))


def test_move_wraps_on_a_torus_and_clips_when_bounded() -> None:
    torus = ContinuousSpace(10.0, 5.0)
    p = np.array([[1.0, 1.0], [9.0, 4.0]])
    state = torus.cells(p, 1.0)
    cells.move(state, 0, -0.5, 6.0)
    cells.move(state, 1, -1e-18, 5.0)  # a tiny negative wraps to 0, not to the width
    np.testing.assert_array_equal(p, [[9.5, 1.0], [0.0, 0.0]])
    bounded = ContinuousSpace(10.0, 5.0, torus=False)
    q = np.array([[1.0, 1.0]])
    state = bounded.cells(q, 1.0)
    cells.move(state, 0, 12.0, -3.0)
    np.testing.assert_array_equal(q, [[10.0, 0.0]])


@pytest.mark.parametrize("torus", [True, False])
def test_kernel_geometry_equals_the_spaces_numpy_geometry_bit_for_bit(torus: bool) -> None:
    space = ContinuousSpace(10.0, 7.0, torus=torus)
    rng = np.random.default_rng(4)
    a = space.random_positions(rng, 500)
    b = np.concatenate([space.random_positions(rng, 400), rng.uniform(-30, 30, (100, 2))])
    b[:5] = a[:5] + np.array([5.0, 3.5])  # exactly half the torus apart
    disp, dist, wrapped = _geometry(space.geometry, a, b)
    np.testing.assert_array_equal(disp, space.displacement(a, b))
    np.testing.assert_array_equal(dist, space.distance(a, b))
    np.testing.assert_array_equal(wrapped, space.wrap(b))


def test_query_wider_than_the_cells_radius_or_out_shorter_than_the_points_raises() -> None:
    space = ContinuousSpace(10.0, 10.0)
    p = np.zeros((5, 2))
    state = space.cells(p, 1.0)
    with pytest.raises(ValueError, match="larger than the radius the cells were built for"):
        _near(state, 0.0, 0.0, 1.5, np.empty(5, dtype=np.int64))
    with pytest.raises(ValueError, match="out is shorter than the number of points"):
        _near(state, 0.0, 0.0, 1.0, np.empty(4, dtype=np.int64))


@pytest.mark.parametrize(
    ("positions", "message"),
    [
        (np.zeros((3, 2), dtype=np.float32), "float64 numpy array"),
        ([[0.0, 0.0]], "float64 numpy array"),
        (np.zeros((3, 4))[:, :2], "C-contiguous"),
        (np.zeros((3, 3)), r"shape \(n, 2\)"),
        (np.array([[1.0, 1.0], [np.nan, 1.0]]), "finite"),
        (np.array([[1.0, 1.0], [10.0, 1.0]]), r"row 1 \(10.0, 1.0\) lies outside"),
        (np.array([[-0.1, 1.0]]), "row 0"),
    ],
    ids=["float32", "list", "strided", "3-columns", "nan", "at-the-width", "negative"],
)
def test_cells_reject_positions_they_cannot_follow(positions: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ContinuousSpace(10.0, 10.0).cells(positions, 1.0)  # type: ignore[arg-type]


def test_cells_reject_a_read_only_array_and_a_bad_radius() -> None:
    p = np.zeros((3, 2))
    p.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        ContinuousSpace(10.0, 10.0).cells(p, 1.0)
    with pytest.raises(ValueError, match="radius"):
        ContinuousSpace(10.0, 10.0).cells(np.zeros((3, 2)), 0.0)


def test_bounded_space_takes_points_on_its_far_edge() -> None:
    space = ContinuousSpace(10.0, 10.0, torus=False)
    p = np.array([[10.0, 10.0], [9.5, 9.5], [0.0, 0.0]])
    state = space.cells(p, 1.0)
    assert_cells_true(space, state, 1.0)


def test_neighbors_remembers_its_answer_until_positions_or_radius_change() -> None:
    space = ContinuousSpace(20.0, 20.0)
    p = space.random_positions(np.random.default_rng(5), 100)
    first = space.neighbors(p, 2.0)
    again = space.neighbors(p.copy(), 2.0)  # equal values, another array: same answer
    assert again[0] is first[0]
    assert again[1] is first[1]
    assert not first[0].flags.writeable
    assert not first[1].flags.writeable
    p[0] += 1.0  # moved in place: recomputed
    moved = space.neighbors(p, 2.0)
    assert moved[1] is not first[1]
    fresh = ContinuousSpace(20.0, 20.0).neighbors(p, 2.0)
    for got, want in zip(moved, fresh, strict=True):
        np.testing.assert_array_equal(got, want)
    assert space.neighbors(p, 3.0)[1] is not moved[1]


def test_importing_ambidex_sim_does_not_import_numba() -> None:
    code = (
        "import sys, ambidex, ambidex.sim as s, numpy as np\n"
        "sp = s.ContinuousSpace(5, 5); sp.wrap(np.zeros((2, 2))); sp.geometry\n"
        "assert 'numba' not in sys.modules, 'numba imported'\n"
        "sp.neighbors(np.zeros((2, 2)), 1.0)\n"
        "assert 'numba' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
