"""Helpers for numba kernels that walk a ``NetworkSpace``'s CSR arrays.

``ax.sim.node_neighbors`` and ``ax.sim.random_neighbor`` are these functions,
``numba.njit``-compiled (with ``cache=True``) when numba is installed and plain
Python otherwise, so a kernel calls them like any other compiled function. This
module is imported the first time either name is looked up on ``ambidex.sim``:
numba's own import (~0.2 s) is paid only by models that use them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

__all__ = ["node_neighbors", "random_neighbor"]

IndexArray = npt.NDArray[np.int64]
F = TypeVar("F", bound=Callable[..., Any])


def _compiled(fn: F) -> F:
    """``numba.njit(cache=True)(fn)`` when numba is installed, else ``fn`` itself."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba comes with ambidex[sim]
        return fn
    return cast(F, numba.njit(cache=True)(fn))


@_compiled
def node_neighbors(indptr: IndexArray, indices: IndexArray, v: int) -> IndexArray:
    """The neighbours of node ``v`` (a view into ``indices``), ascending.

    Raises:
        ValueError: ``v`` is not a node id (``0 <= v < len(indptr) - 1``).
    """
    if v < 0 or v >= len(indptr) - 1:  # numba would read past indptr's end
        raise ValueError("node_neighbors: v is not a node id")
    return indices[indptr[v] : indptr[v + 1]]


@_compiled
def random_neighbor(
    indptr: IndexArray, indices: IndexArray, v: int, rng: np.random.Generator
) -> int:
    """A uniformly chosen neighbour of node ``v``, or ``-1`` if it has none.

    Draws one double from ``rng`` (none for an isolated node).

    Raises:
        ValueError: ``v`` is not a node id (``0 <= v < len(indptr) - 1``).
    """
    if v < 0 or v >= len(indptr) - 1:  # numba would read past indptr's end
        raise ValueError("random_neighbor: v is not a node id")
    lo = indptr[v]
    d = indptr[v + 1] - lo
    if d == 0:
        return -1
    return int(indices[lo + int(rng.random() * d)])
