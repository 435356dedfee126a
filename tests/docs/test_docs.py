"""Docs that run: every code block of README.md and docs/*.md is executed.

One test per page (so xdist spreads the pages) runs the page's blocks in order
in a fresh work directory, with ``examples`` linked into it, ``AMBIDEX_HOME``
inside it, the virtual environment's ``bin`` first on ``PATH`` (so ``ambidex``
and ``python`` are the ones under test) and no ``OPENAI_*`` or other
``AMBIDEX_*`` variables of the developer's. What each block is decides how it
runs, by its label:

* ```` ```python ````: run in one python process per page, in order, in one
  namespace, so a page's blocks may build on each other (see ``_pyrunner.py``:
  top-level ``await`` is allowed, as in ``python -m asyncio``, and the
  ``test_*`` functions a block defines are called after it, as pytest would);
* ```` ```bash ```` / ```` ```sh ```` and indented blocks (the README's quick
  start is indented; CI greps it in that form): run with ``bash -e -o pipefail``
  and must exit 0;
* ```` ```console ````: each ``$ command`` is run and every line shown after it
  must be among the lines it printed (stdout and stderr, in order; ``...`` in a
  shown line matches anything), whatever its exit code: this is how a page
  shows an error;
* ```` ```yaml ```` / ```` ```json ```` / ```` ```toml ````: parsed;
* ```` ```text ````: an output sample, a usage synopsis or a tree: not run;
* anything else, an untagged fence included, fails the test: label it.

Directives, HTML comments that a rendered page does not show:

* ``<!-- docs-test: skip REASON -->`` right before a block: not run; each is a
  skipped test of its own here (``test_block_is_skipped``), so ``-ra`` lists
  every one with its reason and the run counts them;
* ``<!-- docs-test: file NAME -->`` right before a block: the block is the
  file NAME in the work directory, written before the page's first block runs
  (a python file is compiled, yaml/json/toml parsed), and is not run itself;
* ``<!-- docs-test: server -->`` right before a shell block of one command: a
  long-running server. It is started in the background with ``--port 0``
  instead of its documented ``--port N`` (default 8000), and the port it prints
  in its first URL replaces ``localhost:N`` / ``127.0.0.1:N`` in the page's
  later blocks (``ambidex serve`` also sets ``AMBIDEX_URL``, the default of
  ``ambidex jobs``). It runs until the page ends or a later server block takes
  its documented port;
* ``<!-- docs-test: mock-llm -->`` anywhere on a page: the page runs with
  ``OPENAI_BASE_URL`` pointing at a ``MockLLMServer``, so its LLM calls get the
  mock's deterministic replies.

``curl`` fails on an HTTP error status (``CURL_HOME`` holds a ``.curlrc`` with
``fail-with-body``, ``silent`` and ``show-error``), as a reader would see a 405.
Code in running text (`` `like this` ``) is not run: a command meant to be
tried goes in a block. Two checks cover the prose instead: every `` `ambidex ...` ``
in it must name commands and options that exist, and every ``ax.x`` /
``ambidex.x.y`` a page mentions must import (a renamed API leaves none behind).

``pip install ...`` commands (a line, or the head of ``a && b``) are not run:
they install into the environment the tests run in (CI's ``.ci/run`` installs
into a fresh one). Each is a skipped test too, like a ``skip`` directive.

A failure names the block as ``page:line``; python tracebacks carry the page's
own line numbers, and the page's log (every command with its output) is kept
in the test's ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import shlex
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from _mdblocks import Page, kind_of, parse_page, read_page
from _pagerun import ROOT, PageRun, console_steps, install_commands, unmatched_line

PAGES = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]


def _skipped() -> Iterator[tuple[str, str]]:
    """``(where, reason)`` of every block, or install command, the page tests do not run."""
    for path in PAGES:
        for block in read_page(ROOT, path).blocks:
            if block.verb == "skip":
                yield block.where, block.arg or "no reason given"
            elif kind_of(block) == "shell":
                for command in install_commands(block.code):
                    yield (
                        f"{block.where} {command}",
                        "installs into the environment the tests run in",
                    )


def _environment(workdir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AMBIDEX_", "OPENAI_", "PYTEST_", "COV_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["AMBIDEX_HOME"] = str(workdir / "ambidex-home")
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_COLOR"] = "1"  # console blocks compare plain text
    env["COLUMNS"] = "200"  # and rich would wrap a long error line at 80
    # curl fails on an HTTP error status, as a reader would notice a 405
    (workdir / ".curlrc").write_text("fail-with-body\nsilent\nshow-error\n")
    env["CURL_HOME"] = str(workdir)
    return env


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", PAGES)
def test_page_runs(path: str, tmp_path: Path) -> None:
    """Every block of the page runs as its label says (see the module docstring)."""
    page = read_page(ROOT, path)
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "examples").symlink_to(ROOT / "examples")
    with (tmp_path / "page.log").open("w", encoding="utf-8") as log:
        run = PageRun(page, workdir, log, env=_environment(workdir))
        try:
            with _mock_llm(page, run):
                run.run()
        finally:
            run.close()
    times = "\n".join(f"  {where:<22} {kind:<8} {s:6.2f} s" for where, kind, s in run.times)
    print(f"{path}: {len(run.times)} blocks\n{times}")
    if run.failures:
        report = "\n\n".join(run.failures)
        pytest.fail(f"{report}\n\nblock times:\n{times}\nlog: {tmp_path / 'page.log'}", False)


@contextlib.contextmanager
def _mock_llm(page: Page, run: PageRun) -> Iterator[None]:
    """A mock LLM server for the page's LLM calls, if the page asks for one."""
    if "mock-llm" not in page.verbs:
        yield
        return
    from ambidex.llm import MockLLMServer

    with MockLLMServer(seed=1) as server:
        run.env["OPENAI_BASE_URL"] = server.url
        yield


@pytest.mark.parametrize(("where", "reason"), list(_skipped()))
def test_block_is_skipped(where: str, reason: str) -> None:
    """One skipped test per block the docs say not to run: ``-ra`` lists them all."""
    pytest.skip(f"{where}: {reason}")


# Names a page mentions on purpose as gone (the page says so where it names them).
_GONE = {"ax.sim.workload"}
_NAME = re.compile(r"(?<![\w.])(?:ax|ambidex)(?:\.[A-Za-z_]\w*)+")


def _resolves(dotted: str) -> bool:
    """Whether ``ax.a.b`` / ``ambidex.a.b`` is an attribute or module, importing as needed."""
    obj: object = importlib.import_module("ambidex")
    for part in dotted.split(".")[1:]:
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        if not isinstance(obj, types.ModuleType):
            return False
        try:
            obj = importlib.import_module(f"{obj.__name__}.{part}")
        except ImportError:
            return False
    return True


@functools.cache
def _telemetry_names() -> frozenset[str]:
    """The ``ambidex.…`` names ambidex's source writes as text: spans, attributes, metrics.

    A page may name them (docs/observability.md lists them all); one the source no
    longer writes is stale like a renamed API.
    """
    import ast

    names = set()
    for source in (ROOT / "src" / "ambidex").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                word = node.value.split(" ", 1)[0]
                if word.startswith("ambidex."):
                    names.add(word.rstrip("."))
    return frozenset(names)


@pytest.mark.parametrize("path", PAGES)
def test_names_the_page_mentions_exist(path: str) -> None:
    """Every ``ax.x`` / ``ambidex.x.y`` in the page's text and code is there to import.

    Or is a span, attribute or metric name ambidex's source writes (``_telemetry_names``).
    """
    missing = []
    for number, line in enumerate((ROOT / path).read_text(encoding="utf-8").splitlines(), 1):
        for name in _NAME.findall(line):
            if name in _telemetry_names():
                continue
            if name not in _GONE and not _resolves(name):
                missing.append(f"{path}:{number}: {name}")
    assert not missing, "stale names:\n" + "\n".join(missing)


_INLINE_COMMAND = re.compile(r"`((?:python -m )?ambidex [^`]+)`")


def _command_problem(command: str) -> str | None:
    """Why ``ambidex ...`` would not parse: an unknown command or option; None if it would.

    Values are not checked (placeholders such as ``DB`` stand for them); a
    placeholder word (``FILE``, ``[OPTIONS]``, ``…``) ends the check.
    """
    import typer.main

    from ambidex.cli import app

    words = shlex.split(command)
    words = words[3:] if words[:3] == ["python", "-m", "ambidex"] else words[1:]
    cmd, path, at = typer.main.get_command(app), "ambidex", 0
    while at < len(words):
        word = words[at]
        if word in ("…", "...") or word.isupper() or word.startswith("[") or "|" in word:
            return None
        if word.startswith("-"):
            name = word.split("=")[0]
            param = next((p for p in cmd.params if name in [*p.opts, *p.secondary_opts]), None)
            if param is None and name not in ("-h", "--help"):
                return f"{path}: no option {name}"
            takes_value = param is not None and not param.is_flag and "=" not in word
            at += 2 if takes_value else 1
            continue
        if hasattr(cmd, "get_command"):  # a group: the word names a command
            sub = cmd.get_command(None, word)
            if sub is None and cmd.get_command(None, "run") is not None:
                sub, at = cmd.get_command(None, "run"), at - 1  # `evolve FILE` is `evolve run FILE`
            if sub is None:
                return f"{path}: no command {word}"
            cmd, path = sub, f"{path} {word}"
        at += 1
    return None


@pytest.mark.parametrize("path", PAGES)
def test_commands_in_running_text_parse(path: str) -> None:
    """Every `` `ambidex ...` `` in the page's prose names commands and options that exist."""
    text = (ROOT / path).read_text(encoding="utf-8")
    problems = []
    for match in _INLINE_COMMAND.finditer(text):
        problem = _command_problem(" ".join(match[1].split()))
        if problem is not None:
            line = text.count("\n", 0, match.start()) + 1
            problems.append(f"{path}:{line}: `{match[1]}`: {problem}")
    assert not problems, "\n".join(problems)


# -- the conventions themselves ---------------------------------------------------------

_SAMPLE = """\
# A page
<!-- docs-test: mock-llm -->

```python
x = 1
```

<!-- docs-test: skip needs the network -->
```bash
curl https://example.org
```

    pip install -e . && ambidex serve

<!-- docs-test: file wf.yaml -->
```yaml
name: wf
```

- a list item

  ```console
  $ ambidex --version
  ambidex ...
  ```

```
untagged
```
"""


def test_parser_finds_every_block_with_its_directive_and_line() -> None:
    """Fences, an indented block and a fence in a list, each with its line and directive."""
    page = parse_page(_SAMPLE, "sample.md")
    found = [(b.line, b.lang, b.verb, b.arg, kind_of(b)) for b in page.blocks]
    assert found == [
        (5, "python", None, "", "python"),
        (10, "bash", "skip", "needs the network", "shell"),
        (13, "indented", None, "", "shell"),
        (17, "yaml", "file", "wf.yaml", "data"),
        (23, "console", None, "", "console"),
        (28, "", None, "", None),
    ]
    assert page.verbs == {"mock-llm"}
    assert page.problems == []


def test_parser_reports_misplaced_and_unknown_directives() -> None:
    """A directive followed by prose, or one the test does not know, is a problem."""
    text = "<!-- docs-test: skip why -->\n\nsome prose\n\n<!-- docs-test: sikp x -->\n"
    problems = parse_page(text, "p.md").problems
    assert problems == [
        "p.md:1: docs-test skip is not right before a block",
        "p.md:5: unknown docs-test directive 'sikp'",
    ]


def test_install_commands_are_split_from_what_runs() -> None:
    """``pip install a && cmd`` runs ``cmd``; the install is reported, not run."""
    from _pagerun import without_installs

    code = "pip install -e . && ambidex serve\npip install x  # why\nls\n"
    assert install_commands(code) == ["pip install -e .", "pip install x"]
    assert without_installs(code) == "ambidex serve\nls\n"


def test_console_blocks_match_shown_lines_in_order_with_ellipses() -> None:
    """Each ``$`` command's shown lines must appear in order; ``...`` matches anything."""
    steps = list(console_steps("$ a \\\n  --flag\nout 1\n$ b '{\n}'\n$ c\n"))
    assert steps == [("a \\\n  --flag", ["out 1"]), ("b '{\n}'", []), ("c", [])]
    printed = 'noise\nerror: model Boom raised (boom.py, line 7)\n  File "/x/boom.py", line 7\n'
    shown = ["error: model Boom ...", '  File ".../boom.py", line 7']
    assert unmatched_line(shown, printed) is None
    assert unmatched_line(shown[::-1], printed) == "error: model Boom ..."


def test_command_check_names_unknown_commands_and_options() -> None:
    """A misspelt option or command is named; placeholders and `evolve FILE` pass."""
    problem = _command_problem("ambidex sim run m.py --stepz 3")
    assert problem == "ambidex sim run: no option --stepz"
    assert _command_problem("ambidex jobs sumbit sleep") == "ambidex jobs: no command sumbit"
    assert _command_problem("ambidex evolve show DB --top 10 --html r.html") is None
    assert _command_problem("ambidex evolve f.py --iterations 200 --parallel 8") is None
    assert _command_problem("python -m ambidex serve --port 8000") is None
