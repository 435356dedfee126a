"""The active-inference forager example: its maths against plain per-agent code, and its runs."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

import ambidex as ax

repo_root = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(repo_root))

from examples.sim.forager import (  # noqa: E402
    ACTIONS,
    Forager,
    choose_actions,
    efe_one_agent,
    efe_terms,
    expected_free_energy,
    filter_one_agent,
    generative_model,
    predict,
    update_beliefs,
)

SMALL = {"n_agents": 300, "n_states": 10}


def stepped(
    params: Mapping[str, object], seed: int, steps: int
) -> tuple[Forager, list[np.ndarray], list[np.ndarray]]:
    """A set-up model stepped ``steps`` times, with every step's (loc, obs) columns."""
    model = Forager(params, seed=seed)
    model.setup(model.params)
    locs = [model.agents.loc.copy()]
    obs = [model.agents.obs.copy()]
    for _ in range(steps):
        model.step()
        locs.append(model.agents.loc.copy())
        obs.append(model.agents.obs.copy())
    return model, locs, obs


# -- the generative model ------------------------------------------------------------


def test_generative_model_is_made_of_distributions() -> None:
    gm = generative_model(9)
    assert gm.A.shape == (9, 3, 9)
    assert gm.B.shape == (9, 9)
    np.testing.assert_allclose(gm.A.sum(axis=1), 1.0)  # every (patch, food) column
    np.testing.assert_allclose(gm.B.sum(axis=0), 1.0)  # every current food patch
    np.testing.assert_allclose(gm.C.sum(), 1.0)
    np.testing.assert_allclose(gm.D.sum(), 1.0)
    assert np.all(gm.A > 0)
    assert np.argmax(gm.C) == 2
    # On the food's patch a forager most likely sees food; next to it, scent.
    assert gm.A[4, 2, 4] == 0.9
    assert gm.A[4, 1, 5] == 0.6
    assert gm.A[4, 1, 3] == 0.6
    assert gm.A[0, 0, 8 - 3] == 0.9  # far away: nothing
    for bad in ({"hit": 1.0}, {"scent": 0.97}, {"move": 1.5}):
        with pytest.raises(ValueError):
            generative_model(9, **bad)
    with pytest.raises(ValueError, match="n_states"):
        generative_model(2)


# -- (a) belief update -------------------------------------------------------------


def test_one_agents_posterior_matches_plain_bayes_after_several_steps() -> None:
    model, locs, obs = stepped(SMALL, seed=3, steps=12)
    gm = model.gm
    for k in (0, 17, 299):
        # Bayes' rule for agent k alone, step by step.
        q = gm.D.copy()
        for t in range(len(locs)):
            if t > 0:
                q = gm.B @ q  # the food may have moved
            likelihood = gm.A[locs[t][k], obs[t][k], :]  # P(cue seen | food at s)
            q = q * likelihood
            q = q / q.sum()
        np.testing.assert_allclose(model.beliefs[k], q, rtol=0, atol=1e-12)
        reference = filter_one_agent(gm, [int(at[k]) for at in locs], [int(o[k]) for o in obs])
        np.testing.assert_allclose(reference, q, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.beliefs.sum(axis=1), 1.0, atol=1e-12)


def test_batched_update_matches_row_by_row_on_random_beliefs() -> None:
    gm = generative_model(8)
    rng = np.random.default_rng(0)
    beliefs = rng.dirichlet(np.ones(8), size=50)
    loc = rng.integers(0, 8, 50)
    obs = rng.integers(0, 3, 50)
    post = update_beliefs(predict(beliefs, gm.B), gm.A, loc, obs)
    for n in range(50):
        prior = gm.B @ beliefs[n]
        want = prior * gm.A[loc[n], obs[n]] / np.dot(prior, gm.A[loc[n], obs[n]])
        np.testing.assert_allclose(post[n], want, rtol=0, atol=1e-14)


# -- (b) expected free energy --------------------------------------------------------


def test_one_agents_expected_free_energy_matches_a_direct_computation() -> None:
    model, _, _ = stepped(SMALL, seed=4, steps=5)
    gm = model.gm
    k_states = gm.B.shape[0]
    G = expected_free_energy(model.beliefs, gm, model.agents.loc)
    risk_all, ambiguity_all = efe_terms(model.beliefs, gm, model.agents.loc)
    assert G.shape == (300, 3)
    for k in (0, 123, 299):
        q, loc = model.beliefs[k], int(model.agents.loc[k])
        qs = gm.B @ q  # where the food will be
        for a, move in enumerate(ACTIONS):
            A_next = gm.A[(loc + move) % k_states]  # (outcome, state) at the new patch
            qo = A_next @ qs  # predicted outcomes
            risk = float(np.sum(qo * (np.log(qo) - np.log(gm.C))))
            entropy_per_state = -np.sum(A_next * np.log(A_next), axis=0)
            ambiguity = float(np.dot(qs, entropy_per_state))
            assert risk_all[k, a] == pytest.approx(risk, abs=1e-12)
            assert ambiguity_all[k, a] == pytest.approx(ambiguity, abs=1e-12)
            assert G[k, a] == pytest.approx(risk + ambiguity, abs=1e-12)
        np.testing.assert_allclose(efe_one_agent(gm, q, loc), G[k], rtol=0, atol=1e-12)


def test_expected_free_energy_prefers_food_and_information() -> None:
    gm = generative_model(12)
    certain_here = np.eye(12)[[5]]  # food surely at patch 5; the agent stands on it
    G = expected_free_energy(certain_here, gm, np.array([5]))
    assert ACTIONS[np.argmin(G[0])] == 0  # stay
    certain_right = np.eye(12)[[6]]
    G = expected_free_energy(certain_right, gm, np.array([5]))
    assert ACTIONS[np.argmin(G[0])] == 1  # step right onto it
    assert ACTIONS[choose_actions(G, math.inf, np.random.default_rng(0))[0]] == 1


def test_choose_actions_follows_the_softmax() -> None:
    G = np.tile([1.0, 0.0, 2.0], (20_000, 1))
    picks = choose_actions(G, 1.5, np.random.default_rng(1))
    want = np.exp(-1.5 * np.array([1.0, 0.0, 2.0]))
    want /= want.sum()
    np.testing.assert_allclose(np.bincount(picks, minlength=3) / len(G), want, atol=0.015)
    uniform = choose_actions(G, 0.0, np.random.default_rng(1))
    np.testing.assert_allclose(np.bincount(uniform, minlength=3) / len(G), 1 / 3, atol=0.015)
    with pytest.raises(ValueError, match="gamma"):
        choose_actions(G, -1.0, np.random.default_rng(1))


# -- (c) determinism ---------------------------------------------------------------------


def test_same_seed_gives_bit_identical_metrics_and_other_seeds_differ() -> None:
    a = ax.sim.run(Forager, SMALL, steps=30, seed=11)
    b = ax.sim.run(Forager, SMALL, steps=30, seed=11)
    c = ax.sim.run(Forager, SMALL, steps=30, seed=12)
    assert a.metrics.columns == ["step", "accuracy", "entropy", "at_food", "food_collected"]
    assert a.metrics.equals(b.metrics)
    assert a.metrics.digest() == b.metrics.digest()
    assert not a.metrics.equals(c.metrics)
    assert isinstance(a.final, Forager)
    assert isinstance(b.final, Forager)
    assert a.final.beliefs.tobytes() == b.final.beliefs.tobytes()


# -- (d) learning ---------------------------------------------------------------------------


def test_the_population_learns_where_the_food_is() -> None:
    result = ax.sim.run(Forager, {"n_agents": 2000, "n_states": 12}, steps=60, seed=5)
    m = result.metrics
    chance = 1 / 12
    late = slice(30, None)
    assert m["accuracy"][late].mean() > 4 * chance
    assert m["accuracy"][late].mean() > m["accuracy"][0] + 0.3
    assert m["entropy"][late].mean() < m["entropy"][0] - 0.5
    assert m["at_food"][late].mean() > 4 * chance
    assert np.all(np.diff(m["food_collected"]) >= 0)
    assert m["food_collected"][-1] > 10


def test_bad_parameters_are_model_errors() -> None:
    with pytest.raises(ax.sim.ModelError, match="n_states"):
        ax.sim.run(Forager, {"n_agents": 10, "n_states": 2}, steps=1)
    with pytest.raises(ax.sim.ModelError, match="gamma"):
        ax.sim.run(Forager, {"n_agents": 10, "gamma": -1.0}, steps=1)
