"""Schelling segregation model: Mesa's ``Schelling`` example on ``ambidex.sim``.

Mirrors ``mesa.examples.basic.schelling`` (Mesa 3.3) rule for rule:

* A bounded ``width`` x ``height`` grid (no torus) holding at most one agent a cell.
  Each cell is occupied with probability ``density``; an agent is of the minority type
  (1) with probability ``minority_pc``, else of type 0.
* An agent's neighbours are the agents in its Moore neighbourhood of ``radius``
  (the (2r+1)^2 - 1 surrounding cells, clipped at the edges). It is happy when the
  fraction of its neighbours of its own type is at least ``homophily``; an agent with
  no neighbours has fraction 0.
* After setup every agent's happiness is assigned. Each step, the agents act one at
  a time in a fresh random order (Mesa's ``shuffle_do``): an agent that was unhappy
  at the end of the previous step moves to a uniformly random empty cell (later
  agents see earlier moves; an agent does not re-check its happiness before
  moving). Then every agent's happiness is assigned again and counted.
* Metrics, as Mesa's datacollector: ``happy`` (count), ``pct_happy``, ``population``
  and ``minority_pct``. The run stops itself once every agent is happy, as Mesa's
  ``running`` flag does.

The defaults are the size of Mesa's own "large" benchmark (100 x 100, density 0.8,
radius 2, homophily 1), so ``ax.sim.run(Schelling, steps=10)`` runs that benchmark.
Mesa's example itself defaults to 20 x 20, radius 1, homophily 0.4.

Deliberate differences: on a full grid (no empty cell) an unhappy agent stays put,
where Mesa's empty-cell search would not return. Random numbers come from ambidex's
generator, so a run matches Mesa's in distribution, not draw for draw.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numba
import numpy as np

import ambidex as ax
from ambidex.sim.kernels import below, permutation


@numba.njit(cache=True)
def _assign_state(
    cell: np.ndarray,
    kind: np.ndarray,
    happy: np.ndarray,
    occupant: np.ndarray,
    nbr: np.ndarray,
    nbr_count: np.ndarray,
    homophily: float,
) -> int:
    """Set every agent's ``happy`` from its neighbours; return how many are happy."""
    n_happy = 0
    for a in range(len(cell)):
        c = cell[a]
        total = 0
        similar = 0
        for j in range(nbr_count[c]):
            b = occupant[nbr[c, j]]
            if b >= 0:
                total += 1
                if kind[b] == kind[a]:
                    similar += 1
        fraction = similar / total if total > 0 else 0.0
        happy[a] = not fraction < homophily
        if happy[a]:
            n_happy += 1
    return n_happy


@numba.njit(cache=True)
def _move_unhappy(
    cell: np.ndarray, happy: np.ndarray, occupant: np.ndarray, rng: np.random.Generator
) -> None:
    """Every agent in a random order: if unhappy, move to a uniformly random empty cell."""
    n = len(cell)
    # The empty cells, kept as an unordered list: a move swaps the new cell out for the old.
    empty = np.flatnonzero(occupant < 0)
    n_empty = len(empty)
    order = permutation(n, rng)
    if n_empty == 0:
        return
    for i in range(n):
        a = order[i]
        if happy[a]:
            continue
        k = below(rng, n_empty)
        old, new = cell[a], empty[k]
        empty[k] = old
        occupant[old] = -1
        occupant[new] = a
        cell[a] = new


class Schelling(ax.sim.Model):
    """Two types of agents; unhappy ones move to random empty cells until all are content."""

    defaults: ClassVar[dict[str, Any]] = {
        "width": 100,
        "height": 100,
        "density": 0.8,
        "minority_pc": 0.5,
        "homophily": 1.0,
        "radius": 2,
    }

    def setup(self, params: ax.sim.Params) -> None:
        """Fill each cell with probability ``density``, then assign every agent's happiness."""
        if params.radius < 1:
            raise ax.sim.ModelError(f"radius must be >= 1, got {params.radius}")
        self.grid = ax.sim.Grid(params.width, params.height, torus=False, neighborhood="moore")
        self.nbr, self.nbr_count = self.grid.neighbors(params.radius)
        cells = np.flatnonzero(self.rng.random(self.grid.size) < params.density)
        n = len(cells)
        kind = (self.rng.random(n) < params.minority_pc).astype(np.int8)
        self.agents = ax.sim.Agents(n, kind=np.int8, cell=np.int64, happy=np.bool_)
        self.agents.add(n, kind=kind, cell=cells)
        self.occupant = self.grid.occupants(cells)  # one agent per cell
        self.happy = self._assign_state()

    def _assign_state(self) -> int:
        return int(
            _assign_state(
                self.agents.cell,
                self.agents.kind,
                self.agents.happy,
                self.occupant,
                self.nbr,
                self.nbr_count,
                self.params.homophily,
            )
        )

    def step(self) -> None:
        """Unhappy agents move (sequentially, in a random order), then happiness is reassigned."""
        _move_unhappy(self.agents.cell, self.agents.happy, self.occupant, self.rng)
        self.happy = self._assign_state()
        self.running = self.happy < len(self.agents)

    def metrics(self) -> dict[str, float | int]:
        """Happy agents (count and percentage), population and the minority's percentage."""
        n = len(self.agents)
        minority = int(np.count_nonzero(self.agents.kind == 1))
        return {
            "happy": self.happy,
            "pct_happy": self.happy / n * 100 if n else 0.0,
            "population": n,
            "minority_pct": minority / n * 100 if n else 0.0,
        }
