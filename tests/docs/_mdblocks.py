"""The code blocks of a markdown page and the docs test's directives (see test_docs.py).

markdown-it-py (a dependency of rich, so always installed) does the CommonMark
parsing: fences, indented blocks, fences inside lists and HTML comments are told
apart exactly as GitHub renders them, which a line-by-line scan gets wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt

__all__ = ["BLOCK_VERBS", "PAGE_VERBS", "Block", "Page", "kind_of", "parse_page", "read_page"]

_DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(?P<verb>[\w-]+)\s*(?P<arg>.*?)\s*-->", re.S)

# Verbs of a comment right before a block, and of a comment anywhere on a page.
BLOCK_VERBS = frozenset({"skip", "file", "server"})
PAGE_VERBS = frozenset({"mock-llm"})

# What each info string means to the test; anything else is an error to fix in the page.
_KINDS = {
    "python": "python",
    "bash": "shell",
    "sh": "shell",
    "console": "console",
    "text": "text",
    "yaml": "data",
    "json": "data",
    "toml": "data",
}


@dataclass(frozen=True)
class Block:
    """One code block: where it is, its info string, its text and its directive."""

    page: str  # the page's path as given to parse_page, e.g. "docs/sim.md"
    line: int  # 1-based line of the block's first line of code
    lang: str  # the fence's info string; "indented" for an indented block, "" untagged
    code: str
    verb: str | None = None  # the directive right before the block: skip, file, server
    arg: str = ""  # the directive's argument: a reason, a file name

    @property
    def where(self) -> str:
        """``page:line``, as a reader finds the block."""
        return f"{self.page}:{self.line}"


@dataclass
class Page:
    """A page's blocks in order, its page-level directives, and directive mistakes."""

    path: str
    blocks: list[Block] = field(default_factory=list)
    verbs: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def kind_of(block: Block) -> str | None:
    """``python``, ``shell``, ``console``, ``text`` or ``data``; ``None`` for an unknown label.

    An indented block is a shell command: the README's quick-start commands are
    indented (CI greps them in that form), and so is every indented block in the docs.
    """
    if block.lang == "indented":
        return "shell"
    return _KINDS.get(block.lang.split()[0] if block.lang else "")


def parse_page(text: str, path: str) -> Page:
    """Every code block of ``text`` with the directive written right before it."""
    page = Page(path)
    pending: tuple[str, str, int] | None = None  # verb, argument, line
    for token in MarkdownIt("commonmark").parse(text):
        start = token.map[0] + 1 if token.map else 0
        if token.type == "html_block":
            for match in _DIRECTIVE.finditer(token.content):
                verb, arg = match["verb"], match["arg"]
                if verb in PAGE_VERBS:
                    page.verbs.add(verb)
                elif verb in BLOCK_VERBS:
                    pending = _replace_pending(page, pending, (verb, arg, start))
                else:
                    page.problems.append(f"{path}:{start}: unknown docs-test directive {verb!r}")
        elif token.type in ("fence", "code_block"):
            page.blocks.append(_block(token.type, token.info, token.content, start, path, pending))
            pending = None
        elif token.type == "inline" and pending is not None:
            page.problems.append(_misplaced(path, pending))
            pending = None
    if pending is not None:
        page.problems.append(_misplaced(path, pending))
    return page


def _misplaced(path: str, pending: tuple[str, str, int]) -> str:
    return f"{path}:{pending[2]}: docs-test {pending[0]} is not right before a block"


def _replace_pending(
    page: Page, pending: tuple[str, str, int] | None, new: tuple[str, str, int]
) -> tuple[str, str, int]:
    if pending is not None:
        page.problems.append(f"{page.path}:{pending[2]}: two docs-test directives for one block")
    return new


def _block(
    kind: str, info: str, content: str, start: int, path: str, pending: tuple[str, str, int] | None
) -> Block:
    verb, arg = (pending[0], pending[1]) if pending else (None, "")
    if kind == "fence":  # the code starts on the line after the opening fence
        return Block(path, start + 1, info.strip(), content, verb, arg)
    return Block(path, start, "indented", content, verb, arg)


def read_page(root: Path, relative: str) -> Page:
    """:func:`parse_page` of the file ``root / relative``."""
    return parse_page((root / relative).read_text(encoding="utf-8"), relative)
