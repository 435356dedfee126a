"""Virus on a network: Mesa's ``VirusOnNetwork`` example on ``ambidex.sim``.

Mirrors ``mesa.examples.basic.virus_on_network`` (Mesa 3.3) rule for rule:

* The network is Erdős-Rényi ``G(n, p)`` with ``n = num_nodes`` and
  ``p = avg_node_degree / num_nodes`` (Mesa's ``nx.erdos_renyi_graph(n, p)``; the
  expected degree is therefore ``avg_node_degree * (n - 1) / n``), one agent on
  every node. All start susceptible; ``initial_outbreak_size`` distinct nodes
  drawn uniformly (at most ``num_nodes``) start infected.
* Every step the agents act one at a time, in a fresh random order (Mesa's
  ``shuffle_do``). An infected agent first infects each susceptible neighbour with
  chance ``virus_spread_chance`` (one draw per susceptible neighbour), then with
  chance ``virus_check_frequency`` checks itself: with chance ``recovery_chance``
  it recovers to susceptible and then, with chance ``gain_resistance_chance``,
  becomes resistant for good. Susceptible and resistant agents do nothing.
  Later agents see earlier agents' changes: an agent infected earlier in the step
  spreads the virus when its own turn comes.
* Metrics, after setup and after every step: the counts ``susceptible``,
  ``infected``, ``resistant`` and Mesa's ``r_over_s`` (resistant / susceptible,
  infinite when nobody is susceptible).

The defaults are Mesa's model defaults (Mesa's benchmark suite has no
configuration for this model); ``benchmarks/sim_network.py`` runs it at 1,000 and
100,000 nodes.

Deliberate differences: none in the rules. Random numbers (the graph included)
come from ambidex's generator, so a run matches Mesa's in distribution, not draw
for draw.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numba
import numpy as np

import ambidex as ax
from ambidex.sim.kernels import permutation

SUSCEPTIBLE, INFECTED, RESISTANT = 0, 1, 2


@numba.njit(cache=True)
def _step(
    state: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    spread: float,
    check: float,
    recovery: float,
    resistance: float,
    rng: np.random.Generator,
) -> None:
    """One step: every agent (the one on node ``a``) acts in a random order."""
    n = len(state)
    order = permutation(n, rng)
    for i in range(n):
        a = order[i]
        if state[a] != INFECTED:
            continue
        for k in range(indptr[a], indptr[a + 1]):
            b = indices[k]
            # Mesa draws only for a susceptible neighbour (``and`` short-circuits).
            if state[b] == SUSCEPTIBLE and rng.random() < spread:
                state[b] = INFECTED
        if rng.random() < check and rng.random() < recovery:
            state[a] = SUSCEPTIBLE
            if rng.random() < resistance:
                state[a] = RESISTANT


@numba.njit(cache=True)
def _counts(state: np.ndarray) -> tuple[int, int]:
    """How many agents are susceptible and how many infected, in one pass."""
    s = i = 0
    for x in state:
        s += x == SUSCEPTIBLE
        i += x == INFECTED
    return s, i


class VirusOnNetwork(ax.sim.Model):
    """A virus spreads over a random network; the infected recover, some for good."""

    defaults: ClassVar[dict[str, Any]] = {
        "num_nodes": 10,
        "avg_node_degree": 3,
        "initial_outbreak_size": 1,
        "virus_spread_chance": 0.4,
        "virus_check_frequency": 0.4,
        "recovery_chance": 0.3,
        "gain_resistance_chance": 0.5,
    }

    def setup(self, params: ax.sim.Params) -> None:
        """Draw the network, put a susceptible agent on every node, infect a few."""
        n = params.num_nodes
        if n < 1:
            raise ax.sim.ModelError(f"num_nodes must be >= 1, got {n}")
        if params.avg_node_degree < 0:
            raise ax.sim.ModelError(f"avg_node_degree must be >= 0, got {params.avg_node_degree}")
        if params.initial_outbreak_size < 0:
            raise ax.sim.ModelError(
                f"initial_outbreak_size must be >= 0, got {params.initial_outbreak_size}"
            )
        for name in (
            "virus_spread_chance",
            "virus_check_frequency",
            "recovery_chance",
            "gain_resistance_chance",
        ):
            chance = float(params[name])
            if not 0.0 <= chance <= 1.0:
                raise ax.sim.ModelError(f"{name} must be a probability in [0, 1], got {chance}")
        self.space = ax.sim.NetworkSpace.erdos_renyi(n, params.avg_node_degree / n, self.rng)
        self.agents = ax.sim.Agents(n, state=np.int8)
        self.agents.add(n, state=SUSCEPTIBLE)
        outbreak = min(params.initial_outbreak_size, n)
        self.agents.state[self.rng.choice(n, size=outbreak, replace=False)] = INFECTED

    def step(self) -> None:
        """Every agent, in a random order: spread the virus if infected, then check itself."""
        p = self.params
        _step(
            self.agents.state,
            self.space.indptr,
            self.space.indices,
            float(p.virus_spread_chance),
            float(p.virus_check_frequency),
            float(p.recovery_chance),
            float(p.gain_resistance_chance),
            self.rng,
        )

    def metrics(self) -> dict[str, float]:
        """How many agents are susceptible, infected and resistant; resistant / susceptible."""
        state = self.agents.state
        s, i = _counts(state)  # one compiled pass: numpy's compares cost more at 1,000
        r = len(state) - s - i
        return {
            "susceptible": s,
            "infected": i,
            "resistant": r,
            "r_over_s": r / s if s else math.inf,
        }
