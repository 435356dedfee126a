"""The ``Model`` base class and its parameters."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from ambidex.exceptions import AmbidexError
from ambidex.sim._kernel_rng import kernel_generator

__all__ = ["Model", "ModelError", "Params", "resolve_params"]


class ModelError(AmbidexError, ValueError):
    """A model is defined or called wrongly: unknown parameter, bad metric, bad value."""


class Params(Mapping[str, Any]):
    """A model's parameters: read-only, by key or attribute (``params.n``)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __getattr__(self, key: str) -> Any:
        values = self.__dict__.get("_values", {})
        if key in values:
            return values[key]
        raise AttributeError(f"no parameter {key!r} (parameters: {', '.join(values)})")

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Params({self._values!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Params, (self._values,))


def _parse_text(model: str, key: str, default: Any, text: str) -> Any:
    """A command-line string as a value: booleans by name, else JSON, else the string."""
    text = text.strip()
    if isinstance(default, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
    try:
        return json.loads(text)
    except ValueError:
        if default is not None:
            raise ModelError(
                f"{model}: parameter {key!r} expects {type(default).__name__}, got {text!r}"
            ) from None
        return text


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _coerce(model: str, key: str, default: Any, value: Any) -> Any:
    """``value`` as the type of ``default`` (strings from a command line are parsed)."""
    if isinstance(value, str) and not isinstance(default, str):
        value = _parse_text(model, key, default, value)
    if default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, (bool, np.bool_))
        converted: Any = bool(value) if ok else None
    elif isinstance(default, int):
        ok = _is_number(value) and float(value).is_integer()
        converted = int(value) if ok else None
    elif isinstance(default, float):
        ok = _is_number(value)
        converted = float(value) if ok else None
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        converted = type(default)(value) if ok else None
    else:
        ok = isinstance(value, type(default))
        converted = value
    if not ok:
        raise ModelError(
            f"{model}: parameter {key!r} expects {type(default).__name__}, got {value!r} "
            f"({type(value).__name__})"
        )
    return converted


def resolve_params(model: type[Model], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The model's defaults overlaid with ``given``, each value checked against its default.

    Raises:
        ModelError: an unknown parameter (the message lists the known ones) or a
            value of the wrong type.
    """
    defaults = dict(model.defaults)
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(f"{k}={v!r}" for k, v in defaults.items()) or "none"
        raise ModelError(
            f"{model.model_name()}: unknown parameter(s) {', '.join(unknown)}; "
            f"the model takes: {known}"
        )
    for key, value in given.items():
        defaults[key] = _coerce(model.model_name(), key, model.defaults[key], value)
    return defaults


class Model:
    """A simulation model: subclass it and write ``setup``, ``step`` and ``metrics``.

    ``defaults`` names every parameter with its default value (its type is the
    parameter's type)::

        class Boltzmann(ax.sim.Model):
            defaults = {"n": 100, "width": 10, "height": 10}

            def setup(self, params):
                self.agents = ax.sim.Agents(params.n, wealth=np.int64, cell=np.int64)
                ...

            def step(self):
                ...

            def metrics(self):
                return {"gini": gini(self.agents.wealth)}

    The model draws every random number from ``self.rng`` (a
    ``numpy.random.Generator`` seeded from the run's seed), so the same seed
    gives the same run, bit for bit. A numba kernel takes it as an argument for
    well under a microsecond a call and draws from the same stream; the helpers
    of ``ambidex.sim.kernels`` (``below``, ``shuffle``, ``permutation``) take it too.
    Large read-only inputs given to ``run``/``sweep`` are in ``self.inputs``.
    Set ``self.running = False`` to end the run early.
    """

    defaults: ClassVar[dict[str, Any]] = {}
    #: Name used in records and on the command line; default: the class name.
    name: ClassVar[str | None] = None

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        seed: int | np.random.SeedSequence = 0,
        inputs: Mapping[str, np.ndarray[Any, Any]] | None = None,
    ) -> None:
        self.params = Params(resolve_params(type(self), params))
        self.seed_sequence = (
            seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        )
        self.rng: np.random.Generator = kernel_generator(self.seed_sequence)
        self.inputs: Mapping[str, np.ndarray[Any, Any]] = dict(inputs or {})
        self.step_index = 0
        self.running = True

    @classmethod
    def model_name(cls) -> str:
        """``name`` or the class name."""
        return cls.name or cls.__name__

    def setup(self, params: Params) -> None:
        """Create the agents and spaces. Called once, before the first step."""
        raise ModelError(f"{self.model_name()} must define setup(self, params)")

    def step(self) -> None:
        """Advance the model by one step."""
        raise ModelError(f"{self.model_name()} must define step(self)")

    def metrics(self) -> Mapping[str, float | int]:
        """Numbers that describe the current state; recorded after setup and every step."""
        raise ModelError(f"{self.model_name()} must define metrics(self)")

    def snapshot(self) -> Mapping[str, np.ndarray[Any, Any]]:
        """Per-agent columns to record every ``snapshot_every`` steps.

        The default is a copy of ``self.agents`` (an ``Agents`` table) if the
        model has one.
        """
        from ambidex.sim._agents import Agents

        agents = getattr(self, "agents", None)
        if isinstance(agents, Agents):
            return agents.snapshot()
        raise ModelError(
            f"{self.model_name()} has no self.agents table: define snapshot(self) to record agents"
        )
