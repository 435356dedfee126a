"""Workflows in YAML: agents by import path, inputs that refer to other nodes' outputs.

::

    name: emissions
    inputs:
      litres: float
      region: {type: str, default: EU}
    nodes:
      fuel:
        agent: examples.emissions.agents:FuelAgent
        input: {litres: "${inputs.litres}"}
      report:
        agent: examples.emissions.agents:ReportAgent
        input: {kg_co2: "${fuel.output.kg_co2}"}
        timeout_s: 30
        retries: 2
        on_failure: fail        # or skip, continue
        when: "${fuel.output.kg_co2} > 0"

Every problem is reported with the file and line it comes from. Import paths
are resolved from the current directory and from the workflow file's directory.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

from ambidex._imports import search_also
from ambidex.workflows._refs import Condition, RefError, template_from_yaml
from ambidex.workflows._spec import InputSpec, Workflow, WorkflowDefinitionError

__all__ = ["load_workflow"]

_TYPES: dict[str, Any] = {
    "str": str,
    "string": str,
    "int": int,
    "integer": int,
    "float": float,
    "number": float,
    "bool": bool,
    "boolean": bool,
    "list": list,
    "dict": dict,
    "object": dict,
    "any": Any,
}
_TOP_KEYS = {"name", "description", "inputs", "nodes", "max_parallel"}
_NODE_KEYS = {
    "agent",
    "function",
    "input",
    "after",
    "timeout_s",
    "retries",
    "on_failure",
    "when",
    "description",
}


class _Mapping(dict[Any, Any]):
    """A YAML mapping that remembers the line of itself, of each key and of each value."""

    line: int = 0
    lines: dict[Any, int]
    value_lines: dict[Any, int]


class _Sequence(list[Any]):
    """A YAML sequence that remembers the line of each item."""

    lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)
    mapping = _Mapping()
    mapping.line = node.start_mark.line + 1
    mapping.lines = {}
    mapping.value_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = key_node.start_mark.line + 1
        mapping.value_lines[key] = value_node.start_mark.line + 1
    return mapping


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> _Sequence:
    sequence = _Sequence(loader.construct_object(item, deep=True) for item in node.value)
    sequence.lines = [item.start_mark.line + 1 for item in node.value]
    return sequence


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


class _Problems:
    def __init__(self, path: str) -> None:
        self.path = path
        self.items: list[str] = []

    def add(self, line: int | None, message: str) -> None:
        self.items.append(f"line {line}: {message}" if line else message)

    def raise_if_any(self) -> None:
        if self.items:
            raise WorkflowDefinitionError(self.items, self.path)


def _line(mapping: Any, key: Any) -> int | None:
    if isinstance(mapping, _Mapping):
        return mapping.lines.get(key, mapping.line)
    return None


def _part_lines(spec: dict[Any, Any]) -> dict[tuple[Any, ...], int]:
    """The line of each part of a node: its target, each key and item of its input, ...

    Keys are those of ``Node.lines``: ``("target",)``, ``("input", key, ...)``
    (the key's line, or for a string with ``${...}`` the line of the string),
    ``("when",)``, ``("after", i)``.
    """
    lines: dict[tuple[Any, ...], int] = {}
    for key in ("agent", "function"):
        line = _line(spec, key) if key in spec else None
        if line:
            lines[("target",)] = line
    if "input" in spec:
        key_line = _line(spec, "input")
        if key_line:
            lines[("input",)] = key_line
        value_line = spec.value_lines.get("input") if isinstance(spec, _Mapping) else None
        _template_lines(spec["input"], value_line or key_line, ("input",), lines)
    for key in ("when", "after"):
        line = _line(spec, key) if key in spec else None
        if line:
            lines[(key,)] = line
    after = spec.get("after")
    if isinstance(after, _Sequence):
        lines.update((("after", i), line) for i, line in enumerate(after.lines))
    return lines


def _template_lines(
    value: Any, line: int | None, where: tuple[Any, ...], lines: dict[tuple[Any, ...], int]
) -> None:
    if isinstance(value, str):
        if "${" in value and line:
            lines[where] = line  # a reference: the line of its text
    elif isinstance(value, _Mapping):
        for key, item in value.items():
            lines[(*where, key)] = value.lines[key]
            _template_lines(item, value.value_lines[key], (*where, key), lines)
    elif isinstance(value, _Sequence):
        for i, item in enumerate(value):
            lines[(*where, i)] = value.lines[i]
            _template_lines(item, value.lines[i], (*where, i), lines)


def _unreadable_ref_line(spec: dict[Any, Any]) -> int | None:
    """The line of the first string in a node's input whose ``${...}`` cannot be read."""
    lines = _part_lines(spec)
    stack: list[tuple[tuple[Any, ...], Any]] = [(("input",), spec.get("input"))]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            try:
                template_from_yaml(value)
            except RefError:
                return lines.get(where, _line(spec, "input"))
        elif isinstance(value, dict):
            stack.extend(reversed([((*where, k), v) for k, v in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([((*where, i), v) for i, v in enumerate(value)]))
    return _line(spec, "input")


def _read(file: Path, source: str) -> Any:
    try:
        text = file.read_text()
    except OSError as exc:
        raise WorkflowDefinitionError(
            [f"cannot read the workflow file: {exc.strerror}"], source
        ) from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise WorkflowDefinitionError(
            [f"{where}not valid YAML: {exc.problem or exc}"], source
        ) from None
    except yaml.YAMLError as exc:
        raise WorkflowDefinitionError([f"not valid YAML: {exc}"], source) from None


def _max_parallel(data: Any, problems: _Problems) -> int | None:
    value = data.get("max_parallel")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.add(
            _line(data, "max_parallel"), f"max_parallel must be a positive integer, got {value!r}"
        )
        return None
    return value


def load_workflow(path: str | Path) -> Workflow:
    """Read, check and build the workflow in ``path``.

    Raises:
        WorkflowDefinitionError: the file is missing, is not valid YAML, or
            describes an invalid workflow (each problem with its line).
    """
    file = Path(path)
    source = str(path)
    data = _read(file, source)
    if not isinstance(data, dict):
        raise WorkflowDefinitionError(["expected a mapping with 'name' and 'nodes'"], source)
    problems = _Problems(source)
    for key in data:
        if key not in _TOP_KEYS:
            problems.add(
                _line(data, key),
                f"unknown key {key!r} (expected one of: {', '.join(sorted(_TOP_KEYS))})",
            )
    name = data.get("name")
    if not isinstance(name, str) or not name:
        problems.add(_line(data, "name"), "'name' must be a non-empty string")
        name = file.stem
    inputs = _inputs(data.get("inputs") or {}, data, problems)
    max_parallel = _max_parallel(data, problems)
    nodes = data.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        problems.add(_line(data, "nodes"), "'nodes' must be a mapping of node names to nodes")
        problems.raise_if_any()
        raise AssertionError("unreachable")  # pragma: no cover
    wf = Workflow(name, inputs=inputs, max_parallel=max_parallel, source=source)
    search_also(file.resolve().parent, Path.cwd())
    for node_name, spec in nodes.items():
        _add_node(wf, str(node_name), spec, _line(nodes, node_name), problems)
    failed_to_load = set(map(str, nodes)) - set(wf.nodes)
    try:
        wf.validate()
    except WorkflowDefinitionError as exc:
        # Report graph problems too, except those that only echo a node that
        # could not be loaded (already reported above).
        problems.items.extend(
            p
            for p in exc.problems
            if not failed_to_load
            or not (any(f"node {n!r}" in p for n in failed_to_load) or "has no nodes" in p)
        )
    problems.raise_if_any()
    return wf


def _inputs(raw: Any, data: Any, problems: _Problems) -> dict[str, InputSpec]:
    specs: dict[str, InputSpec] = {}
    if not isinstance(raw, dict):
        problems.add(_line(data, "inputs"), "'inputs' must map input names to types")
        return specs
    for key, value in raw.items():
        line = _line(raw, key)
        type_name, default, description = value, InputSpec.default, ""
        if isinstance(value, dict):
            type_name = value.get("type", "any")
            default = value.get("default", InputSpec.default)
            description = str(value.get("description", ""))
        tp = _TYPES.get(str(type_name).lower()) if isinstance(type_name, str) else None
        if tp is None:
            problems.add(
                line,
                f"input {key!r}: unknown type {type_name!r} "
                f"(expected one of: {', '.join(sorted(_TYPES))})",
            )
            continue
        specs[str(key)] = InputSpec(tp, default, description, line=line)
    return specs


def _import(spec: Any, what: str) -> Any:
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"{what} must be 'package.module:Name', got {spec!r}")
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {what} {spec!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(
                f"cannot import {what} {spec!r}: {module_name} has no attribute {attr!r}"
            )
        obj = getattr(obj, part)
    return obj


def _options_ok(name: str, spec: Any, problems: _Problems) -> bool:
    """Check timeout_s, retries and on_failure, each reported on its own line."""
    ok = True
    timeout_s = spec.get("timeout_s")
    if timeout_s is not None and (
        isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0
    ):
        problems.add(
            _line(spec, "timeout_s"),
            f"node {name!r}: timeout_s must be a positive number of seconds, got {timeout_s!r}",
        )
        ok = False
    retries = spec.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        problems.add(
            _line(spec, "retries"),
            f"node {name!r}: retries must be a non-negative integer, got {retries!r}",
        )
        ok = False
    policy = spec.get("on_failure", "fail")
    if policy not in ("fail", "skip", "continue"):
        problems.add(
            _line(spec, "on_failure"),
            f"node {name!r}: on_failure must be 'fail', 'skip' or 'continue', got {policy!r}",
        )
        ok = False
    return ok


class _Skip(Exception):
    """A node with a problem already reported: do not add it."""


def _node_target(name: str, spec: dict[Any, Any], line: int | None, problems: _Problems) -> Any:
    kinds = [k for k in ("agent", "function") if k in spec]
    if len(kinds) != 1:
        problems.add(line, f"node {name!r} needs exactly one of 'agent' or 'function'")
        raise _Skip
    try:
        return _import(spec[kinds[0]], kinds[0])
    except ValueError as exc:
        problems.add(_line(spec, kinds[0]), f"node {name!r}: {exc}")
        raise _Skip from None


def _node_condition(name: str, spec: dict[Any, Any], problems: _Problems) -> Condition | None:
    when = spec.get("when")
    try:
        if when is not None and not isinstance(when, str):
            raise RefError(f"'when' must be a string such as '${{node.output.flag}}', got {when!r}")
        return Condition.parse(when) if isinstance(when, str) else None
    except RefError as exc:
        problems.add(_line(spec, "when"), f"node {name!r}: when: {exc}")
        raise _Skip from None


def _node_after(name: str, spec: dict[Any, Any], problems: _Problems) -> list[str]:
    after = spec.get("after") or []
    if isinstance(after, str):
        after = [after]
    if not isinstance(after, list):
        problems.add(_line(spec, "after"), f"node {name!r}: 'after' must be a list of node names")
        raise _Skip
    return [str(a) for a in after]


def _add_node(wf: Workflow, name: str, spec: Any, line: int | None, problems: _Problems) -> None:
    if not isinstance(spec, dict):
        problems.add(line, f"node {name!r} must be a mapping with 'agent' or 'function'")
        return
    for key in spec:
        if key not in _NODE_KEYS:
            problems.add(
                _line(spec, key),
                f"node {name!r}: unknown key {key!r} "
                f"(expected one of: {', '.join(sorted(_NODE_KEYS))})",
            )
    try:
        target = _node_target(name, spec, line, problems)
        try:
            template = template_from_yaml(spec.get("input"))
        except RefError as exc:
            problems.add(_unreadable_ref_line(spec), f"node {name!r}: {exc}")
            return
        condition = _node_condition(name, spec, problems)
        after = _node_after(name, spec, problems)
    except _Skip:
        return
    if not _options_ok(name, spec, problems):
        return
    try:
        wf.node(
            name,
            target,
            template,
            after=after,
            timeout_s=spec.get("timeout_s"),
            retries=spec.get("retries", 0),
            on_failure=spec.get("on_failure", "fail"),
            when=condition,
            line=line,
            lines=_part_lines(spec),
        )
    except WorkflowDefinitionError as exc:
        for problem in exc.problems:
            problems.add(line, problem)
