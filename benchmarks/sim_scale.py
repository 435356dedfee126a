"""Simulations: how ambidex.sim's per-agent cost and memory scale from 10^3 to 10^7 agents.

Issue 17: a model's per-agent-step time should stay flat as the population grows
(target: at 10^6 agents at most 1.5x what it is at 10^4) and a run's peak memory
should stay near what the model holds (target: at most 2x the bytes of its live
arrays). Each model grows at a fixed density: the grid's side grows as sqrt(n).

Every (model, n) runs in a fresh process, so its peak memory is its own:

* compile: the first run of a tiny instance (numba compiles, or loads its cache),
  reported apart and excluded from everything else;
* setup: the model's constructor and ``setup`` (the neighbour table, placing agents)
  and step 0's metrics;
* steps: ``step()`` timed alone, step by step, and ``metrics()`` apart; the figure is
  the median step's time over the agents alive at its start (per agent-step), in wall
  time and in the thread's CPU time (which a loaded machine disturbs less);
* memory: the resident set's peak above what the process held before setup (Linux:
  ``VmHWM`` after resetting it through ``/proc/self/clear_refs``), against the bytes
  of every numpy array the model holds (its ``Agents`` columns at full capacity, the
  neighbour table, per-cell arrays): the "live arrays".

A model is an entry in ``MODELS`` (file, class, the parameter that sets n, the ones
that set the side, agents per cell) or ``--spec`` on the command line, e.g.
``--spec examples/sim/boids.py:Boids,n=population_size,side=width+height,density=0.0178``.

    .venv/bin/python benchmarks/sim_scale.py            # 10^3..10^7 (~3 min), writes
                                                        # results/sim_scale.json
    .venv/bin/python benchmarks/sim_scale.py --quick    # 10^3..10^5 (< 20 s)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from _common import REPO_ROOT, machine_info, write_json

console = Console(width=int(os.environ.get("COLUMNS", "150")))

TARGET_TIME_RATIO = 1.5  # per-agent-step time at 10^6 / at 10^4
TARGET_MEMORY_RATIO = 2.0  # peak RSS above the baseline / live arrays' bytes
MIN_LIVE_BYTES = 20e6  # below this the RSS noise (allocator, page cache) swamps the ratio


@dataclass
class Spec:
    """How to build a model at ``n`` agents: ``n`` into one parameter, the side into others."""

    model: str
    """``path/to/file.py:Class`` (relative to the repository)."""
    n_param: str
    side_params: tuple[str, ...] = ("width", "height")
    agents_per_cell: float = 1.0
    """Density: agents per unit of area (per cell on a grid); the side is sqrt(n / density)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Other parameters, the same at every size."""

    def at(self, n: int) -> dict[str, Any]:
        side = max(2, round(math.sqrt(n / self.agents_per_cell)))
        return {**self.params, self.n_param: n, **dict.fromkeys(self.side_params, side)}


MODELS: dict[str, Spec] = {
    # Mesa's large Boltzmann benchmark (10,000 agents on 100 x 100): one agent a cell.
    "boltzmann": Spec("examples/sim/boltzmann.py:Boltzmann", "n"),
    # Mesa's large Boids benchmark (400 boids on 150 x 150, vision 15): its density.
    "boids": Spec(
        "examples/sim/boids.py:Boids",
        "population_size",
        agents_per_cell=400 / 150**2,
        params={"vision": 15},
    ),
}


def parse_spec(text: str) -> tuple[str, Spec]:
    """``file.py:Class,n=param,side=w+h,density=d[,key=value...]`` to a named Spec."""
    model, *pairs = text.split(",")
    if ":" not in model or not model.partition(":")[0].endswith(".py"):
        raise ValueError(f"--spec must start with path/to/file.py:Class, got {model!r}")
    kv: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--spec: {pair!r} is not key=value")
        kv[key.strip()] = value.strip()
    if "n" not in kv:
        raise ValueError("--spec needs n=<parameter that sets the number of agents>")
    extra: dict[str, Any] = {}
    for key, value in kv.items():
        if key not in ("n", "side", "density"):
            extra[key] = json.loads(value) if value[:1] in '-0123456789[{tf"' else value
    spec = Spec(
        model,
        kv["n"],
        tuple(kv.get("side", "width+height").split("+")),
        float(kv.get("density", "1")),
        extra,
    )
    return model.rpartition(":")[2], spec


# -- one size, in its own process ----------------------------------------------------------


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def _live_bytes(model: Any) -> int:
    """Bytes of the distinct numpy buffers the model holds (one level deep, Agents columns)."""
    import numpy as np

    seen: dict[int, int] = {}

    def add(value: Any) -> None:
        if isinstance(value, np.ndarray):
            base = value
            while isinstance(base.base, np.ndarray):
                base = base.base
            seen[id(base)] = base.nbytes
        elif isinstance(value, (tuple, list)):
            for v in value:
                add(v)

    for value in vars(model).values():
        if isinstance(value, __import__("ambidex").sim.Agents):
            for name in value:
                add(value.column(name))
        else:
            add(value)
    return sum(seen.values())


def child(spec: Spec, n: int, steps: int, seed: int) -> dict[str, Any]:
    """Measure one size; runs in a fresh process (see ``run_size``)."""
    import numpy as np

    import ambidex as ax

    model_cls = ax.sim.load_model(str(REPO_ROOT / spec.model))
    t = time.perf_counter()
    ax.sim.run(model_cls, spec.at(100), steps=2, seed=0)  # compile, or load numba's cache
    compile_s = time.perf_counter() - t
    params = spec.at(n)

    clear = Path("/proc/self/clear_refs")
    try:
        clear.write_text("5")  # reset VmHWM to the current RSS
        hwm_reset = True
    except OSError:
        hwm_reset = False
    rss0_kb = _status_kb("VmRSS")

    t = time.perf_counter()
    model = model_cls(params, seed=np.random.SeedSequence(seed))
    model.setup(model.params)
    model.metrics()
    setup_s = time.perf_counter() - t

    step_s: list[float] = []
    step_cpu_s: list[float] = []
    metrics_s: list[float] = []
    agent_steps: list[int] = []
    for i in range(steps):
        if not model.running:
            break
        agents = getattr(model, "agents", None)
        alive = len(agents) if agents is not None else n
        c0 = time.thread_time()
        t0 = time.perf_counter()
        model.step()
        t1 = time.perf_counter()
        step_cpu_s.append(time.thread_time() - c0)
        model.step_index = i + 1
        model.metrics()
        t2 = time.perf_counter()
        step_s.append(t1 - t0)
        metrics_s.append(t2 - t1)
        agent_steps.append(alive)
    per_agent = [s / a for s, a in zip(step_s, agent_steps, strict=True) if a]
    peak_kb = _status_kb("VmHWM")
    live = _live_bytes(model)
    return {
        "n": n,
        "params": params,
        "steps": len(step_s),
        "compile_s": compile_s,
        "setup_s": setup_s,
        "median_step_s": statistics.median(step_s),
        "median_metrics_s": statistics.median(metrics_s),
        "ns_per_agent_step": statistics.median(per_agent) * 1e9,
        "cpu_ns_per_agent_step": statistics.median(
            s / a for s, a in zip(step_cpu_s, agent_steps, strict=True) if a
        )
        * 1e9,
        "ns_per_agent_step_with_metrics": statistics.median(
            (s + m) / a for s, m, a in zip(step_s, metrics_s, agent_steps, strict=True) if a
        )
        * 1e9,
        "live_bytes": live,
        "rss_before_setup_bytes": rss0_kb * 1024,
        "peak_rss_above_before_bytes": (peak_kb - rss0_kb) * 1024 if hwm_reset else None,
        "peak_over_live": (peak_kb - rss0_kb) * 1024 / live if hwm_reset and live else None,
    }


def run_size(spec: Spec, n: int, steps: int, seed: int) -> dict[str, Any]:
    """``child`` in a fresh interpreter (its own peak memory, nothing cached from before)."""
    payload = json.dumps({"spec": asdict(spec), "n": n, "steps": steps, "seed": seed})
    proc = subprocess.run(
        [sys.executable, __file__, "--child", payload],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=3600,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"{spec.model} at n={n}: exit {proc.returncode}: {tail[0]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# -- the run ---------------------------------------------------------------------------------


def steps_for(n: int, quick: bool) -> int:
    """Enough steps for a stable median (about 10^7 agent-steps), 3 to 200."""
    budget = 3e5 if quick else 1e7
    return int(min(200, max(3, round(budget / n))))


def _ratio_at(
    rows: list[dict[str, Any]], hi: int, lo: int, key: str = "ns_per_agent_step"
) -> float | None:
    by_n = {r["n"]: r for r in rows}
    if hi in by_n and lo in by_n:
        return float(by_n[hi][key] / by_n[lo][key])
    return None


def _print(name: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"{name}: per agent-step and memory by size (compile excluded)")
    cols = (
        "n",
        "params",
        "steps",
        "setup s",
        "ns / agent-step",
        "÷ at 10^4",
        "CPU ns",
        "CPU ÷ at 10^4",
        "with metrics ns",
        "live MB",
        "peak above before MB",
        "peak ÷ live",
        "compile s",
    )
    for col in cols:
        table.add_column(col, justify="left" if col == "params" else "right")
    base = next((r["ns_per_agent_step"] for r in rows if r["n"] == 10_000), None)
    cpu = next((r["cpu_ns_per_agent_step"] for r in rows if r["n"] == 10_000), None)
    for r in rows:
        side = {k: v for k, v in r["params"].items() if k != "n"}
        peak = r["peak_rss_above_before_bytes"]
        ratio = r["peak_over_live"]
        table.add_row(
            f"{r['n']:,}",
            ", ".join(f"{k}={v}" for k, v in side.items()),
            str(r["steps"]),
            f"{r['setup_s']:.3f}",
            f"{r['ns_per_agent_step']:.1f}",
            f"{r['ns_per_agent_step'] / base:.2f}" if base else "-",
            f"{r['cpu_ns_per_agent_step']:.1f}",
            f"{r['cpu_ns_per_agent_step'] / cpu:.2f}" if cpu else "-",
            f"{r['ns_per_agent_step_with_metrics']:.1f}",
            f"{r['live_bytes'] / 1e6:.1f}",
            f"{peak / 1e6:.1f}" if peak is not None else "-",
            f"{ratio:.2f}"
            if ratio is not None and r["live_bytes"] >= MIN_LIVE_BYTES
            else "(too small)",
            f"{r['compile_s']:.2f}",
        )
    console.print(table)


def _models_and_sizes(args: argparse.Namespace) -> tuple[dict[str, Spec], list[int]]:
    models: dict[str, Spec] = {name: MODELS[name] for name in (args.model or sorted(MODELS))}
    for text in args.spec:
        name, spec = parse_spec(text)
        models[name] = spec
    if args.sizes:
        sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    else:
        sizes = [10**k for k in range(3, 6 if args.quick else 8)]
    if not sizes or min(sizes) < 2:
        raise ValueError(f"--sizes needs agent counts of at least 2, got {args.sizes!r}")
    for name, spec in list(models.items()):
        path = REPO_ROOT / spec.model.partition(":")[0]
        if not path.exists():
            console.print(
                f"[yellow]skipped[/] {name}: {path.relative_to(REPO_ROOT)} does not exist yet"
            )
            del models[name]
    return models, sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^3..10^5 agents, fewer steps")
    parser.add_argument(
        "--model",
        action="append",
        choices=sorted(MODELS),
        help="a model from MODELS (repeatable; default: all of them)",
    )
    parser.add_argument(
        "--spec",
        action="append",
        default=[],
        help="another model: file.py:Class,n=<param>[,side=w+h][,density=<per cell>][,k=v]",
    )
    parser.add_argument(
        "--sizes", default=None, help="agent counts, comma-separated (default 1e3..1e7)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", default=None, help="results file name under results/")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:
        job = json.loads(args.child)
        spec_fields = job["spec"]
        spec_fields["side_params"] = tuple(spec_fields["side_params"])
        print(json.dumps(child(Spec(**spec_fields), job["n"], job["steps"], job["seed"])))
        return 0

    try:
        models, sizes = _models_and_sizes(args)
    except ValueError as exc:
        parser.error(str(exc))

    info = machine_info()
    console.print(
        f"[bold]sim_scale[/] {info['date_utc']}  nproc={info['nproc']}  "
        f"models={', '.join(models)}  sizes={sizes}  load {info['loadavg_at_start']}"
    )
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for name, spec in models.items():
        rows = []
        for n in sizes:
            row = run_size(spec, n, steps_for(n, args.quick), args.seed)
            console.print(
                f"  {name} n={n:,}: {row['ns_per_agent_step']:.1f} ns/agent-step, "
                f"setup {row['setup_s']:.2f} s, live {row['live_bytes'] / 1e6:.1f} MB"
            )
            rows.append(row)
        _print(name, rows)
        time_ratio = _ratio_at(rows, 1_000_000, 10_000)
        cpu_ratio = _ratio_at(rows, 1_000_000, 10_000, "cpu_ns_per_agent_step")
        memory = [
            r["peak_over_live"]
            for r in rows
            if r["peak_over_live"] is not None and r["live_bytes"] >= MIN_LIVE_BYTES
        ]
        results[name] = {
            "spec": asdict(spec),
            "sizes": rows,
            "time_ratio_1e6_over_1e4": time_ratio,
            "cpu_time_ratio_1e6_over_1e4": cpu_ratio,
            "time_target": TARGET_TIME_RATIO,
            "time_met": time_ratio is not None and time_ratio <= TARGET_TIME_RATIO,
            "worst_peak_over_live": max(memory) if memory else None,
            "memory_target": TARGET_MEMORY_RATIO,
            "memory_met": bool(memory) and max(memory) <= TARGET_MEMORY_RATIO,
        }
        verdicts = []
        if time_ratio is not None:
            ok = "met" if time_ratio <= TARGET_TIME_RATIO else "NOT met"
            verdicts.append(
                f"time per agent-step at 10^6 ÷ at 10^4 = {time_ratio:.2f} "
                f"(CPU time: {cpu_ratio:.2f}; target ≤ {TARGET_TIME_RATIO}: {ok})"
            )
        if memory:
            ok = "met" if max(memory) <= TARGET_MEMORY_RATIO else "NOT met"
            verdicts.append(
                f"worst peak ÷ live arrays = {max(memory):.2f} "
                f"(target ≤ {TARGET_MEMORY_RATIO}: {ok})"
            )
        for line in verdicts:
            console.print(f"  {name}: {line}")
    elapsed = time.perf_counter() - started
    console.print(f"elapsed {elapsed:.1f} s; load at the end {os.getloadavg()}")
    data = {
        "benchmark": "sim_scale",
        "machine": info,
        "settings": {"quick": args.quick, "sizes": sizes, "seed": args.seed},
        "models": results,
        "load_at_end": os.getloadavg(),
        "elapsed_s": elapsed,
    }
    path = write_json(args.output or ("sim_scale-quick" if args.quick else "sim_scale"), data)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
