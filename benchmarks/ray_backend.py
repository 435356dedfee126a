"""The ray backend against the local process pool: per-task overhead and a 64-run sweep.

* per-task overhead: a trivial ``@ax.cpu`` function called ``--calls`` times one
  after another (round trip) and as one ``.map`` (throughput), on
  ``ax.Runtime(cpu_workers=2)`` and on ``ax.Runtime(backend="ray", cpu_workers=2)``
  (a local Ray, ``ray.init(num_cpus=2)``, started before the clock runs);
* a 64-run sweep of ``examples/sim/wolf_sheep.py`` (4 grid points x 16
  replicates, ``--steps`` steps each) on each backend: wall time and whether the
  two sweeps are bit-identical (same digest).

Each backend is warmed up first (workers started, modules imported, numba
kernels loaded).

    .venv/bin/python benchmarks/ray_backend.py            # ~2 min
    .venv/bin/python benchmarks/ray_backend.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

import ambidex as ax
from _common import REPO_ROOT, machine_info, print_ratios, write_json

console = Console(width=int(os.environ.get("COLUMNS", "150")))
MODEL = str(REPO_ROOT / "examples" / "sim" / "wolf_sheep.py")
GRID = {"sheep_reproduce": [0.04, 0.4], "wolf_reproduce": [0.05, 0.2]}


@ax.cpu
def noop(x: int) -> int:
    return x


def overhead(calls: int) -> dict[str, Any]:
    for i in range(20):
        noop(i)  # warm-up
    samples = []
    for i in range(calls):
        t0 = time.perf_counter_ns()
        noop(i)
        samples.append(time.perf_counter_ns() - t0)
    t0 = time.perf_counter()
    noop.map(range(calls))
    mapped = time.perf_counter() - t0
    return {
        "round_trip_median_us": statistics.median(samples) / 1000,
        "round_trip_p90_us": sorted(samples)[int(0.9 * len(samples))] / 1000,
        "map_calls_per_s": calls / mapped,
    }


def sweep(replicates: int, steps: int) -> dict[str, Any]:
    ax.sim.sweep(MODEL, GRID, replicates=1, steps=2, seed=1, progress=False)  # warm-up
    t0 = time.perf_counter()
    result = ax.sim.sweep(MODEL, GRID, replicates=replicates, steps=steps, seed=7, progress=False)
    return {"runs": len(result.runs), "wall_s": time.perf_counter() - t0, "digest": result.digest()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    calls = args.calls or (50 if args.quick else 500)
    steps = args.steps or (5 if args.quick else 200)
    replicates = 2 if args.quick else 16
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import ray

    info = machine_info()
    info["ray"] = ray.__version__
    console.print(
        f"[bold]ray_backend[/] {info['date_utc']}  nproc={info['nproc']}  ray {ray.__version__}  "
        f"calls={calls}  sweep {4 * replicates} runs x {steps} steps  "
        f"load {info['loadavg_at_start']}"
    )
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    results: dict[str, Any] = {}
    try:
        for backend in ("local", "ray"):
            with ax.Runtime(backend=backend, cpu_workers=2):
                results[backend] = {"overhead": overhead(calls), "sweep": sweep(replicates, steps)}
    finally:
        ray.shutdown()
    table = Table(title="local process pool vs Ray (2 CPUs)")
    for col in ("backend", "round trip median µs", "p90 µs", "map calls/s", "sweep s"):
        table.add_column(col)
    for backend, r in results.items():
        o, s = r["overhead"], r["sweep"]
        table.add_row(
            backend,
            f"{o['round_trip_median_us']:.0f}",
            f"{o['round_trip_p90_us']:.0f}",
            f"{o['map_calls_per_s']:.0f}",
            f"{s['wall_s']:.2f}",
        )
    console.print(table)
    loc, ry = results["local"], results["ray"]
    identical = loc["sweep"]["digest"] == ry["sweep"]["digest"]
    ratios = [
        {
            "ratio": "round trip: ray / local",
            "value": ry["overhead"]["round_trip_median_us"]
            / loc["overhead"]["round_trip_median_us"],
            "target": "-",
            "met": None,
            "note": "per-task overhead, one call at a time",
        },
        {
            "ratio": "map throughput: ray / local",
            "value": ry["overhead"]["map_calls_per_s"] / loc["overhead"]["map_calls_per_s"],
            "target": "-",
            "met": None,
            "note": "",
        },
        {
            "ratio": "64-run sweep wall: ray / local",
            "value": ry["sweep"]["wall_s"] / loc["sweep"]["wall_s"],
            "target": "-",
            "met": None,
            "note": "",
        },
        {
            "ratio": "sweep identical on both backends",
            "value": float(identical),
            "target": "= 1",
            "met": identical,
            "note": f"digest {loc['sweep']['digest'][:16]}",
        },
    ]
    print_ratios(console, ratios)
    console.print(f"ray.init(num_cpus=2): {ray_start:.1f} s (not in the figures)")
    data = {
        "benchmark": "ray_backend",
        "machine": info,
        "ray_init_s": ray_start,
        "config": {"calls": calls, "steps": steps, "replicates": replicates},
        **results,
        "identical": identical,
        "ratios": ratios,
    }
    name = args.output or ("ray_backend-quick" if args.quick else "ray_backend")
    console.print(f"wrote {write_json(name, data)}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
