"""Edge cases around the call path: retries that cannot help, how workers find code."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import ambidex as ax


@ax.cpu(retries=3, backoff_s=0.0)
def echo_retried(value: object) -> object:
    return value


def test_unpicklable_argument_is_not_retried() -> None:
    with pytest.raises(ax.SerializationError, match="echo_retried"):
        echo_retried(threading.Lock())
    stats = ax.current_runtime().statistics().kinds["cpu"]
    assert stats.retries == 0
    assert stats.failed == 1


def test_cpu_function_from_a_module_in_the_current_directory(tmp_path: Path) -> None:
    # `python -c` puts "" (the current directory) on sys.path; the worker must
    # be able to import the same module by name.
    (tmp_path / "mymodule.py").write_text(
        textwrap.dedent(
            """
            import os
            import ambidex as ax

            @ax.cpu
            def where(x):
                return x * 2, os.getpid()
            """
        )
    )
    script = "import os, mymodule; v, pid = mymodule.where(21); assert pid != os.getpid(); print(v)"
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "42"


def test_sync_call_after_close_of_explicit_runtime_is_refused() -> None:
    rt = ax.Runtime(io_threads=1, cpu_workers=1)
    rt.close()

    async def nothing() -> None:
        return None

    with pytest.raises(ax.RuntimeClosedError):
        rt.call(nothing())


def test_a_forked_child_does_not_repeat_its_parents_jitter() -> None:
    """Retries in forked workers (and the evolve sandbox) must not back off in lockstep."""
    from ambidex import _backoff

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, repr(_backoff._rng.random()).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 200).decode().split()
    os.close(read)
    os.waitpid(pid, 0)
    assert [float(x) for x in child] != [_backoff._rng.random()]
