"""``RunResult.to_pandas`` and ``SweepResult.to_pandas``: results as pandas DataFrames.

pandas is optional (not in ``ambidex[sim]``): without it these raise one
``ImportError`` line saying what to install.

A sweep's frame is *long over runs and steps, wide over metrics*: one row per
run and step, with the columns

    point, <each swept parameter>, replicate, run, seed, step, <each metric>

``run`` is the run's index ``k`` in the sweep (grid order), whose generator is
``SeedSequence(seed, spawn_key=(k,))``; ``seed`` is the sweep's root seed.
Filtering ``step == steps`` gives the final values; ``groupby("point")``
the replicates of a point. A metric named like a swept parameter or one of
the fixed columns is refused with one ``ValueError`` line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ambidex.sim._run import RunResult
    from ambidex.sim._sweep import SweepResult

__all__ = ["run_frame", "sweep_frame"]


def _pandas() -> Any:
    try:
        import pandas as pd  # type: ignore[import-untyped]
    except ImportError:
        raise ImportError("to_pandas() needs pandas: pip install pandas") from None
    return pd


def run_frame(result: RunResult) -> Any:
    """One run's metrics: ``step`` and one column per metric, one row per step."""
    pd = _pandas()
    table = result.metrics
    return pd.DataFrame({name: table[name] for name in table.columns})


def sweep_frame(result: SweepResult) -> Any:
    """Every run of a sweep, one row per run and step (see the module's docstring)."""
    pd = _pandas()
    swept = list(result.grid)
    names = [c for c in result.runs[0].metrics.columns if c != "step"] if result.runs else []
    _check_distinct(swept, names)
    columns: dict[str, list[np.ndarray[Any, Any]]] = {
        key: [] for key in ["point", *swept, "replicate", "run", "seed", "step", *names]
    }
    for k, run in enumerate(result.runs):
        n = len(run.metrics)
        point = k // result.replicates
        columns["point"].append(np.full(n, point, dtype=np.int64))
        for param in swept:
            columns[param].append(np.full(n, result.points[point][param], dtype=object))
        columns["replicate"].append(np.full(n, k % result.replicates, dtype=np.int64))
        columns["run"].append(np.full(n, k, dtype=np.int64))
        columns["seed"].append(np.full(n, result.seed, dtype=np.int64))
        columns["step"].append(np.asarray(run.metrics["step"], dtype=np.int64))
        for name in names:
            columns[name].append(np.asarray(run.metrics[name]))
    frame = pd.DataFrame({k: np.concatenate(v) if v else [] for k, v in columns.items()})
    for param in swept:  # one dtype per swept parameter where its values share one
        frame[param] = frame[param].infer_objects()
    return frame


def _check_distinct(swept: list[str], metrics: list[str]) -> None:
    """One ``ValueError`` line when two columns of the frame would share a name.

    A metric called like a swept parameter (``n``, the population, swept over its
    start) or like a fixed column (``run``) would otherwise reach pandas as columns
    of different lengths ("All arrays must be of the same length").
    """
    owner = {key: "a column of the frame" for key in ("point", "replicate", "run", "seed", "step")}
    for kind, keys in (("a swept parameter", swept), ("a metric", metrics)):
        for key in keys:
            if key in owner:
                raise ValueError(
                    f"to_pandas(): {key!r} is both {owner[key]} and {kind}; rename the "
                    f"{'metric' if kind == 'a metric' else 'parameter'} (or use each run's "
                    "run.metrics.to_pandas())"
                )
            owner[key] = kind
