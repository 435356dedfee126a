"""The public surface: ``ambidex.__all__`` is complete, exact and free of duplicates."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import types
import warnings
from collections import Counter

import pytest

import ambidex as ax

# ``ambidex.runtime`` is the subpackage (callable for one release as the deprecated
# ``ax.runtime()``); reach the modules through importlib all the same.
RUNTIME_PACKAGE = importlib.import_module("ambidex.runtime")
EXCEPTIONS_MODULE = importlib.import_module("ambidex.exceptions")


def test_all_names_exist_when_ambidex_imported() -> None:
    missing = [name for name in ax.__all__ if not hasattr(ax, name)]
    assert missing == []


def test_all_lists_each_name_once_when_inspected() -> None:
    duplicates = [name for name, count in Counter(ax.__all__).items() if count > 1]
    assert duplicates == []
    assert all(isinstance(name, str) for name in ax.__all__)


def test_star_import_gives_every_name_when_used() -> None:
    namespace: dict[str, object] = {}
    exec("from ambidex import *", namespace)
    for name in ax.__all__:
        assert namespace[name] is getattr(ax, name)


@pytest.mark.parametrize("name", RUNTIME_PACKAGE.__all__)
def test_runtime_object_reachable_from_ambidex_when_public(name: str) -> None:
    assert name in ax.__all__
    assert getattr(ax, name) is getattr(RUNTIME_PACKAGE, name)


@pytest.mark.parametrize("name", EXCEPTIONS_MODULE.__all__)
def test_exception_reachable_from_ambidex_when_public(name: str) -> None:
    assert name in ax.__all__
    exc_type = getattr(ax, name)
    assert exc_type is getattr(EXCEPTIONS_MODULE, name)
    assert issubclass(exc_type, Exception)


def test_subpackage_all_lists_only_existing_names_when_inspected() -> None:
    for module in (RUNTIME_PACKAGE, EXCEPTIONS_MODULE):
        assert len(set(module.__all__)) == len(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_public_attributes_are_exported_when_not_modules() -> None:
    # Anything public in the ambidex namespace (not a submodule, not a
    # dunder) is part of the API and must be in __all__.
    public = {
        name
        for name, value in vars(ax).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - set(ax.__all__) == set()


def test_decorators_and_helpers_have_expected_kinds_when_exported() -> None:
    assert repr(ax.io) == "ax.io"
    assert repr(ax.blocking) == "ax.blocking"
    assert repr(ax.cpu) == "ax.cpu"
    for fn in (ax.gather, ax.limit, ax.limits, ax.current_runtime, ax.usable_cpus):
        assert inspect.isfunction(fn)
    assert inspect.iscoroutinefunction(ax.agather)
    assert isinstance(ax.__version__, str)
    assert ax.__version__


def test_current_runtime_returns_installed_runtime_when_called(fresh_runtime: ax.Runtime) -> None:
    assert ax.current_runtime() is fresh_runtime
    assert isinstance(ax.current_runtime(), ax.Runtime)


def test_runtime_alias_warns_and_returns_current_runtime_when_called(
    fresh_runtime: ax.Runtime,
) -> None:
    message = r"ax\.runtime\(\) is deprecated; use ax\.current_runtime\(\)"
    with pytest.warns(DeprecationWarning, match=message):
        assert ax.runtime() is fresh_runtime
    with pytest.warns(DeprecationWarning, match=message):
        assert RUNTIME_PACKAGE.runtime() is fresh_runtime  # from ambidex.runtime import runtime


def test_runtime_alias_warns_once_per_call_site_when_called_repeatedly() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            ax.runtime()  # one call site: one warning
        ax.runtime()  # another
    assert [w.category for w in caught] == [DeprecationWarning, DeprecationWarning]
    assert {w.filename for w in caught} == {__file__}  # the caller's line, not ambidex's


def test_runtime_attribute_is_the_subpackage_when_imported() -> None:
    assert ax.runtime is RUNTIME_PACKAGE
    assert ax.runtime.Runtime is ax.Runtime


def test_import_ambidex_loads_runtime_on_first_use_when_imported() -> None:
    code = (
        "import sys, ambidex as ax\n"
        "print('ambidex.runtime' in sys.modules, 'asyncio' in sys.modules)\n"
        "ax.io\n"
        "print('ambidex.runtime' in sys.modules, callable(ax.runtime))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.split() == ["False", "False", "True", "True"]


def test_runtime_alias_works_when_ambidex_runtime_imported_first() -> None:
    # Importing the subpackage sets ``ambidex.runtime`` to it: the old function
    # would have been lost there; the callable package is not.
    code = (
        "import warnings, ambidex.runtime, ambidex as ax\n"
        "warnings.simplefilter('error')\n"
        "try:\n"
        "    ax.runtime()\n"
        "except DeprecationWarning as exc:\n"
        "    print(exc)\n"
        "print(type(ax.current_runtime()).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.splitlines() == ["ax.runtime() is deprecated; use ax.current_runtime()", "Runtime"]


def test_limits_helpers_use_current_runtime_when_called(fresh_runtime: ax.Runtime) -> None:
    ax.limits(exports_probe=2, exports_rate=ax.Rate(5))
    capacity = ax.limit("exports_probe")
    assert isinstance(capacity, ax.CapacityLimit)
    assert capacity is fresh_runtime.limit("exports_probe")
    assert capacity.capacity == 2
    assert isinstance(ax.limit("exports_rate"), ax.RateLimit)
    with pytest.raises(ax.UnknownLimitError):
        ax.limit("never_declared")
