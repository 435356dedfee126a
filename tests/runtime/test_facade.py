"""``sync_facade``: one async function, a sync face that keeps its parameters."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import threading
from pathlib import Path

import pytest

import ambidex as ax
from ambidex.runtime._facade import sync_facade


async def ascale(values: list[float], factor: float = 2.0, *, offset: float = 0.0) -> list[float]:
    """Scale every value: for async code."""
    await asyncio.sleep(0)
    return [v * factor + offset for v in values]


scale = sync_facade(ascale, name="scale", doc="Scale every value: from sync code.")


async def _where() -> str:
    return threading.current_thread().name


where = sync_facade(_where, name="where")


async def afail(message: str) -> None:
    raise KeyError(message)


fail = sync_facade(afail, name="fail")

REPO_CACHE = Path(__file__).resolve().parents[2] / ".mypy_cache"


def test_facade_forwards_positional_and_keyword_arguments() -> None:
    assert scale([1.0, 2.0]) == [2.0, 4.0]
    assert scale([1.0], 3.0, offset=1.0) == [4.0]
    assert scale(values=[1.0], factor=0.5) == [0.5]


def test_facade_runs_on_the_runtimes_loop_thread_not_the_callers() -> None:
    name = where()
    assert name != threading.current_thread().name
    assert name == ax.current_runtime().loop_thread._thread.name


def test_facade_keeps_name_doc_module_signature_and_wrapped() -> None:
    assert scale.__name__ == "scale"
    assert scale.__qualname__ == "scale"
    assert scale.__doc__ == "Scale every value: from sync code."
    assert scale.__module__ == __name__
    assert scale.__wrapped__ is ascale  # type: ignore[attr-defined]
    assert inspect.signature(scale) == inspect.signature(ascale)
    assert not inspect.iscoroutinefunction(scale)


def test_facade_without_doc_keeps_the_async_functions() -> None:
    facade = sync_facade(ascale, name="other")
    assert facade.__doc__ == ascale.__doc__


def test_facade_raises_what_the_coroutine_raises() -> None:
    with pytest.raises(KeyError, match="missing"):
        fail("missing")


def test_facade_refuses_to_block_the_loop_thread_it_needs() -> None:
    async def inside() -> None:
        scale([1.0])

    with pytest.raises(RuntimeError):
        ax.current_runtime().call(inside())


class _Counter:
    def __init__(self) -> None:
        self.total = 0

    async def aadd(self, n: int) -> int:
        """Add ``n``: for async code."""
        self.total += n
        return self.total

    add = sync_facade(aadd, name="add")


def test_facade_of_a_method_binds_like_a_method() -> None:
    counter = _Counter()
    assert counter.add(2) == 2
    assert counter.add(n=3) == 5
    assert _Counter.add.__qualname__ == "_Counter.add"


SNIPPET = """
from ambidex.runtime._facade import sync_facade

async def afetch(url: str, *, retries: int = 3) -> bytes:
    return url.encode()

fetch = sync_facade(afetch, name="fetch")
ok: bytes = fetch("u", retries=1)
bad: str = fetch("u")      # wrong result type
fetch(3)                   # wrong argument type
fetch("u", tries=1)        # unknown keyword
"""


def test_facade_keeps_the_parameters_for_mypy(tmp_path: Path) -> None:
    mypy_api = pytest.importorskip("mypy.api", reason="mypy is part of the dev extra")
    source = tmp_path / "facade_user.py"
    source.write_text(SNIPPET)
    # From a copy of the project's cache when there is one (as tests/test_typing.py does).
    cache = tmp_path / "cache"
    incremental = ["--no-incremental"]
    if REPO_CACHE.is_dir():
        shutil.copytree(REPO_CACHE, cache)
        incremental = []
    out, _, _ = mypy_api.run(["--strict", *incremental, "--cache-dir", str(cache), str(source)])
    errors = [line for line in out.splitlines() if "facade_user.py" in line and "error" in line]
    lines = sorted(int(line.split(":")[1]) for line in errors)
    assert lines == [9, 10, 11], out
