"""Active-inference foragers: a population tracking one wandering food source on a ring.

The world is a ring of ``n_states`` patches. One patch holds food; every step
the food stays put or creeps to a neighbouring patch. Each forager stands on a
patch (it knows which), sees a noisy cue there, and moves one patch left, stays,
or moves one patch right. It never sees where the food is directly: it keeps a
belief, a probability for every patch, and updates it by Bayes' rule.

The foragers' generative model (what they believe about how the world works;
here it is also how the world really works) has four parts:

* **A, the likelihood** (``A[l, o, s]``): the chance of seeing outcome ``o`` when
  standing on patch ``l`` while the food is on patch ``s``. Outcomes are
  *nothing*, *scent* and *food*. On the food's patch a forager sees food with
  probability ``hit``; one patch away it smells scent with probability
  ``scent``; anywhere else it sees nothing, apart from false alarms
  (``false_alarm``). So a cue says much about nearby patches and little about
  far ones, and how much a forager learns depends on where it stands.
* **B, the transitions** (``B[s', s]``): where the food is next step given where
  it is now. It stays with probability ``1 - move`` and otherwise moves one patch
  left or right (half each).
* **C, the preferences**: the outcomes a forager hopes to see, as a probability
  distribution; food is preferred over scent and nothing by ``pref_food`` nats.
* **D, the prior**: the belief before any cue; uniform over the patches.

Every step, for every forager at once (beliefs are one ``(n_agents, n_states)``
array; no Python loop over foragers):

1. **Plan.** For each move it scores the expected free energy
   ``G = risk + ambiguity``: *risk* is the KL divergence between the outcomes
   it predicts after the move (``A`` at the new patch applied to ``B @ belief``)
   and its preferred outcomes ``C``; *ambiguity* is the expected entropy of
   ``A`` there (how unclear a cue would be, averaged over where the food may
   be). Low risk pulls it towards food; low ambiguity, and the predicted
   outcomes' own entropy inside the risk, pull it to patches whose cue would
   tell it the most. It picks a move with probability ``softmax(-gamma * G)``,
   drawn with the model's generator (``gamma = inf`` picks the argmin).
2. **Act.** It moves; the food moves by ``B``.
3. **Perceive.** It sees a cue drawn from ``A`` and updates its belief:
   ``posterior ∝ (B @ previous posterior) * A[patch, cue, :]``, normalised.
4. **Eat.** A forager on the food's patch collects one unit of food.

Metrics: ``accuracy`` (mean belief on the food's true patch; chance is
``1 / n_states``), ``entropy`` (mean entropy of the beliefs, nats; at most
``log(n_states)``), ``at_food`` (share of foragers on the food's patch) and
``food_collected`` (units of food per forager so far).

Run it::

    ambidex sim run examples/sim/forager.py --steps 100 -p n_agents=10000

or ``python -m examples.sim.forager`` from the repository root.

The pure functions (``generative_model``, ``predict``, ``update_beliefs``,
``expected_free_energy``, ``choose_actions``) are the model's maths; they take
any number of foragers, one included. ``filter_one_agent`` and
``efe_one_agent`` are the same computations written plainly for one forager, as
a reference.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

import ambidex as ax

__all__ = [
    "ACTIONS",
    "OUTCOMES",
    "STEPS",
    "Forager",
    "GenerativeModel",
    "choose_actions",
    "efe_one_agent",
    "efe_terms",
    "expected_free_energy",
    "filter_one_agent",
    "generative_model",
    "predict",
    "update_beliefs",
]

Array = np.ndarray[Any, Any]

#: Moves: one patch left, stay, one patch right.
ACTIONS = np.array([-1, 0, 1], dtype=np.int64)
#: Outcome names, in the order of A's outcome axis.
OUTCOMES = ("nothing", "scent", "food")
NOTHING, SCENT, FOOD = 0, 1, 2
#: A sensible run length (the population settles within about 50 steps).
STEPS = 100


class GenerativeModel(NamedTuple):
    """The foragers' generative model, plus a table derived from it."""

    A: Array
    """``(n_states, 3, n_states)``: ``A[l, o, s]`` = P(outcome o | at patch l, food at s)."""
    B: Array
    """``(n_states, n_states)``: ``B[s2, s]`` = P(food at s2 next | food at s now)."""
    C: Array
    """``(3,)``: the preferred outcome distribution."""
    D: Array
    """``(n_states,)``: the prior over the food's patch."""
    H: Array
    """``(n_states, n_states)``: ``H[l, s]``, entropy of ``A[l, :, s]`` (nats)."""


def generative_model(
    n_states: int = 12,
    *,
    hit: float = 0.9,
    scent: float = 0.6,
    false_alarm: float = 0.05,
    move: float = 0.1,
    pref_food: float = 3.0,
) -> GenerativeModel:
    """Build A, B, C, D for a ring of ``n_states`` patches (see the module docstring).

    Raises:
        ValueError: fewer than 3 patches, or probabilities that do not make
            every column of A and B a distribution with no zero entries.
    """
    k = int(n_states)
    if k < 3:
        raise ValueError(f"n_states must be >= 3 (a ring with two neighbours), got {n_states}")
    for name, p in (("hit", hit), ("scent", scent), ("false_alarm", false_alarm)):
        if not 0.0 < p < 1.0:
            raise ValueError(f"{name} must be strictly between 0 and 1, got {p}")
    if scent + false_alarm >= 1.0 or 2 * false_alarm >= 1.0:
        raise ValueError("scent + false_alarm and 2 * false_alarm must be below 1")
    if not 0.0 <= move <= 1.0:
        raise ValueError(f"move must be between 0 and 1, got {move}")

    # Outcome probabilities by ring distance between the forager and the food.
    on_food = [(1 - hit) / 2, (1 - hit) / 2, hit]
    next_to = [1 - scent - false_alarm, scent, false_alarm]
    far = [1 - 2 * false_alarm, false_alarm, false_alarm]
    offset = (np.arange(k)[None, :] - np.arange(k)[:, None]) % k  # [l, s]: s - l around the ring
    ring = np.minimum(offset, k - offset)
    by_distance = np.where(ring == 0, 0, np.where(ring == 1, 1, 2))  # [l, s] -> row of table
    table = np.array([on_food, next_to, far], dtype=np.float64)  # [distance class, o]
    A = np.ascontiguousarray(table[by_distance].transpose(0, 2, 1))  # [l, o, s]

    B = np.zeros((k, k), dtype=np.float64)
    s = np.arange(k)
    B[s, s] = 1.0 - move
    B[(s + 1) % k, s] += move / 2
    B[(s - 1) % k, s] += move / 2

    log_pref = np.array([0.0, 0.0, float(pref_food)])
    C = np.exp(log_pref - log_pref.max())
    C /= C.sum()
    D = np.full(k, 1.0 / k)
    H = -np.sum(A * np.log(A), axis=1)  # [l, s]
    return GenerativeModel(A=A, B=B, C=C, D=D, H=H)


# -- the batched maths (beliefs: (n_agents, n_states)) ---------------------------


def predict(beliefs: Array, B: Array) -> Array:
    """Beliefs about the next step: ``B @ belief`` for every row."""
    out: Array = np.einsum("ij,nj->ni", B, beliefs)
    return out


def update_beliefs(prior: Array, A: Array, loc: Array, obs: Array) -> Array:
    """Bayes' rule for every forager: ``prior * A[loc, obs, :]``, each row normalised."""
    post = prior * A[loc, obs]
    out: Array = post / post.sum(axis=1, keepdims=True)
    return out


def efe_terms(beliefs: Array, gm: GenerativeModel, loc: Array) -> tuple[Array, Array]:
    """``(risk, ambiguity)`` of every move for every forager, each ``(n_agents, 3)``.

    ``beliefs`` are the current posteriors; a move's outcomes are predicted at
    the patch it leads to, from the beliefs pushed one step through ``B``.
    """
    k = gm.B.shape[0]
    qs = predict(beliefs, gm.B)  # (n, s)
    dest = (loc[:, None] + ACTIONS[None, :]) % k  # (n, a)
    qo = np.einsum("naos,ns->nao", gm.A[dest], qs)  # predicted outcomes
    risk = np.sum(qo * (np.log(qo) - np.log(gm.C)), axis=2)
    ambiguity = np.einsum("nas,ns->na", gm.H[dest], qs)
    return risk, ambiguity


def expected_free_energy(beliefs: Array, gm: GenerativeModel, loc: Array) -> Array:
    """``G = risk + ambiguity`` of every move (columns follow ``ACTIONS``)."""
    risk, ambiguity = efe_terms(beliefs, gm, loc)
    out: Array = risk + ambiguity
    return out


def _sample_rows(probs: Array, u: Array) -> Array:
    """One category per row of ``probs`` by inverse CDF, given uniforms ``u``."""
    idx = np.sum(np.cumsum(probs, axis=1) <= u[:, None], axis=1)
    out: Array = np.minimum(idx, probs.shape[1] - 1).astype(np.int64)
    return out


def choose_actions(G: Array, gamma: float, rng: np.random.Generator) -> Array:
    """Action indices drawn with probability ``softmax(-gamma * G)`` per row.

    ``gamma = inf`` takes the argmin (the first on ties) and draws nothing.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if math.isinf(gamma):
        out: Array = np.argmin(G, axis=1).astype(np.int64)
        return out
    p = np.exp(-gamma * (G - G.min(axis=1, keepdims=True)))
    p /= p.sum(axis=1, keepdims=True)
    return _sample_rows(p, rng.random(len(G)))


# -- one forager, written plainly: the reference ----------------------------------


def filter_one_agent(gm: GenerativeModel, locs: list[int], obs: list[int]) -> Array:
    """One forager's posterior after cues ``obs[t]`` seen on patches ``locs[t]``.

    ``t = 0`` is the first cue (prior ``D``); each later one is preceded by a
    step of ``B``. Loops over patches, no batching: a reference for tests.
    """
    k = len(gm.D)
    q = [float(v) for v in gm.D]
    for t, (loc, o) in enumerate(zip(locs, obs, strict=True)):
        if t > 0:
            q = [sum(gm.B[s2, s] * q[s] for s in range(k)) for s2 in range(k)]
        q = [q[s] * gm.A[loc, o, s] for s in range(k)]
        total = sum(q)
        q = [v / total for v in q]
    return np.array(q)


def efe_one_agent(gm: GenerativeModel, belief: Array, loc: int) -> Array:
    """One forager's expected free energy of each move, written plainly."""
    k = len(gm.D)
    qs = [sum(gm.B[s2, s] * belief[s] for s in range(k)) for s2 in range(k)]
    out = []
    for a in ACTIONS:
        dest = (loc + int(a)) % k
        qo = [sum(gm.A[dest, o, s] * qs[s] for s in range(k)) for o in range(len(OUTCOMES))]
        risk = sum(qo[o] * (math.log(qo[o]) - math.log(gm.C[o])) for o in range(len(qo)))
        ambiguity = sum(
            qs[s] * -sum(gm.A[dest, o, s] * math.log(gm.A[dest, o, s]) for o in range(len(qo)))
            for s in range(k)
        )
        out.append(risk + ambiguity)
    return np.array(out)


# -- the model ------------------------------------------------------------------


class Forager(ax.sim.Model):
    """A population of active-inference foragers tracking one wandering food source."""

    defaults = {
        "n_agents": 10_000,
        "n_states": 12,
        "hit": 0.9,
        "scent": 0.6,
        "false_alarm": 0.05,
        "move": 0.1,
        "pref_food": 3.0,
        "gamma": 8.0,
    }

    def setup(self, params: ax.sim.Params) -> None:
        if params.n_agents < 1:
            raise ax.sim.ModelError(f"n_agents must be >= 1, got {params.n_agents}")
        try:
            self.gm = generative_model(
                params.n_states,
                hit=params.hit,
                scent=params.scent,
                false_alarm=params.false_alarm,
                move=params.move,
                pref_food=params.pref_food,
            )
        except ValueError as exc:
            raise ax.sim.ModelError(f"Forager: {exc}") from None
        self.gamma = float(params.gamma)
        if self.gamma < 0:
            raise ax.sim.ModelError(f"gamma must be >= 0, got {self.gamma}")
        n, k = params.n_agents, params.n_states
        self.food = int(_sample_rows(self.gm.D[None, :], self.rng.random(1))[0])
        self.agents = ax.sim.Agents(n, loc=np.int64, obs=np.int64, eaten=np.int64)
        self.agents.add(n, loc=self.rng.integers(0, k, size=n, dtype=np.int64))
        self.agents.obs = self._observe()
        prior = np.broadcast_to(self.gm.D, (n, k))
        self.beliefs = update_beliefs(prior, self.gm.A, self.agents.loc, self.agents.obs)
        self.agents.eaten = self.agents.loc == self.food

    def _observe(self) -> Array:
        """Every forager's cue, drawn from A at its patch given the true food patch."""
        probs = self.gm.A[self.agents.loc, :, self.food]  # (n, outcomes)
        return _sample_rows(probs, self.rng.random(len(self.agents)))

    def step(self) -> None:
        gm, agents = self.gm, self.agents
        k = gm.B.shape[0]
        # 1. plan and act
        G = expected_free_energy(self.beliefs, gm, agents.loc)
        actions = choose_actions(G, self.gamma, self.rng)
        agents.loc = (agents.loc + ACTIONS[actions]) % k
        # 2. the food moves
        self.food = int(_sample_rows(gm.B[None, :, self.food], self.rng.random(1))[0])
        # 3. perceive and update every belief at once
        agents.obs = self._observe()
        self.beliefs = update_beliefs(predict(self.beliefs, gm.B), gm.A, agents.loc, agents.obs)
        # 4. eat
        agents.eaten += agents.loc == self.food

    def metrics(self) -> dict[str, float]:
        q = self.beliefs
        entropy = -np.sum(q * np.log(np.where(q > 0, q, 1.0)), axis=1)
        return {
            "accuracy": float(q[:, self.food].mean()),
            "entropy": float(entropy.mean()),
            "at_food": float(np.mean(self.agents.loc == self.food)),
            "food_collected": float(self.agents.eaten.mean()),
        }


if __name__ == "__main__":
    result = ax.sim.run(Forager, {"n_agents": 10_000}, steps=STEPS, seed=0)
    table = result.metrics
    for row in table.rows()[:: STEPS // 10]:
        print(
            f"step {row['step']:4d}  accuracy {row['accuracy']:.3f}  entropy {row['entropy']:.3f}"
            f"  at food {row['at_food']:.3f}  food/agent {row['food_collected']:.2f}"
        )
    print(f"{result.steps} steps in {result.elapsed_s:.2f}s")
