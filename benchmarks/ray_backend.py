"""The ray backend against raw Ray and the local process pool: per-task overhead, a sweep.

* per-task overhead, on ``ax.Runtime(cpu_workers=2)``, on
  ``ax.Runtime(backend="ray", cpu_workers=2)`` and on raw Ray (``ray.remote`` of
  the same trivial function), all against one local Ray (``ray.init(num_cpus=2)``,
  started before the clock runs):

  - round trip: ``--calls`` calls one after another (``f(x)``; raw:
    ``ray.get(f.remote(x))``), median and p90;
  - batch: ``--batch`` calls at once (``f.map(xs)``; raw:
    ``ray.get([f.remote(x) for x in xs])``), the median of ``--reps`` batches.

  ambidex on Ray and raw Ray take turns (a block of round trips or one batch
  each), so both see the same load; the ratios ambidex / raw Ray have the
  target "within 1.2x".
* a 64-run sweep of ``examples/sim/wolf_sheep.py`` (4 grid points x 16
  replicates, ``--steps`` steps each) on each backend: wall time and whether the
  two sweeps are bit-identical (same digest).

Each backend is warmed up first (workers started, modules imported, numba
kernels loaded).

    .venv/bin/python benchmarks/ray_backend.py            # ~40 s
    .venv/bin/python benchmarks/ray_backend.py --quick    # ~10 s, a smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

import ambidex as ax
from _common import REPO_ROOT, machine_info, print_ratios, write_json

console = Console(width=int(os.environ.get("COLUMNS", "150")))
MODEL = str(REPO_ROOT / "examples" / "sim" / "wolf_sheep.py")
GRID = {"sheep_reproduce": [0.04, 0.4], "wolf_reproduce": [0.05, 0.2]}


def trivial(x: int) -> int:
    return x


noop = ax.cpu(trivial)
TARGET = 1.2  # ambidex on Ray within 1.2x of raw Ray


def _round_trips(call: Callable[[int], Any], calls: int) -> list[int]:
    samples = []
    for i in range(calls):
        t0 = time.perf_counter_ns()
        call(i)
        samples.append(time.perf_counter_ns() - t0)
    return samples


def _summary(round_trips: list[int], batches: list[float], batch: int) -> dict[str, Any]:
    batch_s = statistics.median(batches)
    return {
        "round_trip_median_us": statistics.median(round_trips) / 1000,
        "round_trip_p90_us": sorted(round_trips)[int(0.9 * len(round_trips))] / 1000,
        "batch_median_ms": batch_s * 1000,
        "batch_ms": [round(b * 1000, 2) for b in batches],
        "map_calls_per_s": batch / batch_s,
    }


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def overhead(calls: int, batch: int, reps: int) -> dict[str, Any]:
    """ambidex alone (the local backend): round trips, then ``reps`` maps of ``batch``."""
    items = list(range(batch))
    for i in range(20):
        noop(i)  # warm-up
    noop.map(items)
    samples = _round_trips(noop, calls)
    batches = [_timed(lambda: noop.map(items)) for _ in range(reps)]
    return _summary(samples, batches, batch)


def ray_and_raw_overhead(
    calls: int, batch: int, reps: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """ambidex on Ray and raw Ray, taking turns: round trips in blocks, then batches."""
    import ray

    raw = ray.remote(trivial)
    items = list(range(batch))

    def raw_call(x: int) -> int:
        return int(ray.get(raw.remote(x)))

    def raw_batch() -> list[int]:
        return list(ray.get([raw.remote(x) for x in items]))

    for i in range(20):  # warm-up: workers started, functions exported
        noop(i)
        raw_call(i)
    noop.map(items)
    raw_batch()
    ours_rt: list[int] = []
    raw_rt: list[int] = []
    block = max(1, calls // 10)
    for _ in range(0, calls, block):
        ours_rt += _round_trips(noop, block)
        raw_rt += _round_trips(raw_call, block)
    ours_b: list[float] = []
    raw_b: list[float] = []
    for _ in range(reps):
        ours_b.append(_timed(lambda: noop.map(items)))
        raw_b.append(_timed(raw_batch))
    return _summary(ours_rt, ours_b, batch), _summary(raw_rt, raw_b, batch)


def sweep(replicates: int, steps: int) -> dict[str, Any]:
    ax.sim.sweep(MODEL, GRID, replicates=1, steps=2, seed=1, progress=False)  # warm-up
    t0 = time.perf_counter()
    result = ax.sim.sweep(MODEL, GRID, replicates=replicates, steps=steps, seed=7, progress=False)
    return {"runs": len(result.runs), "wall_s": time.perf_counter() - t0, "digest": result.digest()}


def _ratio(name: str, value: float, note: str, target: float | None = None) -> dict[str, Any]:
    return {
        "ratio": name,
        "value": value,
        "target": f"<= {target}" if target is not None else "-",
        "met": value <= target if target is not None else None,
        "note": note,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--calls", type=int, default=None, help="round trips per backend")
    parser.add_argument("--batch", type=int, default=None, help="calls per map / raw batch")
    parser.add_argument("--reps", type=int, default=None, help="batches per backend")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    calls = args.calls or (50 if args.quick else 500)
    batch = args.batch or (100 if args.quick else 300)
    reps = args.reps or (3 if args.quick else 15)
    steps = args.steps or (5 if args.quick else 200)
    replicates = 2 if args.quick else 16
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import ray

    info = machine_info()
    info["ray"] = ray.__version__
    console.print(
        f"[bold]ray_backend[/] {info['date_utc']}  commit {info['git_commit']}  "
        f"nproc={info['nproc']}  ray {ray.__version__}  calls={calls}  batch={batch} x {reps}  "
        f"sweep {4 * replicates} runs x {steps} steps  load {info['loadavg_at_start']}"
    )
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    results: dict[str, Any] = {}
    try:
        with ax.Runtime(cpu_workers=2):
            results["local"] = {
                "overhead": overhead(calls, batch, reps),
                "sweep": sweep(replicates, steps),
            }
        with ax.Runtime(backend="ray", cpu_workers=2):
            ours, raw = ray_and_raw_overhead(calls, batch, reps)
            results["ray"] = {"overhead": ours, "sweep": sweep(replicates, steps)}
            results["raw_ray"] = {"overhead": raw}
    finally:
        ray.shutdown()
    table = Table(title="local process pool, ambidex on Ray and raw Ray (2 CPUs)")
    for col in (
        "backend",
        "round trip median µs",
        "p90 µs",
        f"{batch} at once, median ms",
        "calls/s",
        "sweep s",
    ):
        table.add_column(col)
    for backend, label in (
        ("local", "ambidex, local"),
        ("ray", "ambidex, Ray"),
        ("raw_ray", "raw Ray"),
    ):
        o = results[backend]["overhead"]
        s = results[backend].get("sweep")
        table.add_row(
            label,
            f"{o['round_trip_median_us']:.0f}",
            f"{o['round_trip_p90_us']:.0f}",
            f"{o['batch_median_ms']:.1f}",
            f"{o['map_calls_per_s']:.0f}",
            f"{s['wall_s']:.2f}" if s else "-",
        )
    console.print(table)
    loc, ry, rr = results["local"], results["ray"], results["raw_ray"]
    identical = loc["sweep"]["digest"] == ry["sweep"]["digest"]
    ratios = [
        _ratio(
            "round trip: ambidex on Ray / raw Ray",
            ry["overhead"]["round_trip_median_us"] / rr["overhead"]["round_trip_median_us"],
            "medians, one call after another",
            TARGET,
        ),
        _ratio(
            f"{batch} at once: ambidex .map / raw Ray",
            ry["overhead"]["batch_median_ms"] / rr["overhead"]["batch_median_ms"],
            f"medians of {reps}; raw: ray.get of a list of f.remote(x)",
            TARGET,
        ),
        _ratio(
            "round trip: Ray / local",
            ry["overhead"]["round_trip_median_us"] / loc["overhead"]["round_trip_median_us"],
            "per-task overhead, one call at a time",
        ),
        _ratio(
            f".map of {batch}: Ray / local",
            ry["overhead"]["batch_median_ms"] / loc["overhead"]["batch_median_ms"],
            "wall time",
        ),
        _ratio(
            f"{4 * replicates}-run sweep wall: Ray / local",
            ry["sweep"]["wall_s"] / loc["sweep"]["wall_s"],
            "",
        ),
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
        "config": {
            "calls": calls,
            "batch": batch,
            "reps": reps,
            "steps": steps,
            "replicates": replicates,
        },
        **results,
        "identical": identical,
        "ratios": ratios,
    }
    name = args.output or ("ray_backend-quick" if args.quick else "ray_backend")
    console.print(f"wrote {write_json(name, data)}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
