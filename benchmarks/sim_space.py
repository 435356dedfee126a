"""ContinuousSpace neighbours and Mesa's Boids: ours against their anchors, in one run.

Three measurements, each with its anchor timed in the same process, interleaved:

1. **400 agents** (Boids "large" geometry: 150 x 150 torus, radius 15, ~12 neighbours
   each). Every point's neighbours as a CSR index, by
   * ``all-pairs``: the anchor, a plain numba loop over all n^2 pairs writing the
     same CSR (rows come out ascending by construction), written so that numba
     vectorizes it;
   * ``neighbors()``: ``ContinuousSpace.neighbors`` on positions it has not seen
     (two position sets alternate, so its remembered answer never applies);
   * ``neighbors() again``: the same positions asked twice (the remembered answer);
   * ``main's neighbors()``: the implementation on branch ``main`` (numpy cell
     lists rebuilt per call), loaded from ``git show main:...``;
   * ``kernel query``: a numba kernel calling ``cells.neighbors_of`` for every agent
     over cell lists built once (what a sequential model does inside its step).
   Target: ``neighbors()`` <= 2x all-pairs.
2. **Scaling**: ``neighbors()`` at 10^4, 10^5 and 10^6 agents at the same density
   (same neighbours per agent); time per agent should stay flat (target: 10^6 within
   2x of 10^4). Median and fastest repeat: on a loaded machine a call longer than a
   scheduler slice is preempted by other jobs, which the fastest repeat escapes.
3. **Boids**: ``examples/sim/boids.py`` against Mesa 3.3's ``BoidFlockers`` at Mesa's
   benchmark "small" (200 boids, 100 x 100, vision 5, 20 steps) and "large" (400,
   150 x 150, vision 15, 10 steps) configurations. Per seed, both build a model and
   run the steps, in alternating order; the step phase is timed. Mesa's ``step``
   includes its own heading statistics; ours is timed as ``step()`` alone and as
   ``step()`` + ``metrics()`` (heading, order and the nearest-neighbour distance,
   what ``ax.sim.run`` does). Target: >= 60x Mesa on "large" (step alone).

Times are medians over repeats; the machine's load average is recorded at the start
and end (benchmarks/results/sim_space.json).

    PYTHONPATH=src .venv/bin/python benchmarks/sim_space.py           # ~2 min
    PYTHONPATH=src .venv/bin/python benchmarks/sim_space.py --quick   # ~30 s
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
from rich.console import Console
from rich.table import Table

import ambidex as ax
from _common import REPO_ROOT, machine_info, print_ratios, verdict, write_json
from _mesa import load_mesa
from ambidex.sim import cells

sys.path.insert(0, str(REPO_ROOT))
from examples.sim.boids import Boids

WIDTH, RADIUS, N_SMALL = 150.0, 15.0, 400
MESA_CONFIGS = {
    "small": ({"population_size": 200, "width": 100, "height": 100, "vision": 5}, 20),
    "large": ({"population_size": 400, "width": 150, "height": 150, "vision": 15}, 10),
}


@numba.njit(cache=True)
def all_pairs(
    p: np.ndarray, width: float, height: float, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """The anchor: every point's neighbours by checking all pairs, as a CSR index.

    Written the way numba runs it fastest: coordinates in two plain arrays, the
    distance test over one whole row into a mask (branch-free, so it vectorizes),
    then the row's hits copied out. (A loop that writes each hit as it finds it
    runs ~7x slower here: it does not vectorize.)
    """
    n = len(p)
    xs, ys = p[:, 0].copy(), p[:, 1].copy()
    start = np.zeros(n + 1, dtype=np.int64)
    buf = np.empty(n * n, dtype=np.int64)
    hit = np.empty(n, dtype=np.bool_)
    k = 0
    r2 = radius * radius
    for i in range(n):
        for j in range(n):
            dx = abs(xs[j] - xs[i])
            dy = abs(ys[j] - ys[i])
            dx = min(dx, width - dx)
            dy = min(dy, height - dy)
            hit[j] = dx * dx + dy * dy <= r2
        hit[i] = False
        for j in range(n):
            if hit[j]:
                buf[k] = j
                k += 1
        start[i + 1] = k
    return start, buf[:k].copy()


@numba.njit(cache=True)
def kernel_query(state: cells.Cells, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Every agent's neighbours from the cell lists, one ``neighbors_of`` call each."""
    n = len(state.pos)
    start = np.zeros(n + 1, dtype=np.int64)
    buf = np.empty(16 * n, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    for a in range(n):
        k = cells.neighbors_of(state, a, radius, out)
        lo = start[a]
        if lo + k > len(buf):
            grown = np.empty(2 * (lo + k), dtype=np.int64)
            grown[:lo] = buf[:lo]
            buf = grown
        buf[lo : lo + k] = out[:k]
        start[a + 1] = lo + k
    return start, buf[: start[n]].copy()


def main_continuous() -> types.ModuleType | None:
    """Branch main's ``_continuous.py`` as a module of its own (None when git cannot show it)."""
    try:
        text = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "show", "main:src/ambidex/sim/_continuous.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp()) / "main_continuous.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("main_continuous", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(fn: Callable[..., Any], *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def cpu_timed(fn: Callable[..., Any], *args: Any) -> tuple[float, float]:
    """Wall time and this thread's CPU time of one call (CPU time leaves out preemption)."""
    w0, c0 = time.perf_counter(), time.thread_time()
    fn(*args)
    return time.perf_counter() - w0, time.thread_time() - c0


def bench_400(rounds: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    space = ax.sim.ContinuousSpace(WIDTH, WIDTH)
    sets = [space.random_positions(rng, N_SMALL) for _ in range(2)]
    old_module = main_continuous()
    old = old_module.ContinuousSpace(WIDTH, WIDTH) if old_module else None
    state = space.cells(sets[0].copy(), RADIUS)
    want = all_pairs(sets[0], WIDTH, WIDTH, RADIUS)
    got = space.neighbors(sets[0], RADIUS)
    assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True)), "disagree"
    ks, _ = kernel_query(state, RADIUS)
    assert np.array_equal(np.diff(ks), np.diff(want[0])), "kernel query disagrees"
    cases: dict[str, Callable[[int], Any]] = {
        "all-pairs (anchor)": lambda i: all_pairs(sets[i % 2], WIDTH, WIDTH, RADIUS),
        "neighbors()": lambda i: space.neighbors(sets[i % 2], RADIUS),
        "neighbors() again": lambda i: space.neighbors(sets[0], RADIUS),
        "kernel query": lambda i: kernel_query(state, RADIUS),
    }
    if old is not None:
        cases["main's neighbors()"] = lambda i: old.neighbors(sets[i % 2], RADIUS)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(rounds):
        names = list(cases)
        names = names[i % len(names) :] + names[: i % len(names)]
        for name in names:
            if name == "neighbors() again":
                space.neighbors(sets[0], RADIUS)  # the remembered answer is for these
            samples[name].append(timed(cases[name], i))
    return {name: statistics.median(s) * 1e6 for name, s in samples.items()}


def bench_scaling(sizes: list[int]) -> dict[int, dict[str, float]]:
    """ns per agent of ``neighbors()`` at each size: median and fastest of the repeats."""
    rng = np.random.default_rng(2)
    per_agent: dict[int, dict[str, float]] = {}
    for n in sizes:
        side = WIDTH * np.sqrt(n / N_SMALL)  # the density of 400 agents on 150 x 150
        space = ax.sim.ContinuousSpace(side, side)
        sets = [space.random_positions(rng, n) for _ in range(2)]
        space.neighbors(sets[1], RADIUS)
        reps = {10_000: 21, 100_000: 9}.get(n, 5)
        wall, cpu = [], []
        for i in range(reps):
            gc.collect()
            w, c = cpu_timed(space.neighbors, sets[i % 2], RADIUS)
            wall.append(w / n * 1e9)
            cpu.append(c / n * 1e9)
        per_agent[n] = {
            "median_ns": statistics.median(wall),
            "min_ns": min(wall),
            "cpu_median_ns": statistics.median(cpu),
        }
    return per_agent


def mesa_steps(
    mesa: types.SimpleNamespace, params: dict[str, Any], steps: int, seed: int
) -> tuple[float, float]:
    model = mesa.BoidFlockers(seed=seed, **params)
    gc.collect()
    w0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(steps):
        model.step()
    return (time.perf_counter() - w0) / steps, (time.thread_time() - c0) / steps


def our_steps(
    params: dict[str, Any], steps: int, seed: int, with_metrics: bool
) -> tuple[float, float]:
    model = Boids(params, seed=seed)
    model.setup(model.params)
    model.metrics()
    gc.collect()
    w0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(steps):
        model.step()
        if with_metrics:
            model.metrics()
    return (time.perf_counter() - w0) / steps, (time.thread_time() - c0) / steps


def bench_boids(seeds: int) -> dict[str, dict[str, float]]:
    mesa = load_mesa()
    out: dict[str, dict[str, float]] = {}
    for name, (params, steps) in MESA_CONFIGS.items():
        our_steps(params, 2, 0, True)  # compile (or load from numba's cache) first
        runs: dict[str, list[tuple[float, float]]] = {
            "mesa": [],
            "ours_step": [],
            "ours_step_metrics": [],
        }
        for seed in range(seeds):
            order = ["mesa", "ours_step", "ours_step_metrics"]
            order = order[seed % 3 :] + order[: seed % 3]
            for who in order:
                if who == "mesa":
                    runs[who].append(mesa_steps(mesa, params, steps, seed))
                else:
                    runs[who].append(our_steps(params, steps, seed, who == "ours_step_metrics"))
        med = {who: statistics.median(w for w, _ in t) * 1e6 for who, t in runs.items()}
        cpu = {who: statistics.median(c for _, c in t) * 1e6 for who, t in runs.items()}
        out[name] = {
            "mesa_step_us": med["mesa"],
            "ours_step_us": med["ours_step"],
            "ours_step_metrics_us": med["ours_step_metrics"],
            "speedup_step": med["mesa"] / med["ours_step"],
            "speedup_step_metrics": med["mesa"] / med["ours_step_metrics"],
            "cpu_mesa_step_us": cpu["mesa"],
            "cpu_ours_step_us": cpu["ours_step"],
            "cpu_speedup_step": cpu["mesa"] / cpu["ours_step"],
            "cpu_speedup_step_metrics": cpu["mesa"] / cpu["ours_step_metrics"],
        }
    return out


def _ratio(name: str, value: float, target: float, higher: bool, note: str) -> dict[str, Any]:
    sign = ">=" if higher else "<="
    return {
        "ratio": name,
        "value": value,
        "target": f"{sign} {target:g}",
        "met": verdict(value, target, higher),
        "note": note,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, up to 10^5 agents")
    parser.add_argument("--output", default=None, help="results/<name>.json (default sim_space)")
    args = parser.parse_args(argv)
    console = Console()
    machine = machine_info()
    console.print(f"load average at start: {machine['loadavg_at_start']}")

    small = bench_400(40 if args.quick else 200)
    table = Table(title=f"every point's neighbours, {N_SMALL} agents (median us)")
    table.add_column("what")
    table.add_column("us", justify="right")
    table.add_column("/ all-pairs", justify="right")
    for name, us in small.items():
        table.add_row(name, f"{us:.1f}", f"{us / small['all-pairs (anchor)']:.2f}")
    console.print(table)

    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    scaling = bench_scaling(sizes)
    table = Table(title="neighbors() per agent, same density (ns)")
    table.add_column("agents", justify="right")
    table.add_column("median", justify="right")
    table.add_column("fastest", justify="right")
    table.add_column("CPU time, median", justify="right")
    for n, ns in scaling.items():
        table.add_row(
            f"{n:,}", f"{ns['median_ns']:.0f}", f"{ns['min_ns']:.0f}", f"{ns['cpu_median_ns']:.0f}"
        )
    console.print(table)

    boids = bench_boids(2 if args.quick else 6)
    table = Table(title="Boids step, Mesa 3.3 BoidFlockers vs ours (median us)")
    for col in ("config", "Mesa", "ours step", "x", "ours step+metrics", "x ", "CPU-time x"):
        table.add_column(col, justify="right")
    for name, b in boids.items():
        table.add_row(
            name,
            f"{b['mesa_step_us']:.0f}",
            f"{b['ours_step_us']:.0f}",
            f"{b['speedup_step']:.0f}",
            f"{b['ours_step_metrics_us']:.0f}",
            f"{b['speedup_step_metrics']:.0f}",
            f"{b['cpu_speedup_step']:.0f} / {b['cpu_speedup_step_metrics']:.0f}",
        )
    console.print(table)

    anchor = small["all-pairs (anchor)"]
    ratios = [
        _ratio("neighbors() / all-pairs, 400", small["neighbors()"] / anchor, 2, False, ""),
        _ratio(
            f"per agent {max(sizes):,} / 10,000",
            scaling[max(sizes)]["median_ns"] / scaling[10_000]["median_ns"],
            2,
            False,
            "medians; flat is 1",
        ),
        _ratio(
            f"per agent {max(sizes):,} / 10,000, CPU time",
            scaling[max(sizes)]["cpu_median_ns"] / scaling[10_000]["cpu_median_ns"],
            2,
            False,
            "medians of thread CPU time: preemption left out",
        ),
        _ratio("Mesa / ours, Boids large", boids["large"]["speedup_step"], 60, True, "step"),
        _ratio(
            "Mesa / ours, Boids large, CPU time",
            boids["large"]["cpu_speedup_step"],
            60,
            True,
            "step; thread CPU time",
        ),
        _ratio(
            "Mesa / ours, Boids large, +metrics",
            boids["large"]["speedup_step_metrics"],
            60,
            True,
            "step + metrics()",
        ),
    ]
    print_ratios(console, ratios)
    path = write_json(
        args.output or ("sim_space-quick" if args.quick else "sim_space"),
        {
            "machine": machine,
            "neighbors_400_us": small,
            "neighbors_ns_per_agent": {str(n): v for n, v in scaling.items()},
            "boids": boids,
            "ratios": ratios,
        },
    )
    console.print(f"load average at end: {[round(x, 2) for x in os.getloadavg()]}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
