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
from ambidex.sim.kernels import permutation


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
    order = permutation(len(pos), rng)
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


@numba.njit(cache=True, inline="always")
def _squared(x0: float, y0: float, x1: float, y1: float, width: float, height: float) -> float:
    """The squared torus distance: ``cells.distance`` squared, before its sqrt."""
    dx, dy = x1 - x0, y1 - y0
    if abs(dx) > 0.5 * width:
        dx -= width * float(np.round(dx / width))
    if abs(dy) > 0.5 * height:
        dy -= height * float(np.round(dy / height))
    return dx * dx + dy * dy


@numba.njit(cache=True)
def _metrics(
    pos: np.ndarray, direction: np.ndarray, geo: tuple[float, float, bool]
) -> tuple[float, float, float]:
    """``boid_metrics`` and the mean nearest-neighbour distance in one compiled pass.

    The nearest other boid of each is searched ring by ring over a grid of about one
    boid a cell, built here (a counting sort): after ring ``r`` nobody unseen can be
    nearer than ``r`` cell widths, so the search stops once the best is that near.
    When the rings would wrap onto themselves (a very sparse space) it compares with
    every boid instead. On the torus only (Boids' space).
    """
    n = len(pos)
    width, height, _ = geo
    sx = sy = ux = uy = 0.0
    for a in range(n):
        dx, dy = direction[a, 0], direction[a, 1]
        sx += dx
        sy += dy
        norm = math.sqrt(dx * dx + dy * dy)
        ux += dx / norm
        uy += dy / norm
    heading = math.atan2(sy / n, sx / n)
    order = math.sqrt((ux / n) ** 2 + (uy / n) ** 2)

    side = math.sqrt(width * height / n)  # about one boid a cell
    mx, my = max(1, int(width / side)), max(1, int(height / side))
    cw, ch = width / mx, height / my
    start = np.zeros(mx * my + 1, dtype=np.int64)
    cell = np.empty(n, dtype=np.int64)
    for a in range(n):
        c = min(int(pos[a, 0] / cw), mx - 1) * my + min(int(pos[a, 1] / ch), my - 1)
        cell[a] = c
        start[c + 1] += 1
    for c in range(mx * my):
        start[c + 1] += start[c]
    # The positions in cell order: a cell's boids are neighbours in memory, which
    # matters once the space is far bigger than the caches (10^7 boids).
    fill = start[:-1].copy()
    sxy = np.empty((n, 2))
    for a in range(n):
        t = fill[cell[a]]
        sxy[t, 0], sxy[t, 1] = pos[a, 0], pos[a, 1]
        fill[cell[a]] += 1
    total = 0.0
    for c in range(mx * my):
        for t in range(start[c], start[c + 1]):
            total += math.sqrt(_nearest_squared(t, c, sxy, start, (mx, my), geo))
    return heading, order, total / n


@numba.njit(cache=True, inline="always")
def _nearest_squared(
    t: int,
    c: int,
    sxy: np.ndarray,
    start: np.ndarray,
    shape: tuple[int, int],
    geo: tuple[float, float, bool],
) -> float:
    """The squared distance from the boid in slot ``t`` (cell ``c``) to its nearest other."""
    mx, my = shape
    width, height, _ = geo
    sure = min(width / mx, height / my)
    x, y = sxy[t, 0], sxy[t, 1]
    cx, cy = c // my, c % my
    best = np.inf  # squared: sqrt is monotonic, so sqrt(min) is min(sqrt)
    r = 0
    while 2 * r + 1 <= mx and 2 * r + 1 <= my:
        for ix in range(-r, r + 1):
            edge = abs(ix) == r
            for iy in range(-r, r + 1):
                if not edge and abs(iy) != r:
                    continue
                d = ((cx + ix) % mx) * my + (cy + iy) % my
                for u in range(start[d], start[d + 1]):
                    if u != t:
                        best = min(best, _squared(x, y, sxy[u, 0], sxy[u, 1], width, height))
        if best <= (r * sure) ** 2:
            return best
        r += 1
    for u in range(len(sxy)):  # the rings would wrap onto themselves: ask everyone
        if u != t:
            best = min(best, _squared(x, y, sxy[u, 0], sxy[u, 1], width, height))
    return best


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
        """Mean heading (Mesa's), polarisation and mean nearest-neighbour distance.

        One compiled pass (``_metrics``): ``boid_metrics`` with ``space.nearest`` gives
        the same values up to rounding, at twice the cost (Mesa's boids use it).
        """
        heading, order, nn = _metrics(self.position, self.direction, self.cells.geometry)
        return {"heading": heading, "order": order, "nn_distance": nn}


def boid_metrics(direction: np.ndarray, nn_distance: float) -> dict[str, float]:
    """``heading``, ``order`` and ``nn_distance`` from directions, in numpy (for Mesa's boids)."""
    mean = direction.mean(axis=0)
    unit = direction / np.linalg.norm(direction, axis=1, keepdims=True)
    return {
        "heading": float(np.arctan2(mean[1], mean[0])),
        "order": float(np.linalg.norm(unit.mean(axis=0))),
        "nn_distance": float(nn_distance),
    }
