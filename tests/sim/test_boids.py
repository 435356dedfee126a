"""Mesa's Boids (``examples/sim/boids.py``): its rules by hand, determinism, and Mesa itself.

The rule test replays Mesa's ``Boid.step`` written out in numpy for both possible
orders of two boids that see each other: the kernel must match one of them each
step, and over a few seeds both, which only a sequential step does. The agreement
test compares order and nearest-neighbour distance after 30 steps with Mesa's own
``BoidFlockers`` at Mesa's "small" benchmark size, within 4 standard errors over
fixed seeds (so it does not flake).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ambidex as ax

repo_root = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(repo_root))

from examples.sim.boids import Boids, boid_metrics  # noqa: E402

sys.path.insert(0, str(repo_root / "benchmarks"))
from _mesa import load_mesa  # noqa: E402

# Mesa's benchmarks/configurations.py, BoidFlockers "small".
MESA_SMALL = {"population_size": 200, "width": 100, "height": 100, "vision": 5}
RULES = {"speed": 1.0, "vision": 10.0, "separation": 2.0}
WEIGHTS = {"cohere": 0.03, "separate": 0.015, "match": 0.05}


def mesa_rule_step(pos: np.ndarray, direction: np.ndarray, order: list[int], size: float) -> None:
    """Mesa 3.3's ``Boid.step`` for each boid of ``order`` in turn, as Mesa writes it."""
    for a in order:
        delta = pos - pos[a]
        inverse = delta - np.sign(delta) * size
        delta = np.where(np.abs(delta) < np.abs(inverse), delta, inverse)
        dist = np.sqrt((delta**2).sum(axis=1))
        seen = (dist <= RULES["vision"]) & (np.arange(len(pos)) != a)
        if seen.any():
            d = delta[seen]
            cohere = d.sum(axis=0) * WEIGHTS["cohere"]
            separate = -d[dist[seen] < RULES["separation"]].sum(axis=0) * WEIGHTS["separate"]
            match = direction[seen].sum(axis=0) * WEIGHTS["match"]
            direction[a] += (cohere + separate + match) / seen.sum()
            direction[a] /= np.linalg.norm(direction[a])
        pos[a] = np.mod(pos[a] + direction[a] * RULES["speed"], size)


def three_boids(seed: int) -> Boids:
    model = Boids({"population_size": 3, "width": 100.0, "height": 100.0, **RULES}, seed=seed)
    model.setup(model.params)
    model.position[:] = [[50.0, 50.0], [51.0, 50.0], [5.0, 99.8]]
    model.direction[:] = [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]  # the third's is not unit
    model.cells = model.space.cells(model.position, RULES["vision"])
    return model


def test_one_step_follows_mesas_rules_one_boid_after_another() -> None:
    orders_seen = set()
    for seed in range(10):
        model = three_boids(seed)
        model.step()
        matched = []
        for order in ([0, 1, 2], [1, 0, 2]):
            pos = np.array([[50.0, 50.0], [51.0, 50.0], [5.0, 99.8]])
            direction = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
            mesa_rule_step(pos, direction, order, 100.0)
            if np.allclose(model.position, pos, rtol=0, atol=1e-12) and np.allclose(
                model.direction, direction, rtol=0, atol=1e-12
            ):
                matched.append(order[0])
        assert len(matched) == 1, f"seed {seed}: matches {matched}"
        orders_seen.add(matched[0])
        # The lone boid kept its (unnormalised) direction and went over the top edge.
        np.testing.assert_allclose(model.position[2], [5.5, 0.3], atol=1e-12)
        np.testing.assert_array_equal(model.direction[2], [0.5, 0.5])
        if matched[0] == 0:  # boid 0 first: by hand, direction (1.015, 0.05) normalised
            np.testing.assert_allclose(model.direction[0], [0.998788876602404, 0.04920142249272927])
    assert orders_seen == {0, 1}  # random order, fresh each step


def test_each_boid_moves_by_its_new_direction_times_speed() -> None:
    model = Boids({"population_size": 300, "width": 60.0, "height": 40.0, "speed": 0.7}, seed=4)
    model.setup(model.params)
    initial = model.direction.copy()
    for _ in range(15):
        before = model.position.copy()
        model.step()
        moved = model.space.displacement(before, model.position)
        np.testing.assert_allclose(moved, model.direction * 0.7, atol=1e-9)
        assert ((model.position >= 0) & (model.position < [60.0, 40.0])).all()
    # A boid that has seen a neighbour flies a unit direction; one that never has,
    # its initial one.
    unit = np.isclose(np.linalg.norm(model.direction, axis=1), 1.0, rtol=0, atol=1e-12)
    untouched = (model.direction == initial).all(axis=1)
    assert (unit | untouched).all()
    assert unit.mean() > 0.9
    m = model.metrics()
    assert 0.0 <= m["order"] <= 1.0
    assert -np.pi <= m["heading"] <= np.pi
    assert m["nn_distance"] > 0


def test_nearest_neighbour_distance_is_the_brute_force_one() -> None:
    model = Boids({"population_size": 250, "vision": 3.0}, seed=9)  # some boids see nobody
    model.setup(model.params)
    d = model.space.distance(model.position[:, None, :], model.position[None, :, :])
    np.fill_diagonal(d, np.inf)
    assert model.metrics()["nn_distance"] == pytest.approx(d.min(axis=1).mean(), rel=1e-12)


@pytest.mark.parametrize(
    ("params", "steps"),
    [
        ({}, 10),  # Mesa's large size, flocking: dense clusters
        (MESA_SMALL, 20),
        ({"population_size": 250, "vision": 3.0}, 3),  # sparse: rings grow
        ({"population_size": 5, "width": 60.0, "height": 40.0}, 2),  # rings wrap: all pairs
        ({"population_size": 3000, "width": 30.0, "height": 300.0}, 2),  # long and thin
    ],
)
def test_compiled_metrics_are_the_numpy_formula_with_the_exact_nearest(
    params: dict[str, Any], steps: int
) -> None:
    for seed in range(3):
        model = Boids(params, seed=seed)
        model.setup(model.params)
        for _ in range(steps):
            model.step()
        nearest = float(model.space.nearest(model.position)[1].mean())
        expected = boid_metrics(model.direction, nearest)
        got = model.metrics()
        assert got.keys() == expected.keys()
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


def test_same_seed_same_metrics_other_seed_other_metrics() -> None:
    a = ax.sim.run(Boids, MESA_SMALL, steps=15, seed=7)
    b = ax.sim.run(Boids, MESA_SMALL, steps=15, seed=7)
    c = ax.sim.run(Boids, MESA_SMALL, steps=15, seed=8)
    assert a.metrics.digest() == b.metrics.digest()
    assert not a.metrics.equals(c.metrics)


def test_defaults_are_mesas_large_boids_benchmark() -> None:
    d = Boids.defaults
    assert (d["population_size"], d["width"], d["height"], d["vision"]) == (400, 150, 150, 15)
    assert (d["speed"], d["separation"]) == (1, 2)
    assert (d["cohere"], d["separate"], d["match"]) == (0.03, 0.015, 0.05)


def test_snapshots_hold_positions_and_directions(tmp_path: Path) -> None:
    path = tmp_path / "boids.db"
    result = ax.sim.run(Boids, MESA_SMALL, steps=4, seed=3, record=path, snapshot_every=2)
    final = result.final
    assert isinstance(final, Boids)
    record = ax.sim.open_record(path)
    run_id = record.runs[0].run_id
    assert sorted(set(record.agents(run_id)["step"].tolist())) == [0, 2, 4]
    last = record.agents(run_id, step=4)
    np.testing.assert_array_equal(last["x"], final.position[:, 0])
    np.testing.assert_array_equal(last["dy"], final.direction[:, 1])


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ax.sim.ModelError, match="vision must be positive"):
        ax.sim.run(Boids, {"vision": 0}, steps=1, seed=1)
    with pytest.raises(ax.sim.ModelError, match="population_size"):
        ax.sim.run(Boids, {"population_size": 1}, steps=1, seed=1)


def mesa_run(cls: Any, steps: int, seed: int) -> dict[str, float]:
    model = cls(seed=seed, **MESA_SMALL)
    for _ in range(steps):
        model.step()
    space = ax.sim.ContinuousSpace(MESA_SMALL["width"], MESA_SMALL["height"])
    pos = np.asarray(model.space.agent_positions)
    d = space.distance(pos[:, None, :], pos[None, :, :])
    np.fill_diagonal(d, np.inf)
    direction = np.array([agent.direction for agent in model.agents])
    return boid_metrics(direction, float(d.min(axis=1).mean()))


def test_order_and_spacing_agree_with_mesas_boids() -> None:
    pytest.importorskip("mesa", reason="mesa is not installed (pip install 'mesa>=3.1')")
    mesa = load_mesa()
    steps = 30
    theirs = [mesa_run(mesa.BoidFlockers, steps, s) for s in range(16)]
    ours = [ax.sim.run(Boids, MESA_SMALL, steps=steps, seed=s).metrics for s in range(96)]
    for name in ("order", "nn_distance"):
        a = np.array([table[name][steps] for table in ours])
        b = np.array([m[name] for m in theirs])
        diff = a.mean() - b.mean()
        se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        assert abs(diff) <= 4 * se, (
            f"{name}: ours {a.mean():.4f} vs Mesa {b.mean():.4f} ({abs(diff) / se:.1f} s.e.)"
        )
        assert a.std() > 0  # the metric varies, so the comparison says something
