r"""The JSON a job may carry: what can be stored and read back exactly, and nothing else.

Python's ``json`` reads ``NaN``, ``Infinity`` and ``1e400`` (as infinity),
and strings with lone surrogates (``"\ud800"``); pydantic then turns
non-finite floats into ``null`` without a word, and no UTF-8 answer can carry a
lone surrogate. So a job's input (and its result) is checked here before it is
stored: a value that could not come back exactly as it went in is refused,
naming where it is, rather than being changed or failing later, on a read.

Limits (``docs/jobs.md``): no NaN or infinity, no lone surrogates (in strings
or keys), at most ``MAX_DEPTH`` levels of nesting, keys are strings.
"""

from __future__ import annotations

import functools
import json
import math
import re
import sys
from typing import Any

from ambidex._text import plain_text

__all__ = [
    "MAX_DEPTH",
    "JsonProblem",
    "dumps",
    "find_problem",
    "json_text",
    "loads_stored",
    "raw_problem",
]

MAX_DEPTH = 100
"""Deepest nesting of lists and objects in a job's input or result."""

_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonProblem(ValueError):
    """A value that cannot be stored as JSON; ``loc`` is where in it, ``msg`` what is wrong."""

    def __init__(self, loc: list[str | int], msg: str) -> None:
        self.loc = loc
        self.msg = msg
        where = ".".join(str(p) for p in loc) or "(the value)"
        super().__init__(f"{where}: {msg}")


def _surrogate(text: str) -> str:
    found = _SURROGATE.search(text)
    code = ord(found.group()) if found else 0
    return f"holds a lone surrogate (\\u{code:04x}), which is not valid Unicode text"


def find_problem(value: Any, *, strict: bool = False) -> JsonProblem | None:
    """The first place where ``value`` is not JSON that reads back exactly, or None.

    With ``strict``, anything but dicts with string keys, lists, strings,
    numbers, booleans and None is a problem too (a result must be plain JSON);
    without it, other objects are left for the input's schema to judge.
    """
    stack: list[tuple[Any, list[str | int], int]] = [(value, [], 0)]
    while stack:
        item, loc, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth >= MAX_DEPTH:
                return JsonProblem(loc, f"nested deeper than {MAX_DEPTH} levels")
            problem = _push_children(item, loc, depth, stack, strict)
        else:
            problem = _scalar_problem(item, loc, strict)
        if problem is not None:
            return problem
    return None


def _too_many_digits(number: int) -> bool:
    """True for an int Python refuses to write as text (``sys.set_int_max_str_digits``)."""
    limit = sys.get_int_max_str_digits()
    # 10**limit has about 3.32 * limit bits: only ints near that size need the exact check
    return limit > 0 and number.bit_length() > 3 * limit and abs(number) >= _power_of_ten(limit)


@functools.cache
def _power_of_ten(exponent: int) -> int:
    return int(10**exponent)


def _scalar_problem(item: Any, loc: list[str | int], strict: bool) -> JsonProblem | None:
    if isinstance(item, str):
        return JsonProblem(loc, _surrogate(item)) if _SURROGATE.search(item) else None
    if isinstance(item, float) and not math.isfinite(item):
        return JsonProblem(loc, f"{item!r} is not a JSON number (no NaN or infinity)")
    if isinstance(item, int) and _too_many_digits(item):
        return JsonProblem(
            loc, f"an integer of more than {sys.get_int_max_str_digits()} digits is not storable"
        )
    if strict and not (item is None or isinstance(item, bool | int | float)):
        return JsonProblem(loc, f"a value of type {plain_text(type(item).__name__)} is not JSON")
    return None


def _push_children(
    item: dict[Any, Any] | list[Any] | tuple[Any, ...],
    loc: list[str | int],
    depth: int,
    stack: list[tuple[Any, list[str | int], int]],
    strict: bool,
) -> JsonProblem | None:
    """Put the children of a container on ``stack``, first child on top (popped first)."""
    if not isinstance(item, dict):
        stack.extend((item[i], [*loc, i], depth + 1) for i in range(len(item) - 1, -1, -1))
        return None
    children: list[tuple[Any, list[str | int], int]] = []
    for key, child in item.items():
        if not isinstance(key, str):
            if strict:
                return JsonProblem(loc, f"key {plain_text(repr(key))} is not a string")
            key = plain_text(key)
        elif _SURROGATE.search(key):
            return JsonProblem([*loc, plain_text(key)], "this key " + _surrogate(key))
        children.append((child, [*loc, key], depth + 1))
    stack.extend(reversed(children))
    return None


def dumps(value: Any) -> str:
    """Compact JSON text, as stored (non-ASCII kept as is; NaN refused)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# The checks below let ``json.dumps`` (C) do the walking: it refuses NaN, infinity,
# types that are not JSON and integers too long to write; what it lets through, a
# regex and a count of brackets settle. Only when one of them objects does the
# Python walk of ``find_problem`` run, to say where.


def _needs_a_closer_look(text: str) -> bool:
    # more opening brackets than MAX_DEPTH may (not must) nest too deep
    return text.count("[") + text.count("{") > MAX_DEPTH or _SURROGATE.search(text) is not None


def json_text(value: Any) -> str:
    """``value`` as the JSON text to store, if it is plain JSON that reads back exactly.

    Raises:
        JsonProblem: naming where ``value`` is not (see ``find_problem``, strict).
    """
    try:
        text: str | None = dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = None
    if text is None or _needs_a_closer_look(text):
        problem = find_problem(value, strict=True)
        if problem is not None:
            raise problem
        if text is None:  # pragma: no cover - whatever dumps refused, the walk finds
            raise JsonProblem([], "not JSON")
    assert text is not None
    return text


def _opaque(_value: Any) -> None:
    return None


def raw_problem(value: Any) -> JsonProblem | None:
    """``find_problem(value)`` (objects that are not JSON left for a schema to judge), fast."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, default=_opaque)
    except (TypeError, ValueError, RecursionError):
        return find_problem(value)
    return find_problem(value) if _needs_a_closer_look(text) else None


def loads_stored(text: str) -> Any:
    r"""A stored JSON value, read back, that every answer can carry.

    Only rows an older ambidex wrote (before lone surrogates were refused) can
    hold one: it comes back as its ``\udcxx`` escape rather than failing the
    answer that shows it.
    """
    value = json.loads(text)
    if "\\u" in text and find_problem(value) is not None:
        value = _escape_surrogates(value)
    return value


def _escape_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return plain_text(value)
    if isinstance(value, list):
        return [_escape_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {plain_text(k): _escape_surrogates(v) for k, v in value.items()}
    return value
