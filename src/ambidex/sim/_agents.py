"""Agents as columns: one typed numpy array per field, births and deaths without loops.

``Agents(wealth=np.int64, x=np.int32)`` holds a population whose fields are
arrays: ``agents.wealth`` is a view of the live agents' wealth, so a rule over
the whole population is one array expression. Every agent also has an ``id``
(``int64``, unique for the table's life, in order of birth).

Births append (``add``), deaths remove by mask or index and keep the survivors
in their order (``remove``). A compiled kernel that creates agents while it
runs works on the full-capacity arrays (``reserve`` then ``column``) and says
how many rows are live afterwards (``set_count``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Agents"]

_RESERVED = frozenset({"id"})


class Agents:
    """A population stored as a structure of arrays.

    Args:
        capacity: rows to allocate up front (the table grows as needed).
        **fields: field name to numpy dtype, e.g. ``energy=np.float64``.

    Raises:
        ValueError: a field is called ``id`` (every table has one) or is not an identifier.
        TypeError: a dtype numpy does not understand.
    """

    def __init__(self, capacity: int = 0, /, **fields: npt.DTypeLike) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        if not fields:
            raise ValueError("Agents needs at least one field, e.g. Agents(wealth=np.int64)")
        dtypes: dict[str, np.dtype[Any]] = {"id": np.dtype(np.int64)}
        for name, dt in fields.items():
            if name in _RESERVED:
                raise ValueError(f"field {name!r} is reserved: every agent has an id already")
            if not name.isidentifier() or name.startswith("_"):
                raise ValueError(f"field name {name!r} must be an identifier not starting with _")
            try:
                dtypes[name] = np.dtype(dt)
            except TypeError as exc:
                raise TypeError(f"field {name!r}: {dt!r} is not a numpy dtype ({exc})") from None
        self._dtypes = dtypes
        self._n = 0
        self._next_id = 0
        self._cols: dict[str, np.ndarray[Any, Any]] = {
            name: np.zeros(capacity, dtype=dt) for name, dt in dtypes.items()
        }

    # -- shape -------------------------------------------------------------

    def __len__(self) -> int:
        return self._n

    @property
    def capacity(self) -> int:
        """Rows allocated (live rows plus room to grow)."""
        return len(self._cols["id"])

    @property
    def fields(self) -> dict[str, np.dtype[Any]]:
        """Field name to dtype, ``id`` first."""
        return dict(self._dtypes)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self._dtypes.items())
        return f"Agents(n={self._n}, {fields})"

    # -- reading -----------------------------------------------------------

    def __getattr__(self, name: str) -> np.ndarray[Any, Any]:
        # Reached only when ``name`` is not in the instance dict: the view is kept
        # there, so the next ``agents.wealth`` is a plain attribute lookup (a model
        # reads its fields every step) until the live rows or the arrays change.
        cols = self.__dict__.get("_cols")
        if cols is None or name not in cols:
            known = ", ".join(cols) if cols else ""
            raise AttributeError(f"agents have no field {name!r} (fields: {known})")
        view: np.ndarray[Any, Any] = cols[name][: self._n]
        self.__dict__[name] = view
        return view

    def _drop_views(self) -> None:
        """Forget the field views ``__getattr__`` kept: the rows or the arrays changed."""
        d = self.__dict__
        for name in d.get("_cols", ()):
            d.pop(name, None)

    def __getstate__(self) -> dict[str, Any]:
        # Pickled views would come back as copies, no longer views of the columns.
        return {k: v for k, v in self.__dict__.items() if k.startswith("_")}

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            if name in ("_n", "_cols"):
                self._drop_views()
            object.__setattr__(self, name, value)
            return
        cols = self.__dict__.get("_cols", {})
        if name not in cols:
            raise AttributeError(f"agents have no field {name!r}; declare it in Agents(...)")
        if name == "id":
            raise AttributeError("agent ids are assigned by the table and cannot be set")
        cols[name][: self._n] = value

    def __getitem__(self, name: str) -> np.ndarray[Any, Any]:
        """``agents["wealth"]``: the live rows of a field (a view)."""
        if name not in self._cols:
            raise KeyError(f"agents have no field {name!r} (fields: {', '.join(self._cols)})")
        view: np.ndarray[Any, Any] = self._cols[name][: self._n]
        return view

    def __iter__(self) -> Iterator[str]:
        return iter(self._cols)

    def column(self, name: str) -> np.ndarray[Any, Any]:
        """The full-capacity array of a field, for a compiled kernel that adds agents."""
        return self._cols[name]

    def snapshot(self) -> dict[str, np.ndarray[Any, Any]]:
        """A copy of every field's live rows."""
        return {name: col[: self._n].copy() for name, col in self._cols.items()}

    # -- births and deaths -------------------------------------------------

    def reserve(self, extra: int) -> None:
        """Make room for ``extra`` more rows without another allocation."""
        need = self._n + extra
        if need <= self.capacity:
            return
        new_cap = max(need, 2 * self.capacity, 16)
        for name, col in self._cols.items():
            grown = np.zeros(new_cap, dtype=col.dtype)
            grown[: self._n] = col[: self._n]
            self._cols[name] = grown
        self._drop_views()

    def add(self, count: int, /, **values: Any) -> slice:
        """Append ``count`` agents; fields given as scalars or arrays of length ``count``.

        Fields not given are zero. Returns the slice of the new rows.

        Raises:
            KeyError: an unknown field.
            ValueError: an array whose length is not ``count``.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        unknown = set(values) - set(self._cols)
        if unknown or "id" in values:
            bad = sorted(unknown | ({"id"} & set(values)))
            raise KeyError(f"cannot set field(s) {bad}: fields are {list(self._cols)[1:]}")
        for name, v in values.items():
            if np.ndim(v) and len(v) != count:
                raise ValueError(f"field {name!r}: {len(v)} values for {count} new agents")
        self.reserve(count)
        start, stop = self._n, self._n + count
        self._cols["id"][start:stop] = np.arange(self._next_id, self._next_id + count)
        for name, col in self._cols.items():
            if name == "id":
                continue
            col[start:stop] = values.get(name, 0)
        self._n = stop
        self._next_id += count
        return slice(start, stop)

    def remove(self, which: npt.ArrayLike) -> int:
        """Remove agents by boolean mask (over live rows) or by row indices.

        Survivors keep their relative order. Returns how many were removed.
        """
        arr = np.asarray(which)
        if arr.dtype == np.bool_:
            if arr.shape != (self._n,):
                raise ValueError(f"mask of shape {arr.shape} for {self._n} agents")
            keep = ~arr
        else:
            keep = np.ones(self._n, dtype=bool)
            keep[arr.astype(np.intp, copy=False)] = False
        survivors = int(keep.sum())
        if survivors == self._n:
            return 0
        for col in self._cols.values():
            col[:survivors] = col[: self._n][keep]
        removed = self._n - survivors
        self._n = survivors
        return removed

    def set_count(self, n: int, next_id: int | None = None) -> None:
        """Declare ``n`` live rows after a kernel wrote into the full-capacity arrays.

        ``next_id``: the next unused id, if the kernel assigned ids to agents it created.
        """
        if not 0 <= n <= self.capacity:
            raise ValueError(f"count {n} outside 0..capacity ({self.capacity})")
        self._n = n
        if next_id is not None:
            self._next_id = next_id

    @property
    def next_id(self) -> int:
        """The id the next agent born will get."""
        return self._next_id

    def to_dict(self) -> Mapping[str, np.ndarray[Any, Any]]:
        """Views of every field's live rows."""
        return {name: col[: self._n] for name, col in self._cols.items()}
