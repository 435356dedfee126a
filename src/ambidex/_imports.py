"""Import a Python file by path, so that cpu worker processes can import it too."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["import_file"]


def import_file(path: Path) -> ModuleType:
    """Import a .py file as the module named by its stem, from its directory.

    Importable by name (its directory goes first on ``sys.path``), so that cpu
    worker processes, which get this ``sys.path``, can import it too and find
    its functions.
    """
    path = path.resolve()
    name = path.stem
    if not name.isidentifier():
        raise ValueError(f"cannot import {path}: {name!r} is not a valid module name")
    known = sys.modules.get(name)
    known_file = getattr(known, "__file__", None)
    if known is not None and (known_file is None or Path(known_file).resolve() != path):
        raise ValueError(
            f"cannot import {path}: a module named {name!r} is already loaded"
            f"{f' from {known_file}' if known_file else ''}; rename the file"
        )
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        raise ValueError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    found = getattr(module, "__file__", None)
    if found is None or Path(found).resolve() != path:
        raise ValueError(
            f"cannot import {path}: the name {name!r} found {found or 'a built-in module'} "
            "first; rename the file"
        )
    return module
