"""NetworkSpace: the CSR adjacency agrees with a plain dict-of-sets graph; bad input is refused
with one line; G(n, p) has the right distribution and is drawn deterministically."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import networkx as nx
import numba
import numpy as np
import pytest

import ambidex as ax
from ambidex.sim._network import _unrank_pairs

# -- a plain graph, written independently of the space --------------------------------


def brute_neighbours(n: int, src: Any, dst: Any, directed: bool) -> list[list[int]]:
    adj: list[set[int]] = [set() for _ in range(n)]
    for u, v in zip(np.asarray(src).tolist(), np.asarray(dst).tolist(), strict=True):
        adj[u].add(v)
        if not directed:
            adj[v].add(u)
    return [sorted(a) for a in adj]


def csr_lists(space: ax.sim.NetworkSpace) -> list[list[int]]:
    return [space.neighbors(v).tolist() for v in range(space.n_nodes)]


@pytest.mark.parametrize("directed", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_adjacency_matches_a_plain_graph_with_duplicates_merged(directed: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    m = int(rng.integers(0, 120))
    src = rng.integers(0, n, size=m)
    dst = rng.integers(0, n, size=m)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    # Repeat some edges, and (undirected) some reversed, which is the same edge.
    src = np.concatenate([src, src[: m // 3], dst[: m // 4]])
    dst = np.concatenate([dst, dst[: m // 3], src[: m // 4]])
    space = ax.sim.NetworkSpace(n, src, dst, directed=directed)
    expected = brute_neighbours(n, src, dst, directed)
    assert csr_lists(space) == expected
    assert space.indptr.dtype == np.int64
    assert space.indices.dtype == np.int64
    assert space.degree().tolist() == [len(a) for a in expected]
    pairs = zip(src.tolist(), dst.tolist(), strict=True)
    distinct = {(u, v) if directed else (min(u, v), max(u, v)) for u, v in pairs}
    assert space.n_edges == len(distinct)
    es, ed = space.edges()
    assert sorted(zip(es.tolist(), ed.tolist(), strict=True)) == sorted(distinct)
    if not directed:
        assert (es < ed).all()


def test_directed_edges_point_one_way_and_isolated_nodes_have_no_neighbours() -> None:
    space = ax.sim.NetworkSpace(4, [0, 0, 2], [1, 2, 0], directed=True)
    assert csr_lists(space) == [[1, 2], [], [0], []]
    undirected = ax.sim.NetworkSpace(4, [0, 0, 2], [1, 2, 0])
    assert csr_lists(undirected) == [[1, 2], [0], [0], []]
    assert undirected.n_edges == 2
    no_edges = ax.sim.NetworkSpace(3, np.array([], dtype=np.int64), [])
    assert no_edges.n_edges == 0
    assert no_edges.degree().tolist() == [0, 0, 0]
    assert repr(space) == "NetworkSpace(4 nodes, 3 edges, directed)"


def test_adjacency_arrays_are_read_only() -> None:
    space = ax.sim.NetworkSpace(3, [0, 1], [1, 2])
    with pytest.raises(ValueError, match="read-only"):
        space.indices[0] = 2
    with pytest.raises(ValueError, match="read-only"):
        space.indptr[0] = 1


@pytest.mark.parametrize(
    ("n_nodes", "src", "dst", "message"),
    [
        (0, [], [], "at least one node"),
        (-3, [], [], "at least one node, got n_nodes=-3"),
        (2.0, [0], [1], "n_nodes must be an integer"),
        (True, [0], [1], "n_nodes must be an integer"),
        (2**40, [0], [1], "at most"),
        (3, [0, -1], [1, 2], r"src\[1\] = -1 is not a node id \(nodes are 0..2; 1 bad"),
        (3, [0, 1], [1, 3], r"dst\[1\] = 3 is not a node id"),
        (3, np.array([0, 2**63 + 5], dtype=np.uint64), [1, 2], r"src\[1\] = 9223372036854775813"),
        (3, [0.0, 1.0], [1, 2], "integer node ids, got floats"),
        (3, [True, False], [1, 2], "integer node ids, got dtype bool"),
        (3, ["0", "1"], [1, 2], "integer node ids, got dtype <U1"),
        (3, [[0, 1]], [[1, 2]], r"1-D array of node ids, got shape \(1, 2\)"),
        (3, [0, 1, 2], [1, 2], "same length, got 3 and 2"),
        (3, [0, 1, 2], [1, 1, 0], r"edge 1 \(1 -> 1\) is a self-loop"),
    ],
)
def test_bad_graphs_are_refused_with_one_line(
    n_nodes: Any, src: Any, dst: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        ax.sim.NetworkSpace(n_nodes, src, dst)
    assert "\n" not in str(info.value)


def test_from_networkx_numbers_nodes_in_graph_order_and_keeps_labels() -> None:
    g = nx.Graph()
    g.add_nodes_from(["c", "a", "b", "d"])
    g.add_edges_from([("a", "b"), ("c", "a"), ("b", "a")])
    space = ax.sim.NetworkSpace.from_networkx(g)
    assert space.labels == ["c", "a", "b", "d"]
    assert csr_lists(space) == [[1], [0, 2], [1], []]
    assert ax.sim.NetworkSpace.from_networkx(nx.path_graph(3)).labels is None

    d = nx.DiGraph([(0, 1), (1, 2)])
    assert csr_lists(ax.sim.NetworkSpace.from_networkx(d)) == [[1], [2], []]
    multi = nx.MultiGraph([(0, 1), (0, 1), (1, 2)])
    assert ax.sim.NetworkSpace.from_networkx(multi).n_edges == 2

    g = nx.gnp_random_graph(60, 0.1, seed=4)
    space = ax.sim.NetworkSpace.from_networkx(g)
    assert csr_lists(space) == [sorted(g.neighbors(v)) for v in range(60)]


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        (nx.Graph(), "at least one node"),
        (nx.Graph([(0, 0), (0, 1)]), "self-loop"),
        ({0: [1]}, "expected a networkx graph, got dict"),
    ],
)
def test_from_networkx_refuses_bad_graphs(graph: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ax.sim.NetworkSpace.from_networkx(graph)


def test_members_and_occupancy_index_agents_by_node() -> None:
    space = ax.sim.NetworkSpace(5, [0, 1], [1, 2])
    nodes = np.array([3, 0, 3, 4, 0, 3])
    assert space.occupancy(nodes).tolist() == [2, 0, 0, 3, 1]
    start, order = space.members(nodes)
    by_node = [order[start[v] : start[v + 1]].tolist() for v in range(5)]
    assert by_node == [[1, 4], [], [], [0, 2, 5], [3]]
    with pytest.raises(ValueError, match=r"nodes\[1\] = 5 is not a node id"):
        space.members([0, 5])
    with pytest.raises(ValueError, match="integer node ids, got floats"):
        space.occupancy([0.5])
    with pytest.raises(ValueError, match="node 7 is not a node id"):
        space.neighbors(7)
    cells = space.random_nodes(np.random.default_rng(0), 1000)
    assert cells.min() >= 0
    assert cells.max() <= 4


# -- helpers inside a compiled kernel -------------------------------------------------


@numba.njit
def _walk(indptr: Any, indices: Any, start: int, steps: int, rng: Any) -> Any:
    path = np.empty(steps + 1, dtype=np.int64)
    path[0] = start
    for t in range(steps):
        path[t + 1] = ax.sim.random_neighbor(indptr, indices, path[t], rng)
        if path[t + 1] < 0:
            break
    return path


@numba.njit
def _degree_sum(indptr: Any, indices: Any) -> int:
    total = 0
    for v in range(len(indptr) - 1):
        total += len(ax.sim.node_neighbors(indptr, indices, v))
    return total


def test_kernel_helpers_walk_the_graph_from_numba() -> None:
    space = ax.sim.NetworkSpace.erdos_renyi(200, 0.03, np.random.default_rng(1))
    assert _degree_sum(space.indptr, space.indices) == 2 * space.n_edges
    start = int(np.argmax(space.degree()))
    a = _walk(space.indptr, space.indices, start, 500, np.random.default_rng(7))
    b = _walk(space.indptr, space.indices, start, 500, np.random.default_rng(7))
    assert np.array_equal(a, b)  # the kernel advances the generator it is given
    for u, v in zip(a[:-1].tolist(), a[1:].tolist(), strict=True):
        assert v in space.neighbors(u)
    # Every neighbour of a node is chosen about equally often.
    star = ax.sim.NetworkSpace(5, [0, 0, 0, 0], [1, 2, 3, 4])
    rng = np.random.default_rng(3)
    picks = [ax.sim.random_neighbor(star.indptr, star.indices, 0, rng) for _ in range(4000)]
    counts = np.bincount(picks, minlength=5)
    assert counts[0] == 0
    assert (np.abs(counts[1:] - 1000) < 5 * np.sqrt(750)).all()
    isolated = ax.sim.NetworkSpace(2, np.array([], dtype=np.int64), [])
    assert ax.sim.random_neighbor(isolated.indptr, isolated.indices, 1, rng) == -1


# -- Erdős-Rényi ------------------------------------------------------------------------


def test_erdos_renyi_is_deterministic_for_a_seed() -> None:
    a = ax.sim.NetworkSpace.erdos_renyi(5000, 3 / 5000, np.random.default_rng(11))
    b = ax.sim.NetworkSpace.erdos_renyi(5000, 3 / 5000, np.random.default_rng(11))
    c = ax.sim.NetworkSpace.erdos_renyi(5000, 3 / 5000, np.random.default_rng(12))
    assert np.array_equal(a.indptr, b.indptr)
    assert np.array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)


def test_erdos_renyi_includes_every_pair_with_probability_p() -> None:
    n, p, graphs = 12, 0.3, 3000
    rng = np.random.default_rng(5)
    pairs = n * (n - 1) // 2
    hits = np.zeros((n, n))
    edges = []
    for _ in range(graphs):
        s, d = ax.sim.NetworkSpace.erdos_renyi(n, p, rng).edges()
        hits[s, d] += 1
        edges.append(len(s))
    freq = hits[np.triu_indices(n, 1)] / graphs
    sd = np.sqrt(p * (1 - p) / graphs)
    assert (np.abs(freq - p) < 5 * sd).all()  # every pair, none favoured
    # The number of edges is Binomial(pairs, p): its mean and variance.
    assert abs(np.mean(edges) - pairs * p) < 5 * np.sqrt(pairs * p * (1 - p) / graphs)
    assert abs(np.var(edges) / (pairs * p * (1 - p)) - 1) < 0.15


def test_erdos_renyi_edge_cases_and_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    full = ax.sim.NetworkSpace.erdos_renyi(30, 1.0, rng)
    assert full.degree().tolist() == [29] * 30
    assert ax.sim.NetworkSpace.erdos_renyi(30, 1.5, rng).n_edges == 30 * 29 // 2
    assert ax.sim.NetworkSpace.erdos_renyi(30, 0.0, rng).n_edges == 0
    assert ax.sim.NetworkSpace.erdos_renyi(1, 0.5, rng).n_edges == 0
    for p, message in [(float("nan"), "finite"), ("0.1", "must be a number"), (True, "number")]:
        with pytest.raises(ValueError, match=message):
            ax.sim.NetworkSpace.erdos_renyi(10, p, rng)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one node"):
        ax.sim.NetworkSpace.erdos_renyi(0, 0.1, rng)


def test_erdos_renyi_at_a_million_nodes_has_the_mean_degree_asked_for() -> None:
    n = 1_000_000
    space = ax.sim.NetworkSpace.erdos_renyi(n, 3 / n, np.random.default_rng(2))
    mean = space.degree().mean()
    assert abs(mean - 3 * (n - 1) / n) < 5 * np.sqrt(6 / n)  # sd of the mean degree
    assert space.indptr[-1] == len(space.indices) == 2 * space.n_edges


def test_pair_unranking_is_exact_up_to_the_largest_graph() -> None:
    for v in (1, 2, 3, 1000, 10**6, 2**31 - 1):
        w = np.array([0, v // 2, v - 1], dtype=np.int64)
        vs = np.full(3, v, dtype=np.int64)
        got_v, got_w = _unrank_pairs(vs * (vs - 1) // 2 + w)
        assert got_v.tolist() == vs.tolist()
        assert got_w.tolist() == w.tolist()


def test_importing_ambidex_sim_does_not_load_numba_until_a_helper_is_asked_for() -> None:
    code = (
        "import sys, ambidex.sim as s\n"
        "before = 'numba' in sys.modules\n"
        "s.NetworkSpace(3, [0, 1], [1, 2])\n"
        "built = 'numba' in sys.modules\n"
        "s.random_neighbor\n"
        "print(before, built, 'numba' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["False", "False", "True"]
