"""Per-node scheduling overhead of a workflow engine: ambidex vs LangGraph vs Dask.

Every node is trivial (it returns its input + 1), so what is measured is what the
engine costs per node: µs per node = wall time / nodes in the graph.

(a) chain: N nodes, each depends on the one before and gets its output (0 -> N).
(b) fan-out/fan-in: one source, N parallel nodes that each get the source's output,
    one sink that sums their N outputs (N + 2 nodes; the sink returns 2N).

Engines (trivial node = ``async def`` or a plain ``def`` for ambidex, a plain ``def`` for
the others):

* ambidex ``ax.Workflow``: ``wf.run()`` from sync code (headline; the run happens on
  ambidex's loop thread) with ``async def`` nodes, the same with plain ``def`` nodes
  (second headline: each node runs on ambidex's I/O threads), and ``await wf.arun()``
  inside ``asyncio.run`` (extra).
* LangGraph ``StateGraph``, ``invoke`` from sync code. Chain: N nodes in sequence,
  ``recursion_limit`` raised to N + 10. Fan-out: the Send API (one worker node sent N
  times, results gathered by an ``operator.add`` reducer; LangGraph's map-reduce idiom)
  and static parallel branches (N distinct nodes, the sink waits for all of them with
  ``add_edge([...], "sink")``).
* Dask ``dask.delayed`` with ``dask.compute(..., scheduler="threads")`` (anchor), and the
  same threaded scheduler on a plain graph dict (``dask.threaded.get``; extra, no
  ``delayed`` layers).

Graph construction (building, plus ``wf.validate()`` for ambidex and ``compile()`` for
LangGraph) and execution are timed separately; the headline is execution per node.
The garbage collector stays on (what users get); a collection is forced before each
timed step, and the time spent in collections during each execution is recorded.
Methods take turns in a rotating order in every round; the median over rounds is
reported.

    .venv/bin/python benchmarks/workflow_overhead.py            # full run (a few minutes)
    .venv/bin/python benchmarks/workflow_overhead.py --quick    # smoke test, < 20 s
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import importlib.metadata
import operator
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

import dask
import dask.threaded
from dask import delayed
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from rich.console import Console
from rich.table import Table

import ambidex as ax
from _common import REPO_ROOT, ambidex_loop_name, machine_info, print_ratios, verdict, write_json

console = Console(width=int(os.environ.get("COLUMNS", "160")))

TARGET_RATIO = 10.0  # best anchor's execution µs per node / ambidex's


# -- trivial nodes ---------------------------------------------------------------------


async def ainc(x: int) -> int:
    return x + 1


async def atotal(xs: list[int]) -> int:
    return sum(xs)


def inc(x: int) -> int:
    return x + 1


def total(xs: list[int]) -> int:
    return sum(xs)


# -- ambidex -----------------------------------------------------------------------------


def ax_chain(n: int, step: Callable[[int], Any] = ainc) -> tuple[ax.Workflow, str]:
    wf = ax.Workflow("chain")
    prev = wf.node("n0", step, input=0)
    for i in range(1, n):
        prev = wf.node(f"n{i}", step, input=prev.output)
    wf.validate()
    return wf, prev.name


def ax_fan(
    n: int, step: Callable[[int], Any] = ainc, sink: Callable[[list[int]], Any] = atotal
) -> tuple[ax.Workflow, str]:
    wf = ax.Workflow("fan")
    src = wf.node("src", step, input=0)
    mids = [wf.node(f"m{i}", step, input=src.output) for i in range(n)]
    wf.node("sink", sink, input={"xs": [m.output for m in mids]})
    wf.validate()
    return wf, "sink"


def ax_chain_def(n: int) -> tuple[ax.Workflow, str]:
    """The chain with plain ``def`` nodes (each runs on ambidex's I/O threads)."""
    return ax_chain(n, inc)


def ax_fan_def(n: int) -> tuple[ax.Workflow, str]:
    """The fan-out with plain ``def`` nodes (each runs on ambidex's I/O threads)."""
    return ax_fan(n, inc, total)


def ax_run_sync(graph: tuple[ax.Workflow, str]) -> tuple[float, Any]:
    wf, last = graph
    t0 = time.perf_counter()
    result = wf.run()
    elapsed = time.perf_counter() - t0
    return elapsed, result[last]


def ax_run_async(graph: tuple[ax.Workflow, str]) -> tuple[float, Any]:
    wf, last = graph

    async def main() -> tuple[float, Any]:
        t0 = time.perf_counter()
        result = await wf.arun()
        return time.perf_counter() - t0, result[last]

    return asyncio.run(main())


# -- LangGraph ---------------------------------------------------------------------------


class ChainState(TypedDict):
    x: int


class FanState(TypedDict):
    x: int
    results: Annotated[list[int], operator.add]
    total: int


class WorkItem(TypedDict):
    x: int


def lg_inc(state: ChainState) -> dict[str, int]:
    return {"x": state["x"] + 1}


def lg_work(item: WorkItem) -> dict[str, list[int]]:
    return {"results": [item["x"] + 1]}


def lg_sink(state: FanState) -> dict[str, int]:
    return {"total": sum(state["results"])}


def lg_chain(n: int) -> tuple[Any, int]:
    builder = StateGraph(ChainState)
    for i in range(n):
        builder.add_node(f"n{i}", lg_inc)
    builder.add_edge(START, "n0")
    for i in range(1, n):
        builder.add_edge(f"n{i - 1}", f"n{i}")
    builder.add_edge(f"n{n - 1}", END)
    return builder.compile(), n


def lg_fan_send(n: int) -> tuple[Any, int]:
    def fan_out(state: FanState) -> list[Send]:
        return [Send("work", {"x": state["x"]}) for _ in range(n)]

    builder = StateGraph(FanState)
    builder.add_node("src", lg_inc)
    builder.add_node("work", lg_work)
    builder.add_node("sink", lg_sink)
    builder.add_edge(START, "src")
    builder.add_conditional_edges("src", fan_out, ["work"])
    builder.add_edge("work", "sink")
    builder.add_edge("sink", END)
    return builder.compile(), n


def lg_fan_static(n: int) -> tuple[Any, int]:
    builder = StateGraph(FanState)
    builder.add_node("src", lg_inc)
    names = [f"m{i}" for i in range(n)]
    for name in names:
        builder.add_node(name, lg_work)
        builder.add_edge("src", name)
    builder.add_node("sink", lg_sink)
    builder.add_edge(START, "src")
    builder.add_edge(names, "sink")
    builder.add_edge("sink", END)
    return builder.compile(), n


def lg_run_chain(graph: tuple[Any, int]) -> tuple[float, Any]:
    compiled, n = graph
    t0 = time.perf_counter()
    out = compiled.invoke({"x": 0}, {"recursion_limit": n + 10})
    return time.perf_counter() - t0, out["x"]


def lg_run_fan(graph: tuple[Any, int]) -> tuple[float, Any]:
    compiled, _ = graph
    t0 = time.perf_counter()
    out = compiled.invoke({"x": 0, "results": []})
    return time.perf_counter() - t0, out["total"]


# -- Dask --------------------------------------------------------------------------------


def dk_chain(n: int) -> Any:
    value = delayed(inc)(0)
    for _ in range(1, n):
        value = delayed(inc)(value)
    return value


def dk_fan(n: int) -> Any:
    src = delayed(inc)(0)
    return delayed(total)([delayed(inc)(src) for _ in range(n)])


def dk_run(value: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    (out,) = dask.compute(value, scheduler="threads")
    return time.perf_counter() - t0, out


def dkraw_chain(n: int) -> tuple[dict[str, Any], str]:
    dsk: dict[str, Any] = {"n0": (inc, 0)}
    for i in range(1, n):
        dsk[f"n{i}"] = (inc, f"n{i - 1}")
    return dsk, f"n{n - 1}"


def dkraw_fan(n: int) -> tuple[dict[str, Any], str]:
    dsk: dict[str, Any] = {"src": (inc, 0)}
    names = [f"m{i}" for i in range(n)]
    for name in names:
        dsk[name] = (inc, "src")
    dsk["sink"] = (total, names)
    return dsk, "sink"


def dkraw_run(graph: tuple[dict[str, Any], str]) -> tuple[float, Any]:
    dsk, key = graph
    t0 = time.perf_counter()
    out = dask.threaded.get(dsk, key)
    return time.perf_counter() - t0, out


# -- the harness -------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    name: str
    role: str  # ambidex, anchor (named in the brief), extra
    engine: str
    build: Callable[[int], Any]
    execute: Callable[[Any], tuple[float, Any]]


CHAIN = [
    Method("ambidex wf.run() from sync", "ambidex", "ambidex", ax_chain, ax_run_sync),
    Method(
        "ambidex wf.run() from sync, def nodes", "ambidex_def", "ambidex", ax_chain_def, ax_run_sync
    ),
    Method("ambidex await wf.arun() (asyncio.run)", "extra", "ambidex", ax_chain, ax_run_async),
    Method(
        "LangGraph StateGraph, N nodes in sequence", "anchor", "langgraph", lg_chain, lg_run_chain
    ),
    Method("Dask delayed, compute(scheduler='threads')", "anchor", "dask", dk_chain, dk_run),
    Method("Dask threaded.get on a graph dict", "extra", "dask", dkraw_chain, dkraw_run),
]
FAN = [
    Method("ambidex wf.run() from sync", "ambidex", "ambidex", ax_fan, ax_run_sync),
    Method(
        "ambidex wf.run() from sync, def nodes", "ambidex_def", "ambidex", ax_fan_def, ax_run_sync
    ),
    Method("ambidex await wf.arun() (asyncio.run)", "extra", "ambidex", ax_fan, ax_run_async),
    Method("LangGraph Send API (map-reduce)", "anchor", "langgraph", lg_fan_send, lg_run_fan),
    Method("LangGraph static parallel branches", "anchor", "langgraph", lg_fan_static, lg_run_fan),
    Method("Dask delayed, compute(scheduler='threads')", "anchor", "dask", dk_fan, dk_run),
    Method("Dask threaded.get on a graph dict", "extra", "dask", dkraw_fan, dkraw_run),
]
SCENARIOS: dict[str, tuple[list[Method], Callable[[int], int], Callable[[int], int]]] = {
    # name: (methods, nodes in the graph, expected result)
    "chain": (CHAIN, lambda n: n, lambda n: n),
    "fan": (FAN, lambda n: n + 2, lambda n: 2 * n),
}


class GcWatch:
    """Counts collections and the time spent in them (all threads) while active."""

    def __init__(self) -> None:
        self.active = False
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if not self.active:
            return
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._t0
            self.collections[info["generation"]] += 1

    def start(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self.active = True

    def stop(self) -> tuple[float, list[int]]:
        self.active = False
        return self.seconds, list(self.collections)


GC_WATCH = GcWatch()


def measure(
    method: Method, n: int, nodes: int, expected: int, repeat: int = 1
) -> list[dict[str, Any]]:
    """Build once, then execute ``repeat`` times: a sample per execution."""
    gc.collect()
    t0 = time.perf_counter()
    graph = method.build(n)
    build_s = time.perf_counter() - t0
    samples = []
    for _ in range(repeat):
        gc.collect()
        GC_WATCH.start()
        cpu0 = time.process_time()
        exec_s, result = method.execute(graph)
        cpu_s = time.process_time() - cpu0
        gc_s, collections = GC_WATCH.stop()
        if result != expected:
            raise AssertionError(f"{method.name}: got {result!r}, expected {expected!r}")
        samples.append(
            {
                "build_s": build_s,
                "exec_s": exec_s,
                "gc_s": gc_s,
                "gc_collections": collections,
                "exec_us_per_node": exec_s / nodes * 1e6,
                "build_us_per_node": build_s / nodes * 1e6,
                # CPU of the whole process (every thread: ambidex's loop thread, Dask's
                # pool) during the execution: less moved by other processes than wall time
                "exec_cpu_us_per_node": cpu_s / nodes * 1e6,
            }
        )
    del graph
    return samples


def warm_up() -> None:
    """First use of each engine: ambidex's loop thread, Dask's thread pool, imports."""
    for methods, nodes_of, expected_of in SCENARIOS.values():
        for method in methods:
            for _ in range(2):
                measure(method, 50, nodes_of(50), expected_of(50))


def bench_size(n: int, rounds: int, skip: set[str], repeat: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "scenarios": {}}
    for scenario, (methods, nodes_of, expected_of) in SCENARIOS.items():
        nodes = nodes_of(n)
        active = [m for m in methods if m.engine not in skip]
        samples: dict[str, list[dict[str, Any]]] = {m.name: [] for m in active}
        for r in range(rounds):
            order = active[r % len(active) :] + active[: r % len(active)]
            for method in order:
                for s in measure(method, n, nodes, expected_of(n), repeat):
                    samples[method.name].append(s)
                    console.print(
                        f"  n={n} {scenario:5s} round {r + 1}/{rounds} {method.name:45s} "
                        f"build {s['build_s'] * 1e3:9.1f} ms  exec {s['exec_s'] * 1e3:9.1f} ms "
                        f"({s['exec_us_per_node']:7.1f} µs/node, gc {s['gc_s'] * 1e3:6.1f} ms)"
                    )
        rows = []
        for method in active:
            ss = samples[method.name]
            exec_us = [s["exec_us_per_node"] for s in ss]
            rows.append(
                {
                    "method": method.name,
                    "role": method.role,
                    "engine": method.engine,
                    "nodes": nodes,
                    "exec_us_per_node": statistics.median(exec_us),
                    "exec_us_per_node_min": min(exec_us),
                    "exec_us_per_node_max": max(exec_us),
                    "exec_s": statistics.median(s["exec_s"] for s in ss),
                    "build_s": statistics.median(s["build_s"] for s in ss),
                    "build_us_per_node": statistics.median(s["build_us_per_node"] for s in ss),
                    "gc_s": statistics.median(s["gc_s"] for s in ss),
                    "exec_cpu_us_per_node": statistics.median(
                        s["exec_cpu_us_per_node"] for s in ss
                    ),
                    "exec_minus_gc_us_per_node": statistics.median(
                        (s["exec_s"] - s["gc_s"]) / nodes * 1e6 for s in ss
                    ),
                    "runs": [
                        {k: (round(v, 6) if isinstance(v, float) else v) for k, v in s.items()}
                        for s in ss
                    ],
                }
            )
        out["scenarios"][scenario] = {"nodes": nodes, "methods": rows}
    return out


# -- reporting ---------------------------------------------------------------------------


def _ratio(name: str, value: float, target: float | None, note: str = "") -> dict[str, Any]:
    return {
        "ratio": name,
        "value": value,
        "target": "-" if target is None else f"≥ {target:g}",
        "met": None if target is None else verdict(value, target, higher_is_better=True),
        "note": note,
    }


def _best(rows: list[dict[str, Any]], key: str = "exec_us_per_node") -> dict[str, Any]:
    return min(rows, key=lambda r: r[key])


def scaling_ratios(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best anchor / ambidex (and best non-ambidex row / ambidex) at the smaller sizes.

    For both headline rows: ``async def`` nodes ("ambidex") and plain ``def`` nodes
    ("ambidex_def"); the best-anchor ratio is held to the same target as at the headline N.
    """
    out = []
    for size in sizes:
        for scenario, section in size["scenarios"].items():
            rows = section["methods"]
            anchors = [r for r in rows if r["role"] == "anchor"]
            others = [r for r in rows if r["engine"] != "ambidex"]
            if not anchors:
                continue
            best, strict = _best(anchors), _best(others)
            for role, label in OURS.items():
                ours = next((r for r in rows if r["role"] == role), None)
                if ours is None:
                    continue
                out.append(
                    _ratio(
                        f"({scenario}, N = {size['n']}, {label}) best anchor / ambidex, execution",
                        best["exec_us_per_node"] / ours["exec_us_per_node"],
                        TARGET_RATIO,
                        f"smaller N; best = {best['method']}",
                    )
                )
                out.append(
                    _ratio(
                        f"({scenario}, N = {size['n']}, {label}) best non-ambidex row / ambidex, "
                        "execution",
                        strict["exec_us_per_node"] / ours["exec_us_per_node"],
                        None,
                        f"smaller N; best = {strict['method']}",
                    )
                )
    return out


# The ambidex rows held to the target: role -> label in the ratio names.
OURS = {"ambidex": "async def", "ambidex_def": "def"}


def compute_ratios(headline: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for scenario, section in headline["scenarios"].items():
        ours = next(r for r in section["methods"] if r["role"] == "ambidex")
        anchors = [r for r in section["methods"] if r["role"] == "anchor"]
        if not anchors:
            continue
        best = min(anchors, key=lambda r: r["exec_us_per_node"])
        ours_def = next((r for r in section["methods"] if r["role"] == "ambidex_def"), None)
        if ours_def is not None:
            out.append(
                _ratio(
                    f"({scenario}, def nodes) best anchor / ambidex, execution µs per node",
                    best["exec_us_per_node"] / ours_def["exec_us_per_node"],
                    TARGET_RATIO,
                    f"best anchor = {best['method']}",
                )
            )
        out.append(
            _ratio(
                f"({scenario}, async def nodes) best anchor / ambidex, execution µs per node",
                best["exec_us_per_node"] / ours["exec_us_per_node"],
                TARGET_RATIO,
                f"best anchor = {best['method']}",
            )
        )
        for r in section["methods"]:
            if r is ours or r is best:
                continue
            out.append(
                _ratio(
                    f"({scenario}) {r['method']} / ambidex, execution",
                    r["exec_us_per_node"] / ours["exec_us_per_node"],
                    None,
                    r["role"],
                )
            )
        extras = [
            r for r in section["methods"] if r["role"] != "ambidex" and r["engine"] != "ambidex"
        ]
        strict = min(extras, key=lambda r: r["exec_us_per_node"])
        out.append(
            _ratio(
                f"({scenario}) best of every non-ambidex row / ambidex, execution",
                strict["exec_us_per_node"] / ours["exec_us_per_node"],
                None,
                f"stricter: includes extras; best = {strict['method']}",
            )
        )
        out.append(
            _ratio(
                f"({scenario}) best anchor / ambidex, execution minus GC time",
                _best(anchors, "exec_minus_gc_us_per_node")["exec_minus_gc_us_per_node"]
                / ours["exec_minus_gc_us_per_node"],
                None,
                "time inside garbage collections taken out of both",
            )
        )
        best_build = min(anchors, key=lambda r: r["build_s"])
        out.append(
            _ratio(
                f"({scenario}) best anchor / ambidex, construction",
                best_build["build_s"] / ours["build_s"],
                None,
                f"best = {best_build['method']}",
            )
        )
        best_total = min(anchors, key=lambda r: r["build_s"] + r["exec_s"])
        out.append(
            _ratio(
                f"({scenario}) best anchor / ambidex, construction + execution",
                (best_total["build_s"] + best_total["exec_s"]) / (ours["build_s"] + ours["exec_s"]),
                None,
                f"best = {best_total['method']}",
            )
        )
    return out


def print_section(title: str, section: dict[str, Any]) -> None:
    table = Table(title=title)
    cols = (
        "method",
        "role",
        "exec µs/node",
        "min",
        "max",
        "exec ms",
        "gc ms",
        "exec-gc µs/node",
        "build ms",
        "build µs/node",
        "exec ÷ ambidex",
    )
    for col in cols:
        table.add_column(col, justify="left" if col in {"method", "role"} else "right")
    ours = next(r for r in section["methods"] if r["role"] == "ambidex")
    for r in section["methods"]:
        table.add_row(
            r["method"],
            r["role"],
            f"{r['exec_us_per_node']:.2f}",
            f"{r['exec_us_per_node_min']:.2f}",
            f"{r['exec_us_per_node_max']:.2f}",
            f"{r['exec_s'] * 1e3:.1f}",
            f"{r['gc_s'] * 1e3:.1f}",
            f"{r['exec_minus_gc_us_per_node']:.2f}",
            f"{r['build_s'] * 1e3:.1f}",
            f"{r['build_us_per_node']:.2f}",
            f"{r['exec_us_per_node'] / ours['exec_us_per_node']:.2f}",
        )
    console.print(table)


def print_scaling(sizes: list[dict[str, Any]]) -> None:
    for scenario in SCENARIOS:
        table = Table(title=f"({scenario}) execution µs per node by size (medians)")
        table.add_column("method")
        for size in sizes:
            table.add_column(f"N = {size['n']}", justify="right")
        names = [r["method"] for r in sizes[-1]["scenarios"][scenario]["methods"]]
        for name in names:
            cells = []
            for size in sizes:
                rows = {r["method"]: r for r in size["scenarios"][scenario]["methods"]}
                cells.append(f"{rows[name]['exec_us_per_node']:.2f}" if name in rows else "-")
            table.add_row(name, *cells)
        console.print(table)


def src_fingerprint() -> str:
    """sha256 (12 hex digits) of every .py file under src/ambidex: which code ran."""
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "src" / "ambidex").rglob("*.py")):
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1000, one round: < 20 s")
    parser.add_argument("--nodes", type=int, default=None, help="N (default 10000; 1000 quick)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3; 1 quick)")
    parser.add_argument(
        "--scaling",
        default=None,
        help="comma-separated smaller N also measured, e.g. 1000,3000 (default: that; "
        "none with --quick; 'none' for none)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="executions of each built graph per round (default 1): every one is a sample, "
        "so a median over rounds x repeat samples, steadier on a loaded machine",
    )
    parser.add_argument(
        "--skip", default="", help="comma-separated engines to leave out: langgraph, dask"
    )
    parser.add_argument(
        "--output",
        default=None,
        help="results file name under benchmarks/results/ (default: workflow_overhead, or "
        "workflow_overhead-quick with --quick)",
    )
    args = parser.parse_args(argv)

    quick = args.quick
    n = args.nodes or (1000 if quick else 10_000)
    rounds = args.rounds or (1 if quick else 3)
    scaling_arg = args.scaling or ("none" if quick else "1000,3000")
    scaling = [] if scaling_arg == "none" else [int(x) for x in scaling_arg.split(",")]
    scaling = [s for s in scaling if s < n]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    info = machine_info()
    info["ambidex_loop"] = ambidex_loop_name()
    info["src_sha"] = src_fingerprint()
    for dist in ("langgraph", "langgraph-checkpoint", "langchain-core", "dask"):
        info[dist] = importlib.metadata.version(dist)
    console.print(
        f"[bold]workflow_overhead[/] {info['date_utc']}  nproc={info['nproc']}  "
        f"python {info['python']}  ambidex {info['git_commit']} (src {info['src_sha']})  "
        f"loop thread: {info['ambidex_loop']}  langgraph {info['langgraph']}  "
        f"dask {info['dask']}  N={n} rounds={rounds} repeat={args.repeat} scaling={scaling}"
    )
    gc.callbacks.append(GC_WATCH)
    started = time.perf_counter()
    warm_up()
    repeat = max(1, args.repeat)
    sizes = [bench_size(s, rounds, skip, repeat) for s in [*scaling, n]]
    ax.current_runtime().close()
    headline = sizes[-1]
    print_section(
        f"(a) chain of {n} trivial nodes (each gets the previous node's output + 1)",
        headline["scenarios"]["chain"],
    )
    print_section(
        f"(b) fan-out/fan-in: 1 source, {n} parallel nodes, 1 sink summing them ({n + 2} nodes)",
        headline["scenarios"]["fan"],
    )
    if len(sizes) > 1:
        print_scaling(sizes)
    ratios = compute_ratios(headline) + scaling_ratios(sizes[:-1])
    print_ratios(console, ratios, value_format=lambda v: f"{v:.3f}" if v < 1 else f"{v:.2f}")
    elapsed = time.perf_counter() - started
    console.print(f"elapsed {elapsed:.1f} s")
    data = {
        "benchmark": "workflow_overhead",
        "machine": info,
        "settings": {
            "quick": quick,
            "nodes": n,
            "rounds": rounds,
            "repeat": repeat,
            "scaling": scaling,
            "skip": sorted(skip),
            "gc": "enabled; gc.collect() before each timed build and execution",
            "target_ratio": TARGET_RATIO,
        },
        "headline": headline,
        "scaling": sizes[:-1],
        "ratios": ratios,
        "elapsed_s": elapsed,
    }
    path = write_json(
        args.output or ("workflow_overhead-quick" if quick else "workflow_overhead"), data
    )
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
