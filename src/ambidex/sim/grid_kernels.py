"""A ``Grid`` inside numba kernels: geometry and per-cell member lists on plain arrays.

Every function here is ``numba.njit``-compiled and takes plain integers and numpy
arrays, so a model's own ``@numba.njit`` step calls them directly (from Python they
work too, compiled on first call). The grid is described by ``width``, ``height``
and ``torus``; cells are numbered ``x * height + y`` as in ``Grid``.

Geometry:

* ``cell_of(x, y, height)`` and ``cell_xy(c, height)``: cell number <-> coordinates;
* ``wrap_cell(x, y, width, height, torus)``: the cell at ``(x, y)``, wrapped around a
  torus, or ``-1`` off the edge of a bounded grid;
* ``neighbors_of(c, dx, dy, width, height, torus, out)``: the neighbours of one cell
  written into ``out`` (returns how many), in the order of ``Grid.neighbors``' table
  row (``dx, dy = Grid.offsets_array(radius)``); the table itself is
  ``Grid.neighbors(radius)``, computed once.

Members of a cell, as doubly linked lists over agent rows (``Grid.cell_lists`` makes
them from every agent's cell): ``head[c]`` is the first agent of cell ``c`` (``-1``
if empty), ``nxt[a]`` / ``prv[a]`` the agents after and before ``a`` in its cell, and
``counts[c]`` how many agents cell ``c`` holds. ``nxt`` and ``prv`` have one slot more
than there are agent rows: the last is scratch, written through index ``-1`` when a
link is ``-1``, so that the updates have no branches. That makes them fast inside a
kernel's loop: numba keeps reference-count updates for the arrays handed to an inlined
function that branches (38 ns a move against 15 written out by hand); branch-free,
a move is ~9 ns. A move is O(1):

* ``lists_build(cells, n, head, nxt, prv, counts)``: from scratch, rows ``0..n-1``
  (``nxt`` and ``prv`` at least ``n + 1`` long);
  each row is pushed at the head of its cell in row order, so a cell's list runs
  from its highest row down to its lowest;
* ``lists_insert(head, nxt, prv, counts, a, c)``: ``a`` joins cell ``c`` at the head;
* ``lists_remove(head, nxt, prv, counts, a, c)``: ``a`` leaves cell ``c``;
* ``lists_move(head, nxt, prv, counts, a, old, new)``: both, ``a`` at the head of ``new``;
* ``lists_nth(head, nxt, c, k)``: the ``k``-th member of cell ``c`` (``k < counts[c]``).

The lists are indexed by row: after ``Agents.remove`` (which moves rows) rebuild
them with ``lists_build``, or kill agents by flag and compact later. Only
``neighbors_of`` checks its arguments (``out``'s length, once a call); the
``lists_*`` functions check no bounds (numba does not, and a check would double
the cost of a move): pass a cell inside the grid and a row inside the arrays, as
``Grid`` and ``Agents`` hand them out, or a mistake writes outside the arrays.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "cell_of",
    "cell_xy",
    "lists_build",
    "lists_insert",
    "lists_move",
    "lists_nth",
    "lists_remove",
    "neighbors_of",
    "wrap_cell",
]


@numba.njit(cache=True, inline="always")
def cell_of(x: int, y: int, height: int) -> int:
    """The cell number of ``(x, y)`` (no bounds check: see ``wrap_cell``)."""
    return x * height + y


@numba.njit(cache=True, inline="always")
def cell_xy(c: int, height: int) -> tuple[int, int]:
    """The coordinates ``(x, y)`` of cell ``c``."""
    return c // height, c % height


@numba.njit(cache=True, inline="always")
def wrap_cell(x: int, y: int, width: int, height: int, torus: bool) -> int:
    """The cell at ``(x, y)``: wrapped around a torus; ``-1`` off a bounded grid."""
    if torus:
        return (x % width) * height + (y % height)
    if x < 0 or x >= width or y < 0 or y >= height:
        return -1
    return x * height + y


@numba.njit(cache=True)
def neighbors_of(
    c: int,
    dx: np.ndarray,
    dy: np.ndarray,
    width: int,
    height: int,
    torus: bool,
    out: np.ndarray,
) -> int:
    """Write the neighbours of cell ``c`` into ``out``; return how many there are.

    ``dx, dy``: the neighbourhood's offsets (``Grid.offsets_array(radius)``). The
    order is that of ``Grid.neighbors``' table row: offset order, cells off a bounded
    grid left out, and on a torus too small for the radius the cell itself and any
    cell reached twice left out. ``out`` needs ``len(dx)`` slots.

    Raises:
        ValueError: ``dx`` and ``dy`` differ in length, or ``out`` is shorter than
            ``dx`` (checked once a call: numba would write past its end).
    """
    if len(dy) != len(dx):
        raise ValueError("neighbors_of: dx and dy must have the same length")
    if len(out) < len(dx):
        raise ValueError("neighbors_of: out is shorter than the offsets (needs len(dx) slots)")
    x = c // height
    y = c % height
    # Distinct offsets reach distinct cells unless a torus is narrower than the
    # neighbourhood; only then look for the cell itself and repeats.
    reach_x = max(-dx.min(), dx.max())
    reach_y = max(-dy.min(), dy.max())
    narrow = torus and (2 * reach_x >= width or 2 * reach_y >= height)
    k = 0
    for j in range(len(dx)):
        d = wrap_cell(x + dx[j], y + dy[j], width, height, torus)
        if d < 0:
            continue
        if narrow:
            repeat = d == c
            for i in range(k):
                if out[i] == d:
                    repeat = True
                    break
            if repeat:
                continue
        out[k] = d
        k += 1
    return k


@numba.njit(cache=True)
def lists_build(
    cells: np.ndarray,
    n: int,
    head: np.ndarray,
    nxt: np.ndarray,
    prv: np.ndarray,
    counts: np.ndarray,
) -> None:
    """Fill the member lists from scratch for rows ``0..n-1`` (O(rows + cells))."""
    head[:] = -1
    counts[:] = 0
    for a in range(n):
        c = cells[a]
        h = head[c]
        prv[h] = a  # h == -1: the scratch slot
        nxt[a] = h
        prv[a] = -1
        head[c] = a
        counts[c] += 1


@numba.njit(cache=True, inline="always")
def lists_insert(
    head: np.ndarray, nxt: np.ndarray, prv: np.ndarray, counts: np.ndarray, a: int, c: int
) -> None:
    """Agent row ``a`` joins cell ``c``, at the head of its list."""
    h = head[c]
    prv[a] = -1
    nxt[a] = h
    prv[h] = a  # h == -1 (the cell was empty): the scratch slot; no branch
    head[c] = a
    counts[c] += 1


@numba.njit(cache=True, inline="always")
def lists_remove(
    head: np.ndarray, nxt: np.ndarray, prv: np.ndarray, counts: np.ndarray, a: int, c: int
) -> None:
    """Agent row ``a`` leaves cell ``c`` (which must be its cell)."""
    p = prv[a]
    q = nxt[a]
    nxt[p] = q  # p == -1 (a was the head): the scratch slot
    prv[q] = p  # q == -1 (a was the last): the scratch slot
    head[c] = q if p < 0 else head[c]
    counts[c] -= 1
    prv[a] = -1
    nxt[a] = -1


@numba.njit(cache=True, inline="always")
def lists_move(
    head: np.ndarray,
    nxt: np.ndarray,
    prv: np.ndarray,
    counts: np.ndarray,
    a: int,
    old: int,
    new: int,
) -> None:
    """Agent row ``a`` moves from cell ``old`` to the head of cell ``new`` (O(1))."""
    lists_remove(head, nxt, prv, counts, a, old)
    lists_insert(head, nxt, prv, counts, a, new)


@numba.njit(cache=True, inline="always")
def lists_nth(head: np.ndarray, nxt: np.ndarray, c: int, k: int) -> int:
    """The ``k``-th agent (from 0, head first) of cell ``c``; ``-1`` past its end."""
    a = head[c]
    for _ in range(k):
        if a < 0:
            break
        a = nxt[a]
    return int(a)
