"""The Gini coefficient of integer values, compiled: ``gini``'s bits at a tenth of its cost.

``ambidex.sim.gini`` sorts float64 copies and sums with numpy; for a few hundred
agents its numpy calls cost more than a model's whole step. For int64 values whose
sums are exact in float64 (every partial sum below 2**53), the integer arithmetic
here gives exactly the sums numpy's float64 arithmetic gives, and the last three
float operations are the same, so the result has the same bits. numba loads on the
first call only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

_EXACT = 2**53  # integers up to this are exact in float64


@functools.cache
def _kernel() -> Callable[[np.ndarray], float] | None:
    try:
        import numba
    except ImportError:  # without numba, gini's numpy path serves
        return None

    @numba.njit(cache=True, nogil=True)
    def gini_int64(values: np.ndarray) -> float:
        n = len(values)
        magnitude = 0
        for v in values:
            magnitude += abs(v)
            if magnitude > _EXACT:
                return np.nan
        # Every partial sum of x * rank is at most magnitude * n.
        if n == 0 or magnitude > _EXACT // n:
            return np.nan
        x = np.sort(values)
        total = 0
        weighted = 0
        for i in range(n):
            total += x[i]
            weighted += x[i] * (n - i)
        if total == 0:
            return 0.0
        b = float(weighted) / (float(n) * float(total))
        return 1.0 + 1.0 / n - 2.0 * b

    return gini_int64


def gini_int64(values: Any) -> float | None:
    """The Gini coefficient of a 1-d int64 array, or None.

    None when ``values`` is not one, or its sums would not be exact in float64: then
    numpy's float64 path gives the answer.
    """
    if not (isinstance(values, np.ndarray) and values.dtype == np.int64 and values.ndim == 1):
        return None
    kernel = _kernel()
    if kernel is None:
        return None
    g = kernel(values)
    return None if g != g else g
