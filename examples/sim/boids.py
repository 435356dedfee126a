"""Boids flocking: Mesa's ``BoidFlockers`` example on ``ambidex.sim``.

Mirrors ``mesa.examples.basic.boid_flockers`` (Mesa 3.3) rule for rule:

* ``population_size`` boids start at uniformly random positions of a ``width`` x
  ``height`` torus, each with a direction drawn uniformly from ``[-1, 1]`` per axis
  (not normalised: a boid keeps it until it first sees a neighbour).
* Every step the boids act one at a time, in a fresh random order (Mesa's
  ``shuffle_do``); each sees the positions and directions of the boids before it.
  A boid looks for the other boids within ``vision`` (distance through the edges,
  ``<=``). With none, it moves ``direction * speed``. Otherwise, with ``delta`` the
  shortest vectors from it to each neighbour and ``k`` their number::

      direction += (cohere * sum(delta)
                    - separate * sum(delta of neighbours closer than separation)
                    + match * sum(neighbours' directions)) / k
      direction /= |direction|
      position  += direction * speed        (wrapped onto the torus)

* Metrics after setup and after every step: ``heading``, Mesa's
  ``average_heading`` (the angle, in radians, of the mean direction vector);
  ``order``, the polarisation ``|mean of unit headings|`` (1: all fly the same
  way, ~0: no common heading); ``nn_distance``, the mean distance from a boid to
  its nearest other boid.

The defaults are Mesa's own "large" Boids benchmark (400 boids, 150 x 150, vision
15), so ``ax.sim.run(Boids, steps=10)`` runs that benchmark.

The step is one numba kernel over the space's cell lists (``ambidex.sim.cells``):
a boid's neighbours are found from the cells around it, and its move updates its
cell in O(1), so the next boid sees it where it now is.

Deliberate differences: none in the rules. Random numbers come from ambidex's
generator, so a run matches Mesa's in distribution, not draw for draw; a boid that
lands exactly on the far edge (``x == width``) is stored at ``0``, the same point of
the torus, where Mesa keeps ``width``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numba
import numpy as np

import ambidex as ax
from ambidex.sim import cells


@numba.njit(cache=True)
def _permutation(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random order of ``0..n-1`` (Fisher-Yates), drawn from ``rng``."""
    order = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        order[i], order[j] = order[j], order[i]
    return order


@numba.njit(cache=True)
def _step(
    state: cells.Cells,
    direction: np.ndarray,
    rng: np.random.Generator,
    speed: float,
    vision: float,
    separation: float,
    cohere: float,
    separate: float,
    match: float,
    out: np.ndarray,
) -> None:
    """One step: every boid, in a random order, steers by its neighbours and moves."""
    pos, geo = state.pos, state.geometry
    order = _permutation(len(pos), rng)
    for a in order:
        x, y = pos[a, 0], pos[a, 1]
        k = cells.neighbors_of(state, a, vision, out)
        if k > 0:
            coh_x = coh_y = sep_x = sep_y = mat_x = mat_y = 0.0
            for i in range(k):
                b = out[i]
                dx, dy = cells.displacement(geo, x, y, pos[b, 0], pos[b, 1])
                coh_x += dx
                coh_y += dy
                if math.sqrt(dx * dx + dy * dy) < separation:
                    sep_x += dx
                    sep_y += dy
                mat_x += direction[b, 0]
                mat_y += direction[b, 1]
            ux = direction[a, 0] + (coh_x * cohere - sep_x * separate + mat_x * match) / k
            uy = direction[a, 1] + (coh_y * cohere - sep_y * separate + mat_y * match) / k
            norm = math.sqrt(ux * ux + uy * uy)
            direction[a, 0] = ux / norm
            direction[a, 1] = uy / norm
        cells.move(state, a, x + direction[a, 0] * speed, y + direction[a, 1] * speed)


class Boids(ax.sim.Model):
    """Boids on a torus steer by cohesion, separation and alignment with those they see."""

    defaults: ClassVar[dict[str, Any]] = {
        "population_size": 400,
        "width": 150.0,
        "height": 150.0,
        "speed": 1.0,
        "vision": 15.0,
        "separation": 2.0,
        "cohere": 0.03,
        "separate": 0.015,
        "match": 0.05,
    }

    def setup(self, params: ax.sim.Params) -> None:
        """Random positions over the torus and random (unnormalised) directions."""
        n = params.population_size
        if n < 2:
            raise ax.sim.ModelError(f"population_size must be >= 2, got {n}")
        for name in ("speed", "vision", "separation"):
            if not params[name] > 0:
                raise ax.sim.ModelError(f"{name} must be positive, got {params[name]!r}")
        self.space = ax.sim.ContinuousSpace(params.width, params.height, torus=True)
        self.position = self.space.random_positions(self.rng, n)
        self.direction = self.rng.uniform(-1.0, 1.0, size=(n, 2))
        self.cells = self.space.cells(self.position, params.vision)
        self.out = np.empty(n, dtype=np.int64)

    def step(self) -> None:
        """Every boid, in a random order: steer by its neighbours, then move."""
        p = self.params
        _step(
            self.cells,
            self.direction,
            self.rng,
            float(p.speed),
            float(p.vision),
            float(p.separation),
            float(p.cohere),
            float(p.separate),
            float(p.match),
            self.out,
        )

    def snapshot(self) -> dict[str, np.ndarray]:
        """Every boid's position and direction (for ``snapshot_every``)."""
        return {
            "x": self.position[:, 0].copy(),
            "y": self.position[:, 1].copy(),
            "dx": self.direction[:, 0].copy(),
            "dy": self.direction[:, 1].copy(),
        }

    def metrics(self) -> dict[str, float]:
        """Mean heading (Mesa's), polarisation and mean nearest-neighbour distance."""
        return boid_metrics(self.direction, float(self.space.nearest(self.position)[1].mean()))


def boid_metrics(direction: np.ndarray, nn_distance: float) -> dict[str, float]:
    """``heading``, ``order`` and ``nn_distance`` from directions (one formula for Mesa's too)."""
    mean = direction.mean(axis=0)
    unit = direction / np.linalg.norm(direction, axis=1, keepdims=True)
    return {
        "heading": float(np.arctan2(mean[1], mean[0])),
        "order": float(np.linalg.norm(unit.mean(axis=0))),
        "nn_distance": float(nn_distance),
    }
