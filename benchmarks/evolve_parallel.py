"""Evolution pipeline: K candidates in flight against sequential and the pipeline floor.

Every candidate costs one LLM proposal (``mock-llm`` on loopback with 1 s
latency, model ``mock-code``: it answers with the parent's function, one
literal changed) and one sandboxed evaluation whose evaluator sleeps 0.5 s.
The same coordinator (``ax.evolve.aevolve``, LLM proposer, real sandbox:
subprocess, namespaces, rlimits, Landlock) runs:

* sequential: ``parallel=1``, ``--seq-iterations`` candidates;
* pipeline: ``parallel=K`` (default 8), ``--iterations`` candidates;
* anchor, batch-synchronous (the seed's design): the same proposer and
  sandbox driven as ``asyncio.gather`` of K candidates, then the next K;
* the price of reproducibility: ``parallel=K`` with ``deterministic=False``
  (free-running: each candidate stored when it finishes) against the default
  ``deterministic=True`` (stored in iteration order; iteration i starts when
  i-K is stored), both against a mock server whose latency jitters by
  ``--compare-jitter-ms`` (default 1000 ms: 1-2 s), restarted with the same
  seed before each run so both draw the same latencies in request order.

speedup = (sequential s per candidate) / (pipeline s per candidate); target
>= 0.85 K. floor = ceil(N / K) x (1 s + 0.5 s): the wall time if proposals and
evaluations cost exactly their latency and nothing else (with jitter, the mean
latency). With ``--jitter-ms``
the LLM latency varies, which is where a pipeline beats batches.

    .venv/bin/python benchmarks/evolve_parallel.py           # ~2 min
    .venv/bin/python benchmarks/evolve_parallel.py --quick   # smoke test, ~10 s: K=2, N=4,
                                                             # LLM 0.3 s, eval 0.2 s
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import ambidex as ax
from _common import machine_info, print_ratios, verdict, write_json
from ambidex.evolve import LLMProposer, Program, ProposalContext, Sandbox
from ambidex.llm import MockLLMServer

console = Console(width=int(os.environ.get("COLUMNS", "150")))

TARGET = """
import time

import ambidex as ax


@ax.evolve.target(goal="return a number close to 10", metric="score")
def guess() -> float:
    return 3.0 + 1.5


def evaluate(guess) -> dict[str, float]:
    time.sleep({eval_s})
    return {{"score": -abs(float(guess()) - 10.0)}}
"""


async def run_coordinator(
    path: Path,
    db: Path,
    iterations: int,
    parallel: int,
    url: str,
    timeout_s: float,
    *,
    deterministic: bool = True,
) -> dict[str, Any]:
    proposer = LLMProposer("mock-code", base_url=url, api_key="")
    started = time.perf_counter()
    result = await ax.evolve.aevolve(
        path,
        iterations=iterations,
        parallel=parallel,
        proposer=proposer,
        db=db,
        fresh=True,
        timeout_s=timeout_s,
        deterministic=deterministic,
    )
    wall = time.perf_counter() - started
    await proposer.aclose()
    return {
        "iterations": iterations,
        "parallel": parallel,
        "deterministic": deterministic,
        "wall_s": wall,
        "per_candidate_s": wall / iterations,
        "succeeded": result.succeeded,
        "failed": result.failed,
        "failures": result.failures,
        "best": None if result.best is None else result.best.score,
    }


async def run_batches(
    path: Path, iterations: int, k: int, url: str, timeout_s: float
) -> dict[str, Any]:
    """The seed's design: gather K propose+evaluate tasks, wait for all, repeat."""
    target = ax.evolve.load_target(path)
    proposer = LLMProposer("mock-code", base_url=url, api_key="")
    sandbox = Sandbox(timeout_s=timeout_s)
    parent = Program(code=target.code, metrics={}, score=None, ok=True, id=1)
    ok = 0

    async def one(i: int) -> bool:
        ctx = ProposalContext(
            target_name=target.name,
            goal=target.spec.goal,
            metric=target.spec.metric,
            maximize=True,
            parent=parent,
            inspirations=[],
            errors=[],
            alternatives=[],
            rng=random.Random(i),
        )
        proposal = await proposer.propose(ctx)
        if proposal.code is None:
            return False
        res = await sandbox.evaluate(
            target.with_code(proposal.code), evaluator="evaluate", target=target.name
        )
        return res.ok

    started = time.perf_counter()
    for start in range(0, iterations, k):
        outcomes = await asyncio.gather(*(one(i) for i in range(start, min(start + k, iterations))))
        ok += sum(outcomes)
    wall = time.perf_counter() - started
    return {
        "iterations": iterations,
        "parallel": k,
        "wall_s": wall,
        "per_candidate_s": wall / iterations,
        "succeeded": ok,
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer candidates: a smoke test")
    parser.add_argument("-k", "--parallel", type=int, default=None, help="K (8; quick 2)")
    parser.add_argument("--iterations", type=int, default=None, help="pipeline candidates (64)")
    parser.add_argument("--seq-iterations", type=int, default=None, help="sequential (10)")
    parser.add_argument("--latency-ms", type=float, default=None, help="(1000; quick 300)")
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument(
        "--compare-jitter-ms",
        type=float,
        default=None,
        help="LLM latency jitter of the deterministic vs free-running pair (1000; quick 300)",
    )
    parser.add_argument("--eval-s", type=float, default=None, help="(0.5; quick 0.2)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    # The smoke test's sizes are the least that still runs every mode with more
    # candidates than slots (K=2, N=4: the window slides once) and sleeps that
    # still dominate the sandbox's own cost: 18 evaluations instead of 67.
    quick = args.quick
    args.parallel = args.parallel or (2 if quick else 8)
    args.iterations = args.iterations or (4 if quick else 64)
    args.seq_iterations = args.seq_iterations or (2 if quick else 10)
    if args.latency_ms is None:
        args.latency_ms = 300.0 if quick else 1000.0
    if args.compare_jitter_ms is None:
        args.compare_jitter_ms = 300.0 if quick else 1000.0
    if args.eval_s is None:
        args.eval_s = 0.2 if quick else 0.5
    return args


async def _main(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    path = workdir / "guess_target.py"
    path.write_text(TARGET.format(eval_s=args.eval_s))
    k = args.parallel
    timeout_s = 30.0
    with MockLLMServer(latency_ms=args.latency_ms, jitter_ms=args.jitter_ms, seed=1) as server:
        seq = await run_coordinator(
            path, workdir / "seq.sqlite", args.seq_iterations, 1, server.url, timeout_s
        )
        pipe = await run_coordinator(
            path, workdir / "pipe.sqlite", args.iterations, k, server.url, timeout_s
        )
        batch = await run_batches(path, args.iterations, k, server.url, timeout_s)
    # The price of reproducibility, on a server of its own (jittered latency), restarted
    # with the same seed before each run: both runs draw the same latencies in request order.
    pair: dict[str, dict[str, Any]] = {}
    with MockLLMServer(
        latency_ms=args.latency_ms, jitter_ms=args.compare_jitter_ms, seed=2
    ) as server:
        for name, deterministic in (("free", False), ("deterministic", True)):
            server.reset()
            pair[name] = await run_coordinator(
                path,
                workdir / f"{name}.sqlite",
                args.iterations,
                k,
                server.url,
                timeout_s,
                deterministic=deterministic,
            )
    return {
        "sequential": seq,
        "pipeline": pipe,
        "batches": batch,
        "compare_free": pair["free"],
        "compare_deterministic": pair["deterministic"],
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    info = machine_info()
    k = args.parallel
    console.print(
        f"[bold]evolve_parallel[/] {info['date_utc']}  nproc={info['nproc']}  K={k}  "
        f"N={args.iterations} (sequential {args.seq_iterations})  LLM {args.latency_ms:g} ms "
        f"(+{args.jitter_ms:g} jitter)  eval {args.eval_s:g} s  load {info['loadavg_at_start']}"
    )
    sandbox_layers = Sandbox().containment()
    with tempfile.TemporaryDirectory(prefix="ax-evolve-bench-") as tmp, ax.Runtime():
        ax.limits(llm=max(16, k))
        data = ax.current_runtime().call(_main(args, Path(tmp)))
    seq, pipe, batch = data["sequential"], data["pipeline"], data["batches"]
    free, det = data["compare_free"], data["compare_deterministic"]
    compare_floor = math.ceil(args.iterations / k) * (
        (args.latency_ms + args.compare_jitter_ms / 2) / 1000 + args.eval_s
    )
    per_step = (args.latency_ms + args.jitter_ms / 2) / 1000 + args.eval_s  # mean latency
    floor = math.ceil(args.iterations / k) * per_step
    speedup = seq["per_candidate_s"] / pipe["per_candidate_s"]
    table = Table(title="evolution wall time")
    for col in ("mode", "K", "candidates", "wall s", "s per candidate", "ok"):
        table.add_column(col)
    table.add_row(
        "sequential (ambidex, parallel=1)",
        "1",
        str(seq["iterations"]),
        f"{seq['wall_s']:.2f}",
        f"{seq['per_candidate_s']:.3f}",
        str(seq["succeeded"]),
    )
    table.add_row(
        "pipeline (ambidex)",
        str(k),
        str(pipe["iterations"]),
        f"{pipe['wall_s']:.2f}",
        f"{pipe['per_candidate_s']:.3f}",
        str(pipe["succeeded"]),
    )
    table.add_row(
        "batches of K (anchor: gather, then next)",
        str(k),
        str(batch["iterations"]),
        f"{batch['wall_s']:.2f}",
        f"{batch['per_candidate_s']:.3f}",
        str(batch["succeeded"]),
    )
    table.add_row(
        "floor: ceil(N/K) x (LLM + eval)",
        str(k),
        str(args.iterations),
        f"{floor:.2f}",
        f"{floor / args.iterations:.3f}",
        "-",
    )
    jitter = f"LLM +{args.compare_jitter_ms:g} ms jitter"
    for label, row in (
        (f"pipeline, free-running (deterministic=False), {jitter}", free),
        (f"pipeline, in order (deterministic=True), {jitter}", det),
    ):
        table.add_row(
            label,
            str(k),
            str(row["iterations"]),
            f"{row['wall_s']:.2f}",
            f"{row['per_candidate_s']:.3f}",
            str(row["succeeded"]),
        )
    table.add_row(
        f"floor at {jitter} (mean latency)",
        str(k),
        str(args.iterations),
        f"{compare_floor:.2f}",
        f"{compare_floor / args.iterations:.3f}",
        "-",
    )
    console.print(table)
    ratios = [
        {
            "ratio": "speedup: sequential / pipeline (per candidate)",
            "value": speedup,
            "target": f">= {0.85 * k:.2f} (0.85 K)",
            "met": verdict(speedup, 0.85 * k, True),
            "note": f"sequential {seq['per_candidate_s']:.3f} s, pipeline "
            f"{pipe['per_candidate_s']:.3f} s per candidate",
        },
        {
            "ratio": "pipeline wall / floor",
            "value": pipe["wall_s"] / floor,
            "target": "-",
            "met": None,
            "note": f"floor {floor:.2f} s",
        },
        {
            "ratio": "batches wall / pipeline wall",
            "value": batch["wall_s"] / pipe["wall_s"],
            "target": "-",
            "met": None,
            "note": "above 1: the pipeline is faster",
        },
        {
            "ratio": "deterministic wall / free-running wall",
            "value": det["wall_s"] / free["wall_s"],
            "target": "-",
            "met": None,
            "note": f"the price of reproducibility, K={k}, {jitter}; "
            f"free {free['wall_s']:.2f} s, deterministic {det['wall_s']:.2f} s",
        },
    ]
    print_ratios(console, ratios)
    console.print(f"sandbox: {sandbox_layers}")
    out = {
        "benchmark": "evolve_parallel",
        "machine": info,
        "config": {k2: v for k2, v in vars(args).items() if k2 != "output"},
        "sandbox": sandbox_layers,
        "floor_s": floor,
        "compare_floor_s": compare_floor,
        "speedup": speedup,
        **data,
        "ratios": ratios,
    }
    name = args.output or ("evolve_parallel-quick" if args.quick else "evolve_parallel")
    console.print(f"wrote {write_json(name, out)}")
    ok = all(row["succeeded"] > 0 for row in (seq, pipe, free, det))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
