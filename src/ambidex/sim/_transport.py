"""How a sweep's runs reach the workers, and what they send back while they run.

Large read-only ``inputs`` are stored once with ``Runtime.aput`` (shared memory
on one machine, the object store of a cluster) and every run carries only their
handles. Where the cpu backend has writable shares, each run also gets a
shared step counter, so the progress bar moves step by step; elsewhere a run
counts as it finishes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ambidex.runtime import Shared, cpu, current_runtime
from ambidex.sim._model import Model
from ambidex.sim._run import RunResult, run

__all__ = ["RunSpec", "Transport", "open_transport", "run_one"]


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep, as its worker receives it."""

    model: type[Model]
    params: dict[str, Any]
    steps: int
    seed: int
    index: int
    spawn_key: tuple[int, ...]
    inputs: dict[str, Shared[Any]]
    """Input name to the handle of its array (``Runtime.put``)."""
    progress: Shared[Any] | None
    """The sweep's per-run step counters, where workers can write into them."""


@cpu
def run_one(spec: RunSpec) -> RunResult:
    """One run of a sweep, in a worker process."""
    arrays = {key: handle.get() for key, handle in spec.inputs.items()}
    counter = None if spec.progress is None else spec.progress.get()

    def progress(done: int, total: int) -> None:
        if counter is not None:
            counter[spec.index] = done

    result = run(
        spec.model,
        spec.params,
        steps=spec.steps,
        seed=np.random.SeedSequence(spec.seed, spawn_key=spec.spawn_key),
        inputs=arrays,
        progress=progress,
    )
    result.final = None
    return result


@dataclass(frozen=True)
class Transport:
    """What a sweep's runs carry, and the step counters this process reads."""

    inputs: dict[str, Shared[Any]]
    progress: Shared[Any] | None
    steps_done: np.ndarray[Any, Any]
    """Steps done per run: written by the workers where ``progress`` is shared,
    else only here, as runs finish."""


@contextlib.asynccontextmanager
async def open_transport(inputs: Mapping[str, Any], n_runs: int) -> AsyncIterator[Transport]:
    """Store the inputs (and the counters, where the backend can) until the block ends.

    Raises:
        TypeError: an input is not a numeric array.
    """
    rt = current_runtime()
    handles: list[Shared[Any]] = []
    try:
        shared: dict[str, Shared[Any]] = {}
        for key, value in inputs.items():
            shared[key] = await rt.aput(_input_array(key, value))
            handles.append(shared[key])
        counters: np.ndarray[Any, Any] = np.zeros(max(n_runs, 1), np.int64)
        progress = None
        if rt.cpu_features.writable_shares:
            progress = await rt.aput(counters, writable=True)
            handles.append(progress)
            counters = progress.get()
        yield Transport(shared, progress, counters)
    finally:
        for handle in handles:
            handle.release()


def _input_array(name: str, value: Any) -> np.ndarray[Any, Any]:
    arr = np.ascontiguousarray(value)
    if arr.dtype.hasobject:
        raise TypeError(f"input {name!r} has dtype object; shared inputs must be numeric arrays")
    return arr
