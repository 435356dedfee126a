"""Shared values on one machine: POSIX shared memory, copied once, mapped by every worker.

The putting process copies a value into a ``multiprocessing.shared_memory``
block (a numeric array as its bytes, anything else pickled) and sends workers
only a handle: the block's name, shape and dtype. A worker maps the block once
and reads it in place (arrays) or unpickles it once (other values).

No block outlives its owner: the store unlinks a block when its handle is
released or garbage collected and unlinks all of them when the runtime closes;
a process killed before that leaves its blocks to ``multiprocessing``'s
resource tracker, which unlinks them when the process is gone. A worker unmaps
a block once the owner has unlinked it and nothing of the worker points into it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import cloudpickle

from ambidex.runtime._backends._abc import Shared

__all__ = ["SharedBlock", "ShmStore"]

_SHM_DIR = "/dev/shm"


@dataclass(frozen=True)
class _Layout:
    """How the bytes of a block read: an array (shape, dtype) or a pickle (``dtype`` None)."""

    shape: tuple[int, ...]
    dtype: str | None
    writable: bool


class SharedBlock(Shared[Any]):
    """A handle to a value in a shared memory block of this machine."""

    __slots__ = ("layout",)

    def __init__(self, block: str, nbytes: int, layout: _Layout) -> None:
        super().__init__(block, nbytes)
        self.layout = layout

    def get(self) -> Any:
        return _read(self.key, self.layout)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SharedBlock, (self.key, self.nbytes, self.layout))


class ShmStore:
    """The owner's side: the blocks this process put, unlinked on release or close."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocks: dict[str, shared_memory.SharedMemory] = {}
        self._closed = False

    def put(self, value: Any, *, writable: bool = False) -> SharedBlock:
        """Copy ``value`` into a new block and return its handle.

        Raises:
            ValueError: ``writable`` for a value that is not a numeric numpy array.
        """
        array = _as_array(value)
        if array is None:
            if writable:
                raise ValueError(
                    f"a writable shared value must be a numeric numpy array, "
                    f"not {type(value).__name__}"
                )
            data = bytes(cloudpickle.dumps(value))
            layout = _Layout((len(data),), None, False)
            size = len(data)
        else:
            layout = _Layout(tuple(array.shape), array.dtype.str, writable)
            size = array.nbytes
        block = shared_memory.SharedMemory(create=True, size=max(size, 1))
        try:
            if array is None:
                _buffer(block)[:size] = data
            else:
                _view(block, layout)[...] = array
            with self._lock:
                if self._closed:
                    raise RuntimeError("the runtime is closed")
                self._blocks[block.name] = block
        except BaseException:
            _unlink(block)
            raise
        _remember(block, owned=True)
        handle = SharedBlock(block.name, size, layout)
        handle.own(self.release)
        return handle

    def release(self, name: str) -> None:
        """Unlink the named block (arrays still mapped from it stay valid until dropped)."""
        with self._lock:
            block = self._blocks.pop(name, None)
        if block is not None:
            _forget(name)
            _unlink(block)

    def usage(self) -> tuple[int, int]:
        """How many blocks are alive, and their bytes."""
        with self._lock:
            return len(self._blocks), sum(b.size for b in self._blocks.values())

    def close(self) -> None:
        """Unlink every block; later ``put`` calls fail."""
        with self._lock:
            self._closed = True
            names = list(self._blocks)
        for name in names:
            self.release(name)


def _as_array(value: Any) -> Any:
    """``value`` as a contiguous numeric numpy array, or None if it is not an array."""
    np = _numpy()
    if np is None or not isinstance(value, np.ndarray) or value.dtype.hasobject:
        return None
    return np.ascontiguousarray(value)


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:  # numpy is optional: without it every value is pickled
        return None
    return numpy


def _view(block: shared_memory.SharedMemory, layout: _Layout) -> Any:
    import numpy as np

    assert layout.dtype is not None
    return np.ndarray(layout.shape, np.dtype(layout.dtype), buffer=_buffer(block))


def _buffer(block: shared_memory.SharedMemory) -> memoryview:
    buf = block.buf
    assert buf is not None  # None only once closed, and closed blocks are never read
    return buf


def _unlink(block: shared_memory.SharedMemory) -> None:
    with contextlib.suppress(BufferError):  # an array still maps it: unmapped when dropped
        block.close()
    with contextlib.suppress(FileNotFoundError):
        block.unlink()


# -- reading, in any process -----------------------------------------------------

_mapped: dict[str, shared_memory.SharedMemory] = {}
"""Blocks this process maps: its own (owned) and those it attached."""
_owned: set[str] = set()
_unpickled: dict[str, Any] = {}
_mapped_lock = threading.Lock()


def _remember(block: shared_memory.SharedMemory, *, owned: bool) -> None:
    with _mapped_lock:
        _mapped[block.name] = block
        if owned:
            _owned.add(block.name)


def _forget(name: str) -> None:
    with _mapped_lock:
        _mapped.pop(name, None)
        _owned.discard(name)
        _unpickled.pop(name, None)


def _read(name: str, layout: _Layout) -> Any:
    with _mapped_lock:
        block = _mapped.get(name)
        if block is None:
            _unmap_unlinked()
            block = _mapped[name] = _attach(name)
        elif name not in _owned and _unlinked(name):
            _unmap_unlinked()
            raise _gone(name)
        if layout.dtype is None:
            if name not in _unpickled:
                _unpickled[name] = cloudpickle.loads(bytes(_buffer(block)[: layout.shape[0]]))
            return _unpickled[name]
    array = _view(block, layout)
    if not layout.writable:
        array.flags.writeable = False
    return array


def _attach(name: str) -> shared_memory.SharedMemory:
    try:
        block = shared_memory.SharedMemory(name=name)
    except FileNotFoundError:
        raise _gone(name) from None
    # The owner unlinks the block: stop this process's resource tracker from
    # unlinking it (and warning) when this process exits.
    with contextlib.suppress(Exception):
        resource_tracker.unregister(block._name, "shared_memory")  # type: ignore[attr-defined]
    return block


def _gone(name: str) -> LookupError:
    return LookupError(
        f"shared value {name} is gone: it was released, or the runtime that put it closed"
    )


def _unlinked(name: str) -> bool:
    """Whether the owner has unlinked the block (False where that cannot be told)."""
    return os.path.isdir(_SHM_DIR) and not os.path.exists(os.path.join(_SHM_DIR, name.lstrip("/")))


def _unmap_unlinked() -> None:
    """Unmap attached blocks their owner has unlinked, where nothing points into them.

    Runs whenever this process attaches a new block, so a long-lived worker
    maps at most the blocks that are still alive (and those still in use).
    """
    for name in [n for n in _mapped if n not in _owned]:
        if not _unlinked(name):
            continue
        try:
            _mapped[name].close()
        except BufferError:
            continue  # an array still points into it: try again next time
        del _mapped[name]
        _unpickled.pop(name, None)
