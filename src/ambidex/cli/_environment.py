"""The ``AMBIDEX_*`` variables, checked before a command runs.

The library reads most of them lazily, when the event loop, the thread pool
or a file under ``AMBIDEX_HOME`` is first needed, which on the command line
would be in the middle of a run, with a traceback. Every command checks them
first instead (after its options, so that ``-h`` always works), and a bad
value is one line and exit 2.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ["check_environment", "event_loop_name", "installed_version"]

_LOOPS = ("auto", "uvloop", "asyncio")


def installed_version() -> str:
    """The version of the installed ``ambidex`` distribution (else the package's own)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ambidex")
    except PackageNotFoundError:  # run from a source tree
        import ambidex

        return ambidex.__version__


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def event_loop_name() -> str:
    """The event loop the runtime will start: ``uvloop`` or ``asyncio`` (``AMBIDEX_LOOP``).

    Raises:
        ValueError: ``AMBIDEX_LOOP`` is not auto, uvloop or asyncio, or asks for
            uvloop where it is not installed.
    """
    raw = os.environ.get("AMBIDEX_LOOP", "auto")
    choice = raw.strip().lower() or "auto"
    if choice not in _LOOPS:
        raise ValueError(f"AMBIDEX_LOOP={raw!r}: expected 'auto', 'uvloop' or 'asyncio'")
    uvloop = _installed("uvloop")
    if choice == "uvloop" and not uvloop:
        raise ValueError(
            "AMBIDEX_LOOP=uvloop, but uvloop is not installed: pip install 'ambidex[fast]'"
        )
    return "uvloop" if uvloop and choice != "asyncio" else "asyncio"


def _check_home() -> None:
    """``AMBIDEX_HOME``, when set, is a directory ambidex can write to (or can create)."""
    raw = os.environ.get("AMBIDEX_HOME")
    if not raw:
        return
    path = Path(raw).expanduser()
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"AMBIDEX_HOME={raw}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"AMBIDEX_HOME={raw}: {existing} is not writable")


def check_environment() -> None:
    """Check every ``AMBIDEX_*`` variable a command may read.

    Raises:
        ValueError: one of them has a bad value; the message names it.
    """
    import ambidex as ax

    event_loop_name()
    backend = os.environ.get("AMBIDEX_BACKEND")
    if backend and backend not in ("local", "ray"):
        raise ValueError(f"AMBIDEX_BACKEND={backend!r}: expected 'local' or 'ray'")
    ax.Runtime().close()  # AMBIDEX_IO_THREADS, AMBIDEX_CPU_WORKERS
    if backend == "ray" and not _installed("ray"):
        raise ValueError(
            "AMBIDEX_BACKEND=ray, but ray is not installed: pip install 'ambidex[ray]'"
        )
    _check_home()
