"""A continuous 2D space: float positions, torus or bounded, neighbours by cell lists.

Positions are ``float64`` arrays of shape ``(n, 2)`` (``x`` then ``y``), kept
by the model (often as two ``Agents`` columns stacked, or one ``(n, 2)``
array). The space answers the questions a model asks of them, all at once and
without Python loops over points:

* ``wrap(positions)``: back into the space (wrapped on a torus, clipped when
  bounded);
* ``displacement(a, b)`` / ``distance(a, b)``: the shortest vector and its
  length (through the edges on a torus);
* ``pairs(positions, radius)``: every unordered pair ``i < j`` within
  ``radius``;
* ``neighbors(positions, radius)``: every point's neighbours as a CSR index;
* ``within(positions, centers, radius)``: the points near each of some centres;
* ``nearest(positions)``: every point's nearest other point and its distance;
* ``cells(positions, radius)``: cell lists over the positions that numba kernels
  query and update as agents move (``ambidex.sim.cells``), and ``geometry``, the
  three scalars the kernels' distance functions take.

"Within radius" means ``distance(a, b) <= radius`` exactly as ``distance``
computes it, so a brute-force check over all pairs gives the same answer.
Queries bin the points into square-ish cells at least ``radius`` wide, so only
the 3 x 3 block of cells around a point is searched; ``pairs`` and ``neighbors``
do it in compiled code (numba, imported on the first such call), ``within`` with
numpy. Results come sorted (by
first index, then second), so they are the same for the same input on every
call.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ambidex.sim.cells import Cells

__all__ = ["ContinuousSpace", "Geometry"]

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.int64]

# Cells are this much (relative) wider than the radius, so rounding in the
# binning can never separate two points that are within the radius.
_MARGIN = 1e-6

# The largest width or height: dx * dx + dy * dy stays finite (~1.3e154 overflows).
_MAX_EXTENT = 1e150


class Geometry(NamedTuple):
    """A space's extent and edges, all a distance needs: plain scalars, free to pass.

    ``ContinuousSpace.geometry`` and ``Cells.geometry`` hold one; the functions
    ``wrap``, ``displacement`` and ``distance`` of ``ambidex.sim.cells`` take it.

    Attributes:
        width: extent along x.
        height: extent along y.
        torus: edges wrap around.
    """

    width: float
    height: float
    torus: bool


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _radius(radius: float) -> float:
    if not _is_real(radius):
        raise ValueError(f"radius must be a number, got {radius!r}")
    r = float(radius)
    if not math.isfinite(r) or r <= 0:
        raise ValueError(f"radius must be a positive finite number, got {radius!r}")
    return r


def _empty_index() -> IndexArray:
    return np.zeros(0, dtype=np.int64)


def _csr_start(rows: IndexArray, n_rows: int) -> IndexArray:
    start = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=start[1:])
    return start


class ContinuousSpace:
    """A ``width`` x ``height`` rectangle of real coordinates.

    Args:
        width: extent along x (positions ``0 <= x < width`` on a torus,
            ``0 <= x <= width`` when bounded).
        height: extent along y.
        torus: edges wrap around (distances go through them). When bounded,
            distances are plain Euclidean ones and ``wrap`` clips into the space.

    Raises:
        ValueError: a width or height that is not a positive finite number, or
            one past 1e150 (squared distances would overflow).
    """

    def __init__(self, width: float, height: float, *, torus: bool = True) -> None:
        for name, value in (("width", width), ("height", height)):
            if not _is_real(value) or not math.isfinite(float(value)) or float(value) <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
            if float(value) > _MAX_EXTENT:
                raise ValueError(
                    f"{name} must be at most {_MAX_EXTENT:g} (distances square the "
                    f"coordinates, which overflow to infinity past ~1e154), got {value!r}"
                )
        self.width = float(width)
        self.height = float(height)
        self.torus = bool(torus)
        self._extent: FloatArray = np.array([self.width, self.height], dtype=np.float64)
        # neighbors()'s last answer: (radius, positions copy, start, index).
        self._last: tuple[float, FloatArray, IndexArray, IndexArray] | None = None

    @property
    def geometry(self) -> Geometry:
        """Width, height and torus flag as a :class:`Geometry`, for numba kernels."""
        return Geometry(self.width, self.height, self.torus)

    def __repr__(self) -> str:
        kind = "torus" if self.torus else "bounded"
        return f"ContinuousSpace({self.width:g}x{self.height:g}, {kind})"

    # -- positions -----------------------------------------------------------

    def random_positions(self, rng: np.random.Generator, n: int) -> FloatArray:
        """``n`` positions drawn uniformly over the space, shape ``(n, 2)``."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        out: FloatArray = rng.random((n, 2)) * self._extent
        return out

    def wrap(self, positions: npt.ArrayLike) -> FloatArray:
        """Positions moved into the space: modulo the size on a torus, clipped when bounded.

        Takes any array whose last axis has length 2 and returns a new one.

        Raises:
            ValueError: the last axis is not of length 2, or a coordinate is not finite.
        """
        p = _coords(positions, "positions")
        if self.torus:
            out: FloatArray = np.mod(p, self._extent)
            # np.mod of a tiny negative number rounds up to the size itself.
            return np.where(out >= self._extent, 0.0, out)
        clipped: FloatArray = np.clip(p, 0.0, self._extent)
        return clipped

    def displacement(self, a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
        """The shortest vector from ``a`` to ``b`` (through the edges on a torus).

        ``a`` and ``b`` broadcast against each other; their last axis has length 2.
        On a torus each component lies in ``[-size / 2, size / 2]``.

        Raises:
            ValueError: the last axis is not of length 2, or a coordinate is not finite.
        """
        return self._displacement(_coords(a, "a"), _coords(b, "b"))

    def distance(self, a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
        """The length of ``displacement(a, b)``: shape of the broadcast without the last axis.

        Raises:
            ValueError: the last axis is not of length 2, or a coordinate is not finite.
        """
        return self._distance(_coords(a, "a"), _coords(b, "b"))

    # -- neighbour queries ---------------------------------------------------

    def pairs(self, positions: npt.ArrayLike, radius: float) -> tuple[IndexArray, IndexArray]:
        """All unordered pairs of points within ``radius`` of each other.

        Returns ``(i, j)``, two ``int64`` arrays with ``i < j`` for every pair,
        sorted by ``i`` then ``j``. Each pair appears once, even when the radius
        is wider than half the torus.

        Raises:
            ValueError: positions not of shape ``(n, 2)`` or not finite; a radius
                that is not a positive finite number.
        """
        return self._pairs(_points(positions, "positions"), _radius(radius))

    def neighbors(self, positions: npt.ArrayLike, radius: float) -> tuple[IndexArray, IndexArray]:
        """Every point's neighbours within ``radius``, as a CSR index.

        Returns ``(start, index)``: the neighbours of point ``k`` are
        ``index[start[k]:start[k + 1]]``, ascending, ``k`` itself excluded
        (other points at the same position are included). ``start`` has
        ``n + 1`` entries.

        Computed in compiled code (numba) from cell lists built for the call.
        The space remembers its last answer: asked again with the same radius and
        positions equal to the last ones (compared value by value, whatever the
        array object), it returns the same two arrays without rebuilding, read-only
        so that the remembered answer cannot be changed by the caller.

        Raises:
            ValueError: positions not of shape ``(n, 2)`` or not finite; a radius
                that is not a positive finite number.
        """
        p = _points(positions, "positions")
        r = _radius(radius)
        last = self._last
        if last is not None and last[0] == r and np.array_equal(last[1], p):
            return last[2], last[3]
        start, index = self._compiled_neighbors(p, r)
        start.flags.writeable = False
        index.flags.writeable = False
        self._last = (r, p.copy(), start, index)
        return start, index

    def nearest(self, positions: npt.ArrayLike) -> tuple[IndexArray, FloatArray]:
        """Every point's nearest other point and the distance to it.

        Returns ``(index, distance)``, one entry a point: the row of the nearest
        other point (the lowest row among equally near ones; ``-1`` when there is
        no other point) and ``distance`` to it as ``distance`` computes it (``inf``
        for ``-1``). Computed in compiled code over cell lists of about two points
        a cell (numba, imported on the first call).

        Raises:
            ValueError: positions not of shape ``(n, 2)`` or not finite.
        """
        from ambidex.sim import cells

        p = np.ascontiguousarray(_points(positions, "positions"))
        n = len(p)
        if n == 0:
            return _empty_index(), np.zeros(0, dtype=np.float64)
        spacing = math.sqrt(2.0 * self.width * self.height / n)  # ~2 points a cell
        mx, my = cells.grid_shape(self.width, self.height, spacing, n)
        return cells.nearest_all(p, mx, my, self.width, self.height, self.torus)

    def cells(self, positions: FloatArray, radius: float) -> Cells:
        """Cell lists over ``positions`` for numba kernels (see ``ambidex.sim.cells``).

        The returned :class:`~ambidex.sim.cells.Cells` holds ``positions`` itself,
        not a copy: ``cells.move`` writes new positions into it and keeps every
        point's cell up to date in O(1), so a sequential kernel queries neighbours
        (``cells.near``, ``cells.neighbors_of``) of the positions as they are now.
        Queries may use any radius up to ``radius``. Imports numba.

        Raises:
            ValueError: positions that are not a writable C-contiguous float64
                array of shape ``(n, 2)``, or a point that is not finite or lies
                outside the space (``wrap`` them first); a radius that is not a
                positive finite number.
        """
        from ambidex.sim import cells

        if not isinstance(positions, np.ndarray) or positions.dtype != np.float64:
            raise ValueError(
                "positions must be a float64 numpy array (the cells write moves into it), "
                f"got {type(positions).__name__}"
                f"{f' of {positions.dtype}' if isinstance(positions, np.ndarray) else ''}"
            )
        if not (positions.flags.c_contiguous and positions.flags.writeable):
            raise ValueError(
                "positions must be a writable C-contiguous array (np.ascontiguousarray)"
            )
        p = _points(positions, "positions")
        r = _radius(radius)
        top = self._extent
        outside = (p < 0.0) | ((p >= top) if self.torus else (p > top))
        if outside.any():
            row = int(np.flatnonzero(outside.any(axis=1))[0])
            raise ValueError(
                f"positions row {row} {tuple(p[row].tolist())} lies outside the "
                f"{self.width:g}x{self.height:g} space; wrap the positions first (space.wrap)"
            )
        n = len(p)
        mx, my = cells.grid_shape(self.width, self.height, r, n)
        state = cells.Cells(
            pos=positions,
            head=np.full(mx * my, -1, dtype=np.int64),
            nxt=np.full(n, -1, dtype=np.int64),
            prv=np.full(n, -1, dtype=np.int64),
            cell=np.zeros(n, dtype=np.int64),
            mx=mx,
            my=my,
            radius=r,
            geometry=self.geometry,
        )
        cells.link_all(state)
        return state

    def within(
        self, positions: npt.ArrayLike, centers: npt.ArrayLike, radius: float
    ) -> tuple[IndexArray, IndexArray]:
        """The points within ``radius`` of each centre, as a CSR index.

        Returns ``(start, index)``: the points near centre ``c`` are
        ``index[start[c]:start[c + 1]]`` (row numbers into ``positions``,
        ascending). ``start`` has ``len(centers) + 1`` entries.

        Raises:
            ValueError: positions or centres not of shape ``(n, 2)`` or not
                finite; a radius that is not a positive finite number.
        """
        p = _points(positions, "positions")
        c = _points(centers, "centers")
        r = _radius(radius)
        n, m = len(p), len(c)
        if n == 0 or m == 0:
            return np.zeros(m + 1, dtype=np.int64), _empty_index()
        bins = _Bins(self, p, r)
        qcx, qcy = bins.cells_of(c)
        keys = [_empty_index()]
        for qi, pj in bins.candidates(qcx, qcy):
            near = self._distance(c[qi], p[pj]) <= r
            keys.append(qi[near] * n + pj[near])
        key = np.sort(np.concatenate(keys))
        index: IndexArray = key % n
        return _csr_start(key // n, m), index

    # -- internals -----------------------------------------------------------

    def _pairs(self, p: FloatArray, r: float) -> tuple[IndexArray, IndexArray]:
        start, index = self._compiled_neighbors(p, r)
        rows = np.repeat(np.arange(len(p), dtype=np.int64), np.diff(start))
        upper = index > rows
        i: IndexArray = rows[upper]
        j: IndexArray = index[upper]
        return i, j

    def _compiled_neighbors(self, p: FloatArray, r: float) -> tuple[IndexArray, IndexArray]:
        from ambidex.sim import cells  # numba: imported on first query, not with ambidex.sim

        n = len(p)
        if n == 0:
            return np.zeros(1, dtype=np.int64), _empty_index()
        mx, my = cells.grid_shape(self.width, self.height, r, n)
        pts = np.ascontiguousarray(p)
        return cells.csr_neighbors(pts, mx, my, self.width, self.height, self.torus, r)

    def _displacement(self, a: FloatArray, b: FloatArray) -> FloatArray:
        d: FloatArray = b - a
        if self.torus:
            d = d - self._extent * np.round(d / self._extent)
        return d

    def _distance(self, a: FloatArray, b: FloatArray) -> FloatArray:
        d = self._displacement(a, b)
        dist: FloatArray = np.sqrt(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1])
        return dist


def _coords(values: npt.ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] != 2:
        raise ValueError(f"{name} must have a last axis of length 2 (x, y), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (found NaN or infinity)")
    return arr


def _points(values: npt.ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2), got shape {arr.shape}")
    return _coords(arr, name)


class _Bins:
    """Points sorted into a ``mx`` x ``my`` grid of cells at least ``radius`` wide."""

    def __init__(self, space: ContinuousSpace, points: FloatArray, radius: float) -> None:
        self.torus = space.torus
        self.space = space
        cell = radius * (1.0 + _MARGIN)
        limit = max(64, 4 * len(points))  # fewer, larger cells: still correct, less memory
        # Capped before flooring: a tiny radius makes width / cell infinite.
        mx = max(1, math.floor(min(space.width / cell, limit)))
        my = max(1, math.floor(min(space.height / cell, limit)))
        if mx * my > limit:
            scale = math.sqrt(limit / (mx * my))
            mx, my = max(1, math.floor(mx * scale)), max(1, math.floor(my * scale))
        self.mx, self.my = mx, my
        self.cx, self.cy = self.cells_of(points)
        cells = self.cx * my + self.cy
        self.order: IndexArray = np.argsort(cells, kind="stable").astype(np.int64)
        self.start = _csr_start(cells, mx * my)

    def cells_of(self, points: FloatArray) -> tuple[IndexArray, IndexArray]:
        """Cell coordinates of points (wrapped on a torus, clipped to the edge cells if not)."""
        p = self.space.wrap(points) if self.torus else points
        cx = np.clip(np.floor(p[:, 0] * (self.mx / self.space.width)), 0, self.mx - 1)
        cy = np.clip(np.floor(p[:, 1] * (self.my / self.space.height)), 0, self.my - 1)
        return cx.astype(np.int64), cy.astype(np.int64)

    def _offsets(self, m: int) -> tuple[int, ...]:
        # On a torus narrower than 3 cells, -1 and +1 would reach the same cell twice.
        if not self.torus or m >= 3:
            return (-1, 0, 1)
        return (0, 1) if m == 2 else (0,)

    def candidates(
        self, qcx: IndexArray, qcy: IndexArray
    ) -> Iterator[tuple[IndexArray, IndexArray]]:
        """``(query, point)`` row pairs whose cells touch, one block of cells at a time.

        Every point in the 3 x 3 block of cells around each query appears once.
        """
        for dx in self._offsets(self.mx):
            for dy in self._offsets(self.my):
                nx, ny = qcx + dx, qcy + dy
                if self.torus:
                    q = np.arange(len(qcx), dtype=np.int64)
                    cell = (nx % self.mx) * self.my + ny % self.my
                else:
                    valid = (nx >= 0) & (nx < self.mx) & (ny >= 0) & (ny < self.my)
                    q = np.flatnonzero(valid).astype(np.int64)
                    cell = nx[q] * self.my + ny[q]
                lo = self.start[cell]
                count = self.start[cell + 1] - lo
                total = int(count.sum())
                if total == 0:
                    continue
                run_start = np.cumsum(count) - count
                pos = np.arange(total, dtype=np.int64) + np.repeat(lo - run_start, count)
                yield np.repeat(q, count), self.order[pos]
