"""Large read-only arrays stored once for cpu calls: ``Runtime.put`` for several at once.

Kept for code written before ``Runtime.put`` existed. The storage is the cpu
backend's (shared memory on one machine, a cluster's object store); each
call receives only handles (``descriptors``), and ``handle.get()`` there
returns the array without a copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ambidex.runtime import Shared, current_runtime

__all__ = ["SharedArrays"]


class SharedArrays:
    """Stores arrays with the current runtime; releases them on ``close``."""

    def __init__(self, arrays: Mapping[str, Any], *, writable: bool = False) -> None:
        self.descriptors: dict[str, Shared[Any]] = {}
        """Name to handle: what to send to a cpu call."""
        self.views: dict[str, np.ndarray[Any, Any]] = {}
        """Name to the stored array, as this process sees it."""
        rt = current_runtime()
        try:
            for name, value in arrays.items():
                arr = np.ascontiguousarray(value)
                if arr.dtype.hasobject:
                    raise TypeError(
                        f"input {name!r} has dtype object; shared inputs must be numeric arrays"
                    )
                handle = self.descriptors[name] = rt.put(arr, writable=writable)
                self.views[name] = handle.get()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release every array (views held elsewhere stay readable until dropped)."""
        self.views.clear()
        for handle in self.descriptors.values():
            handle.release()

    def __enter__(self) -> SharedArrays:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
