"""Random helpers for numba kernels, and the model generator's cheap passage into them.

A kernel takes the model's generator as an argument and draws from it with
numba's own ``Generator`` methods (``rng.random()``, ``rng.integers(...)``,
...) or with the helpers here::

    import numba
    from ambidex.sim.kernels import below, permutation

    @numba.njit(cache=True)
    def _step(cell, nbr, nbr_count, rng):
        for a in permutation(len(cell), rng):
            cell[a] = nbr[cell[a], below(rng, nbr_count[cell[a]])]

    class Walk(ax.sim.Model):
        def step(self):
            _step(self.cell, self.nbr, self.nbr_count, self.rng)

``self.rng`` is a ``KernelGenerator``: a ``numpy.random.Generator`` that this
module teaches numba to type as one interned type and to unbox with a few
loads, so the call costs well under a microsecond more than without it
(a plain ``Generator`` costs 6-16 µs a call). Importing this module registers
it; ``Model`` does so when numba is already imported, and the first kernel
call otherwise.
"""

# numba's extension API is untyped: calling it is what this module is for.
# mypy: disable-error-code="no-untyped-call,untyped-decorator"

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba.core import cgutils, types
from numba.core.extending import NativeValue, box, register_model, typeof_impl, unbox
from numba.np.random.generator_core import NumPyRandomGeneratorTypeModel

from ambidex.sim._kernel_rng import KernelGenerator

__all__ = ["KernelGenerator", "below", "permutation", "shuffle"]


class KernelGeneratorType(types.NumPyRandomGeneratorType):
    """numba's ``Generator`` type (so all its methods apply), unboxed from cached words."""

    def __init__(self) -> None:
        super().__init__("KernelGenerator")
        self.name = "KernelGenerator"


_TYPE = KernelGeneratorType()
_BIT_GEN_TYPE = types.NumPyRandomBitGeneratorType("bit_generator")
_WORDS = (
    "state_address",
    "state",
    "fnptr_next_uint64",
    "fnptr_next_uint32",
    "fnptr_next_double",
    "bit_generator",
)

register_model(KernelGeneratorType)(NumPyRandomGeneratorTypeModel)


@typeof_impl.register(KernelGenerator)
def _typeof_kernel_generator(val: KernelGenerator, c: Any) -> KernelGeneratorType:
    return _TYPE


# A dispatcher call reads ``_numba_type_`` in C, without going back to Python's typeof;
# the plain attribute replaces the property that imports this module.
KernelGenerator._numba_type_ = _TYPE  # type: ignore[assignment,method-assign]


@unbox(KernelGeneratorType)
def _unbox_kernel_generator(typ: Any, obj: Any, c: Any) -> NativeValue:
    """The struct numba's own unboxing builds, read from the generator's word buffer."""
    builder = c.builder
    result = cgutils.alloca_once_value(builder, c.context.get_constant_null(typ))
    words_obj = c.pyapi.object_getattr_string(obj, "_ax_words")
    found = cgutils.is_not_null(builder, words_obj)
    with builder.if_then(found, likely=True):
        intp = c.context.get_value_type(types.uintp)
        base = builder.bitcast(c.pyapi.long_as_voidptr(words_obj), intp.as_pointer())
        c.pyapi.decref(words_obj)
        words = [builder.load(cgutils.gep_inbounds(builder, base, i)) for i in range(7)]
        bit_gen = cgutils.create_struct_proxy(_BIT_GEN_TYPE)(c.context, builder)
        for name, word in zip(_WORDS, words, strict=False):
            setattr(bit_gen, name, word)
        bit_gen.parent = builder.inttoptr(words[6], c.pyapi.pyobj)
        gen = cgutils.create_struct_proxy(typ)(c.context, builder)
        gen.bit_generator = bit_gen._getvalue()
        gen.parent = obj
        # As numba's own unboxing: the kernel holds a reference to the generator.
        gen.meminfo = c.pyapi.nrt_meminfo_new_from_pyobject(cgutils.voidptr_t(None), obj)
        builder.store(gen._getvalue(), result)
    return NativeValue(builder.load(result), is_error=builder.not_(found))


@box(KernelGeneratorType)
def _box_kernel_generator(typ: Any, val: Any, c: Any) -> Any:
    gen = c.context.make_helper(c.builder, typ, val)
    obj = gen.parent
    c.pyapi.incref(obj)
    c.context.nrt.decref(c.builder, typ, val)
    return obj


@numba.njit(cache=True)
def below(rng: np.random.Generator, k: int) -> int:
    """A uniform integer in ``[0, k)`` from one double (bias below 2**-52, far below noise).

    Raises:
        ValueError: ``k`` is below 1 (there is no such integer); the draw is not made.
    """
    if k < 1:
        raise ValueError("below(rng, k): k must be at least 1")
    return int(rng.random() * k)


@numba.njit(cache=True)
def shuffle(values: np.ndarray[Any, Any], rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """``values`` in a uniformly random order, in place (Fisher-Yates); returns ``values``.

    Raises:
        ValueError: ``values`` is not 1-D (swapping rows of a 2-D array through
            views would copy one row over both; shuffle ``np.arange(n)`` and index
            the rows with it instead).
    """
    if values.ndim != 1:
        raise ValueError("shuffle(values, rng): values must be 1-D; shuffle row indices instead")
    for i in range(len(values) - 1, 0, -1):
        j = below(rng, i + 1)
        values[i], values[j] = values[j], values[i]
    return values


@numba.njit(cache=True)
def permutation(n: int, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """A uniformly random order of ``0..n-1`` (Fisher-Yates on ``arange(n)``).

    Raises:
        ValueError: ``n`` is negative (numpy's ``permutation`` refuses it too; an
            empty order would hide the mistake).
    """
    if n < 0:
        raise ValueError("permutation(n, rng): n must not be negative")
    return shuffle(np.arange(n), rng)
