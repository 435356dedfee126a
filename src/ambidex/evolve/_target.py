"""The function to evolve: ``@ax.evolve.target(goal=..., metric=...)`` in a file.

A target file holds the function to evolve, marked with the decorator, and an
evaluator (by default the function named ``evaluate``) that takes the target
function and returns a dict of metrics::

    import ambidex as ax

    @ax.evolve.target(goal="maximise the sum of radii", metric="sum_radii")
    def pack(n: int = 26) -> list[tuple[float, float, float]]:
        ...

    def evaluate(pack) -> dict[str, float]:
        circles = pack()
        ...                                   # check the geometry
        return {"sum_radii": total}

The coordinator never runs the file itself: it reads the decorator's
arguments and the function's source with ``ast``. Candidates are the file with
the function's ``def`` replaced (decorators kept), run in the sandbox.
"""

from __future__ import annotations

import ast
import hashlib
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ambidex.exceptions import AmbidexError

__all__ = ["Target", "TargetError", "TargetSpec", "evaluator", "load_target", "target"]

F = TypeVar("F", bound=Callable[..., Any])


class TargetError(AmbidexError, ValueError):
    """A target file cannot be used: names the file, line and what was expected."""


@dataclass(frozen=True)
class TargetSpec:
    """What ``@ax.evolve.target(...)`` says about the function."""

    goal: str
    metric: str
    maximize: bool = True
    evaluator: str = "evaluate"
    features: dict[str, tuple[float, float, int]] = field(default_factory=dict)
    alternatives: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.goal, str) or not self.goal.strip():
            raise ValueError("goal must be a non-empty string")
        if not isinstance(self.metric, str) or not self.metric:
            raise ValueError("metric must be the name of a metric the evaluator returns")
        if not isinstance(self.evaluator, str) or not self.evaluator.isidentifier():
            raise ValueError(f"evaluator must be a function name, got {self.evaluator!r}")
        for name, spec in self.features.items():
            ok = (
                isinstance(spec, (tuple, list))
                and len(spec) == 3
                and all(isinstance(v, (int, float)) for v in spec)
                and spec[0] < spec[1]
                and int(spec[2]) >= 1
            )
            if not ok:
                raise ValueError(
                    f"feature {name!r} must be (low, high, bins) with low < high and bins >= 1, "
                    f"got {spec!r}"
                )
        for group in self.alternatives:
            if (
                not isinstance(group, (list, tuple))
                or len(group) < 2
                or not all(isinstance(s, str) and s for s in group)
            ):
                raise ValueError(
                    f"alternatives must be groups of at least two snippets, got {group!r}"
                )


def target(
    *,
    goal: str,
    metric: str,
    maximize: bool = True,
    evaluator: str = "evaluate",
    features: Mapping[str, tuple[float, float, int]] | None = None,
    alternatives: Sequence[Sequence[str]] | None = None,
) -> Callable[[F], F]:
    """Mark the function to evolve (the decorator leaves it unchanged).

    Args:
        goal: what a better program does, in words (an LLM proposer reads it).
        metric: the evaluator's metric that is the score.
        maximize: higher score is better (False: lower is).
        evaluator: name of the function in the same file that takes the target
            function and returns ``{metric: value, ...}``.
        features: MAP-Elites dimensions, ``name -> (low, high, bins)``; a value
            comes from the evaluator's metric of that name, or is built in
            (``length``: characters of code, ``lines``: non-blank lines).
        alternatives: groups of interchangeable snippets the offline proposer
            may swap (``[["<", "<="], ["min(", "max("]]``).

    The arguments must be literals: they are read from the file with ``ast``.
    """
    spec = TargetSpec(
        goal=goal,
        metric=metric,
        maximize=maximize,
        evaluator=evaluator,
        features={k: (v[0], v[1], int(v[2])) for k, v in (features or {}).items()},
        alternatives=[list(g) for g in (alternatives or [])],
    )

    def mark(fn: F) -> F:
        fn.__ax_evolve__ = spec  # type: ignore[attr-defined]
        return fn

    return mark


def evaluator(fn: F) -> F:
    """Optional marker for the evaluator function (documentation only)."""
    return fn


@dataclass(frozen=True)
class Target:
    """A target read from its file: the spec, the function's source and how to splice it."""

    path: Path
    source: str
    name: str
    spec: TargetSpec
    code: str
    """The function's source (``def ...`` to its end, decorators excluded), dedented."""
    def_start: int
    """0-based index of the ``def`` line."""
    def_end: int
    """0-based index one past the function's last line."""

    @property
    def digest(self) -> str:
        """SHA-256 of the file (a stored run remembers which file it evolved)."""
        return hashlib.sha256(self.source.encode()).hexdigest()

    def with_code(self, code: str) -> str:
        """The whole file with the function replaced by ``code``."""
        lines = self.source.splitlines(keepends=True)
        body = textwrap.dedent(code).strip("\n") + "\n"
        return "".join(lines[: self.def_start]) + body + "".join(lines[self.def_end :])

    def check(self, code: str) -> str | None:
        """Why ``code`` cannot replace the function, or None if it can."""
        if "\0" in code:
            return "the code holds a NUL byte"
        try:
            code.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"the code is not UTF-8 text: {exc.reason} at character {exc.start}"
        try:
            tree = ast.parse(textwrap.dedent(code))
        except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
            # The parser's own limits (nesting) raise MemoryError or RecursionError.
            where = _parse_problem(exc)
            return f"the code does not parse: {where}"
        defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        if len(tree.body) != 1 or len(defs) != 1:
            return f"the code must be exactly one function definition, def {self.name}(...)"
        if defs[0].name != self.name:
            return f"the function is named {defs[0].name!r}; it must stay {self.name!r}"
        try:
            ast.parse(self.with_code(code))
        except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
            return f"the file does not parse with this code: {_parse_problem(exc)}"
        return None


def _parse_problem(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"line {exc.lineno}: {exc.msg}"
    if isinstance(exc, (MemoryError, RecursionError)):
        return "nested too deeply for the parser"
    return str(exc)


def _is_target_decorator(node: ast.expr) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr == "target":
        inner = func.value
        return (isinstance(inner, ast.Attribute) and inner.attr == "evolve") or (
            isinstance(inner, ast.Name) and inner.id == "evolve"
        )
    return isinstance(func, ast.Name) and func.id == "target"


def _spec_from(call: ast.Call, where: str) -> TargetSpec:
    if call.args:
        raise TargetError(f"{where}: @target takes keyword arguments only")
    values: dict[str, Any] = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise TargetError(f"{where}: @target cannot take **kwargs")
        try:
            values[kw.arg] = ast.literal_eval(kw.value)
        except ValueError:
            raise TargetError(
                f"{where}: @target argument {kw.arg!r} must be a literal "
                f"(the file is read, not run), got {ast.unparse(kw.value)!r}"
            ) from None
    allowed = {"goal", "metric", "maximize", "evaluator", "features", "alternatives"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise TargetError(
            f"{where}: unknown @target argument(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(allowed))}"
        )
    for required in ("goal", "metric"):
        if required not in values:
            raise TargetError(f"{where}: @target needs {required}=...")
    features = values.pop("features", None) or {}
    alternatives = values.pop("alternatives", None) or []
    try:
        if not isinstance(features, dict):
            raise ValueError(f"features must be a dict, got {features!r}")
        return TargetSpec(
            features={k: tuple(v) for k, v in features.items()},
            alternatives=[list(g) for g in alternatives],
            **values,
        )
    except (TypeError, ValueError) as exc:
        raise TargetError(f"{where}: {exc}") from None


def load_target(path: str | Path) -> Target:
    """Read the target function and its spec from a file (without running it).

    Raises:
        TargetError: the file is missing or does not parse, has no or several
            ``@ax.evolve.target`` functions, a non-literal argument, or no
            evaluator function.
    """
    p = Path(path)
    if not p.is_file():
        raise TargetError(f"target file not found: {p}")
    source = p.read_text(encoding="utf-8")
    try:
        tree = ast.parse(source, filename=str(p))
    except SyntaxError as exc:
        raise TargetError(f"{p}:{exc.lineno}: the file does not parse: {exc.msg}") from None
    found: list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, ast.Call]] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for deco in node.decorator_list:
                if _is_target_decorator(deco):
                    assert isinstance(deco, ast.Call)
                    found.append((node, deco))
    if not found:
        raise TargetError(
            f"{p}: no function marked @ax.evolve.target(goal=..., metric=...) at the top level"
        )
    if len(found) > 1:
        names = ", ".join(f"{fn.name} (line {fn.lineno})" for fn, _ in found)
        raise TargetError(f"{p}: one @ax.evolve.target per file, found {len(found)}: {names}")
    fn, call = found[0]
    spec = _spec_from(call, f"{p}:{call.lineno}")
    functions = {
        n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    if spec.evaluator not in functions:
        raise TargetError(
            f"{p}: no evaluator function {spec.evaluator!r} at the top level; define "
            f"def {spec.evaluator}({fn.name}) -> dict[str, float] or name it with evaluator=..."
        )
    lines = source.splitlines(keepends=True)
    start = fn.lineno - 1
    end = fn.end_lineno if fn.end_lineno is not None else len(lines)
    code = textwrap.dedent("".join(lines[start:end]))
    return Target(
        path=p.resolve(),
        source=source,
        name=fn.name,
        spec=spec,
        code=code,
        def_start=start,
        def_end=end,
    )
