"""ContinuousSpace: cell-list neighbour queries agree with brute force over all pairs."""

from __future__ import annotations

import numpy as np
import pytest

from ambidex.sim._continuous import ContinuousSpace

# -- brute force (O(n^2)), written independently of the space -------------------


def brute_distances(
    width: float, height: float, torus: bool, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """Matrix of distances from every row of ``a`` to every row of ``b``."""
    d = b[None, :, :] - a[:, None, :]
    if torus:
        extent = np.array([width, height])
        d = d - extent * np.round(d / extent)
    dist: np.ndarray = np.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2)
    return dist


def brute_pairs(space: ContinuousSpace, p: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    dist = brute_distances(space.width, space.height, space.torus, p, p)
    i, j = np.nonzero(np.triu(dist <= r, k=1))  # row-major: sorted by i then j
    return i, j


def brute_csr(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    start = np.concatenate([[0], np.cumsum(mask.sum(axis=1))])
    index = np.nonzero(mask)[1]
    return start, index


def brute_neighbors(
    space: ContinuousSpace, p: np.ndarray, r: float
) -> tuple[np.ndarray, np.ndarray]:
    mask = brute_distances(space.width, space.height, space.torus, p, p) <= r
    np.fill_diagonal(mask, False)
    return brute_csr(mask)


def brute_within(
    space: ContinuousSpace, p: np.ndarray, c: np.ndarray, r: float
) -> tuple[np.ndarray, np.ndarray]:
    return brute_csr(brute_distances(space.width, space.height, space.torus, c, p) <= r)


def assert_same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.int64
        np.testing.assert_array_equal(g, w)


SPACES = [
    pytest.param(10.0, 7.0, True, id="torus"),
    pytest.param(10.0, 7.0, False, id="bounded"),
    pytest.param(3.0, 50.0, True, id="thin-torus"),
]
RADII = [0.05, 0.4, 1.0, 2.5, 3.4, 3.6, 5.0, 9.0, 100.0]


# -- queries against brute force ------------------------------------------------


@pytest.mark.parametrize(("width", "height", "torus"), SPACES)
@pytest.mark.parametrize("radius", RADII)
def test_pairs_match_brute_force_on_random_points(
    width: float, height: float, torus: bool, radius: float
) -> None:
    space = ContinuousSpace(width, height, torus=torus)
    rng = np.random.default_rng(int(radius * 100) + (7 if torus else 0))
    p = space.random_positions(rng, 400)
    i, j = space.pairs(p, radius)
    assert_same((i, j), brute_pairs(space, p, radius))
    assert np.all(i < j)


@pytest.mark.parametrize(("width", "height", "torus"), SPACES)
@pytest.mark.parametrize("radius", [0.4, 1.0, 3.6, 9.0])
def test_neighbors_match_brute_force_on_random_points(
    width: float, height: float, torus: bool, radius: float
) -> None:
    space = ContinuousSpace(width, height, torus=torus)
    p = space.random_positions(np.random.default_rng(3), 300)
    start, index = space.neighbors(p, radius)
    assert_same((start, index), brute_neighbors(space, p, radius))
    assert len(start) == len(p) + 1
    for k in range(len(p)):  # each row ascending, self excluded
        row = index[start[k] : start[k + 1]]
        assert np.all(np.diff(row) > 0)
        assert k not in row


@pytest.mark.parametrize(("width", "height", "torus"), SPACES)
@pytest.mark.parametrize("radius", [0.4, 1.0, 3.6, 9.0])
def test_within_matches_brute_force_on_random_points(
    width: float, height: float, torus: bool, radius: float
) -> None:
    space = ContinuousSpace(width, height, torus=torus)
    rng = np.random.default_rng(4)
    p = space.random_positions(rng, 300)
    centers = space.random_positions(rng, 57)
    start, index = space.within(p, centers, radius)
    assert len(start) == len(centers) + 1
    assert_same((start, index), brute_within(space, p, centers, radius))


def test_clustered_points_and_many_duplicates_match_brute_force() -> None:
    space = ContinuousSpace(100.0, 100.0)
    rng = np.random.default_rng(5)
    clumps = rng.random((5, 2)) * 100
    p = space.wrap(clumps[rng.integers(0, 5, 600)] + rng.normal(0, 0.5, (600, 2)))
    p[::7] = p[0]  # exact duplicates: distance 0, still distinct points
    assert_same(space.pairs(p, 0.8), brute_pairs(space, p, 0.8))
    assert_same(space.neighbors(p, 0.8), brute_neighbors(space, p, 0.8))


def test_tiny_radius_on_a_huge_space_stays_exact() -> None:
    # Far more cells than points would fit: the space caps the cell count.
    space = ContinuousSpace(1e6, 1e6)
    rng = np.random.default_rng(6)
    base = space.random_positions(rng, 100)
    p = space.wrap(np.concatenate([base, base + rng.normal(0, 1e-4, base.shape)]))
    assert_same(space.pairs(p, 1e-3), brute_pairs(space, p, 1e-3))


# -- edges: boundaries, exact ties, wide radii, points outside -------------------


def test_lattice_ties_at_exactly_the_radius_are_included() -> None:
    space = ContinuousSpace(10.0, 10.0)
    xs, ys = np.meshgrid(np.arange(10.0), np.arange(10.0), indexing="ij")
    p = np.column_stack([xs.ravel(), ys.ravel()])
    start, index = space.neighbors(p, 1.0)
    assert np.all(np.diff(start) == 4)  # 4 orthogonal neighbours, through the edges
    assert_same((start, index), brute_neighbors(space, p, 1.0))
    assert_same(space.pairs(p, 2.0), brute_pairs(space, p, 2.0))
    assert_same(space.pairs(p, np.sqrt(2.0)), brute_pairs(space, p, np.sqrt(2.0)))


def test_lattice_on_a_bounded_space_has_fewer_neighbours_at_the_edges() -> None:
    space = ContinuousSpace(9.0, 9.0, torus=False)
    xs, ys = np.meshgrid(np.arange(10.0), np.arange(10.0), indexing="ij")
    p = np.column_stack([xs.ravel(), ys.ravel()])  # includes x == width
    start, _ = space.neighbors(p, 1.0)
    counts = np.diff(start).reshape(10, 10)
    assert counts[0, 0] == 2
    assert counts[0, 5] == 3
    assert counts[5, 5] == 4
    assert counts[9, 9] == 2
    assert_same(space.neighbors(p, 1.0), brute_neighbors(space, p, 1.0))


def test_points_on_opposite_edges_of_a_torus_are_neighbours() -> None:
    space = ContinuousSpace(10.0, 5.0)
    p = np.array([[0.0, 0.0], [10.0, 5.0], [9.9, 4.95], [0.05, 2.5], [5.0, 2.5]])
    i, j = space.pairs(p, 0.2)
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 2)]
    assert_same((i, j), brute_pairs(space, p, 0.2))
    bounded = ContinuousSpace(10.0, 5.0, torus=False)
    i, j = bounded.pairs(p, 0.2)
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(1, 2)]


@pytest.mark.parametrize("torus", [True, False])
def test_radius_wider_than_half_the_space_lists_each_pair_once(torus: bool) -> None:
    space = ContinuousSpace(4.0, 4.0, torus=torus)
    p = space.random_positions(np.random.default_rng(8), 50)
    for radius in (1.9, 2.0, 2.1, 2.9, 3.0, 6.0):
        i, j = space.pairs(p, radius)
        keys = i * len(p) + j
        assert len(np.unique(keys)) == len(keys)
        assert_same((i, j), brute_pairs(space, p, radius))
    # Wider than the torus's half diagonal: everyone is everyone's neighbour.
    if torus:
        i, _ = space.pairs(p, 2.0 * np.sqrt(2.0))
        assert len(i) == 50 * 49 // 2


@pytest.mark.parametrize("torus", [True, False])
def test_points_outside_the_space_are_handled(torus: bool) -> None:
    space = ContinuousSpace(10.0, 10.0, torus=torus)
    rng = np.random.default_rng(9)
    p = rng.uniform(-35.0, 45.0, size=(300, 2))
    assert_same(space.pairs(p, 1.5), brute_pairs(space, p, 1.5))
    centers = rng.uniform(-35.0, 45.0, size=(20, 2))
    assert_same(space.within(p, centers, 2.5), brute_within(space, p, centers, 2.5))


def test_empty_and_single_point_inputs() -> None:
    space = ContinuousSpace(10.0, 10.0)
    none = np.zeros((0, 2))
    one = np.array([[1.0, 2.0]])
    for p in (none, one):
        i, j = space.pairs(p, 1.0)
        assert i.dtype == j.dtype == np.int64
        assert len(i) == len(j) == 0
    start, index = space.neighbors(none, 1.0)
    assert start.tolist() == [0]
    assert len(index) == 0
    start, index = space.neighbors(one, 1.0)
    assert start.tolist() == [0, 0]
    assert len(index) == 0
    start, index = space.within(none, one, 1.0)
    assert start.tolist() == [0, 0]
    assert len(index) == 0
    start, index = space.within(one, none, 1.0)
    assert start.tolist() == [0]
    assert len(index) == 0
    start, index = space.within(one, one + 0.5, 1.0)
    assert start.tolist() == [0, 1]
    assert index.tolist() == [0]


def test_results_are_deterministic_and_independent_of_call_history() -> None:
    space = ContinuousSpace(20.0, 20.0)
    p = space.random_positions(np.random.default_rng(10), 1000)
    first = space.pairs(p, 1.3)
    space.pairs(p[::-1].copy(), 0.7)  # an unrelated query in between
    second = space.pairs(p, 1.3)
    for a, b in zip(first, second, strict=True):
        assert a.tobytes() == b.tobytes()
    n1 = space.neighbors(p, 1.3)
    n2 = space.neighbors(p.tolist(), 1.3)  # lists are accepted too
    for a, b in zip(n1, n2, strict=True):
        assert a.tobytes() == b.tobytes()
    # Same neighbour sets under a permutation of the points (relabelled).
    perm = np.random.default_rng(11).permutation(len(p))
    pi, pj = space.pairs(p[perm], 1.3)
    relabelled = {tuple(sorted((int(perm[a]), int(perm[b])))) for a, b in zip(pi, pj, strict=True)}
    assert relabelled == set(zip(first[0].tolist(), first[1].tolist(), strict=True))


# -- wrap, displacement, distance --------------------------------------------------


def test_wrap_on_a_torus_lands_in_the_half_open_space() -> None:
    space = ContinuousSpace(10.0, 4.0)
    p = np.array([[10.0, 4.0], [-1.0, -0.5], [23.5, 9.0], [-1e-300, 3.0], [5.0, 2.0]])
    w = space.wrap(p)
    want = np.array([[0, 0], [9, 3.5], [3.5, 1.0], [0, 3.0], [5, 2]], dtype=np.float64)
    np.testing.assert_array_equal(w, want)
    assert np.all((w >= 0) & (w < [10.0, 4.0]))
    assert w is not p
    assert p[0, 0] == 10.0
    assert space.wrap([12.0, 5.0]).tolist() == [2.0, 1.0]  # any (..., 2) shape


def test_wrap_on_a_bounded_space_clips() -> None:
    space = ContinuousSpace(10.0, 4.0, torus=False)
    w = space.wrap(np.array([[10.0, 4.0], [-1.0, -0.5], [23.5, 2.0]]))
    assert w.tolist() == [[10.0, 4.0], [0.0, 0.0], [10.0, 2.0]]


def test_displacement_takes_the_short_way_round_a_torus() -> None:
    torus = ContinuousSpace(10.0, 10.0)
    bounded = ContinuousSpace(10.0, 10.0, torus=False)
    a, b = np.array([1.0, 9.0]), np.array([9.0, 2.0])
    np.testing.assert_allclose(torus.displacement(a, b), [-2.0, 3.0])
    np.testing.assert_allclose(bounded.displacement(a, b), [8.0, -7.0])
    np.testing.assert_allclose(torus.distance(a, b), np.sqrt(13.0))
    np.testing.assert_allclose(bounded.distance(a, b), np.sqrt(113.0))
    # Broadcasting: one point against many.
    many = torus.random_positions(np.random.default_rng(12), 20)
    d = torus.distance(a, many)
    assert d.shape == (20,)
    np.testing.assert_array_equal(d, brute_distances(10.0, 10.0, True, a[None], many)[0])
    assert np.all(np.abs(torus.displacement(many, a)) <= 5.0)


# -- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height"), [(0, 1), (1, -1), (float("inf"), 1), (float("nan"), 1), (True, 1)]
)
def test_bad_sizes_are_rejected(width: float, height: float) -> None:
    with pytest.raises(ValueError, match="must be a positive finite number"):
        ContinuousSpace(width, height)


@pytest.mark.parametrize("radius", [0, -1.0, float("inf"), float("nan")])
def test_bad_radius_is_rejected(radius: float) -> None:
    space = ContinuousSpace(10.0, 10.0)
    p = np.zeros((3, 2))
    with pytest.raises(ValueError, match="radius must be a positive finite number"):
        space.pairs(p, radius)
    with pytest.raises(ValueError, match="radius must be a positive finite number"):
        space.neighbors(p, radius)
    with pytest.raises(ValueError, match="radius must be a positive finite number"):
        space.within(p, p, radius)


def test_non_numeric_radius_is_rejected() -> None:
    with pytest.raises(ValueError, match="radius must be a number"):
        ContinuousSpace(10.0, 10.0).pairs(np.zeros((3, 2)), "1")  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(5,), (5, 3), (5, 2, 1), (2, 5), ()])
def test_bad_position_shapes_are_rejected(shape: tuple[int, ...]) -> None:
    space = ContinuousSpace(10.0, 10.0)
    bad = np.zeros(shape)
    good = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"positions must have shape \(n, 2\)"):
        space.pairs(bad, 1.0)
    with pytest.raises(ValueError, match=r"positions must have shape \(n, 2\)"):
        space.neighbors(bad, 1.0)
    with pytest.raises(ValueError, match=r"centers must have shape \(n, 2\)"):
        space.within(good, bad, 1.0)


def test_non_finite_positions_are_rejected() -> None:
    space = ContinuousSpace(10.0, 10.0)
    p = np.zeros((4, 2))
    p[2, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        space.pairs(p, 1.0)
    with pytest.raises(ValueError, match="finite"):
        space.wrap(p)
    with pytest.raises(ValueError, match="last axis of length 2"):
        space.distance(np.zeros(3), np.zeros(3))


def test_repr_says_what_kind_of_space() -> None:
    assert repr(ContinuousSpace(10, 5)) == "ContinuousSpace(10x5, torus)"
    assert repr(ContinuousSpace(2.5, 5, torus=False)) == "ContinuousSpace(2.5x5, bounded)"


# -- nearest -------------------------------------------------------------------


def brute_nearest(space: ContinuousSpace, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dist = brute_distances(space.width, space.height, space.torus, p, p)
    np.fill_diagonal(dist, np.inf)
    index = dist.argmin(axis=1)  # the first, lowest row among equally near ones
    return index, dist[np.arange(len(p)), index]


@pytest.mark.parametrize(("width", "height", "torus"), SPACES)
@pytest.mark.parametrize("n", [2, 3, 40, 500])
def test_nearest_matches_brute_force_on_random_points(
    width: float, height: float, torus: bool, n: int
) -> None:
    space = ContinuousSpace(width, height, torus=torus)
    p = space.random_positions(np.random.default_rng(n), n)
    index, dist = space.nearest(p)
    want_index, want_dist = brute_nearest(space, p)
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_array_equal(dist, want_dist)


def test_nearest_on_clusters_duplicates_lattices_and_outliers() -> None:
    space = ContinuousSpace(100.0, 100.0)
    rng = np.random.default_rng(8)
    clumps = rng.random((3, 2)) * 100
    p = space.wrap(clumps[rng.integers(0, 3, 300)] + rng.normal(0, 0.3, (300, 2)))
    p[::9] = p[1]  # duplicates at distance 0: the lowest other row wins
    p[5] = [50.0, 99.9]  # a loner far from every clump, nearest only through a scan of all
    for q in (p, np.column_stack([np.arange(30.0) % 10, np.arange(30.0) // 10])):
        got = space.nearest(q)
        want = brute_nearest(space, q)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


def test_nearest_of_none_and_one_point() -> None:
    space = ContinuousSpace(5.0, 5.0)
    index, dist = space.nearest(np.zeros((0, 2)))
    assert index.shape == (0,)
    assert dist.shape == (0,)
    index, dist = space.nearest(np.ones((1, 2)))
    assert index.tolist() == [-1]
    assert dist.tolist() == [np.inf]
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        space.nearest(np.zeros(4))
