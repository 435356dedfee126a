"""References between nodes: ``fuel.output.kg_co2`` in Python, ``${fuel.output.kg_co2}`` in YAML.

A node's input is a *template*: a value that may contain references to the
workflow's inputs (``${inputs.litres}``) or to other nodes' outputs
(``${fuel.output.kg_co2}``). The dependencies of a node are the nodes its
template refers to, so the scheduler can start it the moment they finish.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ambidex.exceptions import AmbidexError

__all__ = ["INPUTS", "Condition", "Interpolation", "Ref", "find_refs", "parse_ref", "resolve"]

#: The source name of references to the workflow's own inputs.
INPUTS = "inputs"

_REF_TEXT = re.compile(r"\$\{\s*([^}]*?)\s*\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class RefError(AmbidexError, ValueError):
    """A reference that cannot be parsed or followed."""


@dataclass(frozen=True)
class Ref:
    """A path into the workflow inputs or into one node's output."""

    source: str
    """``"inputs"`` or a node name."""
    path: tuple[str | int, ...] = ()
    """Attribute or key names (and list indices) below the source."""

    def __getattr__(self, name: str) -> Ref:
        if name.startswith("__"):
            raise AttributeError(name)
        return Ref(self.source, (*self.path, name))

    def __getitem__(self, key: str | int) -> Ref:
        return Ref(self.source, (*self.path, key))

    def __str__(self) -> str:
        head = INPUTS if self.source == INPUTS else f"{self.source}.output"
        tail = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path)
        return "${" + head + tail + "}"

    def follow(self, value: Any) -> Any:
        """Walk ``path`` from ``value`` (attributes of objects, keys of mappings)."""
        for i, part in enumerate(self.path):
            try:
                if isinstance(part, int) or isinstance(value, Mapping):
                    value = value[part]
                else:
                    value = getattr(value, part)
            except (KeyError, IndexError, AttributeError, TypeError):
                walked = Ref(self.source, self.path[:i])
                raise RefError(
                    f"{self}: {walked} ({type(value).__name__}) has no "
                    f"{'item' if isinstance(part, int) else 'field'} {part!r}"
                ) from None
        return value


@dataclass(frozen=True)
class Interpolation:
    """A string with references inside, e.g. ``"Total: ${report.output.kg} kg"``."""

    text: str
    refs: tuple[Ref, ...]


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_CONDITION = re.compile(r"^\s*(not\s+)?(\$\{[^}]*\})\s*(?:(==|!=|>=|<=|>|<)\s*(.+?))?\s*$")


@dataclass(frozen=True)
class Condition:
    """``when:`` in YAML: ``${ref}``, ``not ${ref}`` or ``${ref} OP literal``."""

    ref: Ref
    negate: bool = False
    op: str | None = None
    literal: Any = None

    def evaluate(self, value: Any) -> bool:
        """Whether the node should run, given the referenced value."""
        result = bool(value) if self.op is None else _COMPARE[self.op](value, self.literal)
        return not result if self.negate else result

    @classmethod
    def parse(cls, text: str) -> Condition:
        """Parse ``${fuel.output.kg} > 0`` and friends.

        Raises:
            RefError: the text is not one of the accepted forms.
        """
        import yaml

        match = _CONDITION.match(text)
        if match is None:
            raise RefError(
                f"cannot read condition {text!r}: expected '${{node.output.field}}', "
                "'not ${...}' or '${...} OP value' with OP one of == != > >= < <="
            )
        negate, ref_text, op, literal_text = match.groups()
        ref = parse_ref(ref_text[2:-1])
        literal = yaml.safe_load(literal_text) if literal_text is not None else None
        return cls(ref, negate=bool(negate), op=op, literal=literal)


def parse_ref(text: str) -> Ref:
    """Parse what stands inside ``${...}``: ``inputs.x`` or ``node.output.a.b[0]``.

    Raises:
        RefError: the text is not a reference.
    """
    parts: list[str | int] = []
    for piece in re.split(r"\.(?![^\[]*\])", text.strip()):
        m = re.fullmatch(r"([^\[\]]+)((?:\[\d+\])*)", piece)
        if m is None:
            raise RefError(f"cannot read reference ${{{text}}}")
        parts.append(m.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    if not parts or not isinstance(parts[0], str) or not _NAME.match(parts[0]):
        raise RefError(f"cannot read reference ${{{text}}}: it must start with a node name")
    if parts[0] == INPUTS:
        if len(parts) < 2:
            raise RefError(f"${{{text}}}: name the input, e.g. ${{inputs.litres}}")
        return Ref(INPUTS, tuple(parts[1:]))
    if len(parts) < 2 or parts[1] != "output":
        raise RefError(
            f"${{{text}}}: refer to a node's output as ${{{parts[0]}.output}} or "
            f"${{{parts[0]}.output.field}}, or to a workflow input as ${{inputs.name}}"
        )
    return Ref(str(parts[0]), tuple(parts[2:]))


def template_from_yaml(value: Any) -> Any:
    """Turn ``${...}`` strings inside a YAML value into ``Ref``/``Interpolation`` objects."""
    if isinstance(value, str):
        whole = _REF_TEXT.fullmatch(value.strip())
        if whole is not None:
            return parse_ref(whole.group(1))
        refs = tuple(parse_ref(m.group(1)) for m in _REF_TEXT.finditer(value))
        return Interpolation(value, refs) if refs else value
    if isinstance(value, dict):
        return {k: template_from_yaml(v) for k, v in value.items()}
    if isinstance(value, list):
        return [template_from_yaml(v) for v in value]
    return value


def find_refs(template: Any) -> Iterator[tuple[tuple[str | int, ...], Ref]]:
    """Every reference in a template, in order, with where it sits (a key path)."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), template)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, Ref):
            yield where, value
        elif isinstance(value, Interpolation):
            for ref in value.refs:
                yield where, ref
        elif isinstance(value, Condition):
            yield where, value.ref
        elif isinstance(value, dict):  # reversed onto the stack: yielded in order
            stack.extend(reversed([((*where, k), v) for k, v in value.items()]))
        elif isinstance(value, list | tuple):
            stack.extend(reversed([((*where, i), v) for i, v in enumerate(value)]))


def _lookup(ref: Ref, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> Any:
    if ref.source == INPUTS:
        return ref.follow(inputs)
    if not ref.path:  # a node's whole output (the commonest reference)
        return outputs[ref.source]
    return ref.follow(outputs[ref.source])


def resolve(template: Any, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> Any:
    """The template with every reference replaced by its value."""
    if isinstance(template, Ref):
        return _lookup(template, inputs, outputs)
    if isinstance(template, Interpolation):

        def sub(m: re.Match[str]) -> str:
            return str(_lookup(parse_ref(m.group(1)), inputs, outputs))

        return _REF_TEXT.sub(sub, template.text)
    if isinstance(template, dict):
        return {k: resolve(v, inputs, outputs) for k, v in template.items()}
    if isinstance(template, list):  # (a list of references, e.g. a fan-in: no call per item)
        return [
            _lookup(v, inputs, outputs) if type(v) is Ref else resolve(v, inputs, outputs)
            for v in template
        ]
    if isinstance(template, tuple):
        return tuple(resolve(v, inputs, outputs) for v in template)
    return template
