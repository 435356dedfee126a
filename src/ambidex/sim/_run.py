"""Run one simulation: ``ax.sim.run(Model, params, steps=, seed=)``."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ambidex._log import get_logger
from ambidex.sim._gini import gini_int64
from ambidex.sim._jit_clock import JitClock
from ambidex.sim._model import Model, ModelError
from ambidex.sim._table import MetricsTable

if TYPE_CHECKING:
    from ambidex.sim._recorder import Recorder

__all__ = ["RunResult", "load_model", "run"]

log = get_logger(__name__)

ModelSpec = type[Model] | str
Progress = Callable[[int, int], None]
_PROGRESS_S = 0.1
"""Least time between two progress calls of a run (the last step is always reported)."""


def load_model(spec: ModelSpec) -> type[Model]:
    """A Model class from a class, ``path/to/file.py[:Class]`` or ``package.module[:Class]``.

    Without ``:Class`` the file or module must define exactly one Model subclass.

    Raises:
        ModelError: the file or module cannot be imported, or holds no such model
            (the message lists the models it does hold).
    """
    if isinstance(spec, type):
        if not issubclass(spec, Model):
            raise ModelError(f"{spec.__qualname__} is not a subclass of ambidex.sim.Model")
        return _runnable(spec)
    if not isinstance(spec, str) or not spec:
        raise ModelError(f"a model is a Model subclass or 'file.py[:Class]', got {spec!r}")
    from ambidex._imports import MissingFileError, classes_in, load_module

    target, _, cls_name = spec.partition(":")
    try:
        module = load_module(target)
    except MissingFileError:
        raise ModelError(f"model file not found: {target}") from None
    except Exception as exc:
        raise ModelError(f"cannot load model {spec!r}: {exc}") from None
    found = classes_in(module, Model)
    shown = target
    if not found and not target.endswith(".py"):
        # A module name that another module already took (``random`` beside a
        # random.py of the user's) finds that one: say where it came from.
        shown = f"{target} (imported from {getattr(module, '__file__', None) or 'built-in'})"
    if cls_name:
        if cls_name not in found:
            raise ModelError(
                f"{shown} has no Model class {cls_name!r} (models: {', '.join(found) or 'none'})"
            )
        return _runnable(found[cls_name])
    if len(found) != 1:
        raise ModelError(
            f"{shown} defines {len(found)} Model classes ({', '.join(found) or 'none'}); "
            f"name one: {target}:ClassName"
        )
    return _runnable(next(iter(found.values())))


_REQUIRED = {"setup": "setup(self, params)", "step": "step(self)", "metrics": "metrics(self)"}


def _runnable(cls: type[Model]) -> type[Model]:
    """``cls`` if it defines what a run calls; a ``ModelError`` naming what it lacks.

    Found when the model is loaded, not after the first steps have run (or, in
    a sweep, in every worker at once).
    """
    missing = [sig for name, sig in _REQUIRED.items() if getattr(cls, name) is getattr(Model, name)]
    if missing:
        where = _defined_at(cls)
        raise ModelError(f"{where}{cls.model_name()} must define {', '.join(missing)}")
    return cls


def _defined_at(cls: type) -> str:
    """``file.py:line: `` where ``cls`` is defined, or nothing if that cannot be found."""
    import inspect

    try:
        _, line = inspect.getsourcelines(cls)
        return f"{inspect.getsourcefile(cls)}:{line}: "
    except (OSError, TypeError):
        return ""


@dataclass
class RunResult:
    """What a run produced: its per-step metrics and how it was started."""

    model: str
    params: dict[str, Any]
    seed: int
    """The root seed; with ``spawn_key`` it reproduces the run."""
    spawn_key: tuple[int, ...]
    """Empty for a plain run; ``(i,)`` for the i-th run of a sweep."""
    steps: int
    """Steps run (fewer than asked when the model set ``running = False``)."""
    metrics: MetricsTable
    elapsed_s: float
    run_id: int | None = None
    """The run's id in the recorder, if it was recorded."""
    final: Model | None = field(default=None, repr=False, compare=False)
    """The model in its final state (plain runs only; sweeps do not send it back)."""
    compile_s: float | None = None
    """Seconds of the run spent compiling numba kernels or loading them from numba's cache
    (``None``: numba not loaded)."""

    def to_pandas(self) -> Any:
        """The metrics as a ``pandas.DataFrame``: ``step`` and one column per metric.

        Raises:
            ImportError: pandas is not installed (one line saying so).
        """
        from ambidex.sim._frames import run_frame

        return run_frame(self)

    def seed_sequence(self) -> np.random.SeedSequence:
        """The seed sequence the run's generator was built from."""
        return np.random.SeedSequence(self.seed, spawn_key=self.spawn_key)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (params, seed, steps, final metrics, time)."""
        return {
            "model": self.model,
            "params": self.params,
            "seed": self.seed,
            "spawn_key": list(self.spawn_key),
            "steps": self.steps,
            "elapsed_s": self.elapsed_s,
            "run_id": self.run_id,
            "final": self.metrics.last(),
            "digest": self.metrics.digest(),
        }


def _check_metrics(
    name: str, step: int, values: Mapping[str, Any], names: list[str] | None
) -> list[Any]:
    if not isinstance(values, Mapping):
        raise ModelError(f"{name}.metrics() must return a dict, got {type(values).__name__}")
    keys = list(values)
    if names is not None and keys != names:
        raise ModelError(
            f"{name}.metrics() at step {step} returned {keys}, but at step 0 it returned {names}"
        )
    row = []
    for key in keys:
        if not isinstance(key, str) or not key:
            raise ModelError(
                f"{name}.metrics() at step {step} has the key {key!r}; "
                "metric names must be non-empty text"
            )
        v = values[key]
        if isinstance(v, (bool, np.bool_)):
            v = int(v)
        if not isinstance(v, (int, float, np.integer, np.floating)):
            raise ModelError(
                f"{name}.metrics()[{key!r}] at step {step} is {type(v).__name__} ({v!r}); "
                "metrics must be numbers"
            )
        if key == "step":
            raise ModelError(f"{name}.metrics() must not return 'step': it is added for you")
        row.append(v)
    return row


# Types a metric may have that ``_check_metrics`` passes through unchanged.
_PLAIN = frozenset(
    {int, float, np.float16, np.float32, np.float64} | {np.dtype(c).type for c in "bhilqBHILQ"}
)


class _MetricRows:
    """Every step's metrics, checked as they come, in the order of the first step's names.

    A row is checked once per combination of value types: a dict with the first
    step's keys in order and types already seen is taken as it is (a type
    lookup, not ``_check_metrics``'s isinstance chain). The table is built as
    ``MetricsTable.from_rows`` builds it, so it is bit-identical.
    """

    def __init__(self, model: str, first: Any) -> None:
        self._model = model
        row = tuple(_check_metrics(model, 0, first, None))  # a Mapping of numbers, or raises
        self.names: list[str] = list(first)
        self._rows: list[tuple[Any, ...]] = [row]
        self._plain: set[tuple[type, ...]] = set()
        self._remember(first, row)

    def add(self, step: int, values: Any) -> None:
        """Append ``values``, the metrics after ``step``.

        Raises:
            ModelError: not a dict of numbers, or other keys than the first step's.
        """
        if type(values) is dict and list(values) == self.names:
            row = tuple(values.values())
            if tuple(map(type, row)) in self._plain:
                self._rows.append(row)
                return
        row = tuple(_check_metrics(self._model, step, values, self.names))
        self._remember(values, row)
        self._rows.append(row)

    def _remember(self, values: Any, row: tuple[Any, ...]) -> None:
        kinds = tuple(map(type, row))
        if type(values) is dict and _PLAIN.issuperset(kinds):
            self._plain.add(kinds)

    def numbered(self) -> list[list[Any]]:
        """The rows so far, each with its step first (what a stopped run records)."""
        return [[step, *row] for step, row in enumerate(self._rows)]

    def table(self) -> MetricsTable:
        """The rows as columns, ``step`` first."""
        columns: dict[str, Any] = {"step": np.arange(len(self._rows))}
        if self.names:
            for key, values in zip(self.names, zip(*self._rows, strict=True), strict=True):
                columns[key] = np.asarray(values)
        return MetricsTable(columns)


def _seed_parts(seed: int | np.random.SeedSequence) -> tuple[int, tuple[int, ...]]:
    if isinstance(seed, np.random.SeedSequence):
        entropy = seed.entropy
        if not isinstance(entropy, int):
            raise ModelError("a SeedSequence seed must have integer entropy")
        return entropy, tuple(seed.spawn_key)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ModelError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed), ()


def run(
    model: ModelSpec,
    params: Mapping[str, Any] | None = None,
    *,
    steps: int = 100,
    seed: int | np.random.SeedSequence = 0,
    inputs: Mapping[str, np.ndarray[Any, Any]] | None = None,
    record: str | Path | Recorder | None = None,
    snapshot_every: int | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Set a model up, step it ``steps`` times and return its per-step metrics.

    Metrics are taken after setup (step 0) and after every step, so the table
    has ``steps + 1`` rows (fewer if the model stops itself). The same model,
    params and seed give a bit-identical table on any machine, backend or
    worker count.

    Args:
        model: a ``Model`` subclass, or ``"file.py[:Class]"`` / ``"module[:Class]"``.
        params: parameter overrides (unknown names and wrong types are errors).
        steps: how many steps to run.
        seed: a non-negative integer or a ``numpy.random.SeedSequence``.
        inputs: large read-only arrays the model reads as ``self.inputs``.
        record: a path (``.sqlite``/``.db`` file, or ``.parquet`` directory) or
            a ``Recorder``: metrics, and agent snapshots if ``snapshot_every``,
            are written there in batches.
        snapshot_every: record the agents every this many steps (and at step 0).
        progress: called as ``progress(done, steps)`` after the first step, then at
            most ten times a second, and after the last step.

    Raises:
        ModelError: bad parameters, a bad metric, or a model that cannot be loaded.
    """
    cls = load_model(model)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ModelError(f"steps must be a non-negative integer, got {steps!r}")
    if snapshot_every is not None and snapshot_every < 1:
        raise ModelError(f"snapshot_every must be >= 1, got {snapshot_every!r}")
    root, spawn_key = _seed_parts(seed)
    frozen_inputs = {}
    for key, arr in (inputs or {}).items():
        view = np.asarray(arr).view()
        view.flags.writeable = False
        frozen_inputs[key] = view
    recorder, owned = _open_recorder(record)
    try:
        result = _run(
            cls, params, steps, root, spawn_key, frozen_inputs, recorder, snapshot_every, progress
        )
    finally:
        if owned and recorder is not None:
            recorder.close()
    return result


def _open_recorder(record: str | Path | Recorder | None) -> tuple[Recorder | None, bool]:
    if record is None:
        return None, False
    from ambidex.sim._recorder import Recorder

    if isinstance(record, Recorder):
        return record, False
    return Recorder(record), True


def _run(
    cls: type[Model],
    params: Mapping[str, Any] | None,
    steps: int,
    root: int,
    spawn_key: tuple[int, ...],
    inputs: Mapping[str, np.ndarray[Any, Any]],
    recorder: Recorder | None,
    snapshot_every: int | None,
    progress: Progress | None,
) -> RunResult:
    name = cls.model_name()
    started = time.perf_counter()
    jit = JitClock.start()
    debug = log.isEnabledFor(logging.DEBUG)  # a sweep makes many runs: no formatting unless asked
    if debug:
        log.debug("run %s: %d steps, seed %d%s", name, steps, root, _key_text(spawn_key))
    sim = cls(params, seed=np.random.SeedSequence(root, spawn_key=spawn_key), inputs=inputs)
    run_id: int | None = None
    if recorder is not None:
        run_id = recorder.start_run(name, dict(sim.params), root, spawn_key, steps)
    rows: _MetricRows | None = None
    try:  # a run stopped midway (Ctrl-C, an error) keeps its steps so far in the record
        sim.setup(sim.params)
        rows = _MetricRows(name, sim.metrics())
        if recorder is not None:
            recorder.describe_model(sim)
        if snapshot_every and recorder is not None and run_id is not None:
            recorder.snapshot(run_id, 0, sim.snapshot())
        snap = None
        if snapshot_every and recorder is not None and run_id is not None:
            snap = functools.partial(_snapshot, recorder, run_id, sim, snapshot_every)
        done = _step_on(sim, steps, rows, snap, progress)
    except BaseException as exc:
        jit.stop()
        if recorder is not None and run_id is not None:
            names, so_far = ([], []) if rows is None else (rows.names, rows.numbered())
            _record_stop(recorder, run_id, exc, names, so_far, time.perf_counter() - started)
        raise
    table = rows.table()
    result = RunResult(
        model=name,
        params=dict(sim.params),
        seed=root,
        spawn_key=spawn_key,
        steps=done,
        metrics=table,
        elapsed_s=time.perf_counter() - started,
        run_id=run_id,
        final=sim,
        compile_s=jit.stop(),
    )
    if recorder is not None and run_id is not None:
        recorder.finish_run(run_id, result)
    if debug:
        log.debug(
            "run %s%s: %d steps in %.3f s",
            name,
            _key_text(spawn_key),
            done,
            result.elapsed_s,
        )
    return result


def _step_on(
    sim: Model,
    steps: int,
    rows: _MetricRows,
    snap: Callable[[int], None] | None,
    progress: Progress | None,
) -> int:
    """Step ``sim`` up to ``steps`` times (fewer if it stops itself); returns the steps done.

    Each step's metrics go to ``rows``, ``snap(step)`` runs after every step,
    and ``progress`` is told after the first step, then at most every
    ``_PROGRESS_S``, and after the last.
    """
    add = rows.add
    reported, report_at = 0, 0.0
    done = 0
    while done < steps and sim.running:
        sim.step()
        done += 1
        sim.step_index = done
        add(done, sim.metrics())
        if snap is not None:
            snap(done)
        if progress is not None:
            now = time.perf_counter()
            if now >= report_at:
                progress(done, steps)
                reported, report_at = done, now + _PROGRESS_S
    if progress is not None and reported != done:
        progress(done, steps)
    return done


def _snapshot(recorder: Recorder, run_id: int, sim: Model, every: int, step: int) -> None:
    """Record ``sim``'s agents after ``step`` if it is one of every ``every``."""
    if step % every == 0:
        recorder.snapshot(run_id, step, sim.snapshot())


def _record_stop(
    recorder: Recorder,
    run_id: int,
    exc: BaseException,
    names: list[str],
    rows: list[list[Any]],
    elapsed_s: float,
) -> None:
    """Record a run that ``exc`` stopped, with its steps so far; never hides ``exc``."""
    try:
        recorder.stop_run(run_id, exc, names=names, rows=rows, elapsed_s=elapsed_s)
    except Exception:  # the record's own trouble must not replace why the run stopped
        log.warning("run %d: recording how it stopped failed", run_id, exc_info=True)


def _key_text(spawn_key: tuple[int, ...]) -> str:
    """`` (spawn key 3)`` for a sweep's run, nothing for a plain one."""
    return f" (spawn key {', '.join(map(str, spawn_key))})" if spawn_key else ""


def gini(values: Any) -> float:
    """The Gini coefficient of non-negative values (0 = equal, near 1 = one holds all)."""
    # Integer wealth (int64 arrays): a compiled pass, the same bits (see _gini).
    exact = gini_int64(values)
    if exact is not None:
        return exact
    # The operations of np.sort and ndarray.sum without their Python wrappers (a
    # model may call this every step on a few hundred agents): the same bits.
    x = np.array(values, dtype=np.float64)
    x.sort()
    n = len(x)
    total = _sum(x, axis=None)
    if n == 0 or total == 0 or not math.isfinite(total):
        return 0.0
    cum = np.arange(n, 0, -1, dtype=np.float64)
    b = float(_sum(x * cum, axis=None) / (n * total))
    return 1.0 + 1.0 / n - 2.0 * b


_sum = np.add.reduce
