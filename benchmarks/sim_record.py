"""Recording agent snapshots with a vector field: ambidex's Recorder beside pandas, by hand.

The data: ``--snapshots`` snapshots of ``--agents`` agents, each with an
``int64`` id, a ``pos=(np.float64, 2)`` vector field, an ``int64`` cell and a
``bool`` flag (what ``Agents(n, pos=(np.float64, 2), ...)`` snapshots), made
once, up front, so that only writing is timed.

* ours: ``ax.sim.Recorder(path)`` (SQLite file, then Parquet directory), a run
  started and every snapshot handed to ``snapshot()``, then ``close()``: rows
  buffered and written in batches (``buffer_rows``, default 200,000), memory bounded;
* anchor: what a user writes by hand with pandas: one ``DataFrame`` per
  snapshot (``pos`` split into ``pos_0``/``pos_1``), ``pd.concat``, then one
  ``DataFrame.to_sql`` into SQLite or one ``DataFrame.to_parquet``: everything
  held in memory until the end, the best case for the anchor.

Systems are interleaved within each round, every other round in reverse order
(``--rounds``, median reported); the
record written by ours is read back with ``open_record`` and checked against
the snapshots (the ``pos`` field as an ``(n, 2)`` float64 array).

    .venv/bin/python benchmarks/sim_record.py           # full run (~1 min)
    .venv/bin/python benchmarks/sim_record.py --quick   # a smoke test
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import ambidex as ax
from _common import machine_info, print_ratios, verdict, write_json

console = Console(width=int(os.environ.get("COLUMNS", "150")))

TARGET = 1.0
"""ours / anchor rows per second: recording through ambidex costs no more than by hand."""

Snapshot = dict[str, np.ndarray[Any, Any]]


def make_snapshots(agents: int, snapshots: int, seed: int) -> list[Snapshot]:
    rng = np.random.default_rng(seed)
    return [
        {
            "id": np.arange(agents, dtype=np.int64),
            "pos": rng.random((agents, 2)) * 100.0,
            "cell": rng.integers(0, 10_000, agents),
            "alive": rng.random(agents) < 0.5,
        }
        for _ in range(snapshots)
    ]


def ours(path: Path, snaps: list[Snapshot]) -> None:
    with ax.sim.Recorder(path) as recorder:
        run_id = recorder.start_run("Bench", {}, 0, (), len(snaps))
        for step, snap in enumerate(snaps):
            recorder.snapshot(run_id, step, snap)


def anchor(path: Path, snaps: list[Snapshot]) -> None:
    import pandas as pd

    frames = [
        pd.DataFrame(
            {
                "run_id": 1,
                "step": step,
                "id": s["id"],
                "pos_0": s["pos"][:, 0],
                "pos_1": s["pos"][:, 1],
                "cell": s["cell"],
                "alive": s["alive"],
            }
        )
        for step, s in enumerate(snaps)
    ]
    table = pd.concat(frames, ignore_index=True)
    if path.suffix == ".sqlite":
        con = sqlite3.connect(path)
        table.to_sql("agents", con, index=False)
        con.commit()
        con.close()
    else:
        path.mkdir()
        table.to_parquet(path / "agents.parquet", index=False)


def check(path: Path, snaps: list[Snapshot]) -> bool:
    """The record read back equals the snapshots (first and last step, every field)."""
    record = ax.sim.open_record(path)
    for step in (0, len(snaps) - 1):
        back = record.agents(1, step)
        for name, values in snaps[step].items():
            if back[name].dtype != values.dtype or not np.array_equal(back[name], values):
                return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--snapshots", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--output", help="JSON file name (default benchmarks/results/...)")
    args = parser.parse_args()
    if args.quick:
        args.agents, args.snapshots, args.rounds = 2_000, 5, 1
    rows = args.agents * args.snapshots
    info = machine_info()
    console.print(
        f"[bold]sim_record[/] {info['date_utc']}  nproc={info['nproc']}  agents={args.agents}  "
        f"snapshots={args.snapshots}  rows={rows:,}  rounds={args.rounds}  "
        f"load {info['loadavg_at_start']}"
    )
    snaps = make_snapshots(args.agents, args.snapshots, args.seed)
    systems: dict[str, tuple[Callable[[Path, list[Snapshot]], None], str]] = {
        "ambidex Recorder, SQLite": (ours, ".sqlite"),
        "pandas to_sql (anchor)": (anchor, ".sqlite"),
        "ambidex Recorder, Parquet": (ours, ".parquet"),
        "pandas to_parquet (anchor)": (anchor, ".parquet"),
    }
    times: dict[str, list[float]] = {name: [] for name in systems}
    correct = True
    with tempfile.TemporaryDirectory(prefix="sim_record-") as tmp:
        for round_ in range(args.rounds):
            # Every other round in reverse order: a system never always follows the same
            # one (a big SQLite commit just before leaves the disk busy for what comes next).
            order = list(enumerate(systems.items()))
            if round_ % 2:
                order.reverse()
            for i, (name, (write, suffix)) in order:
                path = Path(tmp) / f"r{round_}-{i}{suffix}"
                started = time.perf_counter()
                write(path, snaps)
                times[name].append(time.perf_counter() - started)
                if write is ours and round_ == 0:
                    correct = correct and check(path, snaps)
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()

    medians = {name: statistics.median(t) for name, t in times.items()}
    table = Table(title="writing the snapshots (median over rounds)")
    for col in ("system", "median s", "rows/s", "rounds (s)"):
        table.add_column(col)
    for name, t in times.items():
        table.add_row(
            name,
            f"{medians[name]:.3f}",
            f"{rows / medians[name]:,.0f}",
            ", ".join(f"{x:.3f}" for x in t),
        )
    console.print(table)
    ratios = []
    for fmt, ours_name, anchor_name in (
        ("SQLite", "ambidex Recorder, SQLite", "pandas to_sql (anchor)"),
        ("Parquet", "ambidex Recorder, Parquet", "pandas to_parquet (anchor)"),
    ):
        value = medians[anchor_name] / medians[ours_name]
        ratios.append(
            {
                "ratio": f"rows/s, ambidex / pandas, {fmt}",
                "value": value,
                "target": f">= {TARGET}",
                "met": verdict(value, TARGET, True),
                "note": f"ours {medians[ours_name]:.3f} s, anchor {medians[anchor_name]:.3f} s",
            }
        )
    ratios.append(
        {
            "ratio": "read back equal (dtype, shape, values)",
            "value": float(correct),
            "target": "= 1",
            "met": correct,
            "note": "open_record(path).agents(1, step)",
        }
    )
    print_ratios(console, ratios)
    data = {
        "benchmark": "sim_record",
        "machine": info,
        "config": {
            "agents": args.agents,
            "snapshots": args.snapshots,
            "rows": rows,
            "rounds": args.rounds,
            "fields": {"id": "int64", "pos": "float64 x 2", "cell": "int64", "alive": "bool"},
        },
        "times_s": times,
        "median_s": medians,
        "rows_per_s": {name: rows / m for name, m in medians.items()},
        "correct": correct,
        "ratios": ratios,
    }
    name = args.output or ("sim_record-quick" if args.quick else "sim_record")
    console.print(f"wrote {write_json(name, data)}")
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
