"""A table of per-step metrics: one numpy column per metric, ``step`` first."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["MetricsTable"]


class MetricsTable:
    """Per-step metrics of one run: ``table["gini"]`` is an array over steps.

    Columns are numpy arrays of equal length; the first is ``step``. The table
    pickles small (it travels back from sweep workers) and compares exactly
    (``equals``, ``digest``), which is how determinism is checked.
    """

    def __init__(self, columns: Mapping[str, Any]) -> None:
        cols = {name: np.asarray(values) for name, values in columns.items()}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise ValueError(f"metric columns differ in length: {sorted(lengths)}")
        self._cols = cols

    @classmethod
    def from_rows(cls, names: Sequence[str], rows: Sequence[Sequence[Any]]) -> MetricsTable:
        """Build from row tuples in the order of ``names``."""
        if not rows:
            return cls({n: np.array([]) for n in names})
        by_col = list(zip(*rows, strict=True))
        return cls({n: np.asarray(by_col[i]) for i, n in enumerate(names)})

    @property
    def columns(self) -> list[str]:
        """Column names, ``step`` first."""
        return list(self._cols)

    def __len__(self) -> int:
        return len(next(iter(self._cols.values()))) if self._cols else 0

    def __getitem__(self, name: str) -> np.ndarray[Any, Any]:
        try:
            return self._cols[name]
        except KeyError:
            raise KeyError(f"no metric {name!r}; columns are {self.columns}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._cols

    def __iter__(self) -> Iterator[str]:
        return iter(self._cols)

    def __repr__(self) -> str:
        return f"MetricsTable({len(self)} rows: {', '.join(self.columns)})"

    def rows(self) -> list[dict[str, Any]]:
        """One dict per step, with Python numbers."""
        names = self.columns
        return [
            dict(zip(names, values, strict=True))
            for values in zip(*(self._cols[n].tolist() for n in names), strict=True)
        ]

    def last(self) -> dict[str, Any]:
        """The final step's metrics."""
        if len(self) == 0:
            return {}
        return {n: c[-1].item() for n, c in self._cols.items()}

    def to_dict(self) -> dict[str, list[Any]]:
        """Column name to list of Python numbers (JSON-ready; NaN stays NaN)."""
        return {n: c.tolist() for n, c in self._cols.items()}

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` (pandas must be installed)."""
        import pandas as pd  # type: ignore[import-untyped]

        return pd.DataFrame(self._cols)

    def equals(self, other: MetricsTable) -> bool:
        """Bit-for-bit the same columns, names, dtypes and values (NaN equal to NaN)."""
        if self.columns != other.columns:
            return False
        for name in self.columns:
            a, b = self._cols[name], other._cols[name]
            if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                return False
        return True

    def digest(self) -> str:
        """SHA-256 over names, dtypes and bytes: equal digests mean identical tables."""
        h = hashlib.sha256()
        for name, col in self._cols.items():
            h.update(name.encode())
            h.update(str(col.dtype).encode())
            h.update(np.ascontiguousarray(col).tobytes())
        return h.hexdigest()
