"""Large read-only inputs in shared memory: copied once, attached by every worker.

The parent process copies each array into a ``multiprocessing.shared_memory``
block once per sweep and sends workers only ``(block name, shape, dtype)``;
a worker maps the block and reads it in place, read-only. Nothing is pickled
per task but the descriptor.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import numpy as np

__all__ = ["SharedArray", "SharedArrays", "attach"]


@dataclass(frozen=True)
class SharedArray:
    """How a worker finds an array: the shared block's name, its shape and dtype."""

    block: str
    shape: tuple[int, ...]
    dtype: str


class SharedArrays:
    """The parent's side: owns the blocks, unlinks them on ``close``."""

    def __init__(self, arrays: Mapping[str, Any], *, writable: bool = False) -> None:
        self._blocks: list[shared_memory.SharedMemory] = []
        self.descriptors: dict[str, SharedArray] = {}
        self.views: dict[str, np.ndarray[Any, Any]] = {}
        try:
            for name, value in arrays.items():
                arr = np.ascontiguousarray(value)
                if arr.dtype.hasobject:
                    raise TypeError(
                        f"input {name!r} has dtype object; shared inputs must be numeric arrays"
                    )
                block = shared_memory.SharedMemory(create=True, size=max(arr.nbytes, 1))
                self._blocks.append(block)
                view: np.ndarray[Any, Any] = np.ndarray(arr.shape, arr.dtype, buffer=block.buf)
                view[...] = arr
                if not writable:
                    view.flags.writeable = False
                self.views[name] = view
                self.descriptors[name] = SharedArray(block.name, arr.shape, arr.dtype.str)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release and unlink every block (views held elsewhere become invalid)."""
        self.views.clear()
        for block in self._blocks:
            with contextlib.suppress(BufferError):
                block.close()
            with contextlib.suppress(FileNotFoundError):
                block.unlink()
        self._blocks.clear()

    def __enter__(self) -> SharedArrays:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the worker's side ------------------------------------------------------------

_attached: dict[str, shared_memory.SharedMemory] = {}
_attached_lock = threading.Lock()


def attach(
    descriptors: Mapping[str, SharedArray], *, writable: bool = False
) -> dict[str, np.ndarray[Any, Any]]:
    """Arrays backed by the parent's blocks (mapped once per process, never copied).

    Blocks of earlier sweeps that this process still maps are released when
    nothing refers to them any more.
    """
    out: dict[str, np.ndarray[Any, Any]] = {}
    with _attached_lock:
        for name, desc in descriptors.items():
            block = _attached.get(desc.block)
            if block is None:
                block = shared_memory.SharedMemory(name=desc.block)
                # The parent owns the block: stop this process's resource
                # tracker from unlinking it (and warning) when we exit.
                with contextlib.suppress(Exception):
                    resource_tracker.unregister(block._name, "shared_memory")  # type: ignore[attr-defined]
                _attached[desc.block] = block
            arr: np.ndarray[Any, Any] = np.ndarray(
                desc.shape, np.dtype(desc.dtype), buffer=block.buf
            )
            if not writable:
                arr.flags.writeable = False
            out[name] = arr
    return out


def release(keep: set[str]) -> None:
    """Unmap blocks not in ``keep`` that are no longer referenced by any array."""
    with _attached_lock:
        for key in list(_attached):
            if key in keep:
                continue
            try:
                _attached[key].close()
            except BufferError:
                continue  # an array still points into it; try again next time
            del _attached[key]
