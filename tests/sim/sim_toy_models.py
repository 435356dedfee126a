"""Small numpy-only models the simulation tests share (importable by workers by name)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

import ambidex.sim as sim


class Exchange(sim.Model):
    """Agents hand one unit to a random agent with probability p (simultaneous update)."""

    defaults = {"n": 200, "p": 0.5, "label": "x"}

    def setup(self, params: sim.Params) -> None:
        self.agents = sim.Agents(params.n, wealth=np.int64, energy=np.float64)
        self.agents.add(params.n, wealth=1, energy=self.rng.random(params.n))

    def step(self) -> None:
        a = self.agents
        giver = (self.rng.random(len(a)) < self.params.p) & (a.wealth > 0)
        receiver = self.rng.integers(0, len(a), size=len(a))
        np.subtract.at(a.wealth, np.flatnonzero(giver), 1)
        np.add.at(a.wealth, receiver[giver], 1)
        if "bonus" in self.inputs:
            a.energy += self.inputs["bonus"][: len(a)]

    def metrics(self) -> dict[str, Any]:
        a = self.agents
        return {
            "gini": sim.gini(a.wealth),
            "total": int(a.wealth.sum()),
            "energy": float(a.energy.sum()),
        }


class Stops(sim.Model):
    """Ends itself after ``until`` steps."""

    defaults = {"until": 3}

    def setup(self, params: sim.Params) -> None:
        self.count = 0

    def step(self) -> None:
        self.count += 1
        if self.count >= self.params.until:
            self.running = False

    def metrics(self) -> dict[str, Any]:
        return {"count": self.count}


class Fails(sim.Model):
    """Raises at step ``at`` when ``boom`` is true."""

    defaults = {"boom": False, "at": 2}

    def setup(self, params: sim.Params) -> None:
        self.count = 0

    def step(self) -> None:
        self.count += 1
        if self.params.boom and self.count == self.params.at:
            raise RuntimeError("the model broke on purpose")

    def metrics(self) -> dict[str, Any]:
        return {"count": self.count}


class Slow(sim.Model):
    """Sleeps in every step (for cancellation and progress tests)."""

    defaults = {"sleep_s": 0.05}

    def setup(self, params: sim.Params) -> None:
        self.count = 0

    def step(self) -> None:
        import time

        time.sleep(self.params.sleep_s)
        self.count += 1

    def metrics(self) -> dict[str, Any]:
        return {"count": self.count}


class Herd(sim.Model):
    """Two kinds of agent on a grid; ``a`` and ``b`` share a chart, ``c`` has its own."""

    defaults = {"n": 40, "width": 8, "height": 6}
    charts: ClassVar[dict[str, list[str]]] = {"herd": ["a", "b"]}

    def setup(self, params: sim.Params) -> None:
        self.grid = sim.Grid(params.width, params.height, torus=True)
        self.agents = sim.Agents(params.n, kind=np.int8, cell=np.int64)
        self.agents.add(
            params.n,
            kind=self.rng.integers(0, 2, params.n),
            cell=self.grid.random_cells(self.rng, params.n),
        )

    def step(self) -> None:
        a = self.agents
        a.cell = (a.cell + self.rng.integers(-1, 2, len(a))) % self.grid.size

    def metrics(self) -> dict[str, float]:
        kind = self.agents.kind
        return {
            "a": int((kind == 0).sum()),
            "b": int((kind == 1).sum()),
            "c": float(self.agents.cell.mean()),
        }
