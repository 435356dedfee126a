"""Decorated functions keep their signatures for type checkers (ParamSpec)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api", reason="mypy is part of the dev extra")

REPO_CACHE = Path(__file__).resolve().parents[1] / ".mypy_cache"

SNIPPET = """
import ambidex as ax

@ax.io
async def ask(prompt: str, *, n: int = 1) -> str:
    return prompt * n

@ax.cpu(timeout_s=5)
def score(program: str) -> float:
    return float(len(program))

@ax.blocking
def lookup(key: str) -> bytes:
    return key.encode()

async def use() -> None:
    a: str = await ask.aio("x", n=2)
    b: float = await score.aio("y")
    c: list[float] = await score.amap(["p", "q"])

d: str = ask("x")
e: float = score("y")
f: bytes = lookup("k")
rt: ax.Runtime = ax.current_runtime()
old: ax.Runtime = ax.runtime()  # deprecated, still typed
reveal_type(ask)
g: int = score("y")        # wrong result type
score(3)                   # wrong argument type
ask("x", m=1)              # unknown keyword
"""


def test_decorators_preserve_signatures_for_mypy(tmp_path: Path) -> None:
    source = tmp_path / "user_code.py"
    source.write_text(SNIPPET)
    # A copy of the project's own cache (CI runs `mypy --strict src` first) spares
    # re-checking ambidex and its dependencies: 0.6 s instead of 8 s, the same answer
    # (mypy re-checks whatever changed since). Without one, a cold run.
    cache = tmp_path / "cache"
    incremental = ["--no-incremental"]
    if REPO_CACHE.is_dir():
        shutil.copytree(REPO_CACHE, cache)
        incremental = []
    out, err, status = mypy_api.run(
        ["--strict", *incremental, "--cache-dir", str(cache), str(source)]
    )
    lines = [line for line in out.splitlines() if "user_code.py" in line]
    errors = [line for line in lines if ": error:" in line]
    assert status == 1, out + err
    assert len(errors) == 3, "\n".join(lines)
    assert "TaskFunction[[prompt: str, *, n: int =], str]" in out, out
    expected = [
        'Incompatible types in assignment (expression has type "float", variable has type "int")',
        'Argument 1 to "__call__" of "TaskFunction" has incompatible type "int"; expected "str"',
        'Unexpected keyword argument "m"',
    ]
    for message in expected:
        assert any(message in e for e in errors), (message, errors)
