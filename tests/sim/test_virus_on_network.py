"""Mesa's virus_on_network on ambidex.sim: forced rules on hand-built graphs, sequential
activation, determinism, and agreement with Mesa's own model at a small size."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ambidex as ax

repo_root = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(repo_root))

from examples.sim.virus_on_network import (  # noqa: E402
    INFECTED,
    RESISTANT,
    SUSCEPTIBLE,
    VirusOnNetwork,
)
from tests.sim.test_mesa_models import (  # noqa: E402
    assert_agree,
    mesa_examples,
    mesa_metrics,
    our_metrics,
)

SMALL = {"num_nodes": 100, "avg_node_degree": 3, "initial_outbreak_size": 3}


def on_graph(
    n: int, src: list[int], dst: list[int], states: list[int], seed: int = 0, **chances: float
) -> VirusOnNetwork:
    """A model on a hand-built graph, agents in the given states."""
    model = VirusOnNetwork({"num_nodes": n, **chances}, seed=seed)
    model.setup(model.params)
    model.space = ax.sim.NetworkSpace(n, src, dst)
    model.agents.state[:] = states
    return model


def states(model: VirusOnNetwork) -> list[int]:
    return model.agents.state.tolist()


FORCED = {
    "virus_spread_chance": 0.0,
    "virus_check_frequency": 0.0,
    "recovery_chance": 0.0,
    "gain_resistance_chance": 0.0,
}
S, I, R = SUSCEPTIBLE, INFECTED, RESISTANT  # noqa: E741


def test_defaults_are_mesas_model_defaults() -> None:
    assert VirusOnNetwork.defaults == {
        "num_nodes": 10,
        "avg_node_degree": 3,
        "initial_outbreak_size": 1,
        "virus_spread_chance": 0.4,
        "virus_check_frequency": 0.4,
        "recovery_chance": 0.3,
        "gain_resistance_chance": 0.5,
    }


def test_an_infected_node_infects_every_susceptible_neighbour_but_not_the_resistant() -> None:
    # A star: centre 0 infected, leaves 1-4 (leaf 3 resistant); node 5 is not connected.
    model = on_graph(
        6, [0, 0, 0, 0], [1, 2, 3, 4], [I, S, S, R, S, S], **{**FORCED, "virus_spread_chance": 1}
    )
    model.step()
    assert states(model) == [I, I, I, R, I, S]
    m = model.metrics()
    assert (m["susceptible"], m["infected"], m["resistant"]) == (1, 4, 1)
    assert m["r_over_s"] == 1.0


@pytest.mark.parametrize(
    ("recovery", "resistance", "after"),
    [(0.0, 0.0, I), (1.0, 0.0, S), (1.0, 1.0, R)],
    ids=["stays-infected", "recovers", "recovers-resistant"],
)
def test_the_check_recovers_and_grants_resistance_by_the_chances(
    recovery: float, resistance: float, after: int
) -> None:
    chances = {
        **FORCED,
        "virus_check_frequency": 1.0,
        "recovery_chance": recovery,
        "gain_resistance_chance": resistance,
    }
    model = on_graph(4, [0, 1], [1, 2], [I, S, I, R], **chances)
    model.step()
    assert states(model) == [after, S, after, R]


def test_without_a_check_nobody_recovers_and_resistance_never_appears() -> None:
    result = ax.sim.run(
        VirusOnNetwork,
        {**SMALL, "virus_check_frequency": 0.0, "virus_spread_chance": 0.5},
        steps=15,
        seed=3,
    )
    infected = result.metrics["infected"]
    assert (np.diff(infected) >= 0).all()
    assert (result.metrics["resistant"] == 0).all()


def test_agents_act_one_after_another_in_random_order() -> None:
    # A path 0-1-2-3 with 0 infected, spread certain, no recovery. Node 0 always infects
    # 1; 2 is infected in the same step only if 1 acts after 0, and 3 only if 0, 1, 2
    # act in that order: 2, 3 or 4 infected with chances 1/2, 1/3, 1/6. Had everyone
    # acted on the state at the step's start, only 0 and 1 would ever be infected.
    counts = []
    for seed in range(600):
        model = on_graph(
            4, [0, 1, 2], [1, 2, 3], [I, S, S, S], seed, **{**FORCED, "virus_spread_chance": 1}
        )
        model.step()
        s = states(model)
        n_infected = s.count(I)
        assert s == [I] * n_infected + [S] * (4 - n_infected)  # infection runs along the path
        counts.append(n_infected)
    freq = np.bincount(counts, minlength=5)[2:] / len(counts)
    expected = np.array([1 / 2, 1 / 3, 1 / 6])
    assert (np.abs(freq - expected) < 5 * np.sqrt(expected * (1 - expected) / len(counts))).all()


def test_populations_add_up_and_resistance_is_for_good() -> None:
    model = VirusOnNetwork({**SMALL, "initial_outbreak_size": 10}, seed=9)
    model.setup(model.params)
    assert model.metrics()["infected"] == 10
    resistant = np.zeros(100, dtype=bool)
    for _ in range(30):
        model.step()
        m = model.metrics()
        assert m["susceptible"] + m["infected"] + m["resistant"] == 100
        now = model.agents.state == RESISTANT
        assert not (resistant & ~now).any()
        resistant = now
    assert resistant.any()


def test_outbreak_larger_than_the_network_infects_everyone() -> None:
    model = VirusOnNetwork({"num_nodes": 5, "initial_outbreak_size": 50}, seed=0)
    model.setup(model.params)
    assert model.metrics() == {
        "susceptible": 0,
        "infected": 5,
        "resistant": 0,
        "r_over_s": math.inf,
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"num_nodes": 0}, "num_nodes must be >= 1"),
        ({"avg_node_degree": -1}, "avg_node_degree must be >= 0"),
        ({"initial_outbreak_size": -2}, "initial_outbreak_size must be >= 0"),
        ({"recovery_chance": 1.5}, r"recovery_chance must be a probability in \[0, 1\]"),
        ({"virus_spread_chance": float("nan")}, "virus_spread_chance must be a probability"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ax.sim.ModelError, match=message):
        ax.sim.run(VirusOnNetwork, params, steps=1, seed=0)


def test_same_seed_same_metrics_other_seed_other_metrics() -> None:
    a = ax.sim.run(VirusOnNetwork, SMALL, steps=20, seed=7)
    b = ax.sim.run(VirusOnNetwork, SMALL, steps=20, seed=7)
    c = ax.sim.run(VirusOnNetwork, SMALL, steps=20, seed=8)
    assert a.metrics.digest() == b.metrics.digest()
    assert not a.metrics.equals(c.metrics)


def test_runs_at_a_hundred_thousand_nodes() -> None:
    params = {"num_nodes": 100_000, "initial_outbreak_size": 100}
    result = ax.sim.run(VirusOnNetwork, params, steps=5, seed=1)
    m = result.metrics
    assert ((m["susceptible"] + m["infected"] + m["resistant"]) == 100_000).all()
    assert m["infected"][5] > 100  # the outbreak spreads
    final = result.final
    assert isinstance(final, VirusOnNetwork)
    assert abs(final.space.degree().mean() - 3) < 0.05


def test_epidemic_curves_agree_with_mesa() -> None:
    mesa = mesa_examples()
    steps = 12
    theirs = [mesa_metrics(mesa.VirusOnNetwork, SMALL, steps, s) for s in range(40)]
    ours = [our_metrics(VirusOnNetwork, SMALL, steps, s) for s in range(200)]
    for column in ("Infected", "Susceptible", "Resistant"):
        mine = np.array([run[column.lower()] for run in ours])
        mesas = np.array([run[column] for run in theirs])
        for step in (1, 4, 8, steps):
            assert_agree(mine[:, step], mesas[:, step], f"{column.lower()} at step {step}")
