"""``ambidex run`` refuses a workflow that validation rejects: exit 2, one line naming it.

Real subprocesses (issue 16): every mistake that can be found before a run is
one ``error:`` line with the file and the line of the offending reference, and
never a traceback. The node functions live in a module with string annotations
(``from __future__ import annotations``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

NODES = """
from __future__ import annotations


def count(text: str) -> int:
    return len(text)


def pair(a: int, b: int) -> int:
    return a + b


def shout(text: str) -> str:
    return text.upper()
"""

CASES = {
    "condition on an unknown field": (
        """
        name: cond
        nodes:
          n:
            function: cli_nodes:count
            input: {text: abc}
          loud:
            function: cli_nodes:shout
            input: {text: hi}
            when: "${n.output.size} > 2"
        """,
        [],
        "line 9: node 'loud' when: ${n.output.size}: int has no field 'size'",
    ),
    "function type mismatch": (
        """
        name: types
        nodes:
          n:
            function: cli_nodes:count
            input: {text: abc}
          again:
            function: cli_nodes:count
            input:
              text: "${n.output}"
        """,
        [],
        "line 9: node 'again': parameter 'text' of count() expects str, but ${n.output} is int",
    ),
    "dict keys that are no parameters": (
        """
        name: keys
        nodes:
          p:
            function: cli_nodes:pair
            input:
              a: 1
              c: 2
        """,
        [],
        "line 7: node 'p': input key 'c' names no parameter of pair() (parameters: a, b)",
    ),
    "cycle": (
        """
        name: cycle
        nodes:
          a:
            function: cli_nodes:shout
            input: {text: "${b.output}"}
          b:
            function: cli_nodes:shout
            input: {text: "${a.output}"}
        """,
        [],
        "line 5: node 'a' input 'text': ${b.output} makes a cycle: a -> b -> a "
        "(a node cannot wait for itself)",
    ),
    "missing run input": (
        """
        name: inputs
        inputs:
          text: str
        nodes:
          n:
            function: cli_nodes:count
            input: {text: "${inputs.text}"}
        """,
        [],
        "line 3: missing input 'text' (str)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_workflow_mistake_is_one_line_with_its_file_and_line_and_exit_2(
    tmp_path: Path, case: str
) -> None:
    text, args, says = CASES[case]
    (tmp_path / "cli_nodes.py").write_text(NODES)
    (tmp_path / "wf.yaml").write_text(textwrap.dedent(text).lstrip())
    env = {**os.environ, "AMBIDEX_HOME": str(tmp_path / "home"), "COLUMNS": "300"}
    for key in ("AMBIDEX_LOG_LEVEL", "AMBIDEX_LOOP", "AMBIDEX_BACKEND"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-m", "ambidex", "run", "wf.yaml", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [f"error: wf.yaml: {says}"]
