"""Checks a workflow before anything runs, and reports every problem at once.

Everything that can be known before a run is checked here (docs/workflows.md,
section Validation, lists it): every reference, in a node's input and in its
``when`` condition, names a node or declared input and a field its type has;
no node waits for itself; a target gets the arguments it needs, a dict input
mapping onto a function's parameters exactly as the scheduler will map it
(``_WorkflowExecution.arguments``); and connected types fit, for agents'
input models and for annotated functions alike. Each problem names the node
and the part of it (for YAML, the line of the reference).

A type mismatch is reported only where both sides are known and certainly do
not fit: a source whose declared type is not the destination's type nor a
subclass of it (an ``int`` may feed a ``float``; a ``bool`` an ``int``).
``Any``, unannotated or unresolvable annotations, type variables, literals,
protocols and the like are not checked; a union source is reported only when
none of its members fits, a union destination when the source fits none of
its members. Agents validate their input with pydantic, so there a dict may
feed a model, one sequence type another, and text or a number a date, an enum,
a UUID, a path or a decimal; plain functions get the value as it is.
"""

from __future__ import annotations

import datetime
import decimal
import difflib
import enum
import functools
import inspect
import pathlib
import types
import typing
import uuid
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any, NamedTuple, TypeVar

import pydantic

from ambidex.workflows._refs import INPUTS, Condition, Interpolation, Ref, find_refs
from ambidex.workflows._spec import (
    CallInfo,
    Node,
    Workflow,
    WorkflowDefinitionError,
    call_info,
    call_style,
    target_signature,
)

__all__ = ["check_inputs", "topological_order", "validate"]

Part = tuple[str | int, ...]


def _suggest(name: str, known: list[str]) -> str:
    close = _did_you_mean(name, known)
    if close:
        return close
    return f" (known: {', '.join(sorted(known))})" if known else ""


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _names(names: typing.Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)


def validate(wf: Workflow) -> None:
    """Raise ``WorkflowDefinitionError`` listing every problem in ``wf``."""
    problems: list[str] = []
    if not wf.nodes:
        problems.append(f"workflow {wf.name!r} has no nodes")
    names = list(wf.nodes)
    edges = {name: _edges(node) for name, node in wf.nodes.items()}
    by_id: dict[int, _Target] = {}  # thousands of nodes often share one target
    targets: dict[str, _Target] = {}
    for name, node in wf.nodes.items():
        target = by_id.get(id(node.target))
        if target is None:
            target = by_id[id(node.target)] = _read_target(node.target)
        targets[name] = target
    for name, node in wf.nodes.items():
        if targets[name].style is None:
            problems.append(
                f"{node.where(('target',), label=False)}: target {node.target!r} "
                "is not an agent or a function"
            )
        elif (kind := _generator_kind(node.target)) is not None:
            problems.append(
                f"{node.where(('target',), label=False)}: target "
                f"{getattr(node.target, '__qualname__', node.target)!r} is {kind} function: a "
                "node's output is what it returns, so it would pass on a generator that has "
                "not run; return the items instead (e.g. a list)"
            )
        problems.extend(_check_node(wf, node, targets, edges[name], names))
    problems.extend(_cycles(wf, edges))
    if problems:
        raise WorkflowDefinitionError(problems, wf.source)


# -- what a node refers to -----------------------------------------------------------


class _Edge(NamedTuple):
    """One reason a node reads or waits for something: a reference, or an ``after=`` name."""

    source: str
    """A node name, or ``inputs``."""
    part: Part
    """Where: ``("input", key, ...)``, ``("when",)`` or ``("after", i)``."""
    ref: Ref | None
    """None for ``after=``."""


def _when_ref(node: Node) -> Ref | None:
    when = node.when
    if isinstance(when, Condition):
        return when.ref
    return when if isinstance(when, Ref) else None


def _edges(node: Node) -> list[_Edge]:
    edges = [_Edge(name, ("after", i), None) for i, name in enumerate(node.after)]
    edges.extend(_Edge(ref.source, ("input", *where), ref) for where, ref in find_refs(node.input))
    ref = _when_ref(node)
    if ref is not None:
        edges.append(_Edge(ref.source, ("when",), ref))
    return edges


def _generator_kind(target: Any) -> str | None:
    """'a generator' or 'an async generator' when calling ``target`` makes one, else None."""
    fn = inspect.unwrap(target)
    while isinstance(fn, functools.partial):
        fn = inspect.unwrap(fn.func)
    if not (inspect.isfunction(fn) or inspect.ismethod(fn)):
        fn = inspect.getattr_static(type(fn), "__call__", None)  # a callable object
    if inspect.isasyncgenfunction(fn):
        return "an async generator"
    if inspect.isgeneratorfunction(fn):
        return "a generator"
    return None


class _Target(NamedTuple):
    """What validation reads of a node's target, once per target."""

    style: str | None
    """``call_style``; None when it is not an agent or a function."""
    info: CallInfo | None
    """A function's parameters (None for agents)."""
    in_type: Any
    out_type: Any


def _read_target(target: Any) -> _Target:
    try:
        style = call_style(target)
    except TypeError:
        return _Target(None, None, Any, Any)
    if style in ("agent", "agent_class"):
        in_type, out_type = target_signature(target)
        return _Target(style, None, in_type, out_type)
    info = call_info(target)
    return _Target(style, info, Any, info.returns)


def _check_node(
    wf: Workflow, node: Node, targets: dict[str, _Target], edges: list[_Edge], names: list[str]
) -> list[str]:
    problems = []
    types_of: dict[Part, Any] = {}  # the type of each reference that can be followed
    for edge in edges:
        if edge.ref is None:
            if edge.source not in wf.nodes:
                problems.append(
                    f"{node.where(edge.part)}: depends on unknown node "
                    f"{edge.source!r}{_suggest(edge.source, names)}"
                )
            continue
        tp, problem = _source_type(wf, targets, edge.ref, names)
        if problem is not None:
            problems.append(f"{node.where(edge.part)}: {problem}")
        else:
            types_of[edge.part] = tp
    if ("when",) in types_of and isinstance(node.when, Condition):
        problems.extend(_check_condition(node, node.when, types_of[("when",)]))
    target = targets[node.name]
    if target.info is not None:
        problems.extend(_check_call(node, target.info, types_of))
    elif target.style is not None:
        problems.extend(_check_agent(node, target.in_type, types_of))
    return problems


def _source_type(
    wf: Workflow, targets: dict[str, _Target], ref: Ref, names: list[str]
) -> tuple[Any, str | None]:
    """The type a reference yields, or the problem with it."""
    if ref.source == INPUTS:
        name = str(ref.path[0])
        spec = wf.input_specs.get(name)
        if spec is None and wf.input_specs:
            return Any, (
                f"{ref} refers to an undeclared workflow input "
                f"{name!r}{_suggest(name, list(wf.input_specs))}"
            )
        base = spec.type if spec is not None else Any
        tp, problem = _field_type(base, ref.path[1:])
    else:
        source = targets.get(ref.source)
        if source is None:
            return Any, f"{ref} refers to unknown node {ref.source!r}{_suggest(ref.source, names)}"
        tp, problem = _field_type(source.out_type, ref.path)
    return tp, None if problem is None else f"{ref}: {problem}"


_SCALARS = (bool, int, float, str, type(None))

_R = TypeVar("_R")


def _memo(cache: dict[Hashable, _R], key: Hashable, compute: Callable[[], _R]) -> _R:
    """``compute()``, remembered by ``key`` (types repeat across thousands of nodes)."""
    try:
        return cache[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable annotation (Annotated metadata, say)
        return compute()
    if len(cache) > 10_000:
        cache.clear()
    value = cache[key] = compute()
    return value


_FIELD_TYPES: dict[Hashable, tuple[Any, str | None]] = {}


def _field_type(tp: Any, path: tuple[str | int, ...]) -> tuple[Any, str | None]:
    """The type at ``path`` inside ``tp`` (pydantic models walked), or a problem."""
    if not path:
        return tp, None
    return _memo(_FIELD_TYPES, (tp, path), lambda: _walk(tp, path))


def _model_field(model: type[pydantic.BaseModel], part: str | int) -> tuple[Any, str | None]:
    """The type of field ``part`` of ``model``; Any when only the run can tell; or a problem."""
    fields = model.model_fields
    if part in fields:
        return fields[str(part)].annotation, None
    if isinstance(part, str) and hasattr(model, part):
        return Any, None  # a property or method: read with getattr at run time
    if isinstance(part, str) and model.model_config.get("extra") == "allow":
        return Any, None  # extra fields are attributes of the instance, unknown here
    known = ", ".join(fields) or "none"
    return Any, f"{model.__name__} has no field {part!r} (fields: {known})"


def _walk(tp: Any, path: tuple[str | int, ...]) -> tuple[Any, str | None]:
    for part in path:
        tp = _unannotated(tp)
        if tp is Any:
            return Any, None
        if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
            tp, problem = _model_field(tp, part)
            if problem is not None or tp is Any:
                return Any, problem
            continue
        if tp in _SCALARS and isinstance(part, str) and not hasattr(tp, part):
            return Any, f"{_type_name(tp)} has no field {part!r}"
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is list and args and isinstance(part, int):
            tp = args[0]
        elif origin is tuple and args and isinstance(part, int):
            if len(args) == 2 and args[1] is Ellipsis:  # tuple[int, ...]
                tp = args[0]
            elif -len(args) <= part < len(args):  # tuple[int, str]: each item its own type
                tp = args[part]
            else:
                return Any, None
        elif origin is dict and len(args) == 2:
            tp = args[1]
        else:
            return Any, None  # not statically known
    return tp, None


# -- conditions ------------------------------------------------------------------------

_ORDERING = frozenset({"<", "<=", ">", ">="})
_NUMBERS = (bool, int, float)


def _check_condition(node: Node, condition: Condition, tp: Any) -> list[str]:
    """``${ref} > value`` where the two cannot be ordered (a str against a number)."""
    if condition.op not in _ORDERING:
        return []
    cls = _runtime_class(_unannotated(tp))
    literal = type(condition.literal)
    if cls not in _SCALARS or literal not in _SCALARS:
        return []  # unknown, or a type that may define its own ordering
    if (cls in _NUMBERS and literal in _NUMBERS) or (cls is str and literal is str):
        return []
    return [
        f"{node.where(('when',))}: {condition.ref} is {_type_name(cls)}, which cannot be "
        f"compared with {condition.op} to {condition.literal!r} ({literal.__name__})"
    ]


# -- calling the target ----------------------------------------------------------------


def _check_agent(node: Node, in_type: Any, types_of: dict[Part, Any]) -> list[str]:
    cls = node.target if isinstance(node.target, type) else type(node.target)
    is_model = isinstance(in_type, type) and issubclass(in_type, pydantic.BaseModel)
    template = node.input
    if template is None:
        if is_model:
            return [f"{node.where()}: has no input, but {cls.__name__} takes {in_type.__name__}"]
        return []
    if isinstance(template, Ref):
        src = types_of.get(("input",), Any)
        if _compatible(src, in_type, validated=True):
            return []
        return [
            f"{node.where(('input',))}: {cls.__name__} takes {_type_name(in_type)}, "
            f"but {template} is {_type_name(src)}"
        ]
    if not (is_model and isinstance(template, Mapping)):
        return []
    model: type[pydantic.BaseModel] = in_type
    fields, required = _model_fields(model)
    problems = []
    for name, alias in required:
        if name not in template and alias not in template:
            problems.append(
                f"{node.where(('input',), label=False)}: input is missing required field {name!r} "
                f"of {model.__name__}"
            )
    for key, value in template.items():
        if key not in fields or not isinstance(value, Ref):
            continue  # an interpolated string, not the value itself
        src = types_of.get(("input", key), Any)
        dst = fields[key]
        if not _compatible(src, dst, validated=True):
            problems.append(
                f"{node.where(('input', key), label=False)}: input field {key!r} expects "
                f"{_type_name(dst)}, but {value} is {_type_name(src)}"
            )
    return problems


_MODEL_FIELDS: dict[Hashable, tuple[dict[str, Any], list[tuple[str, str | None]]]] = {}


def _model_fields(
    model: type[pydantic.BaseModel],
) -> tuple[dict[str, Any], list[tuple[str, str | None]]]:
    """A model's field types by name, and its required fields (name, alias)."""

    def read() -> tuple[dict[str, Any], list[tuple[str, str | None]]]:
        fields = model.model_fields
        required = [(n, f.alias) for n, f in fields.items() if f.is_required()]
        return {n: f.annotation for n, f in fields.items()}, required

    return _memo(_MODEL_FIELDS, model, read)


def _check_call(node: Node, info: CallInfo, types_of: dict[Part, Any]) -> list[str]:
    """The arguments the scheduler will pass fit the function's parameters.

    The scheduler calls ``f()`` without an input; with a non-empty dict input
    whose keys all name parameters (any key, if ``f`` takes ``**kwargs``),
    ``f(**input)``; with any other input, ``f(input)``. A dict whose keys do not
    all name parameters would be passed whole as the first argument: refused
    here, as almost certainly a mistake (write ``{"param": {...}}`` to pass a
    dict as one argument).
    """
    if info.params is None:
        return []  # no signature to read (some builtins): nothing is known
    template = node.input
    if template is None:
        if not info.required:
            return []
        return [f"{node.where()}: has no input, but {info.name}() requires {_names(info.required)}"]
    if callable(template) and not isinstance(template, Ref):
        return []  # computed at run time
    if isinstance(template, Mapping) and template:
        if info.var_keyword or all(k in info.keywords for k in template):
            return _check_keywords(node, info, template, types_of)
        return _unknown_keys(node, info, template)
    return _check_one_argument(node, info, template, types_of)


def _check_keywords(
    node: Node, info: CallInfo, template: Mapping[Any, Any], types_of: dict[Part, Any]
) -> list[str]:
    assert info.params is not None
    missing = [
        p.name for p in info.params if p.required and (not p.keyword or p.name not in template)
    ]
    problems = []
    if missing:
        problems.append(
            f"{node.where(('input',), label=False)}: input gives no value for {_names(missing)}, "
            f"required by {info.name}()"
        )
    for key, value in template.items():
        param = info.keywords.get(key)
        if param is None or not isinstance(value, Ref):
            continue  # to **kwargs, or not a reference's value itself
        src = types_of.get(("input", key), Any)
        if not _compatible(src, param.type):
            problems.append(
                f"{node.where(('input', key), label=False)}: parameter {key!r} of {info.name}() "
                f"expects {_type_name(param.type)}, but {value} is {_type_name(src)}"
            )
    return problems


def _unknown_keys(node: Node, info: CallInfo, template: Mapping[Any, Any]) -> list[str]:
    """Keys that are not all parameters: the scheduler would pass the dict whole."""
    params = list(info.keywords)
    listed = ", ".join(params) or "none"
    unknown = [k for k in template if k not in info.keywords]
    if len(unknown) < len(template):
        return [
            f"{node.where(('input', key), label=False)}: input key {key!r} names no parameter of "
            f"{info.name}() (parameters: {listed}){_did_you_mean(str(key), params)}"
            for key in unknown
        ]
    first = info.first_positional.name if info.first_positional is not None else None
    whole = (
        f"; the dict would be passed whole as {first!r}: name the parameters, "
        f"or write {{{first!r}: {{...}}}} to pass it as one argument"
        if first is not None
        else ""
    )
    return [
        f"{node.where(('input',))}: "
        + ("key " if len(template) == 1 else "keys ")
        + f"{_names(map(str, template))} "
        + ("matches" if len(template) == 1 else "match")
        + f" none of the parameters of {info.name}() ({listed}){whole}"
    ]


def _check_one_argument(
    node: Node, info: CallInfo, template: Any, types_of: dict[Part, Any]
) -> list[str]:
    """The input is passed as one positional argument: ``f(value)``."""
    assert info.params is not None
    src: Any = Any
    if isinstance(template, Ref):
        src = types_of.get(("input",), Any)
        if not _certainly_not_a_mapping(src):
            return []  # a dict at run time may become keyword arguments
    elif isinstance(template, Interpolation):
        src = str
    first = info.first_positional
    if first is None and not info.var_positional:
        return [
            f"{node.where(('input',))}: the input is passed as one argument, "
            f"but {info.name}() takes no positional argument: give a dict of its parameters"
        ]
    others = [name for name in info.required if first is None or name != first.name]
    if others:
        return [
            f"{node.where(('input',))}: the input is passed as one argument, but {info.name}() "
            f"also requires {_names(others)}: give a dict of its parameters"
        ]
    if first is not None and not _compatible(src, first.type):
        shown = template if isinstance(template, Ref) else "the interpolated text"
        return [
            f"{node.where(('input',))}: parameter {first.name!r} of {info.name}() expects "
            f"{_type_name(first.type)}, but {shown} is {_type_name(src)}"
        ]
    return []


# -- types -----------------------------------------------------------------------------

_SEQUENCES = (list, tuple, set, frozenset)


def _unannotated(tp: Any) -> Any:
    """``tp`` without ``Annotated[...]`` and ``NewType`` wrappers."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif isinstance(tp, typing.NewType):
            tp = tp.__supertype__
        else:
            return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _runtime_class(tp: Any) -> type | None:
    """The class a value of type ``tp`` is an instance of, if that is known."""
    if tp is None:
        return type(None)
    if isinstance(tp, type):
        return tp
    origin = typing.get_origin(tp)  # list[int] -> list
    return origin if isinstance(origin, type) else None


_COMPATIBLE: dict[Hashable, bool] = {}


def _compatible(src: Any, dst: Any, *, validated: bool = False) -> bool:
    """False only when a value of type ``src`` certainly does not fit ``dst``.

    ``validated``: ``dst`` is checked by pydantic (an agent's input), which also
    takes a dict for a model and one sequence type for another.
    """
    if src is dst or src is Any or dst is Any:
        return True
    return _memo(_COMPATIBLE, (src, dst, validated), lambda: _fits(src, dst, validated))


def _fits(src: Any, dst: Any, validated: bool) -> bool:
    src, dst = _unannotated(src), _unannotated(dst)
    if src is Any or dst is Any:
        return True
    if _is_union(dst):
        return any(_compatible(src, m, validated=validated) for m in typing.get_args(dst))
    if _is_union(src):
        return any(_compatible(m, dst, validated=validated) for m in typing.get_args(src))
    s, d = _runtime_class(src), _runtime_class(dst)
    if s is None or d is None:
        return True  # type variables, literals, callables...: not checked
    try:
        if issubclass(s, d):
            return True
        if validated and _pydantic_converts(s, d):
            return True
    except TypeError:
        return True  # protocols and the like
    if s in _NUMBERS and d in (int, float):
        return not (s is float and d is int)
    return False


# What pydantic's lax mode turns a scalar into (a date from "2026-12-06" or a timestamp,
# an enum member from its value, a UUID or a path from text).
_PARSED = (
    datetime.date,
    datetime.time,
    datetime.timedelta,
    decimal.Decimal,
    uuid.UUID,
    pathlib.PurePath,
    enum.Enum,
)


def _pydantic_converts(s: type, d: type) -> bool:
    """Whether pydantic validation takes a value of class ``s`` for a field of class ``d``."""
    if issubclass(d, pydantic.BaseModel):
        return issubclass(s, Mapping)  # a dict is validated into the model
    if d in _SEQUENCES:
        return s in _SEQUENCES
    if d in (str, bytes):
        return s in (str, bytes)
    return s in (*_NUMBERS, str, bytes) and issubclass(d, _PARSED)


_NOT_MAPPINGS: dict[Hashable, bool] = {}


def _certainly_not_a_mapping(tp: Any) -> bool:
    return _memo(_NOT_MAPPINGS, tp, lambda: _not_a_mapping(tp))


def _not_a_mapping(tp: Any) -> bool:
    tp = _unannotated(tp)
    if _is_union(tp):
        return all(_not_a_mapping(m) for m in typing.get_args(tp))
    cls = _runtime_class(tp)
    if cls is None:
        return False
    try:
        return not issubclass(cls, Mapping) and not issubclass(Mapping, cls)
    except TypeError:
        return False


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


# -- order and cycles --------------------------------------------------------------------


def _cycles(wf: Workflow, edges: dict[str, list[_Edge]]) -> Iterator[str]:
    """One problem per group of nodes that wait for each other, at the reference to blame.

    The reference blamed is one to a node defined later (or to the node itself):
    in a cycle, at least one reference points forward.
    """
    order = {name: i for i, name in enumerate(wf.nodes)}
    deps = {
        name: [e for e in node_edges if e.source in order] for name, node_edges in edges.items()
    }
    if all(order[e.source] < order[name] for name, node_deps in deps.items() for e in node_deps):
        return  # every node waits only for nodes defined before it: no cycle
    names = {name: [e.source for e in node_deps] for name, node_deps in deps.items()}
    for group in _strongly_connected(list(wf.nodes), names):
        blamed = next(
            (name, e)
            for name in sorted(group, key=order.__getitem__)
            for e in deps[name]
            if e.source in group and order[e.source] >= order[name]
        )
        name, edge = blamed
        path = _path(deps, edge.source, name, group)  # edge.source waits, in turn, for name
        cycle = [*reversed(path), name]  # in execution order: each waits for the one before
        if len(cycle) > 12:  # a long cycle: its ends say where it closes
            cycle = [*cycle[:5], f"... ({len(cycle) - 10:,} more)", *cycle[-5:]]
        what = str(edge.ref) if edge.ref is not None else repr(edge.source)
        yield (
            f"{wf.nodes[name].where(edge.part)}: {what} makes a cycle: "
            f"{' -> '.join(cycle)} (a node cannot wait for itself)"
        )


def _path(deps: dict[str, list[_Edge]], start: str, goal: str, group: set[str]) -> list[str]:
    """Nodes from ``start`` to ``goal``, each depending on the next (breadth first)."""
    came_from: dict[str, str | None] = {start: None}
    frontier = [start]
    while goal not in came_from:
        step = []
        for name in frontier:
            for e in deps[name]:
                if e.source in group and e.source not in came_from:
                    came_from[e.source] = name
                    step.append(e.source)
        frontier = step
    path = [goal]
    while (prev := came_from[path[-1]]) is not None:
        path.append(prev)
    path.reverse()
    return path


def _strongly_connected(names: list[str], deps: dict[str, list[str]]) -> list[set[str]]:
    """Groups of nodes that wait for each other (Tarjan's algorithm, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups = []
    for root in names:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, 0)]  # a node, and how many of its dependencies were visited
        while work:
            name, i = work[-1]
            children = deps[name]
            if i < len(children):
                work[-1] = (name, i + 1)
                child = children[i]
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, 0))
                elif child in on_stack:
                    low[name] = min(low[name], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[name])
            if low[name] == index[name]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == name:
                        break
                if len(group) > 1 or name in children:
                    groups.append(group)
    return groups


def topological_order(wf: Workflow) -> list[str]:
    """Node names so that each comes after its dependencies (ties by definition order)."""
    remaining = {name: len(node.deps) for name, node in wf.nodes.items()}
    dependents: dict[str, list[str]] = {name: [] for name in wf.nodes}
    for name, node in wf.nodes.items():
        for dep in node.deps:
            dependents[dep].append(name)
    ready = [name for name, count in remaining.items() if count == 0]
    order = []
    while ready:
        name = ready.pop(0)
        order.append(name)
        for child in dependents[name]:
            remaining[child] -= 1
            if remaining[child] == 0:
                ready.append(child)
    return order


# -- run inputs --------------------------------------------------------------------------


def check_inputs(wf: Workflow, given: Mapping[str, Any]) -> dict[str, Any]:
    """The run's inputs, defaults filled in and values validated against declared types.

    Raises:
        WorkflowDefinitionError: an input is missing, unknown or of the wrong type.
    """
    problems = []
    values = dict(given)
    for name, spec in wf.input_specs.items():
        where = f"line {spec.line}: " if spec.line else ""
        if name not in values:
            if spec.required:
                problems.append(f"{where}missing input {name!r} ({_type_name(spec.type)})")
                continue
            values[name] = spec.default
        elif spec.type is not Any:
            try:
                values[name] = pydantic.TypeAdapter(spec.type).validate_python(values[name])
            except pydantic.ValidationError as exc:
                first = exc.errors()[0]["msg"]
                problems.append(f"{where}input {name!r}: expected {_type_name(spec.type)}: {first}")
    if wf.input_specs:
        for name in values:
            if name not in wf.input_specs:
                problems.append(f"unknown input {name!r}{_suggest(name, list(wf.input_specs))}")
    else:
        for name, node, part in _known_input_refs(wf):
            if name not in values:
                line = node.line_of(part)
                problems.append(
                    (f"line {line}: " if line else "")
                    + f"missing input {name!r} (referred to as ${{inputs.{name}}} "
                    f"by node {node.name!r})"
                )
    if problems:
        raise WorkflowDefinitionError(problems, wf.source)
    return values


def _known_input_refs(wf: Workflow) -> list[tuple[str, Node, Part]]:
    """``_input_refs``, found once per shape of the workflow (adding a node resets it).

    Walking every node's edges costs about 1 µs a node, on every run.
    """
    refs: list[tuple[str, Node, Part]] | None = wf._input_refs
    if refs is None:
        refs = wf._input_refs = list(_input_refs(wf))
    return refs


def _input_refs(wf: Workflow) -> Iterator[tuple[str, Node, Part]]:
    """Each workflow input referred to, with the first node and part that refer to it."""
    seen: set[str] = set()
    for node in wf.nodes.values():
        for edge in _edges(node):
            if edge.ref is not None and edge.source == INPUTS:
                name = str(edge.ref.path[0])
                if name not in seen:
                    seen.add(name)
                    yield name, node, edge.part
