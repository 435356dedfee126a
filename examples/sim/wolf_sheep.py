"""Wolf-sheep predation: Mesa's ``WolfSheep`` example on ``ambidex.sim``.

Mirrors ``mesa.examples.advanced.wolf_sheep`` (Mesa 3.3, itself after NetLogo's Wolf
Sheep Predation) rule for rule:

* A ``width`` x ``height`` torus with von Neumann neighbourhoods (4 cells); a cell
  holds any number of animals and one grass patch.
* ``initial_sheep`` sheep and ``initial_wolves`` wolves start on uniformly random
  cells (with replacement), with float energy drawn uniformly from
  ``[0, 2 * gain_from_food)``. Each grass patch starts fully grown with probability
  1/2, else with a regrowth countdown drawn from ``0..grass_regrowth_time - 1`` (a
  countdown of 0 means grown, as in Mesa).
* Every step, all sheep act one at a time in a fresh random order, then all wolves
  likewise (Mesa's ``shuffle_do`` per type); animals born during a step first act in
  the next one. An animal moves, loses 1 energy, feeds, then dies if its energy is
  below 0, or else reproduces with its probability: it halves its energy and a
  newborn with the same (halved) energy appears in its cell.
* A sheep moves to a random neighbouring cell without wolves, preferring cells with
  fully grown grass; if every neighbouring cell has a wolf it stays. It eats the
  grass of its cell if fully grown (+``sheep_gain_from_food``).
* A wolf moves to a random neighbouring cell with sheep if there is one, else to
  any neighbouring cell. It eats one random sheep of its cell, if any
  (+``wolf_gain_from_food``); the sheep is gone at once.
* Grass regrowth follows Mesa's scheduled events: eaten in step ``t``, a patch is
  grown again from step ``t + grass_regrowth_time + 1`` on (Mesa's event fires at
  tick ``t + grass_regrowth_time``, after that tick's step). Here it is a countdown
  per patch: at the start of each step a patch whose countdown is 0 grows back,
  the others count down by one.
* Metrics: ``wolves``, ``sheep`` and ``grass`` (fully grown patches), after setup and
  after every step, as Mesa's datacollector (which collects before the tick's
  regrowth events).

The defaults are Mesa's "large" benchmark configuration (100 x 100, 1000 sheep, 500
wolves, sheep_reproduce 0.4, wolf_reproduce 0.2, grass_regrowth_time 10; Mesa's
example defaults otherwise), so ``ax.sim.run(WolfSheep, steps=20)`` runs that
benchmark.

Deliberate differences: there is no ``grass`` switch, grass is always on (Mesa 3.3's
``grass=False`` path fails: ``Sheep.feed`` looks for a grass patch that does not
exist). Random numbers come from ambidex's generator, so a run matches Mesa's in
distribution, not draw for draw.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numba
import numpy as np

import ambidex as ax
from ambidex.sim.kernels import below, shuffle

SHEEP = 0
WOLF = 1


@numba.njit(cache=True)
def _regrow(grown: np.ndarray, countdown: np.ndarray) -> None:
    """Fire the regrowth events due before this step; count the others down one tick."""
    for c in range(len(grown)):
        if not grown[c]:
            if countdown[c] == 0:
                grown[c] = True
            else:
                countdown[c] -= 1


@numba.njit(cache=True)
def _end_of_turn(
    a: int,
    m: int,
    next_id: int,
    ids: np.ndarray,
    kind: np.ndarray,
    energy: np.ndarray,
    cell: np.ndarray,
    dead: np.ndarray,
    p_reproduce: float,
    rng: np.random.Generator,
) -> tuple[int, int]:
    """Death if energy < 0, else reproduction with ``p_reproduce``; returns (rows, next id)."""
    if energy[a] < 0:
        dead[a] = True
    elif rng.random() < p_reproduce:
        energy[a] /= 2
        ids[m] = next_id
        kind[m] = kind[a]
        energy[m] = energy[a]
        cell[m] = cell[a]
        dead[m] = False
        m += 1
        next_id += 1
    return m, next_id


@numba.njit(cache=True)
def _sheep_destination(
    c: int,
    nbr: np.ndarray,
    nbr_count: np.ndarray,
    wolves_in: np.ndarray,
    grown: np.ndarray,
    rng: np.random.Generator,
) -> int:
    """A random neighbouring cell without wolves, one with grown grass if any; else stay."""
    n_safe = 0
    n_grassy = 0
    for j in range(nbr_count[c]):
        d = nbr[c, j]
        if wolves_in[d] == 0:
            n_safe += 1
            if grown[d]:
                n_grassy += 1
    if n_safe == 0:
        return c
    need_grass = n_grassy > 0
    k = below(rng, n_grassy if need_grass else n_safe)
    for j in range(nbr_count[c]):
        d = nbr[c, j]
        if wolves_in[d] == 0 and (grown[d] or not need_grass):
            if k == 0:
                return int(d)
            k -= 1
    return c  # not reached


@numba.njit(cache=True)
def _wolf_destination(
    c: int, nbr: np.ndarray, nbr_count: np.ndarray, sheep_in: np.ndarray, rng: np.random.Generator
) -> int:
    """A random neighbouring cell with sheep if there is one, else any neighbouring cell."""
    n_prey = 0
    for j in range(nbr_count[c]):
        if sheep_in[nbr[c, j]] > 0:
            n_prey += 1
    if n_prey == 0:
        return int(nbr[c, below(rng, nbr_count[c])])
    k = below(rng, n_prey)
    for j in range(nbr_count[c]):
        d = nbr[c, j]
        if sheep_in[d] > 0:
            if k == 0:
                return int(d)
            k -= 1
    return c  # not reached


@numba.njit(cache=True)
def _sheep_by_cell(
    m: int, kind: np.ndarray, cell: np.ndarray, dead: np.ndarray, n_cells: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Live sheep of rows ``0..m-1`` by cell, a CSR index: ``(start, members, count)``.

    The sheep of cell ``c`` are ``members[start[c]:start[c] + count[c]]``.
    """
    count = np.zeros(n_cells, dtype=np.int64)
    for a in range(m):
        if kind[a] == SHEEP and not dead[a]:
            count[cell[a]] += 1
    start = np.zeros(n_cells + 1, dtype=np.int64)
    for c in range(n_cells):
        start[c + 1] = start[c] + count[c]
    fill = start[:-1].copy()
    members = np.empty(start[n_cells], dtype=np.int64)
    for a in range(m):
        if kind[a] == SHEEP and not dead[a]:
            members[fill[cell[a]]] = a
            fill[cell[a]] += 1
    return start, members, count


@numba.njit(cache=True)
def _step(
    n: int,
    next_id: int,
    ids: np.ndarray,
    kind: np.ndarray,
    energy: np.ndarray,
    cell: np.ndarray,
    grown: np.ndarray,
    countdown: np.ndarray,
    nbr: np.ndarray,
    nbr_count: np.ndarray,
    rates: np.ndarray,
    rng: np.random.Generator,
) -> tuple[int, int]:
    """One step on the full-capacity columns; ``n`` rows live at the start.

    ``rates``: sheep_reproduce, wolf_reproduce, sheep_gain_from_food,
    wolf_gain_from_food, grass_regrowth_time (one array: a numba call costs per
    argument, and this one is made every step).

    Newborns are appended after the live rows (the columns have room for ``n`` more);
    animals that die are flagged, then the survivors are moved up in their order
    (``Agents.remove``'s, without its Python and numpy calls). Returns the live rows
    and the next id.
    """
    sheep_reproduce, wolf_reproduce, sheep_gain, wolf_gain = rates[0], rates[1], rates[2], rates[3]
    regrowth_time = int(rates[4])
    dead = np.zeros(len(ids), dtype=np.bool_)
    n_cells = len(grown)
    _regrow(grown, countdown)
    m = n

    # Sheep, in a random order; the wolves stand still meanwhile.
    wolves_in = np.zeros(n_cells, dtype=np.int64)
    for a in range(n):
        if kind[a] == WOLF:
            wolves_in[cell[a]] += 1
    for a in shuffle(np.flatnonzero(kind[:n] == SHEEP), rng):
        c = _sheep_destination(cell[a], nbr, nbr_count, wolves_in, grown, rng)
        cell[a] = c
        energy[a] -= 1
        if grown[c]:
            energy[a] += sheep_gain
            grown[c] = False
            countdown[c] = regrowth_time
        m, next_id = _end_of_turn(
            a, m, next_id, ids, kind, energy, cell, dead, sheep_reproduce, rng
        )

    # The wolves alive at the start of the step, in a random order; they can eat
    # any live sheep, newborns included.
    start, members, sheep_in = _sheep_by_cell(m, kind, cell, dead, n_cells)
    for a in shuffle(np.flatnonzero(kind[:n] == WOLF), rng):
        c = _wolf_destination(cell[a], nbr, nbr_count, sheep_in, rng)
        cell[a] = c
        energy[a] -= 1
        if sheep_in[c] > 0:
            # Eat a random sheep of the cell and swap it out of the cell's live segment.
            k = start[c] + below(rng, sheep_in[c])
            last = start[c] + sheep_in[c] - 1
            dead[members[k]] = True
            members[k] = members[last]
            sheep_in[c] -= 1
            energy[a] += wolf_gain
        m, next_id = _end_of_turn(a, m, next_id, ids, kind, energy, cell, dead, wolf_reproduce, rng)

    live = 0
    for r in range(m):
        if not dead[r]:
            ids[live], kind[live], energy[live], cell[live] = ids[r], kind[r], energy[r], cell[r]
            live += 1
    return live, next_id


@numba.njit(cache=True)
def _counts(kind: np.ndarray, grown: np.ndarray) -> tuple[int, int]:
    """Wolves among the animals, and grown grass patches."""
    wolves = 0
    for k in kind:
        wolves += k == WOLF
    grass = 0
    for g in grown:
        grass += g
    return wolves, grass


class WolfSheep(ax.sim.Model):
    """Sheep graze, wolves hunt sheep, grass regrows: a predator-prey cycle on a torus."""

    defaults: ClassVar[dict[str, Any]] = {
        "width": 100,
        "height": 100,
        "initial_sheep": 1000,
        "initial_wolves": 500,
        "sheep_reproduce": 0.4,
        "wolf_reproduce": 0.2,
        "wolf_gain_from_food": 20.0,
        "sheep_gain_from_food": 4.0,
        "grass_regrowth_time": 10,
    }
    charts: ClassVar[dict[str, list[str]]] = {"population": ["sheep", "wolves"]}
    """Report: sheep and wolves on one chart (grass, in patches, on its own)."""

    def setup(self, params: ax.sim.Params) -> None:
        """Scatter sheep and wolves with random energy; grow about half the grass."""
        if params.grass_regrowth_time < 1:
            raise ax.sim.ModelError(
                f"grass_regrowth_time must be >= 1, got {params.grass_regrowth_time}"
            )
        self.grid = ax.sim.Grid(params.width, params.height, torus=True, neighborhood="von_neumann")
        self.nbr, self.nbr_count = self.grid.neighbors(1)
        n_sheep, n_wolves = params.initial_sheep, params.initial_wolves
        self.agents = ax.sim.Agents(
            2 * (n_sheep + n_wolves), kind=np.int8, energy=np.float64, cell=np.int64
        )
        self.agents.add(
            n_sheep,
            kind=SHEEP,
            energy=self.rng.random(n_sheep) * 2 * params.sheep_gain_from_food,
            cell=self.grid.random_cells(self.rng, n_sheep),
        )
        self.agents.add(
            n_wolves,
            kind=WOLF,
            energy=self.rng.random(n_wolves) * 2 * params.wolf_gain_from_food,
            cell=self.grid.random_cells(self.rng, n_wolves),
        )
        size = self.grid.size
        fully_grown = self.rng.random(size) < 0.5
        drawn = self.rng.integers(0, params.grass_regrowth_time, size=size, dtype=np.int64)
        self.countdown = np.where(fully_grown, 0, drawn)
        self.grown = self.countdown == 0
        self.rates = np.array(
            [
                params.sheep_reproduce,
                params.wolf_reproduce,
                params.sheep_gain_from_food,
                params.wolf_gain_from_food,
                params.grass_regrowth_time,
            ],
            dtype=np.float64,
        )

    def step(self) -> None:
        """Sheep act, then wolves, each kind sequentially in a random order."""
        agents = self.agents
        n = len(agents)
        agents.reserve(n)  # each animal has at most one newborn a step
        rows, next_id = _step(
            n,
            agents.next_id,
            agents.column("id"),
            agents.column("kind"),
            agents.column("energy"),
            agents.column("cell"),
            self.grown,
            self.countdown,
            self.nbr,
            self.nbr_count,
            self.rates,
            self.rng,
        )
        agents.set_count(rows, next_id)

    def metrics(self) -> dict[str, int]:
        """Wolves, sheep and fully grown grass patches."""
        wolves, grass = _counts(self.agents.kind, self.grown)
        return {"wolves": wolves, "sheep": len(self.agents) - wolves, "grass": grass}
