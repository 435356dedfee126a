"""What ``Workflow.validate()`` costs per node on 10,000-node workflows (issue 16).

Validation reads every node's target (``inspect.signature`` and ``typing.get_type_hints``
for functions), follows every reference, checks types between connected nodes and looks
for cycles. The target: at most 10 µs a node, whether the functions' annotations are
real objects or strings (``from __future__ import annotations``), and for agents.

Shapes (N = 10,000 by default):

* chain: ``n0`` takes no input; ``n{i}`` gets ``{"x": n{i-1}.output}`` (a dict input:
  keyword arguments; ``{"x": n{i-1}.output.x}`` for agents).
* fan-out: one source, N nodes that each get the source's output, one sink whose input
  is ``{"xs": [every middle node's output]}`` (N + 2 nodes).
* chain, a closure per node: the chain, each node's function a new closure made by one
  ``def`` in a factory (``make_step(i)``): N function objects sharing one code object.

Targets:

* functions, real annotations: ``def step(x: int) -> int`` etc., in a module compiled
  without ``from __future__ import annotations``;
* functions, string annotations: the same source compiled with it, so every annotation
  is a string that ``typing.get_type_hints`` must evaluate;
* agents: ``ax.Agent[StepIn, StepOut]`` classes (pydantic models in and out).

Each round compiles the functions afresh (new function objects: nothing cached from the
round before), builds the workflow, then times the first ``wf.validate()`` (the
headline, wall time: it pays for reading every target once; the process's CPU time is
shown beside it, steadier on a shared machine) and a second one (warm). Building
(``wf.node`` calls) is timed apart and is not part of the figure. The garbage collector
stays on; ``gc.collect()`` runs before each timed step. The median over rounds is
reported. After timing, each case is checked: validation must pass, and the same
workflow with one mis-typed connection (a ``str`` output into an ``int`` parameter or
field) must be refused.

    .venv/bin/python benchmarks/workflow_validation.py            # N = 10,000, 5 rounds
    .venv/bin/python benchmarks/workflow_validation.py --quick    # N = 1,000, 1 round
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

import ambidex as ax
from _common import machine_info, write_json

console = Console(width=int(os.environ.get("COLUMNS", "160")))

TARGET_US = 10.0  # validation, µs per node

FUNCTIONS = """
import pydantic
import ambidex as ax


def first() -> int:
    return 0


def step(x: int) -> int:
    return x + 1


def label(x: int) -> str:
    return str(x)


def total(xs: list[int]) -> int:
    return sum(xs)


def make_step(i: int):
    def step(x: int) -> int:
        return x + i

    return step


class StepIn(pydantic.BaseModel):
    x: int


class StepOut(pydantic.BaseModel):
    x: int
    text: str = ""


class SumIn(pydantic.BaseModel):
    xs: list[int]


class First(ax.Agent[StepIn, StepOut]):
    def run(self, input: StepIn) -> StepOut:
        return StepOut(x=input.x)


class Step(ax.Agent[StepIn, StepOut]):
    def run(self, input: StepIn) -> StepOut:
        return StepOut(x=input.x + 1)


class Sum(ax.Agent[SumIn, StepOut]):
    def run(self, input: SumIn) -> StepOut:
        return StepOut(x=sum(input.xs))
"""


def compile_targets(lazy: bool) -> types.ModuleType:
    """A fresh module holding the node targets; ``lazy``: string annotations."""
    name = f"_wfval_{'lazy' if lazy else 'real'}_{time.perf_counter_ns()}"
    module = types.ModuleType(name)
    source = ("from __future__ import annotations\n" if lazy else "") + FUNCTIONS
    sys.modules[name] = module  # pydantic resolves the models' annotations through it
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


# -- the workflows -----------------------------------------------------------------------


def chain(m: types.ModuleType, n: int, agents: bool, broken: bool = False) -> ax.Workflow:
    wf = ax.Workflow("chain")
    if agents:
        prev = wf.node("n0", m.First, input={"x": 0})
        for i in range(1, n):
            ref = prev.output.text if broken and i == n - 1 else prev.output.x
            prev = wf.node(f"n{i}", m.Step, input={"x": ref})
        return wf
    prev = wf.node("n0", m.label if broken else m.first, input={"x": 0} if broken else None)
    for i in range(1, n):
        prev = wf.node(f"n{i}", m.step, input={"x": prev.output})
    return wf


def closures(m: types.ModuleType, n: int, agents: bool, broken: bool = False) -> ax.Workflow:
    """The chain with a new function object per node, made by one ``def`` (a factory)."""
    wf = ax.Workflow("closures")
    prev = wf.node("n0", m.label if broken else m.first, input={"x": 0} if broken else None)
    for i in range(1, n):
        prev = wf.node(f"n{i}", m.make_step(i), input={"x": prev.output})
    return wf


def fan_out(m: types.ModuleType, n: int, agents: bool, broken: bool = False) -> ax.Workflow:
    wf = ax.Workflow("fan-out")
    if agents:
        src = wf.node("src", m.First, input={"x": 0})
        mids = [wf.node(f"m{i}", m.Step, input={"x": src.output.x}) for i in range(n)]
        if broken:
            wf.node("bad", m.Step, input={"x": src.output.text})
        wf.node("sink", m.Sum, input={"xs": [mid.output.x for mid in mids]})
        return wf
    src = wf.node("src", m.first)
    mids = [wf.node(f"m{i}", m.step, input=src.output) for i in range(n)]
    if broken:
        bad = wf.node("bad", m.label, input={"x": 1})
        wf.node("bad_step", m.step, input={"x": bad.output})
    wf.node("sink", m.total, input={"xs": [mid.output for mid in mids]})
    return wf


CASES: list[tuple[str, str, bool, bool]] = [
    # (shape, targets, lazy annotations, agents)
    ("chain", "functions, real annotations", False, False),
    ("chain", "functions, string annotations", True, False),
    ("chain", "agents", False, True),
    ("fan-out", "functions, real annotations", False, False),
    ("fan-out", "functions, string annotations", True, False),
    ("fan-out", "agents", False, True),
    ("chain, a closure per node", "functions, real annotations", False, False),
    ("chain, a closure per node", "functions, string annotations", True, False),
]
SHAPES: dict[str, Callable[..., ax.Workflow]] = {
    "chain": chain,
    "fan-out": fan_out,
    "chain, a closure per node": closures,
}


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall and CPU seconds (this process's) of ``fn()``, and its value."""
    gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, time.process_time() - cpu0, value


def measure(shape: str, lazy: bool, agents: bool, n: int) -> dict[str, float]:
    module = compile_targets(lazy)
    build_s, _, wf = _timed(lambda: SHAPES[shape](module, n, agents))
    nodes = len(wf.nodes)
    cold_s, cold_cpu_s, _ = _timed(wf.validate)
    warm_s, _, _ = _timed(wf.validate)
    return {
        "nodes": nodes,
        "build_us": build_s * 1e6 / nodes,
        "validate_us": cold_s * 1e6 / nodes,
        "validate_cpu_us": cold_cpu_s * 1e6 / nodes,
        "warm_us": warm_s * 1e6 / nodes,
    }


def caught(shape: str, lazy: bool, agents: bool) -> str | None:
    """The problem validation reports for a mis-typed connection, or None if it passes."""
    wf = SHAPES[shape](compile_targets(lazy), 20, agents, broken=True)
    try:
        wf.validate()
    except ax.WorkflowDefinitionError as exc:
        return "; ".join(exc.problems)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1,000, 1 round: a few seconds")
    parser.add_argument("--nodes", type=int, default=None, help="N (default 10,000)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5)")
    parser.add_argument(
        "--output",
        default=None,
        help="results file name under benchmarks/results/ (default: workflow_validation, or "
        "workflow_validation-quick with --quick)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    n = args.nodes or (1_000 if quick else 10_000)
    rounds = args.rounds or (1 if quick else 5)
    info = machine_info()
    console.print(
        f"[bold]workflow_validation[/] {info['date_utc']}  nproc={info['nproc']}  "
        f"python {info['python']}  ambidex {info['git_commit']}  N={n}  rounds={rounds}"
    )
    started = time.perf_counter()
    for shape, _, lazy, agents in CASES:  # warm up imports and pydantic
        measure(shape, lazy, agents, 50)
    samples: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(CASES))}
    for r in range(rounds):
        for k in range(len(CASES)):  # a rotating order
            i = (k + r) % len(CASES)
            shape, _, lazy, agents = CASES[i]
            samples[i].append(measure(shape, lazy, agents, n))
    results = []
    for i, (shape, targets, lazy, agents) in enumerate(CASES):
        runs = samples[i]
        cold = [s["validate_us"] for s in runs]
        problem = caught(shape, lazy, agents)
        results.append(
            {
                "shape": shape,
                "targets": targets,
                "nodes": int(runs[0]["nodes"]),
                "validate_us_per_node": statistics.median(cold),
                "validate_min_us": min(cold),
                "validate_max_us": max(cold),
                "validate_cpu_us_per_node": statistics.median(s["validate_cpu_us"] for s in runs),
                "warm_us_per_node": statistics.median(s["warm_us"] for s in runs),
                "build_us_per_node": statistics.median(s["build_us"] for s in runs),
                "met": statistics.median(cold) <= TARGET_US,
                "mismatch_caught": problem is not None,
                "mismatch_problem": problem,
            }
        )
    table = Table(title=f"validation, µs per node (median of {rounds}; target ≤ {TARGET_US:g})")
    for col in ("shape", "targets", "nodes", "validate", "min", "max", "cpu", "again", "build"):
        table.add_column(col, justify="left" if col in ("shape", "targets") else "right")
    table.add_column("target")
    table.add_column("mis-typed edge")
    for row in results:
        table.add_row(
            row["shape"],
            row["targets"],
            f"{row['nodes']:,}",
            f"[bold]{row['validate_us_per_node']:.2f}[/]",
            f"{row['validate_min_us']:.2f}",
            f"{row['validate_max_us']:.2f}",
            f"{row['validate_cpu_us_per_node']:.2f}",
            f"{row['warm_us_per_node']:.2f}",
            f"{row['build_us_per_node']:.2f}",
            "[green]met[/]" if row["met"] else "[red]NOT met[/]",
            "caught" if row["mismatch_caught"] else "[red]missed[/]",
        )
    console.print(table)
    elapsed = time.perf_counter() - started
    console.print(f"elapsed {elapsed:.1f} s")
    data = {
        "benchmark": "workflow_validation",
        "machine": info,
        "settings": {"quick": quick, "nodes": n, "rounds": rounds, "target_us": TARGET_US},
        "results": results,
        "elapsed_s": elapsed,
    }
    path = write_json(
        args.output or ("workflow_validation-quick" if quick else "workflow_validation"), data
    )
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
