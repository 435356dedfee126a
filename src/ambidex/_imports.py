"""Import a Python file by path, so that cpu worker processes can import it too."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from ambidex._text import describe_exception

__all__ = ["import_file"]


def module_name_of(path: Path) -> tuple[str, Path]:
    """The dotted name a file is imported under, and the folder that must be on ``sys.path``.

    A file inside packages (folders with ``__init__.py``) keeps its package
    path: ``examples/sim/wolf_sheep.py`` is ``examples.sim.wolf_sheep`` with
    the folder above ``examples`` on the path. So the file is one module
    whichever way it is reached (``import examples.sim.wolf_sheep`` in a test,
    a path on the command line): one set of classes, and one name for caches
    that remember it (numba's ``cache=True`` does).
    """
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file() and folder.name.isidentifier():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts), folder


def import_file(path: Path) -> ModuleType:
    """Import a .py file by the name its place gives it (see ``module_name_of``).

    Importable by name (the folder above its packages goes first on
    ``sys.path``), so that cpu worker processes, which get this ``sys.path``,
    can import it too and find its functions.
    """
    path = path.resolve()
    if not path.stem.isidentifier():
        raise ValueError(f"cannot import {path}: {path.stem!r} is not a valid module name")
    name, root = module_name_of(path)
    known = sys.modules.get(name)
    known_file = getattr(known, "__file__", None)
    if known is not None and (known_file is None or Path(known_file).resolve() != path):
        raise ValueError(
            f"cannot import {path}: a module named {name!r} is already loaded"
            f"{f' from {known_file}' if known_file else ''}; rename the file"
        )
    folder = str(root)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        raise ValueError(f"importing {path} failed: {describe_exception(exc)}") from exc
    found = getattr(module, "__file__", None)
    if found is None or Path(found).resolve() != path:
        raise ValueError(
            f"cannot import {path}: the name {name!r} found {found or 'a built-in module'} "
            "first; rename the file"
        )
    return module
