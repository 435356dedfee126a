"""A rectangular grid of cells: torus or bounded, Moore or von Neumann neighbourhoods.

Cells are numbered ``x * height + y`` for ``0 <= x < width``, ``0 <= y < height``,
so an agent's position is one integer and "who is where" is an array. What
models need from the grid is tables, computed once and cached:

* ``neighbors(radius)``: for every cell, its neighbour cells (``-1`` padded)
  and how many there are, in the order a bounded grid clips them;
* ``members(cells)``: the agents of every cell at once (a CSR index), built by
  one stable sort rather than a Python loop;
* ``occupancy(cells)``: agents per cell.

Many agents per cell is the default reading (``members``, ``occupancy``; and
``cell_lists`` for a kernel that moves agents one at a time, with the compiled
helpers of ``ambidex.sim.grid_kernels``). For
one agent per cell (Schelling), ``occupants(cells)`` gives the ``cell -> agent``
array (``-1`` where empty) a kernel keeps up to date as agents move, and
refuses a placement that puts two agents in one cell; ``empty_cells`` helps.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np

__all__ = ["CellLists", "Grid"]

Neighborhood = Literal["moore", "von_neumann"]

# Entries of the neighbour table built per block: bounds the temporaries of a build
# (a few int64 arrays of this many entries) whatever the grid's size.
_BLOCK_ENTRIES = 1 << 18


class CellLists(NamedTuple):
    """Who is in which cell, as linked lists over agent rows (see ``Grid.cell_lists``)."""

    head: np.ndarray[Any, Any]
    """``head[c]``: the first agent of cell ``c``, ``-1`` if it is empty."""
    nxt: np.ndarray[Any, Any]
    """``nxt[a]``: the agent after ``a`` in its cell, ``-1`` at the end (plus a scratch slot)."""
    prv: np.ndarray[Any, Any]
    """``prv[a]``: the agent before ``a`` in its cell, ``-1`` at the head (plus a scratch slot)."""
    counts: np.ndarray[Any, Any]
    """``counts[c]``: how many agents cell ``c`` holds."""


class Grid:
    """A ``width`` x ``height`` grid.

    Args:
        width: cells along x.
        height: cells along y.
        torus: edges wrap around (a cell at the edge has as many neighbours as any other).
        neighborhood: ``"moore"`` (the 8 surrounding cells at radius 1) or
            ``"von_neumann"`` (the 4 orthogonal ones).
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        torus: bool = False,
        neighborhood: Neighborhood = "moore",
    ) -> None:
        if width < 1 or height < 1:
            raise ValueError(f"grid must be at least 1x1, got {width}x{height}")
        if neighborhood not in ("moore", "von_neumann"):
            raise ValueError(f"neighborhood must be 'moore' or 'von_neumann', got {neighborhood!r}")
        self.width = int(width)
        self.height = int(height)
        self.torus = bool(torus)
        self.neighborhood: Neighborhood = neighborhood
        self._tables: dict[int, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = {}

    def __repr__(self) -> str:
        kind = "torus" if self.torus else "bounded"
        return f"Grid({self.width}x{self.height}, {kind}, {self.neighborhood})"

    @property
    def size(self) -> int:
        """Number of cells."""
        return self.width * self.height

    def cell(self, x: Any, y: Any) -> Any:
        """Cell number(s) of coordinates (scalars or arrays)."""
        return np.asarray(x) * self.height + np.asarray(y)

    def xy(self, cell: Any) -> tuple[Any, Any]:
        """Coordinates ``(x, y)`` of cell number(s)."""
        c = np.asarray(cell)
        return c // self.height, c % self.height

    def random_cells(self, rng: np.random.Generator, n: int) -> np.ndarray[Any, Any]:
        """``n`` cells drawn uniformly with replacement."""
        cells: np.ndarray[Any, Any] = rng.integers(0, self.size, size=n, dtype=np.int64)
        return cells

    def offsets(self, radius: int = 1) -> list[tuple[int, int]]:
        """The (dx, dy) of a neighbourhood of ``radius``, centre excluded, in row order.

        Raises:
            ValueError: ``radius`` is not an integer, is below 1, or reaches past
                every cell of the grid (``max(width, height)`` for Moore,
                ``width + height`` for von Neumann): a wider one would only build
                ``(2 radius + 1)**2`` offsets that reach no further cell.
        """
        if isinstance(radius, (bool, np.bool_)) or not isinstance(radius, (int, np.integer)):
            raise ValueError(f"radius must be an integer, got {radius!r}")
        if radius < 1:
            raise ValueError(f"radius must be >= 1, got {radius}")
        widest = (
            self.width + self.height
            if self.neighborhood == "von_neumann"
            else max(self.width, self.height)
        )
        if radius > widest:  # 10**6 on a 1x1 grid asked for 4e12 offsets: out of memory
            raise ValueError(
                f"radius {radius} reaches past the {self.width}x{self.height} grid: at "
                f"radius {widest} every cell is a neighbour already"
            )
        out = []
        for dx in range(-radius, radius + 1):
            for dy in range(-radius, radius + 1):
                if dx == 0 and dy == 0:
                    continue
                if self.neighborhood == "von_neumann" and abs(dx) + abs(dy) > radius:
                    continue
                out.append((dx, dy))
        return out

    def offsets_array(self, radius: int = 1) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """``(dx, dy)``: ``offsets(radius)`` as two ``int64`` arrays, for compiled kernels."""
        offs = np.array(self.offsets(radius), dtype=np.int64).reshape(-1, 2)
        return np.ascontiguousarray(offs[:, 0]), np.ascontiguousarray(offs[:, 1])

    def neighbors(self, radius: int = 1) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """``(table, counts)``: ``table[c, :counts[c]]`` are the neighbours of cell ``c``.

        ``table`` has shape ``(size, k)``, padded with ``-1`` (a bounded grid's edge
        cells have fewer neighbours), in offset order; ``table`` and ``counts`` are
        ``int32`` (``int64`` past 2**31 cells). Cached per radius. On a small torus a
        cell reached twice (radius wider than half the grid) is listed once. Built
        in blocks of cells into the preallocated table, so building it needs little
        more memory than the table itself.
        """
        cached = self._tables.get(radius)
        if cached is not None:
            return cached
        dx, dy = self.offsets_array(radius)
        k = len(dx)
        dtype = np.int32 if self.size < 2**31 - 1 else np.int64
        table = np.empty((self.size, k), dtype=dtype)
        counts = np.empty(self.size, dtype=dtype)
        tiny = self.torus and (2 * radius + 1 > self.width or 2 * radius + 1 > self.height)
        block = max(1, _BLOCK_ENTRIES // max(k, 1))
        for lo in range(0, self.size, block):
            cells = np.arange(lo, min(lo + block, self.size), dtype=np.int64)
            xs, ys = np.divmod(cells, self.height)
            nx = xs[:, None] + dx[None, :]
            ny = ys[:, None] + dy[None, :]
            if self.torus:
                nx %= self.width
                ny %= self.height
                valid = np.ones(nx.shape, dtype=bool)
            else:
                valid = (nx >= 0) & (nx < self.width) & (ny >= 0) & (ny < self.height)
            cand = nx * self.height + ny
            if tiny:  # rare: a torus narrower than the neighbourhood; drop self and repeats
                valid &= cand != cells[:, None]
                for j in range(1, k):
                    valid[:, j] &= ~(cand[:, :j] == cand[:, j : j + 1]).any(axis=1)
            cand[~valid] = -1
            # Compact the rows of cells that lost neighbours (at an edge): valid
            # entries first, in offset order. Other rows are complete as they are.
            short = np.flatnonzero(~valid.all(axis=1))
            if len(short):
                order = np.argsort(~valid[short], axis=1, kind="stable")
                cand[short] = np.take_along_axis(cand[short], order, axis=1)
            table[lo : lo + len(cells)] = cand
            counts[lo : lo + len(cells)] = valid.sum(axis=1)
        width = int(counts.max()) if len(counts) else 0
        if width < k:  # every cell has fewer neighbours (a grid 1 or 2 cells wide)
            table = np.ascontiguousarray(table[:, :width])
        result = (table, counts)
        self._tables[radius] = result
        return result

    def cell_lists(self, cells: Any, capacity: int | None = None) -> CellLists:
        """The agents of every cell as doubly linked lists a kernel keeps up to date.

        ``cells[a]`` is agent row ``a``'s cell. A cell's list runs from its highest
        row to its lowest (the order ``grid_kernels.lists_build`` gives, so a kernel
        may rebuild the lists itself). ``capacity`` (default: the number of agents)
        sizes ``nxt``/``prv`` for agents a kernel adds later; they have one slot more,
        a scratch slot the branch-free updates write through index ``-1``. Moves,
        births and deaths are O(1) with ``ambidex.sim.grid_kernels.lists_move`` /
        ``lists_insert`` / ``lists_remove``.

        Raises:
            ValueError: cells that are not a 1-D array of integers, a cell outside the
                grid, or a capacity below the agent count.
        """
        given = np.asarray(cells)
        if given.ndim != 1 or (given.size and given.dtype.kind not in "iu"):
            raise ValueError(
                f"cells must be a 1-D array of cell numbers (integers), "
                f"got {given.dtype} of shape {given.shape}"
            )
        cells = given.astype(np.int64, copy=False)
        n = len(cells)
        cap = n if capacity is None else int(capacity)
        if cap < n:
            raise ValueError(f"capacity {cap} is below the {n} agents given")
        if n and (int(cells.min()) < 0 or int(cells.max()) >= self.size):
            bad = int(cells[(cells < 0) | (cells >= self.size)][0])
            raise ValueError(f"cell {bad} is outside the {self.width}x{self.height} grid")
        head = np.full(self.size, -1, dtype=np.int64)
        nxt = np.full(cap + 1, -1, dtype=np.int64)  # + the scratch slot
        prv = np.full(cap + 1, -1, dtype=np.int64)
        order = np.argsort(cells, kind="stable")  # by cell, rows ascending within a cell
        sorted_cells = cells[order]
        same = sorted_cells[1:] == sorted_cells[:-1]
        nxt[order[1:]] = np.where(same, order[:-1], -1)  # the next lower row of the cell
        prv[order[:-1]] = np.where(same, order[1:], -1)  # the next higher row
        last = np.ones(n, dtype=bool)
        last[:-1] = ~same
        head[sorted_cells[last]] = order[last]
        count = np.bincount(cells, minlength=self.size).astype(np.int64)
        return CellLists(head, nxt, prv, count)

    def occupancy(self, cells: Any) -> np.ndarray[Any, Any]:
        """How many agents are in each cell, given every agent's cell."""
        counts: np.ndarray[Any, Any] = np.bincount(
            np.asarray(cells, dtype=np.int64), minlength=self.size
        )
        return counts

    def members(self, cells: Any) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """``(start, order)``: the agents in cell ``c`` are ``order[start[c]:start[c + 1]]``.

        Agents of a cell appear in row order (a stable sort), so the index is
        deterministic.
        """
        cells = np.asarray(cells, dtype=np.int64)
        order = np.argsort(cells, kind="stable")
        start = np.zeros(self.size + 1, dtype=np.int64)
        np.cumsum(np.bincount(cells, minlength=self.size), out=start[1:])
        return start, order

    def occupants(self, cells: Any) -> np.ndarray[Any, Any]:
        """For one agent per cell: ``occupant[c]`` is the agent in cell ``c``, or ``-1``.

        Raises:
            ValueError: two agents share a cell (naming the first such cell).
        """
        cells = np.asarray(cells, dtype=np.int64)
        counts = self.occupancy(cells)
        crowded = np.flatnonzero(counts > 1)
        if len(crowded):
            c = int(crowded[0])
            x, y = divmod(c, self.height)
            raise ValueError(
                f"one agent per cell, but cell {c} ({x}, {y}) holds {counts[c]} agents "
                f"({len(crowded)} crowded cell(s) in all)"
            )
        occupant = np.full(self.size, -1, dtype=np.int64)
        occupant[cells] = np.arange(len(cells), dtype=np.int64)
        return occupant

    def empty_cells(self, occupied: Any) -> np.ndarray[Any, Any]:
        """Cells no agent is in, ascending, given every agent's cell."""
        mask = np.ones(self.size, dtype=bool)
        mask[np.asarray(occupied, dtype=np.int64)] = False
        empty: np.ndarray[Any, Any] = np.flatnonzero(mask)
        return empty
