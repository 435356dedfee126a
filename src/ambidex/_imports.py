"""Load a user's Python file (or module) and find the classes it defines.

``ambidex sim run model.py``, ``ax.sim.run("model.py:Walk")`` and
``ambidex worker --load models.py`` all take a path or a dotted module name and
look for the classes of one kind the module defines itself: one way to
import (:func:`load_module`, by path through :func:`import_file` so that cpu
worker processes can import the file too) and one way to find them
(:func:`classes_in`). Each caller words its own errors.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from ambidex._text import describe_exception
from ambidex.exceptions import AmbidexError

__all__ = ["MissingFileError", "classes_in", "import_file", "load_module", "search_also"]

T = TypeVar("T")


class MissingFileError(AmbidexError, FileNotFoundError):
    """The ``.py`` file to load is not there (not a file the module's own code looked for)."""


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


def search_also(*folders: str | Path) -> None:
    """Let ``import`` find modules in ``folders`` too: appended to ``sys.path`` if missing.

    What the ``ambidex`` commands do so that ``package.module:name`` resolves
    from the current directory (and, for a workflow, from its file's folder),
    as ``python -m`` would: the ``ambidex`` console script's ``sys.path`` starts
    with its own ``bin`` folder, not the current one. Appended, not prepended,
    so a file in the current directory never shadows an installed module.
    cpu worker processes get this ``sys.path`` too.
    """
    for folder in folders:
        entry = str(folder)
        if entry not in sys.path:
            sys.path.append(entry)


def load_module(target: str) -> ModuleType:
    """The module ``target`` names: a path ending in ``.py``, or a dotted module name.

    Raises:
        MissingFileError: ``target`` ends in ``.py`` and is not a file.
        ValueError: the file cannot be imported (the message names it and why,
            a syntax error's line included).
        Exception: whatever importing the dotted module raised (``ImportError``
            when there is none of that name), for the caller to word.
    """
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise MissingFileError(f"no such file: {target}")
        return import_file(path)
    return importlib.import_module(target)


def classes_in(module: ModuleType, base: type[T]) -> dict[str, type[T]]:
    """The subclasses of ``base`` that ``module`` defines, by name, in the order defined.

    Classes the module only imports (``base`` itself, or a model imported from
    a shared file) are left out: they belong to the module that defines them.
    """
    return {
        obj.__name__: obj
        for obj in list(vars(module).values())
        if inspect.isclass(obj)
        and issubclass(obj, base)
        and obj is not base
        and obj.__module__ == module.__name__
    }
