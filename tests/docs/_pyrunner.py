"""Runs one page's python blocks in order, in one namespace (started by test_docs.py).

Reads one JSON request a line on stdin, ``{"code", "path", "line", "env"}``, and
answers each on the file descriptor named by ``argv[1]`` with one JSON line,
``{"error": traceback or null, "seconds"}``. What the blocks print goes to this
process's stdout and stderr, which the test keeps in the page's log.

A block runs as a script's top level would, in a module named ``__main__`` (so
cloudpickle sends its functions and classes to worker processes by value), with
the page's work directory first on ``sys.path`` (as ``python -c`` has the current
directory). Top-level ``await`` and ``async with`` are allowed, as in Python's
asyncio REPL (``python -m asyncio``): such a block runs in ``asyncio.run``. A
block that defines ``test_*`` functions has them called after it, as pytest
would (``async def`` ones in ``asyncio.run``).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import os
import sys
import time
import traceback
import types
from typing import Any


def run_block(code: str, path: str, line: int, namespace: dict[str, Any]) -> str | None:
    """Run one block, then its ``test_*`` functions; the traceback if any of it raised."""
    # Blank lines in front make tracebacks name the markdown file's own lines.
    source = "\n" * (line - 1) + code
    before = dict(namespace)
    try:
        compiled = compile(
            source, path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )
        _finish(eval(compiled, namespace))
        for name, value in list(namespace.items()):
            if name.startswith("test_") and callable(value) and before.get(name) is not value:
                _finish(value())  # as pytest would call a test the page shows
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the block failed
        return _page_traceback(exc, path)
    return None


def _finish(result: object) -> None:
    """Run ``result`` to its end if it is a coroutine (top-level ``await``, ``async def test_``)."""
    if inspect.iscoroutine(result):
        asyncio.run(result)


def _page_traceback(exc: BaseException, path: str) -> str:
    """The traceback from the block's first frame on (this runner's and asyncio's left out)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != path:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def main() -> None:
    """Serve requests until stdin closes."""
    replies = os.fdopen(int(sys.argv[1]), "w", buffering=1)
    module = types.ModuleType("__main__")
    sys.modules["__main__"] = module
    sys.path.insert(0, os.getcwd())
    for request_line in sys.stdin:
        request = json.loads(request_line)
        os.environ.update(request["env"])
        print(f"--- {request['path']}:{request['line']} (python)", flush=True)
        started = time.perf_counter()
        error = run_block(request["code"], request["path"], request["line"], module.__dict__)
        sys.stdout.flush()
        sys.stderr.flush()
        replies.write(json.dumps({"error": error, "seconds": time.perf_counter() - started}))
        replies.write("\n")


if __name__ == "__main__":
    main()
