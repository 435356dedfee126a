"""Annotated functions for the type checks between workflow nodes: real annotations.

``wf_typed_lazy`` has the same functions under ``from __future__ import
annotations`` (every annotation a string, resolved by validation); tests run
against both. Keep the two in step.
"""

from typing import Any

import pydantic


class Point(pydantic.BaseModel):
    x: int
    y: int


class Point3(Point):
    z: int = 0


class Other(pydantic.BaseModel):
    name: str


def count(text: str) -> int:
    return len(text)


def label(n: int) -> str:
    return f"n={n}"


def half(n: float) -> float:
    return n / 2


def flag(n: int) -> bool:
    return n > 0


def maybe(n: int) -> int | None:
    return n or None


def either(n: int) -> int | str:
    return n


def text_or_bytes(n: int) -> str | bytes:
    return str(n)


def point(x: int, y: int) -> Point:
    return Point(x=x, y=y)


def point3(x: int, y: int) -> Point3:
    return Point3(x=x, y=y)


def other(name: str) -> Other:
    return Other(name=name)


def as_dict(n: int) -> dict[str, int]:
    return {"x": n, "y": n}


def fuel_in(litres: float) -> dict[str, float]:
    return {"litres": litres}


def norm(p: Point) -> float:
    return float(abs(p.x) + abs(p.y))


def norm3(p: Point3) -> float:
    return float(abs(p.x) + abs(p.y) + abs(p.z))


def opt_text(text: str | None) -> str:
    return text or ""


def numbers(n: int) -> list[int]:
    return list(range(n))


def total(xs: list[int]) -> int:
    return sum(xs)


def any_in(x: Any) -> Any:
    return x


def unannotated(x):  # type: ignore[no-untyped-def]
    return x


def pair(a: int, b: int) -> int:
    return a + b


def unresolved(n: "Missing", text: str) -> "AlsoMissing":  # type: ignore[name-defined]  # noqa: F821
    """Annotations naming nothing in this module: skipped, not an error; ``text`` is checked."""
    return (n, text)


def identity_for(t: type) -> Any:
    """A closure per type: with real annotations each has its own ``x: t``; under
    string annotations ``t`` names nothing in the module and is skipped."""

    def identity(x: t) -> t:  # type: ignore[valid-type]
        return x

    return identity
