"""A continuous space's cell lists and torus geometry, callable from numba kernels.

``ContinuousSpace.cells(positions, radius)`` returns a :class:`Cells`: the model's
own ``(n, 2)`` positions array plus, for every square-ish cell at least ``radius``
wide, a linked list of the points in it. Every function here is ``@numba.njit``,
so a compiled kernel written sequentially (each agent sees the moves of the
agents before it) asks for neighbours and moves agents without leaving compiled
code::

    import numba
    from ambidex.sim import cells

    @numba.njit
    def step(state, order, out):
        geo = state.geometry
        for a in order:
            k = cells.neighbors_of(state, a, 2.0, out)   # out[:k]: agents within 2.0
            x, y = state.pos[a, 0], state.pos[a, 1]
            for b in out[:k]:
                dx, dy = cells.displacement(geo, x, y, state.pos[b, 0], state.pos[b, 1])
                ...
            cells.move(state, a, x + 0.5, y)             # wrapped, relinked in O(1)

The functions on the cell lists:

* ``move(state, agent, x, y)``: write the agent's new (wrapped) position into
  ``state.pos`` and move it to its new cell's list, in O(1);
* ``near(state, x, y, radius, out)``: the points within ``radius`` of ``(x, y)``
  written to ``out[:k]``, returning ``k``;
* ``neighbors_of(state, agent, radius, out)``: the same around an agent, the
  agent itself left out.

The geometry, on a :class:`~ambidex.sim.Geometry` (``state.geometry`` or
``space.geometry``: three scalars, so calls per pair cost nothing more than the
arithmetic; passing the whole ``Cells`` per pair would cost numba a reference
count update per array):

* ``wrap(geometry, x, y)``: a point moved into the space (modulo the size on a
  torus, clipped when bounded);
* ``displacement(geometry, x0, y0, x1, y1)`` / ``distance(...)``: the shortest
  vector from the first point to the second and its length, computed exactly as
  ``ContinuousSpace.displacement`` / ``distance`` compute them.

A query ``radius`` may not exceed the radius the cells were built for (the
3 x 3 block of cells around a point would miss points); the functions raise
``ValueError`` then, when ``out`` has fewer than ``len(state.pos)`` entries, and
when ``agent`` is not a row of ``state.pos`` (``move``, ``neighbors_of``).
Within a cell, points come in the order of the list (most recently moved in
first), which depends only on the sequence of moves: the same run gives the
same order.

Importing this module imports numba (``pip install 'ambidex[sim]'``);
``import ambidex`` and ``import ambidex.sim`` do not. A kernel compiled with
``cache=True`` that calls these functions keeps its compiled copy of them until
its own file changes (numba's cache does not track callees in other modules):
after upgrading ambidex, touch the file or clear its ``__pycache__``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numba
import numpy as np
import numpy.typing as npt

from ambidex.sim._continuous import Geometry

__all__ = [
    "Cells",
    "Geometry",
    "displacement",
    "distance",
    "move",
    "near",
    "neighbors_of",
    "wrap",
]

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.int64]


class Cells(NamedTuple):
    """Cell lists over a model's positions: the state the kernel functions take.

    Build it with ``ContinuousSpace.cells(positions, radius)``; change positions
    only through :func:`move` (or build it again), so the lists stay true.

    Attributes:
        pos: the model's ``(n, 2)`` float64 positions (the same array, not a copy).
        head: first point of each cell (``mx * my`` entries; ``-1``: empty).
        nxt: next point in the same cell (``-1``: last).
        prv: previous point in the same cell (``-1``: first).
        cell: the cell each point is in (``cx * my + cy``).
        mx: cells along x.
        my: cells along y.
        radius: the largest query radius the cells answer.
        geometry: the space's width, height and torus flag.
    """

    pos: FloatArray
    head: IndexArray
    nxt: IndexArray
    prv: IndexArray
    cell: IndexArray
    mx: int
    my: int
    radius: float
    geometry: Geometry


def grid_shape(width: float, height: float, radius: float, n: int) -> tuple[int, int]:
    """Cells along x and y: at least ``radius`` wide, at most ``max(64, 4 n)`` of them."""
    # Cells are a little wider than the radius, so rounding in the binning can
    # never separate two points that are within the radius.
    cell = radius * (1.0 + 1e-6)
    limit = max(64, 4 * n)  # fewer, larger cells: still correct, less memory
    # Capped at the limit before flooring: a radius of 5e-324 makes width / cell
    # infinite (math.floor would raise OverflowError); wider cells stay correct.
    mx = max(1, math.floor(min(width / cell, limit)))
    my = max(1, math.floor(min(height / cell, limit)))
    if mx * my > limit:
        scale = math.sqrt(limit / (mx * my))
        mx, my = max(1, math.floor(mx * scale)), max(1, math.floor(my * scale))
    return mx, my


# -- geometry ---------------------------------------------------------------------
# Inner helpers take plain scalars and arrays, never the Cells tuple: numba passes
# a tuple of arrays by value, with a reference-count update per array per call,
# which cost ~10x the distance arithmetic itself when done per candidate point.


@numba.njit(cache=True, inline="always")
def _shortest(d: float, size: float) -> float:
    # The same result as ContinuousSpace._displacement (d - size * round(d / size),
    # half to even); |d| <= size / 2 gives |d / size| <= 0.5, rounded to 0, so d
    # itself comes back without the division (most pairs near each other).
    if abs(d) <= 0.5 * size:
        return d
    return d - size * float(np.round(d / size))


@numba.njit(cache=True, inline="always")
def _wrap_axis(v: float, size: float, torus: bool) -> float:
    if torus:
        if v < 0.0 or v >= size:
            v = v % size
            if v >= size:  # a tiny negative v rounds up to the size itself
                v = 0.0
        return v
    return min(max(v, 0.0), size)


@numba.njit(cache=True, inline="always")
def _dist(
    x0: float, y0: float, x1: float, y1: float, width: float, height: float, torus: bool
) -> float:
    dx, dy = x1 - x0, y1 - y0
    if torus:
        dx, dy = _shortest(dx, width), _shortest(dy, height)
    return math.sqrt(dx * dx + dy * dy)


@numba.njit(cache=True, inline="always")
def wrap(geometry: Geometry, x: float, y: float) -> tuple[float, float]:
    """``(x, y)`` moved into the space: modulo the size on a torus, clipped when bounded."""
    w, h, torus = geometry
    return _wrap_axis(x, w, torus), _wrap_axis(y, h, torus)


@numba.njit(cache=True, inline="always")
def displacement(
    geometry: Geometry, x0: float, y0: float, x1: float, y1: float
) -> tuple[float, float]:
    """The shortest vector from ``(x0, y0)`` to ``(x1, y1)`` (through the edges on a torus)."""
    w, h, torus = geometry
    dx, dy = x1 - x0, y1 - y0
    if torus:
        dx, dy = _shortest(dx, w), _shortest(dy, h)
    return dx, dy


@numba.njit(cache=True, inline="always")
def distance(geometry: Geometry, x0: float, y0: float, x1: float, y1: float) -> float:
    """The length of ``displacement(geometry, x0, y0, x1, y1)``."""
    w, h, torus = geometry
    return _dist(x0, y0, x1, y1, w, h, torus)


# -- cells ------------------------------------------------------------------------


@numba.njit(cache=True, inline="always")
def _axis_cell(v: float, m: int, size: float, torus: bool) -> int:
    if torus and (v < 0.0 or v >= size):
        v = v % size
    c = int(v * (m / size))  # truncation: v < 0 only when bounded, clipped to 0 anyway
    return min(max(c, 0), m - 1)


@numba.njit(cache=True, inline="always")
def _link(head: IndexArray, nxt: IndexArray, prv: IndexArray, agent: int, c: int) -> None:
    first = head[c]
    prv[agent] = -1
    nxt[agent] = first
    if first >= 0:
        prv[first] = agent
    head[c] = agent


@numba.njit(cache=True)
def link_all(state: Cells) -> None:
    """Empty every cell, then put the points in, the last point first in its cell."""
    pos, head, nxt, prv, cell = state.pos, state.head, state.nxt, state.prv, state.cell
    mx, my, (w, h, torus) = state.mx, state.my, state.geometry
    head[:] = -1
    for a in range(len(pos)):
        c = _axis_cell(pos[a, 0], mx, w, torus) * my + _axis_cell(pos[a, 1], my, h, torus)
        _link(head, nxt, prv, a, c)
        cell[a] = c


@numba.njit(cache=True)
def move(state: Cells, agent: int, x: float, y: float) -> None:
    """Put ``agent`` at ``(x, y)`` (wrapped into the space) and in that point's cell, in O(1).

    Raises:
        ValueError: ``agent`` is not a row of ``state.pos``, or ``x`` or ``y`` is
            not finite (nothing is written).
    """
    if agent < 0 or agent >= len(state.pos):  # numba would write out of bounds
        raise ValueError("move: agent is not a row of state.pos")
    if not (math.isfinite(x) and math.isfinite(y)):  # would sit in no cell's true list
        raise ValueError("move: x and y must be finite (got NaN or infinity)")
    mx, my, (w, h, torus) = state.mx, state.my, state.geometry
    x, y = _wrap_axis(x, w, torus), _wrap_axis(y, h, torus)
    state.pos[agent, 0] = x
    state.pos[agent, 1] = y
    c = _axis_cell(x, mx, w, torus) * my + _axis_cell(y, my, h, torus)
    cell = state.cell
    old = cell[agent]
    if c != old:
        head, nxt, prv = state.head, state.nxt, state.prv
        before, after = prv[agent], nxt[agent]
        if before >= 0:
            nxt[before] = after
        else:
            head[old] = after
        if after >= 0:
            prv[after] = before
        _link(head, nxt, prv, agent, c)
        cell[agent] = c


@numba.njit(cache=True, inline="always")
def _span(c: int, m: int, torus: bool) -> tuple[int, int]:
    # The cells c-1..c+1 to visit; on a torus narrower than 3 cells, each cell once.
    if torus and m < 3:
        return 0, m - 1
    return c - 1, c + 1


@numba.njit(cache=True)
def _gather(state: Cells, x: float, y: float, radius: float, skip: int, out: Any) -> int:
    if radius > state.radius:
        raise ValueError("radius is larger than the radius the cells were built for")
    pos, head, nxt = state.pos, state.head, state.nxt
    if len(out) < len(pos):  # checked once, so the loop below writes unchecked
        raise ValueError("out is shorter than the number of points")
    mx, my, (w, h, torus) = state.mx, state.my, state.geometry
    cx, cy = _axis_cell(x, mx, w, torus), _axis_cell(y, my, h, torus)
    x_lo, x_hi = _span(cx, mx, torus)
    y_lo, y_hi = _span(cy, my, torus)
    k = 0
    for ix in range(x_lo, x_hi + 1):
        if ix < 0 or ix >= mx:
            if not torus:
                continue
            ix = ix % mx
        for iy in range(y_lo, y_hi + 1):
            if iy < 0 or iy >= my:
                if not torus:
                    continue
                iy = iy % my
            b = head[ix * my + iy]
            while b >= 0:
                # Written always, kept when near: no branch for the CPU to mispredict
                # (k never passes the candidates seen, so out[k] stays in bounds).
                out[k] = b
                near = _dist(x, y, pos[b, 0], pos[b, 1], w, h, torus) <= radius
                k += near and b != skip
                b = nxt[b]
    return k


@numba.njit(cache=True)
def near(state: Cells, x: float, y: float, radius: float, out: Any) -> int:
    """Write the points within ``radius`` of ``(x, y)`` to ``out[:k]`` and return ``k``.

    ``out`` is an integer array with at least ``len(state.pos)`` entries (whatever
    the number found: the search writes every candidate, keeping the near ones).

    Raises:
        ValueError: ``radius`` exceeds the cells' radius; ``out`` is shorter than
            ``len(state.pos)``.
    """
    return _gather(state, x, y, radius, -1, out)


@numba.njit(cache=True)
def neighbors_of(state: Cells, agent: int, radius: float, out: Any) -> int:
    """Write the points within ``radius`` of ``agent``, itself left out, to ``out[:k]``.

    Points at the agent's very position count. Returns ``k``.

    Raises:
        ValueError: ``agent`` is not a row of ``state.pos``; ``radius`` exceeds the
            cells' radius; ``out`` is shorter than ``len(state.pos)``.
    """
    pos = state.pos  # read once: each state.pos costs numba a reference count (+35% here)
    if agent < 0 or agent >= len(pos):  # numba would read out of bounds
        raise ValueError("neighbors_of: agent is not a row of state.pos")
    return _gather(state, pos[agent, 0], pos[agent, 1], radius, agent, out)


# -- every point's neighbours at once (ContinuousSpace.neighbors) ------------------


@numba.njit(cache=True)
def _block(cx: int, cy: int, mx: int, my: int, torus: bool, into: IndexArray) -> int:
    """The cells of the 3 x 3 block around ``(cx, cy)``, each once, into ``into[:k]``."""
    x_lo, x_hi = _span(cx, mx, torus)
    y_lo, y_hi = _span(cy, my, torus)
    k = 0
    for ix in range(x_lo, x_hi + 1):
        if torus:
            ix = ix % mx
        for iy in range(y_lo, y_hi + 1):
            if torus:
                iy = iy % my
            if 0 <= ix < mx and 0 <= iy < my:
                into[k] = ix * my + iy
                k += 1
    return k


@numba.njit(cache=True)
def _sort_by_cell(
    p: FloatArray, mx: int, my: int, width: float, height: float, torus: bool
) -> tuple[IndexArray, IndexArray, FloatArray, FloatArray]:
    """Counting sort of the points by cell: cell starts, point order, sorted x and y."""
    n = len(p)
    cell = np.empty(n, dtype=np.int64)
    start = np.zeros(mx * my + 1, dtype=np.int64)
    for i in range(n):
        c = _axis_cell(p[i, 0], mx, width, torus) * my + _axis_cell(p[i, 1], my, height, torus)
        cell[i] = c
        start[c + 1] += 1
    for c in range(mx * my):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    order = np.empty(n, dtype=np.int64)
    sx = np.empty(n, dtype=np.float64)
    sy = np.empty(n, dtype=np.float64)
    for i in range(n):
        s = fill[cell[i]]
        fill[cell[i]] += 1
        order[s] = i
        sx[s] = p[i, 0]
        sy[s] = p[i, 1]
    return start, order, sx, sy


@numba.njit(cache=True)
def csr_neighbors(
    p: FloatArray, mx: int, my: int, width: float, height: float, torus: bool, radius: float
) -> tuple[IndexArray, IndexArray]:
    """Every point's neighbours within ``radius`` (itself excluded), as a sorted CSR index.

    Points are visited cell by cell over a copy sorted by cell, so memory is read
    in order even at millions of points; rows are then put back in point order.
    """
    n = len(p)
    start, order, sx, sy = _sort_by_cell(p, mx, my, width, height, torus)
    # Room for the neighbours uniformly spread points would have, plus a quarter:
    # clustered points grow the buffer (doubling), spread ones never copy it.
    expected = (n - 1) * math.pi * radius * radius / (width * height)
    buf = np.empty(max(16, int(1.25 * n * min(expected, n - 1.0)) + 8 * n), dtype=np.int64)
    begin = np.empty(n + 1, dtype=np.int64)  # rows in sorted order
    block = np.empty(9, dtype=np.int64)
    geo = (width, height, torus, radius)
    # The candidates of one cell (its 3 x 3 block) copied side by side: x, y, row.
    # Separate arrays, so numba knows the distance loop's writes alias none of them.
    tx, ty, ti = np.empty(64), np.empty(64), np.empty(64, dtype=np.int64)
    hit = np.empty(64, dtype=np.bool_)
    k = 0
    for c in range(mx * my):
        if start[c] == start[c + 1]:
            continue
        nb = _block(c // my, c % my, mx, my, torus, block)
        m = 0
        for j in range(nb):
            m += start[block[j] + 1] - start[block[j]]
        if m > len(tx):
            tx, ty, ti = np.empty(2 * m), np.empty(2 * m), np.empty(2 * m, dtype=np.int64)
            hit = np.empty(2 * m, dtype=np.bool_)
        if k + m * (start[c + 1] - start[c]) > len(buf):
            buf = _grown(buf, k + m * (start[c + 1] - start[c]))
        k = _cell_rows(c, start, order, sx, sy, block, nb, tx, ty, ti, hit, buf, begin, k, geo)
    begin[n] = k
    return _by_point(order, begin, buf)


@numba.njit(cache=True)
def _cell_rows(
    c: int,
    start: IndexArray,
    order: IndexArray,
    sx: FloatArray,
    sy: FloatArray,
    block: IndexArray,
    nb: int,
    tx: FloatArray,
    ty: FloatArray,
    ti: IndexArray,
    hit: npt.NDArray[np.bool_],
    buf: IndexArray,
    begin: IndexArray,
    k: int,
    geo: tuple[float, float, bool, float],
) -> int:
    """The rows of the points of cell ``c`` into ``buf`` from ``k`` on; returns the new end.

    The block's candidates are copied side by side first, so the distance loop runs
    over plain arrays with no branches and numba vectorizes it (SIMD): at a dozen
    neighbours a point this beat walking the cells one candidate at a time ~5x.
    """
    width, height, torus, radius = geo
    m = 0
    for j in range(nb):
        for t in range(start[block[j]], start[block[j] + 1]):
            tx[m] = sx[t]
            ty[m] = sy[t]
            ti[m] = t
            m += 1
    for s in range(start[c], start[c + 1]):
        x, y = sx[s], sy[s]
        if torus:  # the arithmetic of _shortest: d - size * round(d / size), half to even
            for q in range(m):
                dx = tx[q] - x
                dy = ty[q] - y
                dx = dx - width * np.rint(dx / width)
                dy = dy - height * np.rint(dy / height)
                hit[q] = math.sqrt(dx * dx + dy * dy) <= radius
        else:
            for q in range(m):
                dx = tx[q] - x
                dy = ty[q] - y
                hit[q] = math.sqrt(dx * dx + dy * dy) <= radius
        begin[s] = k
        for q in range(m):
            if hit[q] and ti[q] != s:
                buf[k] = order[ti[q]]
                k += 1
    return k


@numba.njit(cache=True)
def _grown(buf: IndexArray, need: int) -> IndexArray:
    grown = np.empty(max(2 * len(buf), need), dtype=np.int64)
    grown[: len(buf)] = buf
    return grown


@numba.njit(cache=True)
def _by_point(
    order: IndexArray, begin: IndexArray, buf: IndexArray
) -> tuple[IndexArray, IndexArray]:
    """Rows found in cell order (``buf[begin[s]:begin[s + 1]]``), sorted, in point order."""
    n = len(order)
    start = np.zeros(n + 1, dtype=np.int64)
    for s in range(n):
        start[order[s] + 1] = begin[s + 1] - begin[s]
    for i in range(n):
        start[i + 1] += start[i]
    index = np.empty(begin[n], dtype=np.int64)
    for s in range(n):
        lo = start[order[s]]
        row = index[lo : lo + begin[s + 1] - begin[s]]
        row[:] = buf[begin[s] : begin[s + 1]]
        _insertion_sort(row)
    return start, index


@numba.njit(cache=True, inline="always")
def _insertion_sort(row: IndexArray) -> None:
    # Rows hold a dozen or so entries: insertion sort beats numba's quicksort ~3x there.
    for a in range(1, len(row)):
        v = row[a]
        b = a - 1
        while b >= 0 and row[b] > v:
            row[b + 1] = row[b]
            b -= 1
        row[b + 1] = v


@numba.njit(cache=True)
def nearest_all(
    p: FloatArray, mx: int, my: int, width: float, height: float, torus: bool
) -> tuple[IndexArray, FloatArray]:
    """Each point's nearest other point (lowest index on a tie) and its distance.

    Found in the point's 3 x 3 block of cells, vectorized as in ``csr_neighbors``;
    a point whose nearest there is not closer than a cell's width (one outside the
    block might be) is compared with every point instead, so the answer is exact.
    """
    n = len(p)
    start, order, sx, sy = _sort_by_cell(p, mx, my, width, height, torus)
    best_i = np.full(n, -1, dtype=np.int64)
    best_d = np.full(n, np.inf)
    sure = min(width / mx, height / my) * (1.0 - 1e-9)
    block = np.empty(9, dtype=np.int64)
    tx, ty, ti, d = np.empty(64), np.empty(64), np.empty(64, dtype=np.int64), np.empty(64)
    for c in range(mx * my):
        if start[c] == start[c + 1]:
            continue
        nb = _block(c // my, c % my, mx, my, torus, block)
        m = 0
        for j in range(nb):
            m += start[block[j] + 1] - start[block[j]]
        if m > len(tx):
            tx, ty, d = np.empty(2 * m), np.empty(2 * m), np.empty(2 * m)
            ti = np.empty(2 * m, dtype=np.int64)
        m = 0
        for j in range(nb):
            for t in range(start[block[j]], start[block[j] + 1]):
                tx[m], ty[m], ti[m] = sx[t], sy[t], t
                m += 1
        for s in range(start[c], start[c + 1]):
            for q in range(m):
                d[q] = _dist(sx[s], sy[s], tx[q], ty[q], width, height, torus)
            bd, bi = _closest(s, d[:m], ti[:m], order, np.inf, -1)
            if bd > sure:  # one outside the block might be nearer: ask them all
                bd, bi = _closest_of_all(s, sx, sy, order, (width, height, torus))
            best_i[order[s]], best_d[order[s]] = bi, bd
    return best_i, best_d


@numba.njit(cache=True, inline="always")
def _closest(
    s: int, d: FloatArray, ti: IndexArray, order: IndexArray, bd: float, bi: int
) -> tuple[float, int]:
    """The nearer of ``(bd, bi)`` and the candidates ``ti`` at distances ``d``, ``s`` aside."""
    for q in range(len(d)):
        o = order[ti[q]]
        if ti[q] != s and (d[q] < bd or (d[q] == bd and o < bi)):
            bd, bi = d[q], o
    return bd, bi


@numba.njit(cache=True)
def _closest_of_all(
    s: int, sx: FloatArray, sy: FloatArray, order: IndexArray, geo: tuple[float, float, bool]
) -> tuple[float, int]:
    """Point ``s``'s nearest other point among all of them (lowest index on a tie)."""
    width, height, torus = geo
    bd, bi = np.inf, -1
    for t in range(len(sx)):
        dt = _dist(sx[s], sy[s], sx[t], sy[t], width, height, torus)
        if t != s and (dt < bd or (dt == bd and order[t] < bi)):
            bd, bi = dt, order[t]
    return bd, bi
