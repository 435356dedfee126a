"""What ``--json`` prints: strict JSON (RFC 8259) that every reader takes.

Python's ``json.dumps`` writes a NaN or an infinity as the bare words ``NaN`` and
``Infinity``, which ``jq``, JavaScript's ``JSON.parse`` and most other readers
refuse, so one NaN metric made a whole ``--json`` answer unreadable. Here they
are written as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (the
spelling of the proto3 JSON mapping), and nothing else changes: a reader that
expects a number finds the string and sees why, and no value becomes ``null``
or ``0`` silently. numpy numbers and arrays are written as numbers and lists;
any other object that JSON cannot hold, by its ``str``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import typer

__all__ = ["json_text", "plain_json", "print_json"]


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy numbers and arrays
        return obj.tolist()
    return str(obj)


def plain_json(value: Any) -> Any:
    """``value`` as plain JSON types (numpy values as numbers and lists; NaN stays).

    Other objects JSON cannot hold are written by their ``str``.
    """
    return json.loads(json.dumps(value, default=_default))


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float written as its name (a string)."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_text(value: Any, *, indent: int | None = 2) -> str:
    """``value`` as strict JSON text (see the module's docstring)."""
    try:
        return json.dumps(value, indent=indent, default=_default, allow_nan=False)
    except ValueError:  # a NaN or an infinity somewhere (numpy's included, once listed)
        return json.dumps(_finite(plain_json(value)), indent=indent, allow_nan=False)


def print_json(value: Any) -> None:
    """Print ``json_text(value)`` on stdout."""
    typer.echo(json_text(value))
