"""Cpu backends: one interface (``_abc``), one module per engine, loaded by name.

``open_backend("ray", ...)`` imports ``_ray`` only then, and ``_ray`` imports
Ray only when it first starts or joins one: choosing the local backend never
costs Ray's import.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ambidex.runtime._backends._abc import BackendFeatures, CpuBackend, CpuStatistics, Shared

__all__ = [
    "BACKENDS",
    "BackendFeatures",
    "CpuBackend",
    "CpuStatistics",
    "Shared",
    "backend_features",
    "check_backend",
    "open_backend",
]

BACKENDS: dict[str, str] = {
    "local": "ambidex.runtime._backends._local",
    "ray": "ambidex.runtime._backends._ray",
}
"""Backend name to the module that implements it (its ``Backend`` class)."""


def _engine_module(name: str) -> ModuleType:
    return importlib.import_module(BACKENDS[name])


def backend_features(name: str) -> BackendFeatures:
    """What the named backend can do (imports its module, not its engine)."""
    features: BackendFeatures = _engine_module(name).Backend.features
    return features


def check_backend(name: str, address: str | None) -> None:
    """Refuse an unknown name, or an address for a backend that joins no cluster.

    Raises:
        ValueError: either of those.
    """
    if name not in BACKENDS:
        expected = " or ".join(repr(n) for n in BACKENDS)
        raise ValueError(f"unknown backend {name!r}: expected {expected}")
    if address is not None and not backend_features(name).distributed:
        joins = " or ".join(f"backend={n!r}" for n in BACKENDS if backend_features(n).distributed)
        raise ValueError(f"address= is for {joins}")


def open_backend(name: str, max_workers: int, address: str | None) -> CpuBackend:
    """The named backend, created (nothing started: that waits for its first use)."""
    backend: CpuBackend = _engine_module(name).Backend(max_workers, address)
    return backend
