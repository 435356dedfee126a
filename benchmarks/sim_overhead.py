"""Simulations: the fixed cost of a step, before and after issue 17, beside Mesa.

Three figures, each for the code before issue 17's fixed-cost work (``--old-ref``,
by default ``688f3ed``: its ``src`` and ``examples`` unpacked from git into a
temporary directory) and for this tree, measured in worker processes that take
turns (one of each per round, alternating which goes first):

* **the generator into a numba kernel**: an ``@njit`` kernel that draws one double
  from the model's generator (``Model(seed=1).rng``), minus the same kernel drawing
  from numba's own global generator (no argument). Before: the model's generator
  is a plain ``numpy.random.Generator``; after: a ``KernelGenerator``. Target
  ≤ 1 µs a call.
* **run()'s per-step overhead**: ``ax.sim.run`` of a model whose ``step()`` adds 1
  and whose ``metrics()`` returns one int, over 100,000 steps (10,000 with
  ``--quick``), minus the same ``step()`` and ``metrics()`` called in a bare loop.
  Nothing recorded, no progress. Target ≤ 5 µs a step.
* **Boltzmann, 500 agents** (``examples/sim/boltzmann.py`` on a 20 x 20
  grid; also Mesa's own "small" size, 100 agents on 10 x 10): steps/s of a whole
  ``ax.sim.run`` of 300 steps (setup included; the median of 5 seeds), against
  Mesa 3.3's ``BoltzmannWealth`` (its constructor, then ``step()`` 300 times), Mesa
  run in this process, once a round for each size.

Medians over rounds (5; 1 with ``--quick``); within a worker every figure is the
median of several interleaved repeats. Load average is recorded at start and end.

    .venv/bin/python benchmarks/sim_overhead.py          # ~3.5 min at load 8; writes
                                                         # results/sim_overhead.json
    .venv/bin/python benchmarks/sim_overhead.py --quick  # ~12 s
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from _common import REPO_ROOT, machine_info, print_ratios, verdict, write_json

console = Console(width=int(os.environ.get("COLUMNS", "150")))

OLD_REF = "688f3ed"
KERNEL_TARGET_US = 1.0
OVERHEAD_TARGET_US = 5.0
BOLTZMANN = {
    "500 agents, 20x20": {"n": 500, "width": 20, "height": 20},
    "Mesa small: 100 agents, 10x10": {"n": 100, "width": 10, "height": 10},
}
BOLTZMANN_STEPS = 300


# -- worker: runs in a fresh process with one tree's src and examples on the path ----------


def _worker(quick: bool) -> dict[str, Any]:
    import ambidex as ax

    rng = ax.sim.Model(seed=1).rng  # after numba is imported, as a model with kernels does
    return {
        "rng_type": type(rng).__name__,
        **_kernel_cost(rng, quick),
        **_run_overhead(quick),
        "boltzmann_steps_per_s": _boltzmann(quick),
    }


def _kernel_cost(rng: Any, quick: bool) -> dict[str, float]:
    import numba
    import numpy as np

    @numba.njit
    def draw(rng: Any) -> float:
        return rng.random()  # type: ignore[no-any-return]

    @numba.njit
    def draw_global() -> float:
        return np.random.random()  # type: ignore[no-any-return]

    draw(rng)
    draw_global()
    calls = 20_000 if quick else 100_000

    def per_call_us(fn: Any, *args: Any) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn(*args)
        return (time.perf_counter() - t0) / calls * 1e6

    with_rng, without = [], []
    for _ in range(5 if quick else 9):
        without.append(per_call_us(draw_global))
        with_rng.append(per_call_us(draw, rng))
    out = {
        "kernel_without_us": statistics.median(without),
        "kernel_with_rng_us": statistics.median(with_rng),
    }
    out["kernel_rng_cost_us"] = out["kernel_with_rng_us"] - out["kernel_without_us"]
    return out


def _run_overhead(quick: bool) -> dict[str, float]:
    import ambidex as ax

    class Tiny(ax.sim.Model):
        def setup(self, params: Any) -> None:
            self.k = 0

        def step(self) -> None:
            self.k += 1

        def metrics(self) -> dict[str, int]:
            return {"k": self.k}

    steps = 10_000 if quick else 100_000
    run_us, bare_us = [], []
    for _ in range(3):
        gc.collect()
        t0 = time.perf_counter()
        ax.sim.run(Tiny, steps=steps, seed=0)
        run_us.append((time.perf_counter() - t0) / steps * 1e6)
        model = Tiny()
        model.setup(model.params)
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(steps):
            model.step()
            model.metrics()
        bare_us.append((time.perf_counter() - t0) / steps * 1e6)
    out = {"run_step_us": statistics.median(run_us), "bare_step_us": statistics.median(bare_us)}
    out["run_overhead_us"] = out["run_step_us"] - out["bare_step_us"]
    return out


def _boltzmann(quick: bool) -> dict[str, float]:
    from examples.sim.boltzmann import Boltzmann

    import ambidex as ax

    rates = {}
    for label, params in BOLTZMANN.items():
        ax.sim.run(Boltzmann, params, steps=2, seed=0)  # compile, or load numba's cache
        per_seed = []
        for seed in range(3 if quick else 5):
            gc.collect()
            result = ax.sim.run(Boltzmann, params, steps=BOLTZMANN_STEPS, seed=seed)
            per_seed.append(result.steps / result.elapsed_s)
        rates[label] = statistics.median(per_seed)
    return rates


def _spawn(tree: Path, quick: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree}"}
    argv = [sys.executable, __file__, "--worker"] + (["--quick"] if quick else [])
    proc = subprocess.run(
        argv, env=env, cwd=tree, capture_output=True, text=True, timeout=600, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker in {tree} failed:\n{proc.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def _unpack(ref: str, into: Path) -> Path:
    """``src`` and ``examples`` of git ``ref``, unpacked under ``into``."""
    archive = into / "old.tar"
    subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "-o", str(archive), ref, "src", "examples"],
        check=True,
    )
    tree = into / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


# -- Mesa ----------------------------------------------------------------------------------


def _mesa_steps_per_s(mesa: Any, params: dict[str, int], seed: int) -> float:
    gc.collect()
    t0 = time.perf_counter()
    model = mesa.BoltzmannWealth(seed=seed, **params)
    for _ in range(BOLTZMANN_STEPS):
        model.step()
    return BOLTZMANN_STEPS / (time.perf_counter() - t0)


# -- main ----------------------------------------------------------------------------------


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main(argv: list[str] | None = None) -> int:
    """Run the rounds, print the tables, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round, fewer calls and steps")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (5; 1 quick)")
    parser.add_argument("--old-ref", default=OLD_REF, help=f"the 'before' commit ({OLD_REF})")
    parser.add_argument("--output", type=Path, default=None, help="JSON path without .json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.quick)))
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _mesa import load_mesa

    mesa = load_mesa()
    rounds = args.rounds or (1 if args.quick else 5)
    info = machine_info()
    console.print(f"load average at start: {info['loadavg_at_start']}")
    results: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    mesa_rates: dict[str, list[float]] = {label: [] for label in BOLTZMANN}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": _unpack(args.old_ref, Path(tmp)), "after": REPO_ROOT}
        for r in range(rounds):
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            for which in order:
                results[which].append(_spawn(trees[which], args.quick))
            for label, params in BOLTZMANN.items():
                mesa_rates[label].append(_mesa_steps_per_s(mesa, params, seed=r))
            console.print(f"round {r + 1}/{rounds} done, load {os.getloadavg()[0]:.2f}")

    before, after = results["before"], results["after"]
    table = Table(title=f"fixed cost per step (medians of {rounds} rounds)")
    for col in ("figure", f"before ({args.old_ref})", "after (this tree)", "target"):
        table.add_column(col, justify="left" if col == "figure" else "right")
    rows = [
        ("generator type", before[0]["rng_type"], after[0]["rng_type"], ""),
        ("kernel call without the generator, µs", "kernel_without_us", "kernel_without_us", ""),
        ("kernel call with the generator, µs", "kernel_with_rng_us", "kernel_with_rng_us", ""),
        ("generator's cost a call, µs", "kernel_rng_cost_us", "kernel_rng_cost_us", "≤ 1"),
        ("run() a step, µs", "run_step_us", "run_step_us", ""),
        ("bare step() + metrics(), µs", "bare_step_us", "bare_step_us", ""),
        ("run()'s overhead a step, µs", "run_overhead_us", "run_overhead_us", "≤ 5"),
    ]
    for i, (label, b, a, target) in enumerate(rows):
        if i == 0:
            table.add_row(label, b, a, target)
        else:
            table.add_row(label, f"{_median(before, b):.3f}", f"{_median(after, a):.3f}", target)
    console.print(table)

    boltz = Table(title=f"Boltzmann, whole ax.sim.run of {BOLTZMANN_STEPS} steps: steps/s")
    for col in ("size", "Mesa 3.3", "ambidex before", "ambidex after", "after ÷ Mesa"):
        boltz.add_column(col, justify="left" if col == "size" else "right")
    summary: dict[str, Any] = {}
    for label in BOLTZMANN:
        m = statistics.median(mesa_rates[label])
        b = statistics.median(x["boltzmann_steps_per_s"][label] for x in before)
        a = statistics.median(x["boltzmann_steps_per_s"][label] for x in after)
        summary[label] = {"mesa": m, "before": b, "after": a, "after_over_mesa": a / m}
        summary[label]["before_over_mesa"] = b / m
        boltz.add_row(label, f"{m:,.0f}", f"{b:,.0f}", f"{a:,.0f}", f"{a / m:.1f}x")
    console.print(boltz)

    cost = _median(after, "kernel_rng_cost_us")
    overhead = _median(after, "run_overhead_us")
    ratios = [
        {
            "ratio": "generator into a kernel, after (µs a call)",
            "value": cost,
            "target": f"≤ {KERNEL_TARGET_US}",
            "met": verdict(cost, KERNEL_TARGET_US, higher_is_better=False),
            "note": f"before: {_median(before, 'kernel_rng_cost_us'):.2f} µs",
        },
        {
            "ratio": "run()'s overhead a step, after (µs)",
            "value": overhead,
            "target": f"≤ {OVERHEAD_TARGET_US}",
            "met": verdict(overhead, OVERHEAD_TARGET_US, higher_is_better=False),
            "note": f"before: {_median(before, 'run_overhead_us'):.2f} µs",
        },
    ]
    print_ratios(console, ratios)
    data = {
        "machine": info,
        "settings": {"rounds": rounds, "quick": args.quick, "old_ref": args.old_ref},
        "before": before,
        "after": after,
        "mesa_boltzmann_steps_per_s": mesa_rates,
        "boltzmann": summary,
        "ratios": ratios,
    }
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        data["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        path = args.output.with_name(args.output.name + ".json")
        path.write_text(json.dumps(data, indent=2) + "\n")
    else:
        path = write_json("sim_overhead", data)
    console.print(f"load average at end: {data['machine']['loadavg_at_end']}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
