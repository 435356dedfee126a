"""Every exception ambidex defines is an ``ax.AmbidexError``, and keeps its built-in base.

``except ax.AmbidexError`` must catch whatever ambidex raises itself, from any
subpackage; ``except ValueError`` (or ``KeyError``, ``RuntimeError``...) in
existing code must keep catching what it caught before.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import types

import pytest

import ambidex as ax

# Exception classes that never reach a user of ambidex. Everything else an ambidex
# module defines must be an AmbidexError; a new internal one is added here, with why.
INTERNAL = {
    "ambidex.evolve._runner.CandidateError": "the sandbox runner script's own (it runs as "
    "__main__ and must not import ambidex); the evaluator sees that copy, not this one",
    "ambidex.evolve._runner.FrameError": "the sandbox runner's, caught where it is raised",
    "ambidex.evolve._runner.SetupError": "the sandbox runner's, reported as setup_error",
    "ambidex.jobs._json.JsonProblem": "always caught and reworded as a ValueError or a job error",
    "ambidex.jobs._worker._LoopDied": "the job worker's own signal, caught in the worker",
    "ambidex.runtime._loop.Escaped": "carries SystemExit/KeyboardInterrupt off the loop "
    "thread; the waiting caller raises the original",
    "ambidex.workflows._yaml._Skip": "the YAML loader's own signal, caught in the loader",
}

# Classes that had a built-in base before they joined the hierarchy: they keep it, so
# that ``except ValueError`` and friends in users' code still catch them.
BUILT_IN_BASES = {
    "ambidex.sim.ModelError": ValueError,
    "ambidex.sim.RecordError": ValueError,
    "ambidex.sim.SweepError": RuntimeError,
    "ambidex.evolve.TargetError": ValueError,
    "ambidex.evolve.EvolveError": RuntimeError,
    "ambidex.evolve.DatabaseError": ValueError,
    "ambidex.evolve.SandboxError": RuntimeError,
    "ambidex.workflows._refs.RefError": ValueError,
    "ambidex.jobs._records.IdempotencyConflict": ValueError,
    "ambidex.exceptions.TaskTimeoutError": TimeoutError,
    "ambidex.exceptions.UnknownLimitError": KeyError,
    "ambidex.exceptions.RuntimeClosedError": RuntimeError,
}


def _module_names() -> list[str]:
    """Every module of the ambidex package, found on disk (nothing is imported)."""
    names: list[str] = []

    def walk(path: list[str], prefix: str) -> None:
        for info in pkgutil.iter_modules(path, prefix):
            last = info.name.rpartition(".")[2]
            if last == "__main__":  # running it would start the CLI
                continue
            names.append(info.name)
            if info.ispkg:
                walk([os.path.join(p, last) for p in path], info.name + ".")

    walk(list(ax.__path__), "ambidex.")
    return sorted(names)


ALL_MODULES = ["ambidex", *_module_names()]
PUBLIC_MODULES = [
    name for name in ALL_MODULES if not any(part.startswith("_") for part in name.split("."))
]


def _import(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:  # an optional extra (numpy for ambidex.sim...)
        if exc.name is None or exc.name.partition(".")[0] == "ambidex":
            raise
        pytest.skip(f"{name} needs {exc.name}")


def _ambidex_exceptions(values: list[object]) -> set[type[BaseException]]:
    """The exception classes among ``values`` that ambidex defines (not re-exported ones)."""
    return {
        value
        for value in values
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__.partition(".")[0] == "ambidex"
    }


def _outside_hierarchy(classes: set[type[BaseException]]) -> list[str]:
    return sorted(
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in classes
        if not issubclass(cls, ax.AmbidexError)
    )


def _public_values(module: types.ModuleType) -> list[object]:
    """What a user can reach in ``module``: its public names, lazily imported ones too."""
    names = set(getattr(module, "__all__", ())) | {
        name for name in vars(module) if not name.startswith("_")
    }
    return [getattr(module, name) for name in sorted(names)]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_exceptions_are_ambidex_errors_when_exported(module_name: str) -> None:
    module = _import(module_name)
    assert _outside_hierarchy(_ambidex_exceptions(_public_values(module))) == []


@pytest.mark.parametrize("module_name", ALL_MODULES)
def test_defined_exceptions_are_ambidex_errors_when_not_internal(module_name: str) -> None:
    module = _import(module_name)
    defined = {
        value
        for value in _ambidex_exceptions(list(vars(module).values()))
        if value.__module__ == module_name
    }
    assert set(_outside_hierarchy(defined)) - set(INTERNAL) == set()


def test_internal_exceptions_exist_and_stay_private_when_listed() -> None:
    public = set()
    for module_name in PUBLIC_MODULES:
        public |= _ambidex_exceptions(_public_values(_import(module_name)))
    public_names = {f"{cls.__module__}.{cls.__qualname__}" for cls in public}
    for qualified in INTERNAL:
        module_name, _, name = qualified.rpartition(".")
        cls = getattr(importlib.import_module(module_name), name)
        assert not issubclass(cls, ax.AmbidexError), f"{qualified} joined: drop it from INTERNAL"
        assert qualified not in public_names, f"{qualified} is exported, so it reaches users"


@pytest.mark.parametrize(("qualified", "built_in"), sorted(BUILT_IN_BASES.items()))
def test_exceptions_keep_built_in_base_when_joining_hierarchy(
    qualified: str, built_in: type[Exception]
) -> None:
    module_name, _, name = qualified.rpartition(".")
    cls = getattr(_import(module_name), name)
    assert issubclass(cls, ax.AmbidexError)
    assert issubclass(cls, built_in)


def test_check_reports_exception_outside_hierarchy_when_one_is_defined() -> None:
    # The check itself must be able to fail: a class of ambidex's that is a plain
    # ValueError is reported; a re-exported foreign exception is not ambidex's to fix.
    stray = type("StrayError", (ValueError,), {"__module__": "ambidex.fake"})
    joined = type("JoinedError", (ax.AmbidexError, ValueError), {"__module__": "ambidex.fake"})
    foreign = type("ForeignError", (ValueError,), {"__module__": "pydantic.fake"})
    found = _ambidex_exceptions([stray, joined, foreign, ValueError, "text", 3])
    assert found == {stray, joined}
    assert _outside_hierarchy(found) == ["ambidex.fake.StrayError"]


def test_every_public_module_is_walked_when_discovered() -> None:
    for expected in (
        "ambidex",
        "ambidex.agents",
        "ambidex.client",
        "ambidex.evolve",
        "ambidex.exceptions",
        "ambidex.jobs",
        "ambidex.llm",
        "ambidex.runtime",
        "ambidex.sim",
        "ambidex.workflows",
    ):
        assert expected in PUBLIC_MODULES
    assert "ambidex.runtime._core" in ALL_MODULES
    assert "ambidex.runtime._core" not in PUBLIC_MODULES
