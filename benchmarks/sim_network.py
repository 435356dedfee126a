"""Simulations: ambidex.sim's NetworkSpace and virus_on_network against Mesa and networkx.

Two claims, each measured beside its anchor in the same run:

* **virus_on_network step time** (``examples/sim/virus_on_network.py`` against Mesa
  3.3's own ``VirusOnNetwork``), at 1,000 and 100,000 nodes: Mesa's model defaults
  (average degree 3, spread 0.4, check 0.4, recovery 0.3, resistance 0.5) with an
  outbreak of 1% of the nodes, so the epidemic is under way in the timed steps. For
  every seed both systems run once, taking turns in a rotating order (garbage
  collected before each run); a run is timed as *setup* (constructor, graph, step 0's
  metrics) and *steps* (Mesa: ``step()``, which shuffles, activates every agent and
  collects the data; ours: ``step()`` then ``metrics()``, what ``ax.sim.run`` does).
  The ratio is Mesa's median seconds per step over ours; the target is 50x. Our
  kernel is compiled by numba in a warm-up run first (the compile time is reported on
  its own). Mesa builds its graph with ``nx.erdos_renyi_graph``, which tries all
  ``n (n - 1) / 2`` pairs (~2 h at 100,000 nodes); for the 100,000-node Mesa runs it is
  swapped for ``nx.fast_gnp_random_graph`` (the same distribution, ``O(n + E)``)
  while the model is built. Mesa's step is untouched. The same runs check that the
  two agree: the mean infected, susceptible and resistant counts after the last step
  within 4 standard errors (a weak check at few seeds; the tests compare more runs).
* **building a 10^6-node space**: a ``G(n, 3/n)`` graph (1.5 million edges) drawn
  by ``NetworkSpace.erdos_renyi`` against ``nx.fast_gnp_random_graph``; and the CSR
  adjacency built from its edge arrays by ``NetworkSpace(n, src, dst)``, against
  ``scipy.sparse`` (COO to CSR, duplicates summed) and ``networkx.Graph`` (nodes,
  then ``add_edges_from``). Each build runs in a fresh process that first loads the
  edge arrays from a ``.npy`` file, so its time and its peak memory are its own
  (peak memory: the process's peak RSS over its RSS before the build, read from
  ``/proc/self/status`` after resetting the peak through ``/proc/self/clear_refs``;
  Linux only). The systems take turns, ``--repeats`` times each; medians reported.

    .venv/bin/python benchmarks/sim_network.py          # full run (~3 min on 2 cores),
                                                        # writes results/sim_network.json
    .venv/bin/python benchmarks/sim_network.py --quick  # 1,000 nodes, 8 seeds, 10^5-node build
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import ambidex as ax
from _common import REPO_ROOT, machine_info, print_ratios, verdict, write_json
from _mesa import fast_erdos_renyi, load_mesa

sys.path.insert(0, str(REPO_ROOT))

from examples.sim.virus_on_network import VirusOnNetwork

console = Console(width=int(os.environ.get("COLUMNS", "150")))

TARGET_RATIO = 50.0
Z_MAX = 4.0
COLUMNS = {"Infected": "infected", "Susceptible": "susceptible", "Resistant": "resistant"}


def virus_params(n: int) -> dict[str, Any]:
    return {**VirusOnNetwork.defaults, "num_nodes": n, "initial_outbreak_size": max(1, n // 100)}


# -- virus_on_network ----------------------------------------------------------------------


def run_mesa(mesa: types.SimpleNamespace, n: int, steps: int, seed: int) -> dict[str, Any]:
    """One timed run of Mesa's model; the last step's counts under our names."""
    gc.collect()
    t0 = time.perf_counter()
    with fast_erdos_renyi(n, seed=seed):  # Mesa's O(n^2) generator: hours above 5,000
        model = mesa.VirusOnNetwork(seed=seed, **virus_params(n))
    t1 = time.perf_counter()
    for _ in range(steps):
        model.step()
    t2 = time.perf_counter()
    frame = model.datacollector.get_model_vars_dataframe()
    final = {ours: int(frame[theirs].to_numpy()[-1]) for theirs, ours in COLUMNS.items()}
    return {"setup_s": t1 - t0, "steps_s": t2 - t1, "per_step_s": (t2 - t1) / steps, **final}


def run_ours(n: int, steps: int, seed: int) -> dict[str, Any]:
    """One timed run of ours, doing exactly what ``ax.sim.run`` does."""
    gc.collect()
    t0 = time.perf_counter()
    model = VirusOnNetwork(virus_params(n), seed=np.random.SeedSequence(seed))
    model.setup(model.params)
    rows = [model.metrics()]
    t1 = time.perf_counter()
    for done in range(1, steps + 1):
        model.step()
        model.step_index = done
        rows.append(model.metrics())
    t2 = time.perf_counter()
    final = {name: int(rows[-1][name]) for name in COLUMNS.values()}
    return {"setup_s": t1 - t0, "steps_s": t2 - t1, "per_step_s": (t2 - t1) / steps, **final}


def check_driver(n: int, steps: int, seed: int) -> None:
    """The timing driver gives ``ax.sim.run``'s final counts."""
    ours = run_ours(n, steps, seed)
    table = ax.sim.run(VirusOnNetwork, virus_params(n), steps=steps, seed=seed).metrics
    for name in COLUMNS.values():
        if ours[name] != int(table[name][-1]):
            raise AssertionError(f"driver and ax.sim.run differ on {name!r}")


def _z(a: list[int], b: list[int]) -> float:
    x, y = np.array(a, dtype=float), np.array(b, dtype=float)
    se = np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))
    return float((x.mean() - y.mean()) / max(se, 1e-9))


def measure_virus(
    mesa: types.SimpleNamespace, n: int, steps: int, seeds: list[int]
) -> dict[str, Any]:
    t = time.perf_counter()
    ax.sim.run(VirusOnNetwork, virus_params(100), steps=2, seed=0)  # compile, or load the cache
    warmup_s = time.perf_counter() - t
    check_driver(n, min(steps, 3), seeds[0])
    mesa_runs, our_runs = [], []
    for k, seed in enumerate(seeds):
        if k % 2 == 0:
            mesa_runs.append(run_mesa(mesa, n, steps, seed))
            our_runs.append(run_ours(n, steps, seed))
        else:
            our_runs.append(run_ours(n, steps, seed))
            mesa_runs.append(run_mesa(mesa, n, steps, seed))
        console.print(
            f"  n={n:,} seed {seed}: Mesa {mesa_runs[-1]['per_step_s'] * 1e3:.2f} ms/step, "
            f"ours {our_runs[-1]['per_step_s'] * 1e3:.4f} ms/step"
        )

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    mesa_step, our_step = med(mesa_runs, "per_step_s"), med(our_runs, "per_step_s")
    agreement = {
        name: {
            "ours_mean": float(np.mean([r[name] for r in our_runs])),
            "mesa_mean": float(np.mean([r[name] for r in mesa_runs])),
            "z": _z([r[name] for r in our_runs], [r[name] for r in mesa_runs]),
        }
        for name in COLUMNS.values()
    }
    return {
        "nodes": n,
        "steps": steps,
        "seeds": seeds,
        "params": virus_params(n),
        "warmup_run_s": warmup_s,
        "mesa": {
            "median_per_step_s": mesa_step,
            "median_setup_s": med(mesa_runs, "setup_s"),
            "runs": mesa_runs,
        },
        "ambidex": {
            "median_per_step_s": our_step,
            "median_setup_s": med(our_runs, "setup_s"),
            "runs": our_runs,
        },
        "ratio": mesa_step / our_step,
        "agreement": agreement,
        "agreement_passed": all(abs(a["z"]) <= Z_MAX for a in agreement.values()),
    }


# -- building a big space ------------------------------------------------------------------

BUILD_CODE = {
    "ambidex erdos_renyi": (
        "space = ax.sim.NetworkSpace.erdos_renyi(n, 3 / n, np.random.default_rng(1))\n"
        "edges = space.n_edges"
    ),
    "networkx fast_gnp_random_graph": (
        "g = nx.fast_gnp_random_graph(n, 3 / n, seed=1)\nedges = g.number_of_edges()"
    ),
    "ambidex NetworkSpace(n, src, dst)": (
        "space = ax.sim.NetworkSpace(n, src, dst)\nedges = space.n_edges"
    ),
    "scipy.sparse COO -> CSR": (
        "rows = np.concatenate([src, dst]); cols = np.concatenate([dst, src])\n"
        "a = sp.coo_array((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))\n"
        "a = a.tocsr(); a.sum_duplicates(); a.sort_indices()\nedges = a.nnz // 2"
    ),
    "networkx Graph.add_edges_from": (
        "g = nx.Graph(); g.add_nodes_from(range(n))\n"
        "g.add_edges_from(zip(src.tolist(), dst.tolist()))\nedges = g.number_of_edges()"
    ),
}

CHILD = """
import json, sys, time
import numpy as np
import networkx as nx
import scipy.sparse as sp
import ambidex as ax
import ambidex.sim

def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

n = int(sys.argv[1])
src = np.load(sys.argv[2]); dst = np.load(sys.argv[3])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
before = kib("VmRSS")
t0 = time.perf_counter()
{code}
elapsed = time.perf_counter() - t0
peak = kib("VmHWM")
print(json.dumps({{"s": elapsed, "peak_mb": (peak - before) / 1024, "edges": int(edges)}}))
"""


def measure_build(n: int, repeats: int) -> dict[str, Any]:
    src, dst = ax.sim.NetworkSpace.erdos_renyi(n, 3 / n, np.random.default_rng(1)).edges()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), *sys.path])}
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in BUILD_CODE}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "src.npy", src)
        np.save(Path(tmp) / "dst.npy", dst)
        names = list(BUILD_CODE)
        for r in range(repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        CHILD.format(code=BUILD_CODE[name]),
                        str(n),
                        str(Path(tmp) / "src.npy"),
                        str(Path(tmp) / "dst.npy"),
                    ],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                    timeout=600,
                )
                out[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                row = out[name][-1]
                console.print(f"  {name}: {row['s']:.3f} s, +{row['peak_mb']:.0f} MB peak RSS")
    return {
        "nodes": n,
        "edges": len(src),
        "repeats": repeats,
        "systems": {
            name: {
                "median_s": statistics.median(r["s"] for r in rows),
                "median_peak_mb": statistics.median(r["peak_mb"] for r in rows),
                "edges": rows[0]["edges"],
                "runs": rows,
            }
            for name, rows in out.items()
        },
    }


# -- output ----------------------------------------------------------------------------------


def print_virus(results: list[dict[str, Any]]) -> None:
    table = Table(title="virus_on_network: seconds per step (medians over seeds)")
    for col in ("nodes", "steps", "Mesa s/step", "ours s/step", "ratio", "Mesa setup s",
                "ours setup s", "final infected: ours / Mesa (mean)", "agree"):  # fmt: skip
        table.add_column(col)
    for r in results:
        inf = r["agreement"]["infected"]
        table.add_row(
            f"{r['nodes']:,}",
            str(r["steps"]),
            f"{r['mesa']['median_per_step_s']:.4g}",
            f"{r['ambidex']['median_per_step_s']:.4g}",
            f"{r['ratio']:.0f}x",
            f"{r['mesa']['median_setup_s']:.3g}",
            f"{r['ambidex']['median_setup_s']:.3g}",
            f"{inf['ours_mean']:.0f} / {inf['mesa_mean']:.0f}",
            "yes" if r["agreement_passed"] else "[red]no[/]",
        )
    console.print(table)


def print_build(build: dict[str, Any]) -> None:
    table = Table(
        title=f"building a {build['nodes']:,}-node graph ({build['edges']:,} edges), "
        f"medians of {build['repeats']} fresh processes"
    )
    for col in ("system", "seconds", "peak RSS growth MB", "edges"):
        table.add_column(col)
    for name, s in build["systems"].items():
        table.add_row(name, f"{s['median_s']:.3f}", f"{s['median_peak_mb']:.0f}", f"{s['edges']:,}")
    console.print(table)


def compute_ratios(results: list[dict[str, Any]], build: dict[str, Any]) -> list[dict[str, Any]]:
    ratios = [
        {
            "ratio": f"virus_on_network {r['nodes']:,} nodes: Mesa s/step / ours",
            "value": r["ratio"],
            "target": f">= {TARGET_RATIO:g}",
            "met": verdict(r["ratio"], TARGET_RATIO, higher_is_better=True),
            "note": f"{r['steps']} steps x {len(r['seeds'])} seeds",
        }
        for r in results
    ]
    s = build["systems"]
    ours_build = s["ambidex NetworkSpace(n, src, dst)"]
    for anchor in ("scipy.sparse COO -> CSR", "networkx Graph.add_edges_from"):
        ratios.append(
            {
                "ratio": f"CSR build {build['nodes']:,} nodes: {anchor} s / ours",
                "value": s[anchor]["median_s"] / ours_build["median_s"],
                "target": "-",
                "met": None,
                "note": f"peak MB {s[anchor]['median_peak_mb']:.0f} vs ours "
                f"{ours_build['median_peak_mb']:.0f}",
            }
        )
    gen = s["ambidex erdos_renyi"]
    nxg = s["networkx fast_gnp_random_graph"]
    ratios.append(
        {
            "ratio": f"G(n, 3/n) {build['nodes']:,} nodes: networkx fast_gnp s / ours",
            "value": nxg["median_s"] / gen["median_s"],
            "target": "-",
            "met": None,
            "note": f"peak MB {nxg['median_peak_mb']:.0f} vs ours {gen['median_peak_mb']:.0f}",
        }
    )
    return ratios


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1,000 nodes on 8 seeds, a 10^5-node build: a smoke test",
    )
    parser.add_argument("--repeats", type=int, default=None, help="build repeats (3; 1 quick)")
    parser.add_argument(
        "--output",
        default=None,
        help="results file name under benchmarks/results/ (default: sim_network, or "
        "sim_network-quick with --quick)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        mesa = load_mesa()
    except ImportError as exc:
        console.print(f"[red]Mesa is needed as the reference:[/] {exc} (pip install 'mesa>=3.1')")
        return 2
    info = machine_info()
    for dist in ("mesa", "networkx", "numba", "numpy", "scipy"):
        info[dist] = importlib.metadata.version(dist)
    console.print(
        f"[bold]sim_network[/] {info['date_utc']}  nproc={info['nproc']}  "
        f"python {info['python']}  mesa {info['mesa']}  networkx {info['networkx']}  "
        f"quick={args.quick}  load {info['loadavg_at_start']}"
    )
    started = time.perf_counter()
    # (nodes, steps, seeds): Mesa at 100,000 nodes takes about a second a step.
    # Quick: one size, 8 seeds (a z from 2 seeds a side, as before, says nothing).
    sizes = [(1000, 20, 8)] if args.quick else [(1000, 50, 7), (100_000, 5, 3)]
    results = [measure_virus(mesa, n, steps, list(range(k))) for n, steps, k in sizes]
    repeats = args.repeats or (1 if args.quick else 3)
    build = measure_build(100_000 if args.quick else 1_000_000, repeats)

    print_virus(results)
    print_build(build)
    ratios = compute_ratios(results, build)
    print_ratios(console, ratios, title="ratios (medians)", value_format=lambda v: f"{v:.1f}")
    elapsed = time.perf_counter() - started
    console.print(f"elapsed {elapsed:.1f} s  load {[round(x, 2) for x in os.getloadavg()]}")
    data = {
        "benchmark": "sim_network",
        "machine": info,
        "settings": {
            "quick": args.quick,
            "target_ratio": TARGET_RATIO,
            "timing": "per seed one run of each system, alternating which goes first; "
            "gc.collect() before each; setup and step phases timed separately; "
            "ambidex after a warm-up run (numba compile excluded); builds in fresh processes",
        },
        "virus_on_network": results,
        "build": build,
        "ratios": ratios,
        "agreement_passed": all(r["agreement_passed"] for r in results),
        "elapsed_s": elapsed,
    }
    name = args.output or ("sim_network-quick" if args.quick else "sim_network")
    path = write_json(name, data)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
