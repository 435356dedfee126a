"""What tracing costs: bridge.py and fanout.py off, against the code before tracing, and on.

Issue 18's claim: with tracing off, the bridge and fan-out figures stay within 3% of
those of the code before tracing existed; with it on, the cost per call is reported.
The anchor is ambidex itself before the change: a source tree of that commit
(``git worktree add /tmp/before e196439^``) given as ``--before``. Each round runs
both trees' ``bridge.py`` and ``fanout.py`` in fresh processes, alternating which
goes first, so drift in the machine's speed hits both alike; the figures are the
medians over rounds of each run's median. Every process is pinned to one CPU with
``taskset`` (when there is one): a sync call is two thread wake-ups, and whether
they cross CPUs swings a call 2x between runs (bridge.py's note on placement),
which would swamp a 3% difference.

The tracing-on rows come from this tree's own runs (bridge.py and fanout.py time
the same ambidex calls with ``ax.instrument()`` and an SDK provider whose spans
are dropped).

    git worktree add /tmp/before e196439^
    .venv/bin/python benchmarks/tracing_cost.py --before /tmp/before --rounds 5
    .venv/bin/python benchmarks/tracing_cost.py --before /tmp/before --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from _common import machine_info, write_json

HERE = Path(__file__).resolve().parent
AFTER = HERE.parent
console = Console(width=int(os.environ.get("COLUMNS", "150")))

# (benchmark, section, method): the ambidex rows the claim is about, in both trees.
OFF_ROWS = [
    ("bridge", "sync_to_async", "ambidex f(x)"),
    ("bridge", "async_to_thread", "ambidex await g.aio(x)"),
    ("fanout", "io", "ambidex f.map(range(n)) from sync"),
    ("fanout", "io", "ambidex await f.amap(range(n))"),
    ("fanout", "blocking", "ambidex @ax.blocking f.map(range(n))"),
    ("fanout", "cpu", "ambidex @ax.cpu f.map(items)"),
]
ON_ROWS = {
    ("bridge", "sync_to_async", "ambidex f(x)"): "ambidex f(x), tracing on",
    ("bridge", "async_to_thread", "ambidex await g.aio(x)"): "ambidex await g.aio(x), tracing on",
    ("fanout", "io", "ambidex f.map(range(n)) from sync"): (
        "ambidex f.map(range(n)) from sync, tracing on"
    ),
    ("fanout", "blocking", "ambidex @ax.blocking f.map(range(n))"): (
        "ambidex @ax.blocking f.map(range(n)), tracing on"
    ),
    ("fanout", "cpu", "ambidex @ax.cpu f.map(items)"): "ambidex @ax.cpu f.map(items), tracing on",
}


def _args(name: str, quick: bool) -> list[str]:
    if name == "bridge":
        return ["--calls", "2000" if quick else "20000", "--no-placement"]
    sizes = ["--io-calls", "2000", "--blocking-calls", "100"] if quick else []
    return [*sizes, "--repeats", "2" if quick else "5", "--cpu-call-s", "0.002"]


def run_one(tree: Path, name: str, tag: str, quick: bool) -> dict[str, Any]:
    """Run ``tree``'s benchmark ``name`` in a fresh pinned process; its results."""
    output = f"tracing_cost-{tag}-{name}"
    command = [sys.executable, str(tree / "benchmarks" / f"{name}.py"), *_args(name, quick)]
    command += ["--output", output]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        command = ["taskset", "-c", "1", *command]
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "COLUMNS": "200"}
    env.pop("AMBIDEX_OTEL", None)
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {name}.py failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    path = tree / "benchmarks" / "results" / f"{output}.json"
    data: dict[str, Any] = json.loads(path.read_text())
    path.unlink()
    return data


def _median_us(report: dict[str, Any], section: str, method: str) -> float | None:
    for row in report[section]["methods"]:
        if row["method"] == method:
            value = row.get("median_us")
            if value is None:  # fanout: a whole fan-out, seconds; per call
                calls = report[section].get("n") or report[section].get("k")
                value = row["median_s"] * 1e6 / calls
            return float(value)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree before tracing")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round: a smoke test")
    parser.add_argument("--output", default=None, help="results file under benchmarks/results/")
    args = parser.parse_args()
    before = args.before.resolve()
    if not (before / "benchmarks" / "bridge.py").is_file():
        parser.error(f"--before {before}: no benchmarks/bridge.py (a source tree of ambidex?)")
    rounds = 1 if args.quick else args.rounds
    trees = {"before": before, "after": AFTER}
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in range(rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for name in ("bridge", "fanout"):
            for which in order:
                console.print(f"round {r + 1}/{rounds}: {which} {name}.py")
                runs.setdefault(f"{which}/{name}", []).append(
                    run_one(trees[which], name, which, args.quick)
                )

    def median(which: str, name: str, section: str, method: str) -> float | None:
        values = [_median_us(rep, section, method) for rep in runs[f"{which}/{name}"]]
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    rows = []
    for name, section, method in OFF_ROWS:
        old = median("before", name, section, method)
        new = median("after", name, section, method)
        traced = ON_ROWS.get((name, section, method))
        on = median("after", name, section, traced) if traced else None
        rows.append(
            {
                "benchmark": name,
                "section": section,
                "method": method,
                "before_us": old,
                "off_us": new,
                "off_ratio": new / old if old and new else None,
                "on_us": on,
                "on_cost_us": on - new if on is not None and new is not None else None,
            }
        )
    table = Table(title="tracing off against the code before it (µs a call, medians of runs)")
    for column in ("benchmark", "method", "before", "off", "off / before", "on", "on - off"):
        table.add_column(column, justify="left" if column in ("benchmark", "method") else "right")
    for row in rows:

        def fmt(value: float | None, spec: str = ".2f") -> str:
            return "-" if value is None else format(value, spec)

        ratio = row["off_ratio"]
        verdict = "" if ratio is None else (" met" if ratio <= 1.03 else " MISSED")
        table.add_row(
            f"{row['benchmark']} {row['section']}",
            row["method"],
            fmt(row["before_us"]),
            fmt(row["off_us"]),
            fmt(ratio, ".3f") + verdict,
            fmt(row["on_us"]),
            fmt(row["on_cost_us"]),
        )
    console.print(table)
    console.print("target: off / before <= 1.03 (issue 18); on - off: what tracing on costs a call")
    write_json(
        args.output or ("tracing_cost-quick" if args.quick else "tracing_cost"),
        {
            "benchmark": "tracing_cost",
            "machine": machine_info(),
            "settings": {"before": str(before), "rounds": rounds, "quick": args.quick},
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
