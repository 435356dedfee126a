"""The model's generator: a ``numpy.random.Generator`` a numba kernel takes cheaply.

Handing a plain ``numpy.random.Generator`` to a numba kernel costs 6-16 µs per
call: numba types it in Python (a new type object each time) and unboxes it
through three ``ctypes.cast`` calls. ``KernelGenerator`` is a ``Generator``
subclass (numpy code cannot tell the difference) that works the seven machine
words numba needs out once, when it is built, and keeps them in one buffer;
``ambidex.sim.kernels`` teaches numba to read that buffer (one attribute and
seven loads) and to type every ``KernelGenerator`` as one interned type. The
draws are the bit generator's own, through numba's own ``Generator`` methods,
so a seed gives the same numbers either way.

This module does not import numba (``ambidex.sim`` needs numpy only); numba is
taught when ``ambidex.sim.kernels`` is imported, which ``Model`` does when it
builds a generator in a process that has imported numba.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

import numpy as np

__all__ = ["KernelGenerator", "kernel_generator", "teach_numba"]


class KernelGenerator(np.random.Generator):
    """A ``numpy.random.Generator`` whose numba unboxing is a few loads.

    ``_ax_words`` is the address of seven machine words, in numba's order: the
    state address, the state, ``next_uint64``, ``next_uint32``, ``next_double``,
    the C bit generator and the Python bit generator. They do not change for
    the generator's life (the bit generator is fixed at construction and owns
    its state), and the buffer lives as long as the generator.
    """

    _ax_buffer: np.ndarray[Any, np.dtype[np.uintp]]
    _ax_words: int

    def __init__(self, bit_generator: np.random.BitGenerator) -> None:
        super().__init__(bit_generator)
        iface = bit_generator.ctypes

        def address(fn: Any) -> int:
            value = ctypes.cast(fn, ctypes.c_void_p).value
            assert value is not None  # numpy's bit generators always export these
            return value

        words = [
            iface.state_address,
            iface.state.value or 0,
            address(iface.next_uint64),
            address(iface.next_uint32),
            address(iface.next_double),
            iface.bit_generator.value or 0,
            id(bit_generator),
        ]
        self._ax_buffer = np.array(words, dtype=np.uintp)
        self._ax_words = int(self._ax_buffer.ctypes.data)

    @property
    def _numba_type_(self) -> Any:
        """The numba type of the generator, read by numba's dispatcher (in C) at every call.

        Only numba asks, so numba is imported: the first read teaches it the type
        (``ambidex.sim.kernels``), which puts the type itself on the class in
        place of this property. A model built before numba was imported is
        taught all the same.
        """
        import ambidex.sim.kernels  # noqa: F401  (replaces this property on import)

        return type(self)._numba_type_

    def __reduce__(self) -> tuple[Any, ...]:
        # Generator's own reduce rebuilds a plain Generator; keep the subclass.
        return (type(self), (self.bit_generator,))


def kernel_generator(seed: np.random.SeedSequence | int) -> KernelGenerator:
    """A PCG64 ``KernelGenerator`` from ``seed``: the draws of ``default_rng(seed)``."""
    gen = KernelGenerator(np.random.PCG64(seed))
    teach_numba()
    return gen


def teach_numba() -> None:
    """Register ``KernelGenerator`` with numba now if this process has imported numba.

    Importing numba here would cost every numpy-only model half a second. If
    numba comes later, the first kernel call teaches it (``_numba_type_``).
    """
    if "numba" in sys.modules and "ambidex.sim.kernels" not in sys.modules:
        import ambidex.sim.kernels  # noqa: F401  (registers on import)
