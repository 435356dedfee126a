"""Boltzmann wealth model: Mesa's ``BoltzmannWealth`` example on ``ambidex.sim``.

Mirrors ``mesa.examples.basic.boltzmann_wealth_model`` (Mesa 3.3) rule for rule:

* ``n`` agents, each with wealth 1, start on uniformly random cells (drawn with
  replacement) of a bounded ``width`` x ``height`` grid; a cell holds any number of agents.
* Every step the agents act one at a time, in a fresh random order (Mesa's
  ``shuffle_do``): an agent moves to a uniformly random cell of its Moore neighbourhood
  (8 cells inside the grid, 5 on an edge, 3 in a corner; no torus), then, if its
  wealth is positive and some other agent is in its new cell, gives 1 unit to one of
  them chosen uniformly. Later agents see earlier agents' moves and gifts.
* Metric ``gini``: the Gini coefficient of wealth (Mesa's formula), after setup and
  after every step.

The defaults are the size of Mesa's own "large" benchmark (10,000 agents on 100 x 100),
so ``ax.sim.run(Boltzmann, steps=10)`` runs that benchmark.

Deliberate differences: none in the rules. Random numbers come from ambidex's
generator, so a run matches Mesa's in distribution, not draw for draw.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numba
import numpy as np

import ambidex as ax
from ambidex.sim import grid_kernels as gk
from ambidex.sim.kernels import below, permutation


@numba.njit(cache=True)
def _step(
    cell: np.ndarray,
    wealth: np.ndarray,
    nbr: np.ndarray,
    nbr_count: np.ndarray,
    n_cells: int,
    rng: np.random.Generator,
) -> None:
    """One step: every agent moves then gives, sequentially in a random order."""
    n = len(cell)
    # Who is where: grid_kernels' member lists (the neighbour table's integers: int32
    # on grids below 2**31 cells), rebuilt each step, so a cell's agents start from
    # its highest agent row down; a move is O(1) and branch-free.
    head = np.empty(n_cells, dtype=nbr.dtype)
    count = np.empty(n_cells, dtype=nbr.dtype)
    nxt = np.empty(n + 1, dtype=nbr.dtype)  # + the scratch slot
    prv = np.empty(n + 1, dtype=nbr.dtype)
    gk.lists_build(cell, n, head, nxt, prv, count)

    order = permutation(n, rng)
    for i in range(n):
        a = order[i]
        old = cell[a]
        new = nbr[old, below(rng, nbr_count[old])]
        gk.lists_move(head, nxt, prv, count, a, old, new)
        cell[a] = new
        # Give 1 unit to a uniformly chosen other agent of the new cell.
        if wealth[a] > 0 and count[new] > 1:
            k = below(rng, count[new] - 1)
            b = nxt[a]  # ``a`` is the head: the others follow it
            for _ in range(k):
                b = nxt[b]
            wealth[b] += 1
            wealth[a] -= 1


class Boltzmann(ax.sim.Model):
    """Agents wander a bounded grid and hand a unit of wealth to a random cellmate."""

    defaults: ClassVar[dict[str, Any]] = {"n": 10_000, "width": 100, "height": 100}

    def setup(self, params: ax.sim.Params) -> None:
        """Place ``n`` agents with wealth 1 on uniformly random cells."""
        if params.n < 1:
            raise ax.sim.ModelError(f"n must be >= 1, got {params.n}")
        self.grid = ax.sim.Grid(params.width, params.height, torus=False, neighborhood="moore")
        if self.grid.size < 2:
            raise ax.sim.ModelError("the grid needs at least 2 cells (agents move every step)")
        if params.n >= 2**31 - 1:
            raise ax.sim.ModelError(f"n must be below 2**31 - 1, got {params.n}")
        self.nbr, self.nbr_count = self.grid.neighbors(1)
        self.agents = ax.sim.Agents(params.n, wealth=np.int64, cell=np.int64)
        self.agents.add(params.n, wealth=1, cell=self.grid.random_cells(self.rng, params.n))

    def step(self) -> None:
        """Every agent, in a random order: move to a random neighbour cell, then give."""
        _step(
            self.agents.cell,
            self.agents.wealth,
            self.nbr,
            self.nbr_count,
            self.grid.size,
            self.rng,
        )

    def metrics(self) -> dict[str, float]:
        """The Gini coefficient of wealth."""
        return {"gini": ax.sim.gini(self.agents.wealth)}
