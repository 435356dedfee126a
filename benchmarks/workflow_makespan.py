"""Makespan of a DAG with skewed node durations: ambidex vs level-by-level vs the critical path.

The DAG has L layers of W nodes (default 4 x 8); every node after the first layer depends
on 2 or 3 distinct nodes of the layer before. Node durations are drawn from a seeded,
skewed distribution between 10 and 300 ms: d = 10 ms + 290 ms x u^3 with u uniform on
[0, 1) (median 46 ms, mean 82 ms); a node is ``await asyncio.sleep(d)`` and returns d.
With ``--blocking F``, a seeded fraction F of the nodes (e.g. 0.3) are plain ``def``
nodes that block: ``time.sleep(d)``; ambidex runs them on its I/O threads, the
level-by-level orchestrator with ``asyncio.to_thread``.

* ambidex ``ax.Workflow``: every node's input refers to its parents' outputs, so it
  starts when they finish. ``wf.run()`` from sync code (headline) and
  ``await wf.arun()`` inside ``asyncio.run`` (extra).
* level by level (the naive orchestrator): ``await asyncio.gather(...)`` over each
  layer in turn, inside ``asyncio.run``; a layer starts when the whole previous one is
  done.
* the floor: the critical path, the longest path through the DAG by durations,
  computed exactly (no node can finish before its parents, and each takes d).
  The level-by-level schedule's own floor (the sum of each layer's longest node) is
  shown next to it.

Several seeds (DAGs) are run; for each, the methods take turns in a rotating order and
the median makespan over repeats is reported.

    .venv/bin/python benchmarks/workflow_makespan.py            # full run, ~1 minute
    .venv/bin/python benchmarks/workflow_makespan.py --quick    # smoke test, a few seconds
    .venv/bin/python benchmarks/workflow_makespan.py --width 64 --blocking 0.3  # 30% blocking
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

import ambidex as ax
from _common import ambidex_loop_name, machine_info, print_ratios, verdict, write_json

console = Console(width=int(os.environ.get("COLUMNS", "160")))

D_MIN_S = 0.010
D_MAX_S = 0.300
TARGET = 1.05  # ambidex makespan / critical-path floor
TARGET_BLOCKING = 1.2  # the same, with blocking nodes (--blocking)


async def step(d: float, deps: list[float]) -> float:
    """One node: wait ``d`` seconds (its parents' outputs are in ``deps``)."""
    await asyncio.sleep(d)
    return d


def step_blocking(d: float, deps: list[float]) -> float:
    """A blocking node (``--blocking``): a plain ``def`` that sleeps ``d`` seconds."""
    time.sleep(d)
    return d


# -- the DAG -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Dag:
    seed: int
    layers: list[list[str]]
    duration: dict[str, float]
    parents: dict[str, list[str]]
    blocking: frozenset[str] = frozenset()

    @property
    def nodes(self) -> list[str]:
        return [name for layer in self.layers for name in layer]


def make_dag(seed: int, n_layers: int, width: int, blocking: float = 0.0) -> Dag:
    rng = random.Random(seed)
    layers: list[list[str]] = []
    duration: dict[str, float] = {}
    parents: dict[str, list[str]] = {}
    for k in range(n_layers):
        layer = [f"L{k}n{i}" for i in range(width)]
        for name in layer:
            duration[name] = D_MIN_S + (D_MAX_S - D_MIN_S) * rng.random() ** 3
            if k == 0:
                parents[name] = []
            else:
                fan_in = min(rng.randint(2, 3), width)
                parents[name] = sorted(rng.sample(layers[-1], fan_in))
        layers.append(layer)
    names = [name for layer in layers for name in layer]
    # A generator of its own, so that the DAG (durations, edges) is the same with or without.
    chosen = random.Random(seed + 1_000_003).sample(names, round(blocking * len(names)))
    return Dag(seed, layers, duration, parents, frozenset(chosen))


def critical_path(dag: Dag) -> tuple[float, list[str]]:
    """The longest path by durations (exact, dynamic programming in layer order)."""
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for name in dag.nodes:
        best = max(dag.parents[name], key=lambda p: finish[p], default=None)
        finish[name] = (finish[best] if best is not None else 0.0) + dag.duration[name]
        via[name] = best
    end: str | None = max(finish, key=lambda n: finish[n])
    length = finish[end]
    path: list[str] = []
    while end is not None:
        path.append(end)
        end = via[end]
    return length, path[::-1]


def level_floor(dag: Dag) -> float:
    return sum(max(dag.duration[n] for n in layer) for layer in dag.layers)


# -- the methods -------------------------------------------------------------------------


def build_workflow(dag: Dag) -> ax.Workflow:
    wf = ax.Workflow(f"makespan-{dag.seed}")
    nodes: dict[str, ax.Node] = {}
    for name in dag.nodes:
        deps = [nodes[p].output for p in dag.parents[name]]
        fn = step_blocking if name in dag.blocking else step
        nodes[name] = wf.node(name, fn, input={"d": dag.duration[name], "deps": deps})
    wf.validate()
    return wf


def check(dag: Dag, outputs: dict[str, Any]) -> None:
    if outputs != dag.duration:
        raise AssertionError("wrong or missing outputs")


def run_ambidex_sync(dag: Dag, wf: ax.Workflow) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = wf.run()
    elapsed = time.perf_counter() - t0
    check(dag, result.outputs)
    return elapsed, result


def run_ambidex_async(dag: Dag, wf: ax.Workflow) -> tuple[float, Any]:
    async def main() -> tuple[float, Any]:
        t0 = time.perf_counter()
        result = await wf.arun()
        return time.perf_counter() - t0, result

    elapsed, result = asyncio.run(main())
    check(dag, result.outputs)
    return elapsed, result


def run_level_by_level(dag: Dag, wf: ax.Workflow) -> tuple[float, Any]:
    async def main() -> tuple[float, dict[str, float]]:
        t0 = time.perf_counter()
        outputs: dict[str, float] = {}
        for layer in dag.layers:
            results = await asyncio.gather(
                *(
                    asyncio.to_thread(
                        step_blocking, dag.duration[n], [outputs[p] for p in dag.parents[n]]
                    )
                    if n in dag.blocking
                    else step(dag.duration[n], [outputs[p] for p in dag.parents[n]])
                    for n in layer
                )
            )
            outputs.update(zip(layer, results, strict=True))
        return time.perf_counter() - t0, outputs

    elapsed, outputs = asyncio.run(main())
    check(dag, outputs)
    return elapsed, None


METHODS: dict[str, tuple[str, Callable[[Dag, ax.Workflow], tuple[float, Any]]]] = {
    "ambidex wf.run() from sync": ("ambidex", run_ambidex_sync),
    "ambidex await wf.arun() (asyncio.run)": ("extra", run_ambidex_async),
    "level by level: asyncio.gather per layer": ("anchor", run_level_by_level),
}
HEADLINE = "ambidex wf.run() from sync"
LEVEL = "level by level: asyncio.gather per layer"


def start_lags(dag: Dag, result: Any) -> dict[str, float]:
    """How late ambidex started each node after its last parent finished, and ran over d."""
    runs = result.nodes
    lags = []
    overrun = []
    for name in dag.nodes:
        run = runs[name]
        ready = max((runs[p].finished_s for p in dag.parents[name]), default=0.0)
        lags.append(run.started_s - ready)
        overrun.append(run.duration_s - dag.duration[name])
    return {
        "start_lag_median_ms": statistics.median(lags) * 1e3,
        "start_lag_max_ms": max(lags) * 1e3,
        "overrun_median_ms": statistics.median(overrun) * 1e3,
        "overrun_max_ms": max(overrun) * 1e3,
    }


def bench_seed(
    seed: int, n_layers: int, width: int, repeats: int, blocking: float
) -> dict[str, Any]:
    dag = make_dag(seed, n_layers, width, blocking)
    floor, path = critical_path(dag)
    wf = build_workflow(dag)
    names = list(METHODS)
    times: dict[str, list[float]] = {name: [] for name in names}
    lags: list[dict[str, float]] = []
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            elapsed, result = METHODS[name][1](dag, wf)
            times[name].append(elapsed)
            if name == HEADLINE:
                lags.append(start_lags(dag, result))
    durations = sorted(dag.duration.values())
    methods = []
    for name in names:
        med = statistics.median(times[name])
        methods.append(
            {
                "method": name,
                "role": METHODS[name][0],
                "median_s": med,
                "min_s": min(times[name]),
                "max_s": max(times[name]),
                "runs_s": [round(t, 5) for t in times[name]],
                "over_floor": med / floor,
            }
        )
    return {
        "seed": seed,
        "nodes": len(dag.nodes),
        "blocking_nodes": len(dag.blocking),
        "edges": sum(len(p) for p in dag.parents.values()),
        "duration_ms": {
            "min": durations[0] * 1e3,
            "median": statistics.median(durations) * 1e3,
            "mean": statistics.fmean(durations) * 1e3,
            "max": durations[-1] * 1e3,
            "sum": sum(durations) * 1e3,
        },
        "floor_s": floor,
        "critical_path": path,
        "level_floor_s": level_floor(dag),
        "methods": methods,
        "ambidex_lags": {
            k: statistics.median(lag[k] for lag in lags)
            if "median" in k
            else max(lag[k] for lag in lags)
            for k in lags[0]
        },
    }


# -- reporting ---------------------------------------------------------------------------


def _row(seed: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in seed["methods"] if m["method"] == name)


def compute_ratios(seeds: list[dict[str, Any]], target: float = TARGET) -> list[dict[str, Any]]:
    ours = [_row(s, HEADLINE)["over_floor"] for s in seeds]
    extra = [_row(s, "ambidex await wf.arun() (asyncio.run)")["over_floor"] for s in seeds]
    level = [_row(s, LEVEL)["over_floor"] for s in seeds]
    speedup = [_row(s, LEVEL)["median_s"] / _row(s, HEADLINE)["median_s"] for s in seeds]
    level_vs_own = [_row(s, LEVEL)["median_s"] / s["level_floor_s"] for s in seeds]

    def item(name: str, value: float, target: float | None, note: str) -> dict[str, Any]:
        return {
            "ratio": name,
            "value": value,
            "target": "-" if target is None else f"≤ {target:g}",
            "met": None if target is None else verdict(value, target, higher_is_better=False),
            "note": note,
        }

    return [
        item(
            "ambidex wf.run / floor, worst seed",
            max(ours),
            target,
            f"every seed within {round((target - 1) * 100)}%",
        ),
        item("ambidex wf.run / floor, median over seeds", statistics.median(ours), target, ""),
        item("ambidex wf.arun / floor, worst seed", max(extra), None, "extra: stdlib loop"),
        item("level by level / floor, median over seeds", statistics.median(level), None, ""),
        item(
            "level by level / ambidex wf.run, median over seeds",
            statistics.median(speedup),
            None,
            f"range {min(speedup):.2f}-{max(speedup):.2f}",
        ),
        item(
            "level by level / its own floor (sum of layer maxima), median",
            statistics.median(level_vs_own),
            None,
            "how close the naive orchestrator gets to its schedule",
        ),
    ]


def print_seeds(seeds: list[dict[str, Any]]) -> None:
    table = Table(title="makespan per seed (median over repeats; ÷ floor in brackets)")
    cols = ["seed", "nodes", "edges", "d median/mean/max ms", "floor ms", "level floor ms"]
    cols += [m for m in METHODS]
    cols += ["ambidex start lag med/max ms"]
    for col in cols:
        table.add_column(col, justify="right")
    for s in seeds:
        d = s["duration_ms"]
        cells = [
            str(s["seed"]),
            str(s["nodes"]),
            str(s["edges"]),
            f"{d['median']:.0f}/{d['mean']:.0f}/{d['max']:.0f}",
            f"{s['floor_s'] * 1e3:.1f}",
            f"{s['level_floor_s'] * 1e3:.1f}",
        ]
        for name in METHODS:
            r = _row(s, name)
            cells.append(f"{r['median_s'] * 1e3:.1f} ({r['over_floor']:.3f})")
        lag = s["ambidex_lags"]
        cells.append(f"{lag['start_lag_median_ms']:.2f}/{lag['start_lag_max_ms']:.2f}")
        table.add_row(*cells)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 1 repeat: a few seconds")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..S-1 (default 5)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per method and seed")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument(
        "--blocking",
        type=float,
        default=0.0,
        help="fraction of nodes that are plain def nodes blocking in time.sleep(d) (e.g. 0.3); "
        f"the target is then {TARGET_BLOCKING:g}",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="results file name under benchmarks/results/ (default: workflow_makespan, or "
        "workflow_makespan-quick with --quick)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    n_seeds = args.seeds or (2 if quick else 5)
    repeats = args.repeats or (1 if quick else 3)

    info = machine_info()
    info["ambidex_loop"] = ambidex_loop_name()
    io_threads = ax.current_runtime().io_threads
    console.print(
        f"[bold]workflow_makespan[/] {info['date_utc']}  nproc={info['nproc']}  "
        f"python {info['python']}  ambidex {info['git_commit']}  "
        f"loop thread: {info['ambidex_loop']}  {args.layers} layers x {args.width} nodes, "
        f"seeds 0..{n_seeds - 1}, repeats={repeats}, blocking={args.blocking:g}, "
        f"io_threads={io_threads}"
    )
    started = time.perf_counter()
    # Warm up: start ambidex's loop thread and run each method once on a small DAG.
    warm = make_dag(10_000, 2, 2)
    warm_wf = build_workflow(warm)
    for _, run in METHODS.values():
        run(warm, warm_wf)
    seeds = [
        bench_seed(seed, args.layers, args.width, repeats, args.blocking) for seed in range(n_seeds)
    ]
    pool = ax.current_runtime().statistics().io_threads
    console.print(f"I/O threads at the end: {pool}")
    ax.current_runtime().close()
    print_seeds(seeds)
    target = TARGET_BLOCKING if args.blocking else TARGET
    ratios = compute_ratios(seeds, target)
    print_ratios(console, ratios, title="ratios")
    elapsed = time.perf_counter() - started
    console.print(f"elapsed {elapsed:.1f} s")
    data = {
        "benchmark": "workflow_makespan",
        "machine": info,
        "settings": {
            "quick": quick,
            "layers": args.layers,
            "width": args.width,
            "blocking": args.blocking,
            "io_threads": io_threads,
            "fan_in": [2, 3],
            "duration": "10 ms + 290 ms * u**3, u = random.Random(seed).random()",
            "seeds": list(range(n_seeds)),
            "repeats": repeats,
            "target": target,
        },
        "seeds": seeds,
        "ratios": ratios,
        "io_threads_at_end": dataclasses.asdict(pool),
        "elapsed_s": elapsed,
    }
    path = write_json(
        args.output or ("workflow_makespan-quick" if quick else "workflow_makespan"), data
    )
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
