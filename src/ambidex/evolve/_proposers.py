"""Proposers: where a candidate's code comes from.

A proposer turns a parent program (plus inspirations and recent errors) into a
variant of the target function:

- ``OfflineProposer`` needs no network: it changes one numeric literal of the
  function, or swaps one occurrence of a user-given snippet for another of its
  group (``alternatives=[["<", "<="], ["min(", "max("]]``), leaving the rest of
  the text byte-identical.
- ``LLMProposer`` asks a chat model (through ``ambidex.llm.AsyncLLM``, so under
  the runtime's ``llm`` limit) for SEARCH/REPLACE blocks, a unified diff or
  the whole function, applies the reply and, when it cannot be applied, tells
  the model exactly why in a follow-up message.

Every proposal is checked: it must parse and be exactly one function with the
target's name. A proposer that has nothing to offer returns
``Proposal(code=None, error=...)`` rather than raising.
"""

from __future__ import annotations

import ast
import io
import math
import random
import re
import textwrap
import tokenize
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ambidex.evolve._database import Program
from ambidex.llm import AsyncLLM, LLMError

__all__ = [
    "Applied",
    "DiffHunk",
    "LLMProposer",
    "OfflineProposer",
    "Proposal",
    "ProposalContext",
    "Proposer",
    "apply_reply",
    "apply_search_replace",
    "apply_unified_diff",
    "build_prompt",
    "function_problem",
    "parse_search_replace",
    "parse_unified_diff",
]


@dataclass
class ProposalContext:
    """What a proposer knows when it proposes a variant."""

    target_name: str
    goal: str
    metric: str
    maximize: bool
    parent: Program
    inspirations: list[Program]
    errors: list[str]
    """Recent evaluation errors of the island (one-line reason, maybe a stderr tail)."""
    alternatives: list[list[str]]
    """User-given groups of interchangeable snippets."""
    rng: random.Random


@dataclass
class Proposal:
    """A proposed variant, or why there is none."""

    code: str | None
    """The new function's source, or None when nothing applicable came out."""
    note: str
    """What changed (or what was tried)."""
    error: str | None = None
    """When ``code`` is None: the reason."""


@runtime_checkable
class Proposer(Protocol):
    """Anything with a ``name`` and ``async propose(ctx) -> Proposal``."""

    name: str

    async def propose(self, ctx: ProposalContext) -> Proposal:
        """A variant of ``ctx.parent.code`` (``Proposal(code=None, error=...)`` if none)."""
        ...


# -- checking a function -------------------------------------------------------------


def _statement_kind(node: ast.stmt) -> str:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return "an import"
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return f"a function {node.name!r}"
    if isinstance(node, ast.ClassDef):
        return f"a class {node.name!r}"
    return f"a {type(node).__name__.lower()} statement"


def _check_function(code: str, name: str) -> tuple[str | None, str | None]:
    """``code`` as exactly one function ``name`` (decorators dropped), or the reason it is not."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return None, f"the code does not parse: line {exc.lineno}: {exc.msg}"
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    mine = [n for n in defs if n.name == name]
    if not mine:
        found = f" (found: {', '.join(n.name for n in defs)})" if defs else ""
        return None, f"no function named {name}{found}"
    others = [n for n in tree.body if n is not mine[0]]
    if others:
        return None, (
            f"the code must be only the function {name}, but it also has "
            f"{_statement_kind(others[0])} at line {others[0].lineno}; put imports and helpers "
            "inside the function"
        )
    node = mine[0]
    if node.decorator_list:  # keep the function from its ``def`` line on
        lines = code.splitlines(keepends=True)
        code = "".join(lines[node.lineno - 1 :])
    return code, None


def function_problem(code: str, name: str) -> str | None:
    """Why ``code`` is not exactly one function named ``name`` (or None if it is).

    E.g. ``"the code does not parse: line 3: invalid syntax"`` or
    ``"no function named pack"``.
    """
    return _check_function(code, name)[1]


# -- the offline proposer --------------------------------------------------------------


@dataclass(frozen=True)
class _Site:
    start: int
    end: int
    text: str
    group: int = -1  # the alternatives group, -1 for a numeric literal


def _line_starts(code: str) -> list[int]:
    starts = [0]
    for line in io.StringIO(code).readlines():  # the lines tokenize sees
        starts.append(starts[-1] + len(line))
    return starts


def _tokens(code: str) -> list[tokenize.TokenInfo]:
    try:
        return list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError):
        return []


def _number_sites(code: str, tokens: list[tokenize.TokenInfo]) -> list[_Site]:
    starts = _line_starts(code)
    sites = []
    for tok in tokens:
        if tok.type == tokenize.NUMBER and tok.string[-1] not in "jJ":
            start = starts[tok.start[0] - 1] + tok.start[1]
            sites.append(_Site(start, start + len(tok.string), tok.string))
    return sites


def _comment_spans(code: str, tokens: list[tokenize.TokenInfo]) -> list[tuple[int, int]]:
    starts = _line_starts(code)
    spans = []
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            start = starts[tok.start[0] - 1] + tok.start[1]
            spans.append((start, start + len(tok.string)))
    return spans


def _alternative_sites(
    code: str, alternatives: list[list[str]], comments: list[tuple[int, int]]
) -> list[_Site]:
    """Occurrences of the groups' snippets (the longest where they overlap), not in comments."""
    sites: list[_Site] = []
    for group_index, group in enumerate(alternatives):
        members = list(dict.fromkeys(s for s in group if s))
        if len(members) < 2:
            continue
        taken: list[tuple[int, int]] = list(comments)
        for member in sorted(members, key=len, reverse=True):
            at = code.find(member)
            while at >= 0:
                end = at + len(member)
                if not any(at < b and a < end for a, b in taken):
                    taken.append((at, end))
                    sites.append(_Site(at, end, member, group_index))
                at = code.find(member, end)
    return sorted(sites, key=lambda s: (s.start, s.group))


def _format_int(value: int, like: str) -> str:
    prefix = like[:2].lower()
    if prefix in ("0x", "0o", "0b"):
        digits = {"0x": "x", "0o": "o", "0b": "b"}[prefix]
        return like[:2] + format(value, digits)
    return str(value)


def _format_float(value: float) -> str:
    text = f"{value:.4g}"
    if not any(c in text for c in ".eEn"):  # keep it a float literal ("2" -> "2.0")
        text += ".0"
    return text


def _mutate_int(value: int, like: str, rng: random.Random) -> str:
    delta = rng.choice((-3, -2, -1, 1, 2, 3))
    new = value + delta
    if new < 0:  # literals are never negative (a minus is an operator): stay >= 0
        new = value + abs(delta)
    return _format_int(new, like)


def _mutate_float(value: float, rng: random.Random, sigma: float) -> str | None:
    if not math.isfinite(value):
        return None
    if value and rng.random() < 0.75:
        text = _format_float(value * math.exp(rng.gauss(0.0, sigma)))
        if float(text) != value:
            return text
    step = 10.0 ** (math.floor(math.log10(value)) - 1) if value else 0.1
    new = value + rng.choice((-1.0, 1.0)) * step
    if new <= 0:
        new = value + step
    text = _format_float(new)
    return text if float(text) != value else None


def _mutate_number(text: str, rng: random.Random, sigma: float) -> str | None:
    """A changed literal: ints by +-1..3 (staying >= 0), floats by exp(N(0, sigma)) or a step."""
    try:
        return _mutate_int(int(text, 0), text, rng)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return _mutate_float(value, rng, sigma)


def _line_of(code: str, offset: int) -> int:
    return code.count("\n", 0, offset) + 1


class OfflineProposer:
    """Mutates numeric literals and swaps user-given alternatives; no network.

    Each proposal makes exactly one change: with both kinds available, a coin
    flip picks a literal or an alternative, then ``rng`` picks which one and
    how. A result that does not parse or is not the same function is retried
    up to ``max_tries`` times. Deterministic given ``ctx.rng``.

    Args:
        sigma: floats are scaled by ``exp(N(0, sigma))`` (3 of 4 times; else
            moved by one step of their second significant digit).
        max_tries: attempts before giving up with an error.
    """

    name = "offline"

    def __init__(self, *, sigma: float = 0.3, max_tries: int = 8) -> None:
        if not sigma > 0 or max_tries < 1:
            raise ValueError(f"need sigma > 0 and max_tries >= 1, got {sigma!r}, {max_tries!r}")
        self.sigma = sigma
        self.max_tries = max_tries

    def __repr__(self) -> str:
        return f"OfflineProposer(sigma={self.sigma}, max_tries={self.max_tries})"

    async def propose(self, ctx: ProposalContext) -> Proposal:
        """One mutation of ``ctx.parent.code`` (see the class)."""
        return self.mutate(ctx.parent.code, ctx.target_name, ctx.alternatives, ctx.rng)

    def mutate(
        self, code: str, name: str, alternatives: list[list[str]], rng: random.Random
    ) -> Proposal:
        """The same as ``propose``, from plain arguments (and synchronous)."""
        tokens = _tokens(code)
        numbers = _number_sites(code, tokens)
        swaps = _alternative_sites(code, alternatives, _comment_spans(code, tokens))
        if not numbers and not swaps:
            return Proposal(
                None,
                note="nothing to mutate",
                error=f"{name} has no numeric literal and no occurrence of the given "
                "alternatives to change",
            )
        problem = "no change"
        for _ in range(self.max_tries):
            use_number = bool(numbers) and (not swaps or rng.random() < 0.5)
            site = rng.choice(numbers if use_number else swaps)
            new = self._replacement(site, alternatives, rng)
            if new is None:
                continue
            candidate = code[: site.start] + new + code[site.end :]
            problem = function_problem(candidate, name) or ""
            if not problem:
                kind = "literal" if site.group < 0 else "alternative"
                where = _line_of(code, site.start)
                return Proposal(candidate, note=f"{kind} {site.text!r} -> {new!r} (line {where})")
        return Proposal(
            None,
            note="no valid mutation",
            error=f"no mutation of {name} in {self.max_tries} tries gave a valid function: "
            f"{problem}",
        )

    def _replacement(
        self, site: _Site, alternatives: list[list[str]], rng: random.Random
    ) -> str | None:
        if site.group < 0:
            return _mutate_number(site.text, rng, self.sigma)
        others = [s for s in dict.fromkeys(alternatives[site.group]) if s and s != site.text]
        return rng.choice(others) if others else None


# -- applying a model's reply ----------------------------------------------------------

_SEARCH = re.compile(r"^\s*<{5,9} ?SEARCH\s*$")
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9} ?REPLACE\s*$")
_HAS_SEARCH = re.compile(r"^\s*<{5,9} ?SEARCH\s*$", re.MULTILINE)
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_HAS_HUNK = re.compile(r"^@@", re.MULTILINE)
_FENCE = re.compile(r"^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Applied:
    """The outcome of applying a reply: the new code and how, or why it failed."""

    code: str | None
    how: str
    """``"search/replace"``, ``"diff"``, ``"full"`` or ``""`` when nothing applied."""
    error: str | None = None


def parse_search_replace(reply: str) -> list[tuple[str, str]]:
    """The ``(search, replace)`` texts of the reply's SEARCH/REPLACE blocks, in order.

    Raises:
        ValueError: a block without its ``=======`` or ``>>>>>>> REPLACE`` line.
    """
    lines = reply.splitlines()
    blocks: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        if not _SEARCH.match(lines[i]):
            i += 1
            continue
        n = len(blocks) + 1
        divider = _find_line(lines, i + 1, _DIVIDER, (_SEARCH, _REPLACE))
        if divider is None:
            raise ValueError(f"SEARCH block {n} has no ======= line after its SEARCH text")
        end = _find_line(lines, divider + 1, _REPLACE, (_SEARCH, _DIVIDER))
        if end is None:
            raise ValueError(f"SEARCH block {n} is not closed by a >>>>>>> REPLACE line")
        blocks.append(("\n".join(lines[i + 1 : divider]), "\n".join(lines[divider + 1 : end])))
        i = end + 1
    return blocks


def _find_line(
    lines: list[str], start: int, wanted: re.Pattern[str], stops: tuple[re.Pattern[str], ...]
) -> int | None:
    for j in range(start, len(lines)):
        if wanted.match(lines[j]):
            return j
        if any(p.match(lines[j]) for p in stops):
            return None
    return None


def _strip_blank_ends(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def _find_window(
    haystack: list[str], needle: list[str], norm: Callable[[str], str], start: int = 0
) -> int | None:
    want = [norm(s) for s in needle]
    for i in range(start, len(haystack) - len(needle) + 1):
        if all(norm(haystack[i + k]) == want[k] for k in range(len(needle))):
            return i
    return None


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _reindent(replace: list[str], found_indent: str, search_indent: str) -> list[str]:
    """``replace`` moved from the search's indentation to the one found in the code."""
    if found_indent.startswith(search_indent):
        extra = found_indent[len(search_indent) :]
        return [extra + line if line.strip() else line for line in replace]
    if search_indent.startswith(found_indent):
        cut = len(search_indent) - len(found_indent)
        return [line[min(cut, len(_indent(line))) :] for line in replace]
    return replace


def _replace_tolerant(code: str, search: str, replace: str) -> str | None:
    """Replace ``search`` matched line by line, ignoring trailing, then any, indentation."""
    lines = code.split("\n")
    s_lines = _strip_blank_ends(search.split("\n"))
    r_lines = _strip_blank_ends(replace.split("\n"))
    if not s_lines:
        return None
    at = _find_window(lines, s_lines, str.rstrip)
    if at is None:
        at = _find_window(lines, s_lines, str.strip)
        if at is None:
            return None
        first = next(k for k, s in enumerate(s_lines) if s.strip())
        r_lines = _reindent(r_lines, _indent(lines[at + first]), _indent(s_lines[first]))
    return "\n".join(lines[:at] + r_lines + lines[at + len(s_lines) :])


def _find_aligned(code: str, search: str) -> int | None:
    """Where ``search`` occurs in ``code`` starting a line and ending one, or None."""
    at = code.find(search)
    while at >= 0:
        end = at + len(search)
        starts_line = at == 0 or code[at - 1] == "\n"
        ends_line = end == len(code) or code[end] == "\n" or search.endswith("\n")
        if starts_line and ends_line:
            return at
        at = code.find(search, at + 1)
    return None


def _replace_one(code: str, search: str, replace: str) -> str | None:
    """``code`` with ``search`` replaced, or None if it is not found.

    Tried in order: an exact match of whole lines, line matches ignoring
    trailing whitespace, then ignoring indentation (the replacement is
    re-indented), then a unique exact match inside a line.
    """
    at = _find_aligned(code, search)
    if at is not None:
        return code[:at] + replace + code[at + len(search) :]
    changed = _replace_tolerant(code, search, replace)
    if changed is None and code.count(search) == 1:
        changed = code.replace(search, replace, 1)
    return changed


def apply_search_replace(code: str, blocks: list[tuple[str, str]]) -> str:
    """Apply the blocks in order: exact matches first, then whitespace-tolerant ones.

    Raises:
        ValueError: e.g. ``"SEARCH block 2 not found in the code"``.
    """
    for n, (search, replace) in enumerate(blocks, 1):
        if not search.strip():
            raise ValueError(f"SEARCH block {n} is empty; copy the lines to change into it")
        changed = _replace_one(code, search, replace)
        if changed is None:
            raise ValueError(
                f"SEARCH block {n} not found in the code (its SEARCH text must be lines "
                "copied exactly from the current program)"
            )
        code = changed
    return code


@dataclass
class DiffHunk:
    old_start: int | None
    old: list[str]
    new: list[str]


def _hunk_line(line: str, hunk: DiffHunk) -> bool:
    """Add one body line to ``hunk``; False when the line is not part of a hunk."""
    if line.startswith("\\"):  # "\ No newline at end of file"
        return True
    if line == "" or line[0] == " ":
        hunk.old.append(line[1:])
        hunk.new.append(line[1:])
    elif line[0] == "-":
        hunk.old.append(line[1:])
    elif line[0] == "+":
        hunk.new.append(line[1:])
    else:
        return False
    return True


def _read_counted(lines: list[str], i: int, n: int, hunk: DiffHunk, counts: tuple[int, int]) -> int:
    while len(hunk.old) < counts[0] or len(hunk.new) < counts[1]:
        if i >= len(lines) or lines[i].startswith(("@@", "```")) or not _hunk_line(lines[i], hunk):
            raise ValueError(
                f"diff hunk {n} is cut short: its header promises {counts[0]} old and "
                f"{counts[1]} new lines"
            )
        i += 1
    return i


def _read_loose(lines: list[str], i: int, hunk: DiffHunk) -> int:
    while i < len(lines) and not lines[i].startswith(("@@", "```")):
        if not _hunk_line(lines[i], hunk):
            break
        i += 1
    while hunk.old and hunk.new and hunk.old[-1] == "" and hunk.new[-1] == "":
        hunk.old.pop()  # blank lines after a hunk are not context
        hunk.new.pop()
    return i


def parse_unified_diff(reply: str) -> list[DiffHunk]:
    """The hunks of a unified diff in the reply (``---``/``+++`` headers ignored).

    Raises:
        ValueError: a hunk shorter than its header says.
    """
    lines = reply.split("\n")
    hunks: list[DiffHunk] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.startswith("@@"):
            continue
        m = _HUNK.match(line)
        hunk = DiffHunk(int(m.group(1)) if m else None, [], [])
        if m:
            counts = (int(m.group(2) or 1), int(m.group(4) or 1))
            i = _read_counted(lines, i, len(hunks) + 1, hunk, counts)
        else:
            i = _read_loose(lines, i, hunk)
        hunks.append(hunk)
    return hunks


def apply_unified_diff(code: str, hunks: list[DiffHunk]) -> str:
    """Apply hunks strictly: their old lines must appear in order (trailing spaces aside).

    Raises:
        ValueError: e.g. ``"diff hunk 1 does not match the code ..."``.
    """
    lines = code.split("\n")
    cursor, offset = 0, 0
    at: int | None
    for n, hunk in enumerate(hunks, 1):
        if not hunk.old:
            if hunk.old_start is None:
                raise ValueError(f"diff hunk {n} only adds lines and has no line numbers")
            at = min(max(hunk.old_start + offset, 0), len(lines))
        else:
            at = _locate_hunk(lines, hunk, cursor, offset)
            if at is None:
                raise ValueError(
                    f"diff hunk {n} does not match the code: its context and removed lines "
                    f"(from {hunk.old[0]!r}) are not in it, in this order"
                )
        lines[at : at + len(hunk.old)] = hunk.new
        cursor = at + len(hunk.new)
        offset += len(hunk.new) - len(hunk.old)
    return "\n".join(lines)


def _locate_hunk(lines: list[str], hunk: DiffHunk, cursor: int, offset: int) -> int | None:
    if hunk.old_start is not None:  # where the header says, first
        expected = hunk.old_start - 1 + offset
        if expected >= cursor and lines[expected : expected + len(hunk.old)] == hunk.old:
            return expected
    exact = _find_window(lines, hunk.old, lambda s: s, cursor)
    return exact if exact is not None else _find_window(lines, hunk.old, str.rstrip, cursor)


def _full_replacement(reply: str, name: str) -> str:
    blocks = [body for lang, body in _FENCE.findall(reply) if lang.lower() in ("", "python", "py")]
    if not blocks:
        raise ValueError("the reply has no python code block")
    defining = [b for b in blocks if re.search(rf"\bdef\s+{re.escape(name)}\s*\(", b)]
    code = textwrap.dedent((defining or blocks)[-1])
    return code.strip("\n") + "\n"


def _edits(reply: str, name: str) -> list[tuple[str, Callable[[str], str]]]:
    """The ways to read the reply, in order of preference, by what it contains."""
    ways: list[tuple[str, Callable[[str], str]]] = []
    if _HAS_SEARCH.search(reply):
        ways.append(
            ("search/replace", lambda c: apply_search_replace(c, parse_search_replace(reply)))
        )
    if _HAS_HUNK.search(reply):
        ways.append(("diff", lambda c: apply_unified_diff(c, _nonempty(parse_unified_diff(reply)))))
    if _FENCE.search(reply):
        ways.append(("full", lambda c: _full_replacement(reply, name)))
    return ways


def _nonempty(hunks: list[DiffHunk]) -> list[DiffHunk]:
    if not hunks:
        raise ValueError("the diff has no hunks")
    return hunks


def _same_program(a: str, b: str) -> bool:
    try:
        return ast.dump(ast.parse(a)) == ast.dump(ast.parse(b))
    except SyntaxError:
        return a == b


def apply_reply(code: str, reply: str, name: str) -> Applied:
    """Apply a model's reply to ``code``: SEARCH/REPLACE blocks, a unified diff or a full function.

    The formats found in the reply are tried in that order; the first whose
    result is one function named ``name`` that differs from ``code`` wins.
    Otherwise ``Applied(None, "", error)`` carries the reason of the first
    format tried (or says that none was found), e.g. ``"SEARCH block 2 not
    found in the code"``.
    """
    ways = _edits(reply, name)
    if not ways:
        return Applied(
            None,
            "",
            "the reply has no SEARCH/REPLACE block, no unified diff and no python code block",
        )
    errors = []
    for how, edit in ways:
        try:
            new = edit(code)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        checked, problem = _check_function(new, name)
        if checked is None:
            errors.append(f"after applying the {how} edit, {problem}")
        elif checked == code:
            errors.append(f"the reply does not change the code of {name}")
        elif _same_program(checked, code):
            errors.append("the change only touches comments or formatting; change what it does")
        else:
            return Applied(checked, how)
    return Applied(None, "", errors[0])


# -- the LLM proposer ------------------------------------------------------------------

_SYSTEM = (
    "You improve one Python function, one step at a time, as part of an evolutionary search. "
    "Each step makes one focused change that you expect to improve the metric. Keep the "
    "function's name and signature, keep it self-contained (imports and helpers inside the "
    "function, no decorators, no code outside it) and keep it correct."
)
_MAX_ERROR_CHARS = 800
_MAX_ERRORS = 3


def _fmt_metrics(program: Program, metric: str) -> str:
    if not program.ok:
        return f"failed: {program.error or 'unknown error'}"
    keys = sorted(program.metrics, key=lambda k: (k != metric, k))
    return ", ".join(f"{k}={program.metrics[k]:.6g}" for k in keys) or "no metrics"


def _fence_safe(text: str) -> str:
    return text.replace("```", "'''")


def _python_block(code: str) -> str:
    return f"```python\n{_fence_safe(code).rstrip()}\n```"


def build_prompt(ctx: ProposalContext) -> str:
    """The first user message: goal, metric, inspirations, errors, then the current code last."""
    direction = "higher" if ctx.maximize else "lower"
    parts = [f"## Goal\n{ctx.goal.strip()}", f"## Metric\n`{ctx.metric}`: {direction} is better."]
    if ctx.inspirations:
        parts.append("## Other programs tried, for inspiration")
        for prog in ctx.inspirations:
            label = f"#{prog.id}" if prog.id is not None else "(unsaved)"
            heading = f"### Program {label} ({_fmt_metrics(prog, ctx.metric)})"
            parts.append(f"{heading}\n{_python_block(prog.code)}")
    errors = [e.strip() for e in ctx.errors if e.strip()][-_MAX_ERRORS:]
    if errors:
        trimmed = []
        for err in errors:
            text = err if len(err) <= _MAX_ERROR_CHARS else err[: _MAX_ERROR_CHARS - 3] + "..."
            trimmed.append("- " + _fence_safe(text).replace("\n", "\n  "))
        parts.append("## Recent evaluation errors (avoid them)\n" + "\n".join(trimmed))
    parts.append(
        f"## Current program ({_fmt_metrics(ctx.parent, ctx.metric)})\n"
        f"{_python_block(ctx.parent.code)}"
    )
    parts.append(
        f"## How to answer\nChange the function `{ctx.target_name}` to improve `{ctx.metric}`. "
        "Start with one line saying what you change and why, then give EITHER\n"
        "1. SEARCH/REPLACE blocks (the SEARCH lines copied exactly from the current program):\n"
        "<<<<<<< SEARCH\n(lines of the current program)\n=======\n(their replacement)\n"
        ">>>>>>> REPLACE\n"
        "2. OR a unified diff of the function (`@@ -a,b +c,d @@` hunks),\n"
        f"3. OR the complete new function `{ctx.target_name}` in one python code block."
    )
    return "\n\n".join(parts) + "\n"


def _follow_up(reason: str, name: str) -> str:
    return (
        f"Your reply could not be applied: {reason}.\n"
        f"Answer again with the change to `{name}`: SEARCH/REPLACE blocks whose SEARCH lines are "
        "copied exactly from the current program in my first message, or a unified diff of it, "
        f"or the complete function `{name}` in one python code block."
    )


def _summary(reply: str) -> str:
    for line in reply.splitlines():
        text = line.strip().strip("#*").strip()
        if text.startswith(("```", "<<<<<<<", "@@", "---", "+++")):
            break
        if text:
            return text if len(text) <= 160 else text[:157] + "..."
    return ""


class LLMProposer:
    """Asks a chat model for a variant, applies its reply, follows up when it does not apply.

    The prompt holds the goal, the metric and its direction, a few
    inspirations (code and metrics), the island's recent evaluation errors and
    the parent's code and metrics. The reply may be SEARCH/REPLACE blocks, a
    unified diff or the whole function (see ``apply_reply``). When it cannot
    be applied, the reason is sent back in the same conversation and the model
    tries again, ``max_attempts`` replies in all.

    Args:
        model: the chat model.
        base_url: the API root (default ``OPENAI_BASE_URL``, else OpenAI's).
        api_key: the key (default ``OPENAI_API_KEY``); never logged or shown.
        temperature: sampling temperature (None: the server's default).
        max_attempts: replies to ask for per proposal (the first and follow-ups).
        llm: an ``AsyncLLM`` to use (its limits, cache, retries); ``base_url``
            and ``api_key`` are then unused. Requests name ``model`` either way.

    Raises:
        ValueError: ``max_attempts`` below 1.
        LLMConfigError: no API key for a server that is not on loopback, a bad URL.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float | None = 0.7,
        max_attempts: int = 2,
        llm: AsyncLLM | None = None,
    ) -> None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        self.model = model
        self.name = f"llm:{model}"
        self.temperature = temperature
        self.max_attempts = max_attempts
        self._owns_llm = llm is None
        self.llm = llm if llm is not None else AsyncLLM(model, base_url=base_url, api_key=api_key)

    def __repr__(self) -> str:
        return (
            f"LLMProposer({self.model!r}, base_url={self.llm.base_url!r}, "
            f"temperature={self.temperature}, max_attempts={self.max_attempts})"
        )

    async def propose(self, ctx: ProposalContext) -> Proposal:
        """A variant of ``ctx.parent.code`` from the model (see the class).

        A failed request (after the client's retries) is a ``Proposal`` with
        ``code=None`` and the error, not an exception.
        """
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": build_prompt(ctx)},
        ]
        reason = "no reply"
        for attempt in range(1, self.max_attempts + 1):
            try:
                reply = await self.llm.chat(
                    messages, model=self.model, temperature=self.temperature
                )
            except LLMError as exc:
                return Proposal(
                    None,
                    note=f"the request to {self.model} failed (attempt {attempt})",
                    error=f"the LLM request failed: {exc}",
                )
            applied = apply_reply(ctx.parent.code, reply.text, ctx.target_name)
            if applied.code is not None:
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                summary = _summary(reply.text)
                note = f"{applied.how} from {self.model}{tries}" + (
                    f": {summary}" if summary else ""
                )
                return Proposal(applied.code, note=note)
            reason = applied.error or "the reply could not be applied"
            if attempt < self.max_attempts:
                messages.append({"role": "assistant", "content": reply.text})
                messages.append({"role": "user", "content": _follow_up(reason, ctx.target_name)})
        return Proposal(
            None,
            note=f"{self.model}'s reply could not be applied ({self.max_attempts} attempts)",
            error=reason,
        )

    async def aclose(self) -> None:
        """Close the client if this proposer made it."""
        if self._owns_llm:
            await self.llm.aclose()
