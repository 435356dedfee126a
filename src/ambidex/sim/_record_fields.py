"""How agent fields are laid out in a record: scalars and fixed-size vectors.

An ``Agents`` field is a scalar (``wealth=np.int64``: one value per agent) or
a fixed-size vector (``pos=(np.float64, 2)``: an ``(n, 2)`` array). A record
keeps both, and gives them back with the same dtype and shape:

* a scalar is one column named after the field; a vector is one column per
  element, ``pos_0``, ``pos_1``, ... (a vector of shape ``(2, 3)`` is
  flattened in C order: ``m_0`` .. ``m_5``), in SQLite and Parquet alike:
  one layout, plain columns that any reader (pandas, DuckDB, sqlite3) takes as
  they are (a Parquet fixed-size list column was also about 1.2x slower for
  pyarrow to write, 500,000 rows);
* the record's meta ``agent_fields`` maps each field to its dtype (``"<f8"``),
  or to ``[dtype, shape]`` for a vector (``["<f8", [2]]``): what puts the
  columns back together.

Fields must be numbers or booleans (or, as scalars, text): anything else is
refused when the snapshot is taken, naming the field, before a byte of it is
buffered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ambidex.exceptions import AmbidexError

__all__ = ["Field", "RecordError", "check_fields", "fields_from_meta", "fields_to_meta"]

_RESERVED = ("run_id", "step")
_INT64_MAX = np.iinfo(np.int64).max


class RecordError(AmbidexError, ValueError):
    """A record cannot be written or read: wrong path, format or contents."""


@dataclass(frozen=True)
class Field:
    """One agent field as recorded: its dtype and its per-agent shape (``()`` for a scalar)."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        """Values per agent: 1 for a scalar, the vector's element count otherwise."""
        return math.prod(self.shape)

    @property
    def columns(self) -> list[str]:
        """The columns that hold the field: ``[name]``, or ``name_0`` .. ``name_{k-1}``."""
        if not self.shape:
            return [self.name]
        return [f"{self.name}_{i}" for i in range(self.size)]

    def describe(self) -> str:
        """``float64`` or ``float64 vector of shape (2,)``, for error messages."""
        return str(self.dtype) if not self.shape else f"{self.dtype} vector of shape {self.shape}"

    def to_meta(self) -> Any:
        """The field's entry in the record's ``agent_fields`` meta."""
        return self.dtype.str if not self.shape else [self.dtype.str, list(self.shape)]

    def restore(self, values: Any, n: int) -> np.ndarray[Any, Any]:
        """Values read back (any layout of ``n * size`` elements) as ``(n, *shape)`` of dtype."""
        array = np.asarray(values)
        if self.dtype.kind != "U":
            array = array.astype(self.dtype, copy=False)
        else:
            # As wide as the longest text read back: the meta keeps the first
            # snapshot's width, and a later, longer text must not be cut to it.
            array = array.astype(str)
        return array.reshape((n, *self.shape))


def check_fields(
    columns: Mapping[str, np.ndarray[Any, Any]], *, sqlite: bool
) -> tuple[dict[str, Field], int]:
    """The fields of one snapshot, and its number of agents; a ``RecordError`` naming a bad one.

    Raises:
        RecordError: no fields, a name that is not an identifier, columns of
            different lengths, a reserved name, a dtype a
            record cannot hold, an empty vector, a vector whose element columns
            would clash with another field, or (SQLite) an unsigned 64-bit value
            past SQLite's integer range.
    """
    if not columns:
        raise RecordError("a snapshot needs at least one field (one array per agent field)")
    fields: dict[str, Field] = {}
    lengths: dict[str, int] = {}
    for name, array in columns.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise RecordError(f"snapshot field name {name!r} is not an identifier")
        if name in _RESERVED:
            raise RecordError(f"a snapshot field may not be called {name!r}")
        if array.ndim == 0:
            raise RecordError(f"snapshot field {name!r} is a single value, not one per agent")
        field = Field(name, array.dtype, tuple(int(d) for d in array.shape[1:]))
        kinds = "biufU" if not field.shape else "biuf"
        if field.dtype.kind not in kinds:
            raise RecordError(
                f"snapshot field {name!r} has dtype {field.dtype}: a record holds numbers "
                "and booleans (scalars or fixed-size vectors) and text (scalars only)"
            )
        if field.shape and field.size == 0:
            raise RecordError(f"snapshot field {name!r} is a vector of shape {field.shape}: empty")
        if sqlite and field.dtype == np.uint64 and len(array) and int(array.max()) > _INT64_MAX:
            raise RecordError(
                f"snapshot field {name!r} holds uint64 values past SQLite's integer range "
                f"(max {int(array.max())}); record to Parquet or use int64"
            )
        fields[name] = field
        lengths[name] = len(array)
    if len(set(lengths.values())) > 1:
        raise RecordError(f"snapshot columns differ in length: {lengths}")
    _check_clashes(fields, sqlite=sqlite)
    return fields, next(iter(lengths.values()), 0)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _check_clashes(fields: Mapping[str, Field], *, sqlite: bool) -> None:
    # SQLite's column names ignore the case of ASCII letters (and only of those):
    # ``Wealth`` and ``wealth``, or ``Step`` and ``step``, are one column there.
    def key(column: str) -> str:
        return column.translate(_ASCII_LOWER) if sqlite else column

    owner: dict[str, str] = {key(c): c for c in _RESERVED}
    taken: dict[str, str] = {}
    for field in fields.values():
        for column in field.columns:
            if key(column) in owner:
                other = taken.get(key(column), owner[key(column)])
                raise RecordError(
                    f"snapshot fields {other!r} and {field.name!r} would both be stored in "
                    f"the column {column!r}"
                    + (" (SQLite column names ignore case)" if sqlite else "")
                    + "; rename one"
                )
            owner[key(column)] = column
            taken[key(column)] = field.name


def same_layout(a: Mapping[str, Field], b: Mapping[str, Field]) -> bool:
    """Whether two snapshots have the same fields, in order, shapes and kinds of values.

    Numbers must keep their dtype (byte order aside): the record reads a field back
    with the dtype it was first written with, so an int8 field that became int64,
    or an int one that became float, would come back wrapped or truncated. Text
    may change width (it is read back as wide as it is).
    """

    def layout(fields: Mapping[str, Field]) -> list[tuple[str, tuple[int, ...], str]]:
        return [
            (f.name, f.shape, "U" if f.dtype.kind == "U" else f"{f.dtype.kind}{f.dtype.itemsize}")
            for f in fields.values()
        ]

    return layout(a) == layout(b)


def fields_to_meta(fields: Mapping[str, Field]) -> dict[str, Any]:
    """The record's ``agent_fields`` meta."""
    return {name: field.to_meta() for name, field in fields.items()}


def fields_from_meta(meta: Any) -> dict[str, Field]:
    """Fields from the ``agent_fields`` meta (either entry form; records before vectors too)."""
    if not isinstance(meta, Mapping):
        return {}
    fields: dict[str, Field] = {}
    for name, entry in meta.items():
        if isinstance(entry, str):
            fields[name] = Field(name, np.dtype(entry))
        else:
            dtype, shape = entry
            fields[name] = Field(name, np.dtype(dtype), tuple(int(d) for d in shape))
    return fields
