"""Simulations: deterministic, vectorized multi-agent models, sweeps and reports.

    import ambidex as ax
    import numpy as np

    class Boltzmann(ax.sim.Model):
        defaults = {"n": 100, "width": 10, "height": 10}

        def setup(self, params):
            self.grid = ax.sim.Grid(params.width, params.height)
            self.agents = ax.sim.Agents(params.n, wealth=np.int64, cell=np.int64)
            self.agents.add(params.n, wealth=1, cell=self.grid.random_cells(self.rng, params.n))

        def step(self): ...            # array operations, or a numba kernel given self.rng

        def metrics(self):
            return {"gini": ax.sim.gini(self.agents.wealth)}

    result = ax.sim.run(Boltzmann, {"n": 1000}, steps=100, seed=1)
    result.metrics["gini"]             # one value per step, step 0 included
    sweep = ax.sim.sweep(Boltzmann, grid={"n": [100, 1000]}, replicates=8, seed=1)

Needs numpy (``pip install 'ambidex[sim]'`` also brings numba for compiled
kernels, matplotlib for reports and pyarrow for Parquet records).
"""

from typing import TYPE_CHECKING, Any

try:
    import numpy  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without numpy
    raise ImportError("ambidex.sim needs numpy: pip install 'ambidex[sim]'") from exc

from ambidex.sim._agents import Agents
from ambidex.sim._continuous import ContinuousSpace
from ambidex.sim._grid import CellLists, Grid
from ambidex.sim._model import Model, ModelError, Params, resolve_params
from ambidex.sim._network import NetworkSpace
from ambidex.sim._recorder import Record, Recorder, RecordError, RunStatus, open_record
from ambidex.sim._report import report
from ambidex.sim._run import RunResult, gini, load_model, run
from ambidex.sim._shared import SharedArrays
from ambidex.sim._sweep import SweepError, SweepProgress, SweepResult, asweep, grid_points, sweep
from ambidex.sim._table import MetricsTable

__all__ = [
    "Agents",
    "CellLists",
    "ContinuousSpace",
    "Grid",
    "MetricsTable",
    "Model",
    "ModelError",
    "NetworkSpace",
    "Params",
    "Record",
    "RecordError",
    "Recorder",
    "RunResult",
    "RunStatus",
    "SharedArrays",
    "SweepError",
    "SweepProgress",
    "SweepResult",
    "asweep",
    "gini",
    "grid_points",
    "load_model",
    "node_neighbors",
    "open_record",
    "random_neighbor",
    "report",
    "resolve_params",
    "run",
    "sweep",
]

if TYPE_CHECKING:
    from ambidex.sim._network_kernels import node_neighbors, random_neighbor


def __getattr__(name: str) -> Any:
    # The numba helpers of NetworkSpace load numba: only when a model asks for them.
    if name in ("node_neighbors", "random_neighbor"):
        from ambidex.sim import _network_kernels

        return getattr(_network_kernels, name)
    raise AttributeError(f"module 'ambidex.sim' has no attribute {name!r}")
