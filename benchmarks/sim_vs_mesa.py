"""Simulations: ambidex.sim vs Mesa on Mesa's own example models, at Mesa's benchmark sizes.

The models of ``examples/sim`` follow the rules of Mesa's example models
(``mesa.examples``) one for one; this script runs both on the "small" and "large"
configurations of Mesa's own benchmark suite (``benchmarks/configurations.py`` in
projectmesa/mesa; ``MESA_CONFIGURATIONS`` below):

* Boltzmann wealth: small n=100 on 10 x 10, 125 steps; large n=10,000 on 100 x 100,
  10 steps;
* Schelling: small 40 x 40, density 0.625, radius 1, homophily 0.4, 20 steps; large
  100 x 100, density 0.8, radius 2, homophily 1, 10 steps (minority 0.5 in both);
* wolf-sheep: small 25 x 25, 60 sheep, 40 wolves, sheep_reproduce 0.2, wolf_reproduce
  0.1, grass_regrowth_time 20, 80 steps; large 100 x 100, 1000 sheep, 500 wolves,
  0.4, 0.2, 10, 20 steps (the example's defaults otherwise: wolf_gain_from_food 20,
  sheep_gain_from_food 4, grass on); Mesa's model is driven by its ``ABMSimulator``
  (``simulator.run_for(steps)``);
* Boids (``examples/sim/boids.py:Boids``): small 200 boids on 100 x 100, vision 5,
  20 steps; large 400 on 150 x 150, vision 15, 10 steps. Mesa's ``BoidFlockers`` has
  no datacollector, so its step collects nothing while ours still computes its three
  metrics every step; the compared metrics (``order``, the length of the mean unit
  heading, and ``nn_distance``, the mean distance to the nearest other boid) are
  computed from Mesa's boids after the timed steps, by our ``boid_metrics``.
* virus on a network (``examples/sim/virus_on_network.py:VirusOnNetwork``; not in
  Mesa's suite): 1,000 nodes, 20 steps, and 100,000 nodes, 10 steps, Mesa's model
  defaults with an outbreak of 1% of the nodes (as ``benchmarks/sim_network.py``).
  Mesa's ``nx.erdos_renyi_graph`` tries all pairs (hours at 100,000 nodes): above
  5,000 nodes its constructor runs with ``nx.fast_gnp_random_graph`` in its place
  (``_mesa.fast_erdos_renyi``, the same distribution); its step is untouched. At
  100,000 nodes Mesa runs the first 5 seeds only (~20 s a run), ours all of them.

Speed. For every seed (10; with ``--quick`` 5 at the small sizes, 3 at the shrunken large) both
systems run once, taking turns in a rotating order (garbage collected before each
run). A run is timed in two parts:
*setup* (Mesa: the model's constructor, which collects step 0's data; ours: the
model's constructor, ``setup`` and step 0's metrics) and *steps* (Mesa: ``step()``
``steps`` times, or ``simulator.run_for``; ours: ``step()`` then ``metrics()``
``steps`` times, exactly what ``ax.sim.run`` does). Agent-steps are the agents
activated: the sum over steps of the agents alive at the step's start (constant for
Boltzmann and Schelling; for wolf-sheep the animals, sheep plus wolves: Mesa's
10,000 grass-patch agents never act). The ratio is ours / Mesa of the median
agent-steps/s of the step phase; the target is 50x (60x for Boids large, Agents.jl's
ratio there). The same ratio in the thread's
CPU time (``time.thread_time``) is reported beside it: our small steps last
microseconds, so a preemption on a loaded machine weighs on ours more than on
Mesa's. Our kernels are compiled by numba: a warm-up run comes first, so compile
time is excluded from the timed runs and reported on its own (the first run of
each model in this process, and, unless ``--quick``, a fresh process compiling with
an empty numba cache and one loading from that cache).

Agreement. The same runs give each system's distribution over seeds: Boltzmann's
final Gini, Schelling's final share of happy agents, wolf-sheep's sheep, wolves and
grass curves, Boids' final order and nearest-neighbour distance, the virus's
susceptible, infected and resistant curves. A check passes when the means differ by
at most 4 standard errors (at every step, for curves) and a two-sample
Kolmogorov-Smirnov test on the final values does not reject at 1%. At homophily 1
almost nobody in Schelling is ever happy, so an extra Schelling configuration that
does segregate (50 x 50, radius 1, homophily 0.7, 20 steps; agreement only) is
compared too.

    .venv/bin/python benchmarks/sim_vs_mesa.py          # full run (~5 min), writes
                                                        # results/sim_vs_mesa.json
    .venv/bin/python benchmarks/sim_vs_mesa.py --quick  # 5 seeds small, 3 large shrunk (~15 s)
    .venv/bin/python benchmarks/sim_vs_mesa.py --sizes large
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy import stats

import ambidex as ax
from _common import REPO_ROOT, machine_info, print_ratios, verdict, write_json
from _mesa import fast_erdos_renyi, load_mesa

sys.path.insert(0, str(REPO_ROOT))  # examples.sim.boids for the Boids metrics

console = Console(width=int(os.environ.get("COLUMNS", "150")))

TARGET_RATIO = 50.0
Z_MAX = 4.0
KS_ALPHA = 0.01

Curves = dict[str, np.ndarray]


# -- the configurations --------------------------------------------------------------

# Mesa's own benchmark suite (projectmesa/mesa ``benchmarks/configurations.py``): model
# parameters and steps of its "small" and "large" configurations.
MESA_CONFIGURATIONS: dict[str, dict[str, tuple[dict[str, Any], int]]] = {
    "BoltzmannWealth": {
        "small": ({"n": 100, "width": 10, "height": 10}, 125),
        "large": ({"n": 10_000, "width": 100, "height": 100}, 10),
    },
    "Schelling": {
        "small": (
            {"width": 40, "height": 40, "homophily": 0.4, "radius": 1, "density": 0.625},
            20,
        ),
        "large": (
            {"width": 100, "height": 100, "homophily": 1.0, "radius": 2, "density": 0.8},
            10,
        ),
    },
    "WolfSheep": {
        "small": (
            {
                "width": 25,
                "height": 25,
                "initial_sheep": 60,
                "initial_wolves": 40,
                "sheep_reproduce": 0.2,
                "wolf_reproduce": 0.1,
                "grass_regrowth_time": 20,
            },
            80,
        ),
        "large": (
            {
                "width": 100,
                "height": 100,
                "initial_sheep": 1000,
                "initial_wolves": 500,
                "sheep_reproduce": 0.4,
                "wolf_reproduce": 0.2,
                "grass_regrowth_time": 10,
            },
            20,
        ),
    },
    "BoidFlockers": {
        "small": ({"population_size": 200, "width": 100, "height": 100, "vision": 5}, 20),
        "large": ({"population_size": 400, "width": 150, "height": 150, "vision": 15}, 10),
    },
    # Not in Mesa's suite: issue 17's sizes, Mesa's example defaults otherwise but an
    # outbreak of 1% of the nodes (as benchmarks/sim_network.py), so the epidemic is
    # under way in the timed steps.
    "VirusOnNetwork": {
        "small": ({"num_nodes": 1_000, "initial_outbreak_size": 10}, 20),
        "large": ({"num_nodes": 100_000, "initial_outbreak_size": 1_000}, 10),
    },
}


@dataclass
class Config:
    """One model at one size: Mesa's class, ours (by file), params (the same names), steps."""

    name: str
    size: str
    mesa: str
    """Mesa's class: a name from ``load_mesa()`` or ``module:Class`` under ``mesa.examples``."""
    ours: str
    """Our model as ``examples/sim/<file>.py:Class``; a missing file skips the entry."""
    params: dict[str, Any]
    steps: int
    columns: dict[str, str]
    """Mesa's datacollector column to our metric, for every metric used here."""
    agents: Callable[[Curves, Mapping[str, Any], int], int]
    """Agent-steps of a run from its curves (our names), params and the steps it ran."""
    agents_note: str
    compare: list[tuple[str, str]]
    """(our metric, "final" or "curve") compared for agreement."""
    timed: bool = True
    mesa_probe: Callable[[Any], dict[str, float]] | None = None
    """For a Mesa model without a datacollector: our metrics computed from it after the run."""
    mesa_seeds: int | None = None
    target: float = TARGET_RATIO
    """ambidex / Mesa agent-steps/s to reach."""
    """At most this many Mesa runs (the first seeds), when Mesa's are slow; None: every seed."""
    model: type[ax.sim.Model] | None = None
    """Our model class, once loaded."""

    @property
    def label(self) -> str:
        return f"{self.name} ({self.size})"

    def missing(self) -> str | None:
        """Why this entry cannot run yet (its example file does not exist), or None."""
        path = REPO_ROOT / self.ours.partition(":")[0]
        if not path.exists():
            return f"{path.relative_to(REPO_ROOT)} does not exist yet"
        return None

    def load(self) -> type[ax.sim.Model]:
        if self.model is None:
            self.model = ax.sim.load_model(str(REPO_ROOT / self.ours))
        return self.model


def _population(c: Curves, params: Mapping[str, Any], steps: int) -> int:
    return int(c["population"][:steps].sum())


def _n_times_steps(key: str) -> Callable[[Curves, Mapping[str, Any], int], int]:
    def count(c: Curves, params: Mapping[str, Any], steps: int) -> int:
        return int(params[key]) * steps

    return count


def _animals(c: Curves, params: Mapping[str, Any], steps: int) -> int:
    return int((c["sheep"][:steps] + c["wolves"][:steps]).sum())


def _boids_metrics(model: Any) -> dict[str, float]:
    """Mesa's BoidFlockers: our Boids metrics from its boids (as tests/sim/test_boids.py)."""
    from examples.sim.boids import boid_metrics

    space = ax.sim.ContinuousSpace(model.space.width, model.space.height, torus=True)
    pos = np.asarray(model.space.agent_positions, dtype=np.float64)
    direction = np.array([agent.direction for agent in model.agents], dtype=np.float64)
    return boid_metrics(direction, float(space.nearest(pos)[1].mean()))


def _with_defaults(name: str, size: str, quick_overrides: dict[str, Any] | None) -> dict[str, Any]:
    params, _ = MESA_CONFIGURATIONS[name][size]
    return {**params, **(quick_overrides or {})}


def configs(quick: bool, sizes: list[str]) -> list[Config]:
    """Every entry at every size asked for; ``quick`` shrinks the large ones."""
    q = quick
    large_quick: dict[str, dict[str, Any] | None] = {
        "BoltzmannWealth": {"n": 1000, "width": 30, "height": 30} if q else None,
        "Schelling": {"width": 30, "height": 30} if q else None,
        "WolfSheep": (
            {"width": 30, "height": 30, "initial_sheep": 100, "initial_wolves": 50} if q else None
        ),
        "BoidFlockers": {"population_size": 100} if q else None,
        "VirusOnNetwork": {"num_nodes": 2000} if q else None,
    }
    out: list[Config] = []
    for size in sizes:
        over = large_quick if size == "large" else dict.fromkeys(large_quick)

        def params(name: str) -> dict[str, Any]:
            return _with_defaults(name, size, over[name])  # noqa: B023 (used at once)

        def steps(name: str) -> int:
            return MESA_CONFIGURATIONS[name][size][1]  # noqa: B023

        out += [
            Config(
                "Boltzmann",
                size,
                "BoltzmannWealth",
                "examples/sim/boltzmann.py:Boltzmann",
                params("BoltzmannWealth"),
                steps("BoltzmannWealth"),
                {"Gini": "gini"},
                _n_times_steps("n"),
                "agents x steps",
                [("gini", "final")],
            ),
            Config(
                "Schelling",
                size,
                "Schelling",
                "examples/sim/schelling.py:Schelling",
                {"minority_pc": 0.5, **params("Schelling")},
                steps("Schelling"),
                {"pct_happy": "pct_happy", "population": "population"},
                _population,
                "population x steps",
                [("pct_happy", "final")],
            ),
            Config(
                "Wolf-Sheep",
                size,
                "WolfSheep",
                "examples/sim/wolf_sheep.py:WolfSheep",
                params("WolfSheep"),
                steps("WolfSheep"),
                {"Sheep": "sheep", "Wolves": "wolves", "Grass": "grass"},
                _animals,
                "animals (sheep + wolves) alive at each step's start; grass patches never act",
                [("sheep", "curve"), ("wolves", "curve"), ("grass", "curve")],
            ),
            Config(
                "Boids",
                size,
                "BoidFlockers",
                "examples/sim/boids.py:Boids",
                params("BoidFlockers"),
                steps("BoidFlockers"),
                {},
                _n_times_steps("population_size"),
                "boids x steps",
                [("order", "final"), ("nn_distance", "final")],
                mesa_probe=_boids_metrics,
                target=60.0 if size == "large" else TARGET_RATIO,  # Agents.jl's ratio
            ),
            Config(
                "Virus on network",
                size,
                "VirusOnNetwork",
                "examples/sim/virus_on_network.py:VirusOnNetwork",
                params("VirusOnNetwork"),
                steps("VirusOnNetwork"),
                {"Infected": "infected", "Susceptible": "susceptible", "Resistant": "resistant"},
                _n_times_steps("num_nodes"),
                "nodes x steps (every node's agent is activated)",
                [("susceptible", "curve"), ("infected", "curve"), ("resistant", "curve")],
                # Mesa's 100,000-node model takes ~1 s a step and ~10 s to build.
                mesa_seeds=None if size == "small" or quick else 5,
            ),
        ]
    segregating = {
        "width": 20 if quick else 50,
        "height": 20 if quick else 50,
        "density": 0.8,
        "minority_pc": 0.5,
        "homophily": 0.7,
        "radius": 1,
    }
    out.append(
        Config(
            "Schelling, segregating",
            "agreement only",
            "Schelling",
            "examples/sim/schelling.py:Schelling",
            segregating,
            20,
            {"pct_happy": "pct_happy", "population": "population"},
            _population,
            "population x steps",
            [("pct_happy", "curve")],
            timed=False,
        )
    )
    return out


# -- Mesa ----------------------------------------------------------------------------------


def run_mesa(mesa: types.SimpleNamespace, cfg: Config, seed: int) -> dict[str, Any]:
    """One timed Mesa run; its curves under our metric names."""
    cls = mesa_class(mesa, cfg.mesa)
    gc.collect()
    t0 = time.perf_counter()
    if "simulator" in cls.__init__.__code__.co_varnames:
        simulator = mesa.ABMSimulator()
        model = cls(simulator=simulator, seed=seed, **cfg.params)
        t1, c1 = time.perf_counter(), time.thread_time()
        simulator.run_for(cfg.steps)
    else:
        # Virus on a network: Mesa's O(n^2) graph generator swapped for its O(n + E)
        # twin above 5,000 nodes, for the constructor only.
        with fast_erdos_renyi(int(cfg.params.get("num_nodes", 0)), seed=seed):
            model = cls(seed=seed, **cfg.params)
        t1, c1 = time.perf_counter(), time.thread_time()
        for _ in range(cfg.steps):
            model.step()
    t2, c2 = time.perf_counter(), time.thread_time()
    if cfg.mesa_probe is not None:  # no datacollector: only final values, measured untimed
        final = cfg.mesa_probe(model)
        curves = {k: np.full(cfg.steps + 1, v) for k, v in final.items()}
    else:
        frame = model.datacollector.get_model_vars_dataframe()
        curves = {ours: frame[theirs].to_numpy() for theirs, ours in cfg.columns.items()}
    return _record(cfg, curves, cfg.steps, t1 - t0, t2 - t1, c2 - c1)


def mesa_class(mesa: types.SimpleNamespace, name: str) -> Any:
    """Mesa's model class: one ``load_mesa`` gives, or ``module:Class`` under ``mesa.examples``."""
    if ":" not in name:
        return getattr(mesa, name)
    module, _, cls = name.partition(":")
    return getattr(importlib.import_module(f"mesa.examples.{module}"), cls)


# -- ambidex -------------------------------------------------------------------------------


def run_ours(cfg: Config, seed: int) -> dict[str, Any]:
    """One timed run of our model, doing exactly what ``ax.sim.run`` does."""
    gc.collect()
    t0 = time.perf_counter()
    model = cfg.load()(cfg.params, seed=np.random.SeedSequence(seed))
    model.setup(model.params)
    rows = [dict(model.metrics())]
    t1, c1 = time.perf_counter(), time.thread_time()
    done = 0
    while done < cfg.steps and model.running:
        model.step()
        done += 1
        model.step_index = done
        rows.append(dict(model.metrics()))
    t2, c2 = time.perf_counter(), time.thread_time()
    curves = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    # A Schelling run that has made everyone happy stops; Mesa's would stay put.
    curves = {
        k: np.concatenate([v, np.repeat(v[-1:], cfg.steps - done)]) for k, v in curves.items()
    }
    return _record(cfg, curves, done, t1 - t0, t2 - t1, c2 - c1)


def _record(
    cfg: Config, curves: Curves, steps: int, setup_s: float, steps_s: float, steps_cpu_s: float
) -> dict[str, Any]:
    agent_steps = cfg.agents(curves, cfg.params, steps)
    return {
        "curves": curves,
        "setup_s": setup_s,
        "steps_s": steps_s,
        "total_s": setup_s + steps_s,
        "steps": steps,
        "agent_steps": agent_steps,
        "agent_steps_per_s": agent_steps / steps_s if steps_s > 0 else float("nan"),
        "steps_cpu_s": steps_cpu_s,
        "agent_steps_per_cpu_s": agent_steps / steps_cpu_s if steps_cpu_s > 0 else float("nan"),
    }


def check_driver(cfg: Config, seed: int) -> None:
    """The timing driver gives ``ax.sim.run``'s metrics, value for value."""
    ours = run_ours(cfg, seed)["curves"]
    table = ax.sim.run(cfg.load(), cfg.params, steps=cfg.steps, seed=seed).metrics
    for name in table.columns[1:]:
        got = ours[name][: len(table)]
        if not np.array_equal(got, table[name]):
            raise AssertionError(f"{cfg.label}: driver and ax.sim.run differ on {name!r}")


def compile_probe(cfg: Config, small: Mapping[str, Any]) -> dict[str, float]:
    """First-run times in fresh processes: an empty numba cache (compiles), then a warm one."""
    path, _, cls = cfg.ours.partition(":")
    code = (
        "import json, sys, time\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "import ambidex as ax\n"
        f"M = ax.sim.load_model({str(REPO_ROOT / path) + ':' + cls!r})\n"
        "t0 = time.perf_counter()\n"
        f"ax.sim.run(M, {dict(small)!r}, steps=2, seed=0)\n"
        "t1 = time.perf_counter()\n"
        f"ax.sim.run(M, {dict(small)!r}, steps=2, seed=0)\n"
        "t2 = time.perf_counter()\n"
        "print(json.dumps({'first_s': t1 - t0, 'second_s': t2 - t1}))\n"
    )
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ambidex-numba-cache-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("cold_cache", "warm_cache"):
            proc = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                env=env,
                cwd=REPO_ROOT,
                timeout=600,
                check=True,
            )
            times = json.loads(proc.stdout.strip().splitlines()[-1])
            out[f"first_run_{label}_s"] = times["first_s"]
            out[f"second_run_{label}_s"] = times["second_s"]
    return out


# -- agreement -------------------------------------------------------------------------------


def agreement(
    cfg: Config, ours: list[dict[str, Any]], theirs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Mean (z) and distribution (KS) checks of every compared metric."""
    out = []
    for name, kind in cfg.compare:
        a = np.array([r["curves"][name][: cfg.steps + 1] for r in ours], dtype=np.float64)
        b = np.array([r["curves"][name][: cfg.steps + 1] for r in theirs], dtype=np.float64)
        steps = range(cfg.steps + 1) if kind == "curve" else [cfg.steps]
        zs = [_z(a[:, t], b[:, t]) for t in steps]
        worst = int(np.argmax(np.abs(zs)))
        ks = stats.ks_2samp(a[:, -1], b[:, -1])
        z_ok = abs(zs[worst]) <= Z_MAX
        ks_ok = bool(ks.pvalue >= KS_ALPHA)
        out.append(
            {
                "model": cfg.label,
                "metric": f"{name} ({'every step' if kind == 'curve' else 'final step'})",
                "ours_final_mean": float(a[:, -1].mean()),
                "ours_final_sd": float(a[:, -1].std(ddof=1)) if len(a) > 1 else 0.0,
                "mesa_final_mean": float(b[:, -1].mean()),
                "mesa_final_sd": float(b[:, -1].std(ddof=1)) if len(b) > 1 else 0.0,
                "max_abs_z": float(abs(zs[worst])),
                "max_abs_z_step": list(steps)[worst],
                "ks_statistic": float(ks.statistic),
                "ks_pvalue": float(ks.pvalue),
                "seeds": len(a),
                "passed": z_ok and ks_ok,
            }
        )
    return out


def _z(a: np.ndarray, b: np.ndarray) -> float:
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return 0.0
    se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    if se == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / se


# -- the run ---------------------------------------------------------------------------------


def measure(
    mesa: types.SimpleNamespace, cfg: Config, seeds: list[int], probe: bool
) -> dict[str, Any]:
    small = {**cfg.params}
    for key in ("width", "height"):
        if key in small:
            small[key] = min(int(small[key]), 10)
    for key in ("n", "initial_sheep", "initial_wolves", "population_size", "num_nodes"):
        if key in small:
            small[key] = min(int(small[key]), 20)
    t = time.perf_counter()
    model = cfg.load()
    names = ax.sim.run(model, small, steps=2, seed=0).metrics.columns  # compile, or load
    first_run_s = time.perf_counter() - t
    absent = [m for m, _ in cfg.compare if m not in names]
    if absent:
        raise SystemExit(
            f"{cfg.ours} has no metric {', '.join(map(repr, absent))} (it has "
            f"{', '.join(names[1:])}): update the {cfg.name!r} entry in configs()"
        )
    t = time.perf_counter()
    ax.sim.run(model, small, steps=2, seed=0)
    second_run_s = time.perf_counter() - t
    check_driver(cfg, seeds[0])
    compile_info: dict[str, float] = {
        "first_run_in_process_s": first_run_s,
        "second_run_in_process_s": second_run_s,
    }
    if probe:
        compile_info.update(compile_probe(cfg, small))

    ours_runs: list[dict[str, Any]] = []
    mesa_runs: list[dict[str, Any]] = []
    for i, seed in enumerate(seeds):
        order = ["mesa", "ours"] if i % 2 == 0 else ["ours", "mesa"]
        for system in order:
            if system == "mesa" and cfg.mesa_seeds is not None and i >= cfg.mesa_seeds:
                continue
            if system == "mesa":
                rec = run_mesa(mesa, cfg, seed)
                mesa_runs.append(rec)
            else:
                rec = run_ours(cfg, seed)
                ours_runs.append(rec)
        mesa_s = f"{mesa_runs[-1]['total_s']:.3f} s" if len(mesa_runs) > i else "-"
        console.print(
            f"  {cfg.label} seed {seed}: Mesa {mesa_s}, "
            f"ambidex {ours_runs[-1]['total_s'] * 1000:.1f} ms"
        )
    return {
        "model": cfg.label,
        "name": cfg.name,
        "size": cfg.size,
        "mesa_model": f"mesa.examples {cfg.mesa}",
        "params": cfg.params,
        "steps": cfg.steps,
        "timed": cfg.timed,
        "target_ratio": cfg.target,
        "agent_steps_counted": cfg.agents_note,
        "compile": compile_info,
        "ours": _summary(ours_runs),
        "mesa": _summary(mesa_runs),
        "agreement": agreement(cfg, ours_runs, mesa_runs),
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    return {
        "runs": len(runs),
        "median_setup_s": med("setup_s"),
        "median_steps_s": med("steps_s"),
        "median_total_s": med("total_s"),
        "median_agent_steps": med("agent_steps"),
        "median_agent_steps_per_s": med("agent_steps_per_s"),
        "median_steps_cpu_s": med("steps_cpu_s"),
        "median_agent_steps_per_cpu_s": med("agent_steps_per_cpu_s"),
        "per_run": [
            {k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items() if k != "curves"}
            for r in runs
        ],
    }


def _ratio(name: str, value: float, target: float | None, note: str) -> dict[str, Any]:
    if target is None:
        return {"ratio": name, "value": value, "target": "-", "met": None, "note": note}
    return {
        "ratio": name,
        "value": value,
        "target": f"≥ {target:g}",
        "met": verdict(value, target, True),
        "note": note,
    }


def compute_ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        if not r["timed"]:
            continue
        ours, mesa = r["ours"], r["mesa"]
        out.append(
            _ratio(
                f"{r['model']}: ambidex / Mesa (agent-steps/s)",
                ours["median_agent_steps_per_s"] / mesa["median_agent_steps_per_s"],
                r["target_ratio"],
                f"step phase; {r['agent_steps_counted']}",
            )
        )
    for r in results:
        if not r["timed"]:
            continue
        out.append(
            _ratio(
                f"(extra) {r['model']}: ambidex / Mesa (agent-steps per CPU second)",
                r["ours"]["median_agent_steps_per_cpu_s"]
                / r["mesa"]["median_agent_steps_per_cpu_s"],
                None,
                "step phase in the thread's CPU time: what preemption on a loaded machine "
                "does not add",
            )
        )
    for r in results:
        if not r["timed"]:
            continue
        out.append(
            _ratio(
                f"(extra) {r['model']}: Mesa / ambidex (wall time, setup + steps)",
                r["mesa"]["median_total_s"] / r["ours"]["median_total_s"],
                None,
                "whole run, compile excluded",
            )
        )
    return out


def _print_speed(results: list[dict[str, Any]]) -> None:
    for size in dict.fromkeys(r["size"] for r in results if r["timed"]):
        _print_speed_table([r for r in results if r["size"] == size], size)
    _print_compile(results)


def _print_speed_table(results: list[dict[str, Any]], size: str) -> None:
    table = Table(
        title=f"speed, Mesa's {size!r} configurations (medians over seeds; compile excluded)"
    )
    for col in (
        "model",
        "system",
        "setup ms",
        "steps ms",
        "agent-steps",
        "agent-steps/s",
        "÷ Mesa",
        "first run in process s",
    ):
        table.add_column(col, justify="left" if col in {"model", "system"} else "right")
    for r in results:
        if not r["timed"]:
            continue
        base = r["mesa"]["median_agent_steps_per_s"]
        for system, label in (("mesa", "Mesa"), ("ours", "ambidex")):
            s = r[system]
            table.add_row(
                r["model"],
                label,
                f"{s['median_setup_s'] * 1000:.1f}",
                f"{s['median_steps_s'] * 1000:.1f}",
                f"{s['median_agent_steps']:,.0f}",
                f"{s['median_agent_steps_per_s']:,.0f}",
                f"{s['median_agent_steps_per_s'] / base:.1f}",
                f"{r['compile']['first_run_in_process_s']:.2f}" if system == "ours" else "-",
            )
    console.print(table)


def _print_compile(results: list[dict[str, Any]]) -> None:
    probes = [r for r in results if r["timed"] and "first_run_cold_cache_s" in r["compile"]]
    if probes:
        table = Table(title="numba compile: first run of a tiny model in a fresh process")
        for col in ("model", "empty cache (compiles) s", "warm cache (loads) s", "next run s"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for r in probes:
            c = r["compile"]
            table.add_row(
                r["model"],
                f"{c['first_run_cold_cache_s']:.2f}",
                f"{c['first_run_warm_cache_s']:.2f}",
                f"{c['second_run_warm_cache_s']:.4f}",
            )
        console.print(table)


def _print_agreement(results: list[dict[str, Any]]) -> None:
    table = Table(title=f"agreement with Mesa (pass: max |z| ≤ {Z_MAX:g} and KS p ≥ {KS_ALPHA:g})")
    for col in (
        "model",
        "metric",
        "ambidex final",
        "Mesa final",
        "max |z| (step)",
        "KS p",
        "result",
    ):
        table.add_column(col, justify="left" if col in {"model", "metric"} else "right")
    for r in results:
        for a in r["agreement"]:
            table.add_row(
                a["model"],
                a["metric"],
                f"{a['ours_final_mean']:.4g} ± {a['ours_final_sd']:.2g}",
                f"{a['mesa_final_mean']:.4g} ± {a['mesa_final_sd']:.2g}",
                f"{a['max_abs_z']:.2f} ({a['max_abs_z_step']})",
                f"{a['ks_pvalue']:.3f}",
                "[green]pass[/]" if a["passed"] else "[red]FAIL[/]",
            )
    console.print(table)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="Mesa's small configurations, then shrunken large ones on 3 seeds, no compile "
        "probe: a smoke test",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds per model (10; quick: 3 for the shrunken large sizes)",
    )
    parser.add_argument(
        "--no-compile-probe",
        action="store_true",
        help="skip the fresh-process numba compile measurement (skipped with --quick)",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="results file name under benchmarks/results/ (default: sim_vs_mesa, or "
        "sim_vs_mesa-quick with --quick)",
    )
    parser.add_argument(
        "--sizes",
        default="small,large",
        help="Mesa benchmark configurations to run, comma-separated (default: small,large)",
    )
    args = parser.parse_args(argv)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in args.sizes if s not in ("small", "large")]
    if bad or not args.sizes:
        parser.error(f"--sizes takes small and/or large, got {args.sizes!r}")
    args.seeds = args.seeds or 10
    return args


def _mesa_missing(mesa: types.SimpleNamespace, cfg: Config) -> str | None:
    try:
        mesa_class(mesa, cfg.mesa)
    except ImportError as exc:
        return f"Mesa's {cfg.mesa} does not import: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        mesa = load_mesa()
    except ImportError as exc:
        console.print(f"[red]Mesa is needed as the reference:[/] {exc} (pip install 'mesa>=3.1')")
        return 2
    info = machine_info()
    for dist in ("mesa", "numba", "numpy", "scipy"):
        info[dist] = importlib.metadata.version(dist)
    seeds = list(range(args.seeds))
    quick_seeds = seeds[:3] if args.quick else seeds
    console.print(
        f"[bold]sim_vs_mesa[/] {info['date_utc']}  nproc={info['nproc']}  "
        f"python {info['python']}  mesa {info['mesa']}  numba {info['numba']}  "
        f"seeds={len(seeds)}  quick={args.quick}  load {info['loadavg_at_start']}"
    )
    started = time.perf_counter()
    probe = not (args.quick or args.no_compile_probe)
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    probed: set[str] = set()
    for cfg in configs(args.quick, args.sizes):
        reason = cfg.missing() or _mesa_missing(mesa, cfg)
        if reason:
            if cfg.name not in {s.partition(":")[0] for s in skipped}:
                console.print(f"[yellow]skipped[/] {cfg.name}: {reason}")
                skipped.append(f"{cfg.name}: {reason}")
            continue
        # Small sizes are cheap: all seeds, or 5 with --quick (a smoke test: Mesa and ours
        # are both seeded, so its agreement checks give the same answer every time).
        use = (seeds[:5] if args.quick else seeds) if cfg.size == "small" else quick_seeds
        results.append(measure(mesa, cfg, use, probe and cfg.timed and cfg.name not in probed))
        probed.add(cfg.name)

    _print_speed(results)
    _print_agreement(results)
    ratios = compute_ratios(results)
    print_ratios(
        console, ratios, title="ratios (medians over seeds)", value_format=lambda v: f"{v:.1f}"
    )
    checks = [a for r in results for a in r["agreement"]]
    failed = [f"{a['model']}: {a['metric']}" for a in checks if not a["passed"]]
    console.print(
        f"agreement: {len(checks) - len(failed)}/{len(checks)} checks passed"
        + (f"; [red]failed:[/] {', '.join(failed)}" if failed else "")
    )
    elapsed = time.perf_counter() - started
    console.print(f"elapsed {elapsed:.1f} s")

    data = {
        "benchmark": "sim_vs_mesa",
        "machine": info,
        "settings": {
            "quick": args.quick,
            "seeds": seeds,
            "target_ratio": TARGET_RATIO,
            "agreement": f"max |z| <= {Z_MAX} over compared steps and KS p >= {KS_ALPHA} "
            "on final values",
            "timing": "per seed one run of each system, alternating which goes first; "
            "gc.collect() before each; setup and step phases timed separately; "
            "ambidex after a warm-up run (numba compile excluded)",
        },
        "models": results,
        "skipped": skipped,
        "ratios": ratios,
        "agreement_passed": not failed,
        "elapsed_s": elapsed,
    }
    name = args.output or ("sim_vs_mesa-quick" if args.quick else "sim_vs_mesa")
    path = write_json(name, data)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
