"""Checks a workflow before anything runs, and reports every problem at once."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping
from typing import Any

import pydantic

from ambidex.workflows._refs import INPUTS, Ref, find_refs
from ambidex.workflows._spec import (
    Node,
    Workflow,
    WorkflowDefinitionError,
    call_style,
    target_signature,
)

__all__ = ["check_inputs", "topological_order", "validate"]


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (known: {', '.join(sorted(known))})" if known else ""


def validate(wf: Workflow) -> None:
    """Raise ``WorkflowDefinitionError`` listing every problem in ``wf``."""
    problems: list[str] = []
    if not wf.nodes:
        problems.append(f"workflow {wf.name!r} has no nodes")
    names = list(wf.nodes)
    for node in wf.nodes.values():
        problems.extend(_check_node(wf, node, names))
    cycle = _find_cycle(wf)
    if cycle:
        problems.append(f"cycle: {' -> '.join(cycle)} (a node cannot wait for itself)")
    if problems:
        raise WorkflowDefinitionError(problems, wf.source)


def _check_node(wf: Workflow, node: Node, names: list[str]) -> list[str]:
    problems = []
    try:
        call_style(node.target)
    except TypeError:
        problems.append(f"{node.where()}: target {node.target!r} is not an agent or a function")
    for dep in sorted(node.deps):
        if dep not in wf.nodes:
            problems.append(
                f"{node.where()}: depends on unknown node {dep!r}{_suggest(dep, names)}"
            )
    for _, ref in find_refs(node.input):
        if ref.source == INPUTS and wf.input_specs:
            name = str(ref.path[0])
            if name not in wf.input_specs:
                problems.append(
                    f"{node.where()}: {ref} refers to an undeclared workflow input "
                    f"{name!r}{_suggest(name, list(wf.input_specs))}"
                )
    if not problems:
        problems.extend(_check_types(wf, node))
    return problems


# -- types between connected nodes -------------------------------------------


def _field_type(tp: Any, path: tuple[str | int, ...]) -> tuple[Any, str | None]:
    """The type at ``path`` inside ``tp`` (pydantic models walked), or a problem."""
    for part in path:
        if tp is Any:
            return Any, None
        if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
            fields = tp.model_fields
            if part not in fields:
                known = ", ".join(fields) or "none"
                return Any, f"{tp.__name__} has no field {part!r} (fields: {known})"
            tp = fields[str(part)].annotation
            continue
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (list, tuple) and args and isinstance(part, int):
            tp = args[0]
        elif origin is dict and len(args) == 2:
            tp = args[1]
        else:
            return Any, None  # not statically known
    return tp, None


def _compatible(src: Any, dst: Any) -> bool:
    if src is Any or dst is Any:
        return True
    if not (isinstance(src, type) and isinstance(dst, type)):
        return True  # generics, unions, literals: left to pydantic at run time
    if issubclass(src, dst):
        return True
    numeric = (bool, int, float)
    return src in numeric and dst in (int, float) and not (src is float and dst is int)


def _check_types(wf: Workflow, node: Node) -> list[str]:
    in_type, _ = target_signature(node.target)
    model = (
        in_type if isinstance(in_type, type) and issubclass(in_type, pydantic.BaseModel) else None
    )
    problems = []
    template = node.input
    if model is not None and isinstance(template, Mapping):
        for name, info in model.model_fields.items():
            if info.is_required() and name not in template and info.alias not in template:
                problems.append(
                    f"{node.where()}: input is missing required field {name!r} of {model.__name__}"
                )
    for where, ref in find_refs(template):
        src_type, problem = _source_type(wf, ref)
        if problem is not None:
            problems.append(f"{node.where()}: {ref}: {problem}")
            continue
        if model is None or len(where) != 1 or where[0] not in model.model_fields:
            continue
        if not isinstance(template, Mapping) or not isinstance(template.get(where[0]), Ref):
            continue  # an interpolated string, not the value itself
        dst_type = model.model_fields[str(where[0])].annotation
        if not _compatible(src_type, dst_type):
            problems.append(
                f"{node.where()}: input field {where[0]!r} expects "
                f"{_type_name(dst_type)}, but {ref} is {_type_name(src_type)}"
            )
    return problems


def _source_type(wf: Workflow, ref: Ref) -> tuple[Any, str | None]:
    if ref.source == INPUTS:
        spec = wf.input_specs.get(str(ref.path[0]))
        base = spec.type if spec is not None else Any
        return _field_type(base, ref.path[1:])
    source = wf.nodes[ref.source]
    _, out_type = target_signature(source.target)
    return _field_type(out_type, ref.path)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", repr(tp))


# -- order and cycles --------------------------------------------------------


def _known_deps(wf: Workflow, name: str) -> list[str]:
    return sorted(d for d in wf.nodes[name].deps if d in wf.nodes)


def _find_cycle(wf: Workflow) -> list[str] | None:
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(wf.nodes, white)
    for start in wf.nodes:
        if color[start] != white:
            continue
        stack: list[tuple[str, list[str]]] = [(start, _known_deps(wf, start))]
        path = [start]
        color[start] = grey
        while stack:
            name, deps = stack[-1]
            if not deps:
                color[name] = black
                stack.pop()
                path.pop()
                continue
            dep = deps.pop()
            if color[dep] == grey:
                cycle = path[path.index(dep) :]
                # report in execution order: each waits for the one before it
                cycle.reverse()
                return [*cycle, cycle[0]]
            if color[dep] == white:
                color[dep] = grey
                path.append(dep)
                stack.append((dep, _known_deps(wf, dep)))
    return None


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


def check_inputs(wf: Workflow, given: Mapping[str, Any]) -> dict[str, Any]:
    """The run's inputs, defaults filled in and values validated against declared types.

    Raises:
        WorkflowDefinitionError: an input is missing, unknown or of the wrong type.
    """
    problems = []
    values = dict(given)
    referenced = {
        str(ref.path[0])
        for node in wf.nodes.values()
        for _, ref in find_refs(node.input)
        if ref.source == INPUTS
    }
    for name, spec in wf.input_specs.items():
        if name not in values:
            if spec.required:
                problems.append(f"missing input {name!r} ({_type_name(spec.type)})")
                continue
            values[name] = spec.default
        elif spec.type is not Any:
            try:
                values[name] = pydantic.TypeAdapter(spec.type).validate_python(values[name])
            except pydantic.ValidationError as exc:
                first = exc.errors()[0]["msg"]
                problems.append(f"input {name!r}: expected {_type_name(spec.type)}: {first}")
    if wf.input_specs:
        for name in values:
            if name not in wf.input_specs:
                problems.append(f"unknown input {name!r}{_suggest(name, list(wf.input_specs))}")
    else:
        for name in sorted(referenced - set(values)):
            problems.append(f"missing input {name!r} (referred to as ${{inputs.{name}}})")
    if problems:
        raise WorkflowDefinitionError(problems, wf.source)
    return values
