"""A network space: agents on the nodes of a graph, neighbours as a CSR adjacency.

Nodes are numbered ``0 .. n_nodes - 1``, so an agent's position is one integer
and "who is where" is an array, as on a ``Grid``. The graph is stored once, as
two plain ``int64`` arrays in compressed sparse row form:

* ``indptr`` (``n_nodes + 1`` entries) and ``indices``: the neighbours of node
  ``v`` are ``indices[indptr[v]:indptr[v + 1]]``, ascending. For a directed
  graph they are ``v``'s successors (the nodes its edges point to), as in
  networkx's ``G.neighbors``.

A compiled kernel takes the two arrays as arguments and walks them directly
(``for k in range(indptr[v], indptr[v + 1]): w = indices[k]``) or calls
``ax.sim.node_neighbors(indptr, indices, v)`` and
``ax.sim.random_neighbor(indptr, indices, v, rng)``, ``numba.njit`` functions
in ``_network_kernels`` (imported on first use, so ``import ambidex.sim`` does
not pay for numba).

What the space accepts, and what it refuses with one ``ValueError`` line:

* edges as two integer arrays ``src, dst`` (or a networkx graph, whose nodes
  are numbered in ``G.nodes`` order; networkx is imported only by
  ``from_networkx``);
* duplicate edges are merged (the space is a simple graph: a neighbour is
  listed once), and for an undirected graph ``(u, v)`` and ``(v, u)`` are the
  same edge;
* refused: a graph of no nodes, arrays of different lengths or not 1-D, float
  or boolean node ids, ids below 0 or not below ``n_nodes``, and self-loops (a
  node is not its own neighbour; drop them first, e.g.
  ``G.remove_edges_from(nx.selfloop_edges(G))``). A graph without edges is
  fine: every node is isolated.

The build is vectorised numpy: one sort of the ``2E`` (``E`` when directed)
``src * n + dst`` keys, which also merges duplicates, then a ``bincount`` for
``indptr``; no Python loop over edges. ``erdos_renyi`` draws Erdős-Rényi
``G(n, p)`` from the model's generator by geometric skips over the
``n (n - 1) / 2`` node pairs, so drawing costs ``O(n + E)``, not ``O(n²)`` (the
build that follows sorts, as above).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["NetworkSpace"]

IndexArray = npt.NDArray[np.int64]

# The largest graph whose ``src * n + dst`` edge keys fit in an int64.
_MAX_NODES = 2**31

# Geometric skips are drawn this many (times the expected number) at a time.
_CHUNK_MARGIN = 1.1


def _count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _n_nodes(value: object) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"n_nodes must be an integer, got {value!r}")
    n = int(value)
    if n < 1:
        raise ValueError(f"a network needs at least one node, got n_nodes={n}")
    if n > _MAX_NODES:  # src * n + dst must fit in an int64
        raise ValueError(f"n_nodes must be at most {_MAX_NODES}, got {n}")
    return n


def _generator(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng must be a numpy.random.Generator (the model's self.rng), got {type(rng).__name__}"
        )
    return rng


def _node_ids(values: Any, name: str, n_nodes: int) -> IndexArray:
    """``values`` as an ``int64`` array of node ids, or one ``ValueError`` saying why not."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of node ids, got shape {arr.shape}")
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)  # np.asarray([]) is float64: nothing to check
    if arr.dtype.kind == "f":
        raise ValueError(f"{name} must hold integer node ids, got floats ({arr.dtype})")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer node ids, got dtype {arr.dtype}")
    # Compare before casting: a huge uint64 would wrap to a negative int64.
    bad_mask = arr >= n_nodes if arr.dtype.kind == "u" else (arr < 0) | (arr >= n_nodes)
    bad = np.flatnonzero(bad_mask)
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"{name}[{i}] = {arr[i]} is not a node id (nodes are 0..{n_nodes - 1}; "
            f"{len(bad)} bad id(s) in all)"
        )
    out: IndexArray = arr.astype(np.int64, copy=False)
    return out


class NetworkSpace:
    """Agents on the nodes of a graph of ``n_nodes`` nodes with edges ``src[i] -> dst[i]``.

    Args:
        n_nodes: number of nodes (ids ``0 .. n_nodes - 1``; nodes without edges
            are isolated).
        src: integer array of edge sources.
        dst: integer array of edge targets, as long as ``src``.
        directed: ``False`` (default): every edge joins both ends, each is the
            other's neighbour. ``True``: ``dst`` is a neighbour of ``src`` only.

    Raises:
        ValueError: no nodes, arrays of different lengths, non-integer or
            out-of-range node ids, a self-loop (see the module docstring), or
            ``directed`` not a bool.
    """

    def __init__(self, n_nodes: int, src: Any, dst: Any, *, directed: bool = False) -> None:
        n = _n_nodes(n_nodes)
        if not isinstance(directed, (bool, np.bool_)):  # "no" would be truthy: directed
            raise ValueError(f"directed must be True or False, got {directed!r}")
        s = _node_ids(src, "src", n)
        d = _node_ids(dst, "dst", n)
        if len(s) != len(d):
            raise ValueError(f"src and dst must have the same length, got {len(s)} and {len(d)}")
        loops = np.flatnonzero(s == d)
        if len(loops):
            i = int(loops[0])
            raise ValueError(
                f"edge {i} ({s[i]} -> {d[i]}) is a self-loop: a node is not its own neighbour "
                f"({len(loops)} self-loop(s) in all; drop them first)"
            )
        self.n_nodes = n
        self.directed = bool(directed)
        m = len(s)
        # One int64 key per (row, column) entry; both directions when undirected.
        key = np.empty(m if directed else 2 * m, dtype=np.int64)
        np.multiply(s, n, out=key[:m])
        key[:m] += d
        if not directed:
            np.multiply(d, n, out=key[m:])
            key[m:] += s
        del s, d
        key.sort()  # by row, then column (np.unique's hash table is ~50x slower here)
        if len(key) > 1:
            fresh = np.empty(len(key), dtype=bool)
            fresh[0] = True
            np.not_equal(key[1:], key[:-1], out=fresh[1:])
            if not fresh.all():  # duplicate edges: keep one of each
                key = key[fresh]
            del fresh
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(key // n, minlength=n), out=indptr[1:])
        key %= n  # in place: the sorted keys become the column indices
        self.indptr: IndexArray = indptr
        self.indices: IndexArray = key
        self.indptr.flags.writeable = False
        self.indices.flags.writeable = False
        self.labels: list[Any] | None = None

    # -- other ways to build one ----------------------------------------------

    @classmethod
    def from_networkx(cls, graph: Any) -> NetworkSpace:
        """A space with the nodes and edges of a networkx graph (directed if it is).

        Nodes are numbered in ``graph.nodes`` order (Mesa's ``Network`` order);
        ``space.labels[i]`` is node ``i``'s networkx label. A multigraph's
        parallel edges are merged.

        Raises:
            ValueError: not a networkx graph, no nodes, or a self-loop.
        """
        try:
            import networkx as nx
        except ImportError as exc:  # pragma: no cover - only a graph from networkx gets here
            raise ValueError("from_networkx needs networkx: pip install 'networkx>=3'") from exc
        if not isinstance(graph, nx.Graph):
            raise ValueError(f"expected a networkx graph, got {type(graph).__name__}")
        labels = list(graph.nodes)
        if not labels:
            raise ValueError("a network needs at least one node, got an empty networkx graph")
        number = {node: i for i, node in enumerate(labels)}
        m = graph.number_of_edges()
        # networkx keeps edges in Python dicts: reading them is one pass in Python.
        src = np.fromiter((number[u] for u, _ in graph.edges()), dtype=np.int64, count=m)
        dst = np.fromiter((number[v] for _, v in graph.edges()), dtype=np.int64, count=m)
        space = cls(len(labels), src, dst, directed=graph.is_directed())
        if labels != list(range(len(labels))):
            space.labels = labels
        return space

    @classmethod
    def erdos_renyi(cls, n_nodes: int, p: float, rng: np.random.Generator) -> NetworkSpace:
        """Erdős-Rényi ``G(n, p)``: each node pair is an edge with probability ``p``.

        The ``n (n - 1) / 2`` pairs are independent; the graph is undirected,
        without self-loops.

        Drawn from ``rng`` by geometric skips between successive edges (the
        distribution of networkx's ``fast_gnp_random_graph`` and
        ``erdos_renyi_graph``, not their draws), in ``O(n + E)`` time and memory:
        the same generator state gives the same graph. ``p >= 1`` gives the
        complete graph, ``p <= 0`` no edges (networkx does the same).

        Raises:
            ValueError: ``n_nodes`` below 1, ``p`` not a finite number, or ``rng``
                not a ``numpy.random.Generator``.
        """
        n = _n_nodes(n_nodes)
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.number)):
            raise ValueError(f"p must be a number, got {p!r}")
        if not math.isfinite(float(p)):
            raise ValueError(f"p must be a finite number, got {p!r}")
        src, dst = _gnp_edges(n, float(p), _generator(rng))
        return cls(n, src, dst)

    # -- the graph -------------------------------------------------------------

    def __repr__(self) -> str:
        kind = "directed" if self.directed else "undirected"
        return f"NetworkSpace({self.n_nodes} nodes, {self.n_edges} edges, {kind})"

    @property
    def size(self) -> int:
        """Number of nodes (as ``Grid.size`` is the number of cells)."""
        return self.n_nodes

    @property
    def n_edges(self) -> int:
        """Number of distinct edges (an undirected edge counts once)."""
        entries = len(self.indices)
        return entries if self.directed else entries // 2

    def degree(self) -> IndexArray:
        """Every node's number of neighbours (out-degree when directed)."""
        deg: IndexArray = np.diff(self.indptr)
        return deg

    def neighbors(self, node: int) -> IndexArray:
        """The neighbours of one node, ascending (a read-only view)."""
        v = _count(node, "node", 0)
        if v >= self.n_nodes:
            raise ValueError(f"node {v} is not a node id (nodes are 0..{self.n_nodes - 1})")
        return self.indices[self.indptr[v] : self.indptr[v + 1]]

    def edges(self) -> tuple[IndexArray, IndexArray]:
        """``(src, dst)`` of every distinct edge, sorted (``src < dst`` when undirected)."""
        rows = np.repeat(np.arange(self.n_nodes, dtype=np.int64), self.degree())
        if self.directed:
            return rows, self.indices.copy()
        keep = rows < self.indices
        return rows[keep], self.indices[keep]

    # -- agents on nodes ----------------------------------------------------------

    def random_nodes(self, rng: np.random.Generator, n: int) -> IndexArray:
        """``n`` nodes drawn uniformly with replacement."""
        nodes: IndexArray = _generator(rng).integers(
            0, self.n_nodes, size=_count(n, "n", 0), dtype=np.int64
        )
        return nodes

    def occupancy(self, nodes: Any) -> IndexArray:
        """How many agents are on each node, given every agent's node.

        Raises:
            ValueError: a node id that is not an integer in ``0 .. n_nodes - 1``.
        """
        counts: IndexArray = np.bincount(
            _node_ids(nodes, "nodes", self.n_nodes), minlength=self.n_nodes
        )
        return counts

    def members(self, nodes: Any) -> tuple[IndexArray, IndexArray]:
        """``(start, order)``: the agents on node ``v`` are ``order[start[v]:start[v + 1]]``.

        Agents of a node appear in row order (a stable sort), so the index is
        deterministic; a kernel can walk it like ``indptr``/``indices``.

        Raises:
            ValueError: a node id that is not an integer in ``0 .. n_nodes - 1``.
        """
        ids = _node_ids(nodes, "nodes", self.n_nodes)
        order: IndexArray = np.argsort(ids, kind="stable").astype(np.int64, copy=False)
        start = np.zeros(self.n_nodes + 1, dtype=np.int64)
        np.cumsum(np.bincount(ids, minlength=self.n_nodes), out=start[1:])
        return start, order


def _gnp_edges(n: int, p: float, rng: np.random.Generator) -> tuple[IndexArray, IndexArray]:
    """The edges ``(v, w)``, ``w < v``, of a ``G(n, p)`` graph, ranked ``v (v - 1) / 2 + w``."""
    pairs = n * (n - 1) // 2
    if p <= 0 or pairs == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if p >= 1:
        ranks = np.arange(pairs, dtype=np.int64)
    else:
        # The gap to the next edge among the ranked pairs is geometric(p).
        chunks = []
        last = -1
        expected = pairs * p
        size = int(expected * _CHUNK_MARGIN + 10 * math.sqrt(expected) + 16)
        while True:
            gaps = rng.geometric(p, size=size)
            # A gap past the last pair ends the graph: cap it there, so a tiny p's
            # huge gaps (numpy saturates them at 2**63 - 1) cannot overflow the sum
            # (each capped gap is below 2**62; the sum up to the first rank past
            # the end stays below 2**63, and later ranks are dropped).
            np.minimum(gaps, pairs - last, out=gaps)
            ranks = last + np.cumsum(gaps)
            over = ranks >= pairs
            past = int(np.argmax(over)) if over.any() else size
            chunks.append(ranks[:past])
            if past < size:
                break
            last = int(ranks[-1])
            size = max(16, size // 4)
        ranks = np.concatenate(chunks)
    return _unrank_pairs(ranks)


def _unrank_pairs(ranks: IndexArray) -> tuple[IndexArray, IndexArray]:
    """The pairs ``(v, w)``, ``0 <= w < v``, of ranks ``v (v - 1) / 2 + w``."""
    # v is the largest integer with v (v - 1) / 2 <= rank; the float square root is
    # within one of it for ranks below 2**62, so one correction each way makes it exact.
    v = np.floor((1.0 + np.sqrt(1.0 + 8.0 * ranks.astype(np.float64))) / 2.0).astype(np.int64)
    v -= v * (v - 1) // 2 > ranks
    v += (v + 1) * v // 2 <= ranks
    w: IndexArray = ranks - v * (v - 1) // 2
    return v, w
