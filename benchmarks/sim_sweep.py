"""Sweep scaling: the same sweep on 1 and 2 cpu workers; identical results, efficiency.

The sweep: a shipped model (default ``examples/sim/wolf_sheep.py``, Mesa's
benchmark size) over a small grid with replicates, every run ``--steps`` long.
It runs through ``ax.sim.sweep`` on a runtime with 1 worker process and on one
with 2; each runtime first runs a warm-up sweep (workers started, numba kernels
loaded from cache), then the timed sweep ``--rounds`` times (median reported).

* scaling efficiency = T(1 worker) / (2 x T(2 workers)); target >= 0.90;
* identical results: the sweep digests (SHA-256 over every run's metrics) on 1
  and 2 workers must be equal, and equal to each run computed on its own with
  ``ax.sim.run(seed=SeedSequence(seed).spawn(n)[k])``.

Anchor: the same runs through ``concurrent.futures.ProcessPoolExecutor`` (1 and
2 processes, warmed up the same way), each calling ``ax.sim.run`` with the same
child seed: the ceiling a hand-rolled pool reaches on this machine, and a
second check that the results are the same.

    .venv/bin/python benchmarks/sim_sweep.py           # full run (~2-4 min)
    .venv/bin/python benchmarks/sim_sweep.py --quick   # tiny sweep: a smoke test
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import sys
import time
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import ambidex as ax
from _common import REPO_ROOT, machine_info, print_ratios, verdict, write_json

console = Console(width=int(os.environ.get("COLUMNS", "150")))

TARGET_EFFICIENCY = 0.90


def _one_run(model: str, params: dict[str, Any], steps: int, seed: int, k: int) -> str:
    """One run in a ProcessPoolExecutor worker; returns its metrics digest."""
    child = np.random.SeedSequence(seed, spawn_key=(k,))
    return ax.sim.run(model, params, steps=steps, seed=child).metrics.digest()


def _plan(grid: dict[str, list[Any]], replicates: int) -> list[dict[str, Any]]:
    points = ax.sim.grid_points(grid)
    return [points[k // replicates] for k in range(len(points) * replicates)]


def time_ambidex(
    model: str,
    grid: dict[str, list[Any]],
    replicates: int,
    steps: int,
    seed: int,
    workers: int,
    rounds: int,
) -> dict[str, Any]:
    with ax.Runtime(cpu_workers=workers):
        ax.sim.sweep(model, grid, replicates=workers, steps=2, seed=seed + 1)  # warm-up
        times, digests = [], set()
        for _ in range(rounds):
            t0 = time.perf_counter()
            result = ax.sim.sweep(model, grid, replicates=replicates, steps=steps, seed=seed)
            times.append(time.perf_counter() - t0)
            digests.add(result.digest())
    return {
        "workers": workers,
        "times_s": times,
        "median_s": statistics.median(times),
        "digests": sorted(digests),
        "run_digests": [r.metrics.digest() for r in result.runs],
    }


def time_executor(
    model: str,
    grid: dict[str, list[Any]],
    replicates: int,
    steps: int,
    seed: int,
    workers: int,
    rounds: int,
) -> dict[str, Any]:
    plan = _plan(grid, replicates)
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        list(
            pool.map(
                _one_run,
                [model] * workers,
                [plan[0]] * workers,
                [2] * workers,
                [seed + 1] * workers,
                range(workers),
            )
        )  # warm-up
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            futures = [
                pool.submit(_one_run, model, params, steps, seed, k)
                for k, params in enumerate(plan)
            ]
            digests = [f.result() for f in futures]
            times.append(time.perf_counter() - t0)
    return {
        "workers": workers,
        "times_s": times,
        "median_s": statistics.median(times),
        "run_digests": digests,
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny sweep: a smoke test")
    parser.add_argument("--model", default=str(REPO_ROOT / "examples" / "sim" / "wolf_sheep.py"))
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default 400)")
    parser.add_argument("--replicates", type=int, default=None, help="per grid point (default 8)")
    parser.add_argument("--rounds", type=int, default=None, help="timed sweeps (default 3)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--output", default=None, help="results/<name>.json (default sim_sweep)")
    args = parser.parse_args(argv)
    args.steps = args.steps or (5 if args.quick else 400)
    args.replicates = args.replicates or (2 if args.quick else 8)
    args.rounds = args.rounds or (1 if args.quick else 3)
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    model_cls = ax.sim.load_model(args.model)
    grid: dict[str, list[Any]] = {"sheep_reproduce": [0.04, 0.4], "wolf_reproduce": [0.05, 0.2]}
    if model_cls.model_name() != "WolfSheep":
        grid = {}
    if args.quick:
        grid = {k: v[:1] for k, v in grid.items()}
    n_runs = len(ax.sim.grid_points(grid)) * args.replicates
    info = machine_info()
    console.print(
        f"[bold]sim_sweep[/] {info['date_utc']}  nproc={info['nproc']}  "
        f"usable={info['usable_cpus']}  model={model_cls.model_name()}  grid={grid}  "
        f"replicates={args.replicates}  runs={n_runs}  steps={args.steps}  rounds={args.rounds}  "
        f"load {info['loadavg_at_start']}"
    )
    started = time.perf_counter()
    ours = {
        w: time_ambidex(args.model, grid, args.replicates, args.steps, args.seed, w, args.rounds)
        for w in (1, 2)
    }
    anchor = {
        w: time_executor(args.model, grid, args.replicates, args.steps, args.seed, w, args.rounds)
        for w in (1, 2)
    }
    plan = _plan(grid, args.replicates)
    alone = [_one_run(args.model, p, args.steps, args.seed, k) for k, p in enumerate(plan)]

    table = Table(title="sweep wall time (median over rounds)")
    for col in ("system", "workers", "median s", "runs/s", "rounds (s)"):
        table.add_column(col)
    for label, rows in (("ambidex ax.sim.sweep", ours), ("ProcessPoolExecutor (anchor)", anchor)):
        for w, r in rows.items():
            table.add_row(
                label,
                str(w),
                f"{r['median_s']:.2f}",
                f"{n_runs / r['median_s']:.2f}",
                ", ".join(f"{t:.2f}" for t in r["times_s"]),
            )
    console.print(table)

    eff = ours[1]["median_s"] / (2 * ours[2]["median_s"])
    eff_anchor = anchor[1]["median_s"] / (2 * anchor[2]["median_s"])
    identical = (
        ours[1]["digests"] == ours[2]["digests"]
        and len(ours[1]["digests"]) == 1
        and ours[1]["run_digests"] == ours[2]["run_digests"] == alone
        and anchor[1]["run_digests"] == anchor[2]["run_digests"] == alone
    )
    ratios = [
        {
            "ratio": "scaling efficiency, ambidex (T1 / 2 T2)",
            "value": eff,
            "target": f">= {TARGET_EFFICIENCY}",
            "met": verdict(eff, TARGET_EFFICIENCY, True),
            "note": f"T1 {ours[1]['median_s']:.2f} s, T2 {ours[2]['median_s']:.2f} s",
        },
        {
            "ratio": "scaling efficiency, ProcessPoolExecutor",
            "value": eff_anchor,
            "target": "-",
            "met": None,
            "note": "anchor: the same runs by hand",
        },
        {
            "ratio": "ambidex 2 workers / executor 2 workers (time)",
            "value": ours[2]["median_s"] / anchor[2]["median_s"],
            "target": "-",
            "met": None,
            "note": "below 1: ambidex faster",
        },
        {
            "ratio": "identical results (1 vs 2 workers, vs runs alone)",
            "value": float(identical),
            "target": "= 1",
            "met": identical,
            "note": f"digest {ours[1]['digests'][0][:16]}",
        },
    ]
    print_ratios(console, ratios)
    console.print(f"elapsed {time.perf_counter() - started:.1f} s")
    data = {
        "benchmark": "sim_sweep",
        "machine": info,
        "config": {
            "model": model_cls.model_name(),
            "grid": grid,
            "replicates": args.replicates,
            "runs": n_runs,
            "steps": args.steps,
            "rounds": args.rounds,
            "seed": args.seed,
        },
        "ambidex": {
            str(w): {k: v for k, v in r.items() if k != "run_digests"} for w, r in ours.items()
        },
        "anchor": {
            str(w): {k: v for k, v in r.items() if k != "run_digests"} for w, r in anchor.items()
        },
        "efficiency": eff,
        "efficiency_anchor": eff_anchor,
        "identical": identical,
        "ratios": ratios,
    }
    name = args.output or ("sim_sweep-quick" if args.quick else "sim_sweep")
    console.print(f"wrote {write_json(name, data)}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
