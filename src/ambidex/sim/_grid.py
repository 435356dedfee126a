"""A rectangular grid of cells: torus or bounded, Moore or von Neumann neighbourhoods.

Cells are numbered ``x * height + y`` for ``0 <= x < width``, ``0 <= y < height``,
so an agent's position is one integer and "who is where" is an array. What
models need from the grid is tables, computed once and cached:

* ``neighbors(radius)``: for every cell, its neighbour cells (``-1`` padded)
  and how many there are, in the order a bounded grid clips them;
* ``members(cells)``: the agents of every cell at once (a CSR index), built by
  one stable sort rather than a Python loop;
* ``occupancy(cells)``: agents per cell.

Many agents per cell is the default reading (``members``, ``occupancy``). For
one agent per cell (Schelling), ``occupants(cells)`` gives the ``cell -> agent``
array (``-1`` where empty) a kernel keeps up to date as agents move, and
refuses a placement that puts two agents in one cell; ``empty_cells`` helps.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

__all__ = ["Grid"]

Neighborhood = Literal["moore", "von_neumann"]


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
        """The (dx, dy) of a neighbourhood of ``radius``, centre excluded, in row order."""
        if radius < 1:
            raise ValueError(f"radius must be >= 1, got {radius}")
        out = []
        for dx in range(-radius, radius + 1):
            for dy in range(-radius, radius + 1):
                if dx == 0 and dy == 0:
                    continue
                if self.neighborhood == "von_neumann" and abs(dx) + abs(dy) > radius:
                    continue
                out.append((dx, dy))
        return out

    def neighbors(self, radius: int = 1) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """``(table, counts)``: ``table[c, :counts[c]]`` are the neighbours of cell ``c``.

        ``table`` is ``int64`` of shape ``(size, k)`` padded with ``-1`` (a
        bounded grid's edge cells have fewer neighbours). Cached per radius.
        On a small torus a cell reached twice (radius wider than half the grid)
        is listed once.
        """
        cached = self._tables.get(radius)
        if cached is not None:
            return cached
        offs = np.array(self.offsets(radius), dtype=np.int64)
        xs, ys = np.divmod(np.arange(self.size, dtype=np.int64), self.height)
        nx = xs[:, None] + offs[None, :, 0]
        ny = ys[:, None] + offs[None, :, 1]
        if self.torus:
            nx %= self.width
            ny %= self.height
            valid = np.ones(nx.shape, dtype=bool)
        else:
            valid = (nx >= 0) & (nx < self.width) & (ny >= 0) & (ny < self.height)
        cells = np.where(valid, nx * self.height + ny, -1)
        if self.torus and (2 * radius + 1 > self.width or 2 * radius + 1 > self.height):
            cells = np.where(cells == np.arange(self.size)[:, None], -1, cells)
            for row in cells:  # rare: tiny torus; drop repeats
                seen: set[int] = set()
                for i, c in enumerate(row):
                    if c in seen:
                        row[i] = -1
                    seen.add(int(c))
        # Compact each row: valid entries first, in offset order.
        order = np.argsort(cells < 0, axis=1, kind="stable")
        table = np.take_along_axis(cells, order, axis=1)
        counts = (table >= 0).sum(axis=1).astype(np.int64)
        width = int(counts.max()) if len(counts) else 0
        result = (np.ascontiguousarray(table[:, :width]), counts)
        self._tables[radius] = result
        return result

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
