"""Per-evaluation cost of the evolve sandbox: one process, or evaluator and candidate apart.

Evaluates a trivial target again and again, one evaluation at a time, and reports
milliseconds per evaluation (median, p90; and the CPU milliseconds of all its
processes, mean) for:

* ``one process``: ``Sandbox.evaluate(source)``, the evaluator inside the candidate's
  module (what every evaluation cost before the split);
* ``split``: ``Sandbox.evaluate(source, target=..., evaluator_source=...)``, the
  evaluator's process loading the trusted file and forking the candidate's process;

each for a target of plain Python and for one that imports ambidex (as a target file
with ``@ax.evolve.target`` does). The split's extra cost is the fork of the
candidate's process and the calls crossing as data; ``split - one process`` is printed.
Run it on an older checkout (``PYTHONPATH=<old>/src``) for the cost before the split:
there only ``one process`` exists.

    .venv/bin/python benchmarks/evolve_sandbox_overhead.py            # ~40 s
    .venv/bin/python benchmarks/evolve_sandbox_overhead.py --quick    # ~5 s
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import resource
import statistics
import time

from rich.console import Console
from rich.table import Table

from _common import machine_info, write_json
from ambidex.evolve import Sandbox

console = Console(width=int(os.environ.get("COLUMNS", "150")))

PLAIN = """
def f():
    return [0.2, 0.3, 0.5]


def evaluate(f):
    values = f()
    return {"score": -abs(sum(values) - 1.0), "n": len(values)}
"""

WITH_AMBIDEX = (
    "import ambidex as ax\n\n\n@ax.evolve.target(goal='sum to one', metric='score')" + PLAIN
)


def _children_cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


async def _time(box: Sandbox, source: str, split: bool, n: int) -> tuple[list[float], float]:
    """Wall ms of each evaluation, and the CPU ms they cost on average (all processes)."""
    samples = []
    cpu0 = _children_cpu_ms()
    for _ in range(n):
        t0 = time.perf_counter()
        if split:
            result = await box.evaluate(source, target="f", evaluator_source=source)
        else:
            alone = source.replace("def evaluate(f):", "def evaluate():")
            result = await box.evaluate(alone)
        samples.append((time.perf_counter() - t0) * 1000)
        if not result.ok:
            raise SystemExit(f"evaluation failed: {result.kind}: {result.error}\n{result.stderr}")
    return samples, (_children_cpu_ms() - cpu0) / n


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few evaluations (smoke test)")
    parser.add_argument("-n", type=int, default=60, help="evaluations per row (default 60)")
    args = parser.parse_args()
    n = 8 if args.quick else args.n
    box = Sandbox(timeout_s=30)
    console.print(box.containment()["processes"])
    can_split = "evaluator_source" in inspect.signature(Sandbox.evaluate).parameters
    modes = [False, True] if can_split else [False]
    rows: dict[str, dict[str, float]] = {}
    for label, source in (("plain", PLAIN), ("imports ambidex", WITH_AMBIDEX)):
        await _time(box, source, False, 2)  # warm the page cache
        for split in modes:
            samples, cpu_ms = await _time(box, source, split, n)
            samples.sort()
            name = f"{label}, {'split' if split else 'one process'}"
            rows[name] = {
                "median_ms": statistics.median(samples),
                "p90_ms": samples[int(0.9 * (len(samples) - 1))],
                "cpu_ms": cpu_ms,
            }
    table = Table(title=f"ms per evaluation ({n} each, one at a time)")
    for column in ("target, mode", "median ms", "p90 ms", "CPU ms"):
        table.add_column(column, justify="right" if "ms" in column else "left")
    for name, row in rows.items():
        table.add_row(
            name, f"{row['median_ms']:.1f}", f"{row['p90_ms']:.1f}", f"{row['cpu_ms']:.1f}"
        )
    console.print(table)
    for label in ("plain", "imports ambidex"):
        if f"{label}, split" in rows:
            extra = (
                rows[f"{label}, split"]["median_ms"] - rows[f"{label}, one process"]["median_ms"]
            )
            console.print(f"{label}: the split costs {extra:+.1f} ms per evaluation (median)")
    write_json("evolve_sandbox_overhead", {"machine": machine_info(), "n": n, "rows": rows})


if __name__ == "__main__":
    asyncio.run(main())
