"""Fan-out throughput: many io calls at once, blocking calls on threads, cpu work on cores.

(a) 10,000 concurrent io calls that each ``await asyncio.sleep(0.1)``: ambidex ``f.map``
    (sync), ``await f.amap`` and ``await ax.agather`` (inside ``asyncio.run``) vs plain
    ``asyncio.gather`` inside ``asyncio.run``, against the 100 ms floor.
(b) 1,000 blocking ``time.sleep(0.01)`` calls: ambidex ``@ax.blocking`` ``.map`` on a
    runtime with ``io_threads=T`` vs ``ThreadPoolExecutor(max_workers=T).map``.
(c) pure-Python cpu work (~50 ms a call), K = 4 x cpu_workers calls: in-process
    sequential vs ambidex ``@ax.cpu`` ``.map`` on a warmed process pool.

Each scenario is repeated and the methods take turns; the median wall time is reported.
Each ambidex scenario has a tracing-on row (role ``traced``): the same ambidex
method with ``ax.instrument(tracer_provider=...)`` on, every span going through a
``SimpleSpanProcessor`` to an exporter that drops it (ambidex's spans and the SDK's
per-span work; no real exporter's encoding or network). In (c) the workers'
spans travel back with each reply and go through the same processor. Left out
when OpenTelemetry is not installed.

    .venv/bin/python benchmarks/fanout.py            # full run, writes results/fanout.json
    .venv/bin/python benchmarks/fanout.py --quick    # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import uvloop
from rich.console import Console
from rich.table import Table

import ambidex as ax
from _common import (
    ambidex_loop_name,
    machine_info,
    print_ratios,
    tracing,
    tracing_provider,
    verdict,
    write_json,
)

console = Console(width=int(os.environ.get("COLUMNS", "150")))

IO_SLEEP_S = 0.1
BLOCK_SLEEP_S = 0.01


# -- the work ------------------------------------------------------------------------


async def nap(x: int) -> int:
    await asyncio.sleep(IO_SLEEP_S)
    return x


def block(x: int) -> int:
    time.sleep(BLOCK_SLEEP_S)
    return x


def spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def spin_timed(n: int) -> tuple[int, float]:
    """``spin`` that also reports how long it ran where it ran (in a worker, or here)."""
    t0 = time.perf_counter()
    total = spin(n)
    return total, time.perf_counter() - t0


nap_ax = ax.io(nap)
block_ax = ax.blocking(block)
spin_timed_ax = ax.cpu(spin_timed)


def traced(method: Callable[[], Any]) -> Callable[[], Any]:
    """``method`` run with ambidex's tracing on (turned on and off outside its timing)."""

    def run() -> Any:
        with tracing():
            return method()

    return run


def _check(results: list[int], n: int) -> None:
    if results != list(range(n)):
        raise AssertionError("results missing or out of order")


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _rotations(names: list[str], repeats: int) -> list[list[str]]:
    return [names[r % len(names) :] + names[: r % len(names)] for r in range(repeats)]


def _row(name: str, role: str, loop: str, times: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "method": name,
        "role": role,
        "loop": loop,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "runs_s": [round(t, 4) for t in times],
        **extra,
    }


# -- (a) many io calls -----------------------------------------------------------------


def bench_io(n: int, repeats: int) -> dict[str, Any]:
    async def in_loop(body: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        results = await body()
        elapsed = time.perf_counter() - t0
        _check(results, n)
        return elapsed

    def run_async(body: Callable[[], Any], runner: Callable[[Any], float] = asyncio.run) -> float:
        return runner(in_loop(body))

    def ax_map() -> float:
        elapsed, results = _timed(lambda: nap_ax.map(range(n)))
        _check(results, n)
        return elapsed

    def ax_gather_sync() -> float:
        elapsed, results = _timed(lambda: ax.gather(*(nap_ax.aio(i) for i in range(n))))
        _check(results, n)
        return elapsed

    ax_loop = ambidex_loop_name()
    std = "asyncio (asyncio.run)"
    methods: dict[str, tuple[str, str, Callable[[], float]]] = {
        "ambidex f.map(range(n)) from sync": ("ambidex", ax_loop, ax_map),
        "ambidex await f.amap(range(n))": (
            "ambidex",
            std,
            lambda: run_async(lambda: nap_ax.amap(range(n))),
        ),
        "ambidex await ax.agather(*f.aio(i))": (
            "ambidex",
            std,
            lambda: run_async(lambda: ax.agather(*(nap_ax.aio(i) for i in range(n)))),
        ),
        "asyncio.gather(*fn(i))": (
            "anchor",
            std,
            lambda: run_async(lambda: asyncio.gather(*(nap(i) for i in range(n)))),
        ),
        "ambidex ax.gather(*f.aio(i)) from sync": ("extra", ax_loop, ax_gather_sync),
        "asyncio.gather(*fn(i)) on uvloop": (
            "extra",
            "uvloop (uvloop.run)",
            lambda: run_async(lambda: asyncio.gather(*(nap(i) for i in range(n))), uvloop.run),
        ),
    }
    if tracing_provider() is not None:
        on = "ambidex f.map(range(n)) from sync, tracing on"
        methods[on] = ("traced", ax_loop, traced(ax_map))
    # Warm up: start the runtime's loop thread, import and JIT-free paths, small n.
    nap_ax.map(range(10))
    times: dict[str, list[float]] = {name: [] for name in methods}
    for order in _rotations(list(methods), repeats):
        for name in order:
            times[name].append(methods[name][2]())
    rows = [_row(name, role, loop, times[name]) for name, (role, loop, _) in methods.items()]
    return {"n": n, "sleep_s": IO_SLEEP_S, "floor_s": IO_SLEEP_S, "methods": rows}


# -- (b) blocking calls on threads ----------------------------------------------------


def bench_blocking(n: int, threads: int, repeats: int) -> dict[str, Any]:
    floor = math.ceil(n / threads) * BLOCK_SLEEP_S
    with ax.Runtime(io_threads=threads) as rt, ThreadPoolExecutor(max_workers=threads) as pool:
        # Warm both pools: start every thread before timing.
        block_ax.map(range(threads), max_in_flight=threads)
        list(pool.map(block, range(threads)))
        started = rt.statistics().io_threads.threads

        def ax_map() -> float:
            elapsed, results = _timed(lambda: block_ax.map(range(n)))
            _check(results, n)
            return elapsed

        def tpe_map() -> float:
            elapsed, results = _timed(lambda: list(pool.map(block, range(n))))
            _check(results, n)
            return elapsed

        methods = {
            "ambidex @ax.blocking f.map(range(n))": ("ambidex", ax_map),
            "ThreadPoolExecutor.map(fn, range(n))": ("anchor", tpe_map),
        }
        if tracing_provider() is not None:
            methods["ambidex @ax.blocking f.map(range(n)), tracing on"] = ("traced", traced(ax_map))
        times: dict[str, list[float]] = {name: [] for name in methods}
        for order in _rotations(list(methods), repeats):
            for name in order:
                times[name].append(methods[name][1]())
    rows = [_row(name, role, "-", times[name]) for name, (role, _) in methods.items()]
    return {
        "n": n,
        "sleep_s": BLOCK_SLEEP_S,
        "threads": threads,
        "ambidex_threads_started_by_warmup": started,
        "floor_s": floor,
        "methods": rows,
    }


# -- (c) cpu work on all cores --------------------------------------------------------


def calibrate(target_s: float) -> int:
    # Keep the CPU busy first: after an idle spell this VM's CPUs run slower for a
    # while (frequency or host scheduling), which would skew the calibration.
    warm_until = time.perf_counter() + 0.5
    while time.perf_counter() < warm_until:
        spin(100_000)
    n = 100_000
    while True:
        t0 = time.perf_counter()
        spin(n)
        elapsed = time.perf_counter() - t0
        if elapsed > 0.01:
            break
        n *= 4
    n = int(n * target_s / elapsed)
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        spin(n)
        samples.append(time.perf_counter() - t0)
    return int(n * target_s / statistics.median(samples))


def bench_cpu(target_s: float, repeats: int) -> dict[str, Any]:
    n = calibrate(target_s)
    rt = ax.current_runtime()
    workers = rt.cpu_workers
    cores = rt.usable_cpus
    k = 4 * workers
    items = [n] * k
    expected = spin(n)
    # Warm the pool: one ~target_s call per worker, all at once, so every worker
    # process is started (and has imported what it needs) before timing.
    spin_timed_ax.map([n] * workers, max_in_flight=workers)
    stats = rt.statistics().cpu_workers
    started = stats.workers if stats is not None else 0

    def run(call: Callable[[], list[tuple[int, float]]]) -> tuple[float, list[float]]:
        elapsed, results = _timed(call)
        if [total for total, _ in results] != [expected] * k:
            raise AssertionError("wrong results")
        return elapsed, [took for _, took in results]

    # What this machine gives any process pool: the stdlib one, warmed the same way.
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(spin_timed, [n] * workers))
        methods: dict[str, tuple[str, int, Callable[[], list[tuple[int, float]]]]] = {
            "sequential, in-process": ("anchor", 1, lambda: [spin_timed(x) for x in items]),
            "ambidex @ax.cpu f.map(items)": ("ambidex", workers, lambda: spin_timed_ax.map(items)),
            "ProcessPoolExecutor.map(fn, items)": (
                "extra",
                workers,
                lambda: list(pool.map(spin_timed, items)),
            ),
        }
        if tracing_provider() is not None:
            # The workers load the tracing SDK on their first traced call: not timed.
            traced(lambda: spin_timed_ax.map([1] * workers, max_in_flight=workers))()
            methods["ambidex @ax.cpu f.map(items), tracing on"] = (
                "traced",
                workers,
                traced(lambda: spin_timed_ax.map(items)),
            )
        times: dict[str, list[float]] = {name: [] for name in methods}
        call_means: dict[str, list[float]] = {name: [] for name in methods}
        busy: dict[str, list[float]] = {name: [] for name in methods}
        for order in _rotations(list(methods), repeats):
            for name in order:
                _, width, call = methods[name]
                wall, took = run(call)
                times[name].append(wall)
                call_means[name].append(statistics.fmean(took))
                busy[name].append(sum(took) / (width * wall))
    rows = [
        _row(
            name,
            role,
            "-",
            times[name],
            call_mean_s=statistics.median(call_means[name]),
            busy_fraction=statistics.median(busy[name]),
        )
        for name, (role, _, _) in methods.items()
    ]
    seq_name, ax_name = "sequential, in-process", "ambidex @ax.cpu f.map(items)"
    paired = [s / p for s, p in zip(times[seq_name], times[ax_name], strict=True)]
    slowdown = [p / s for s, p in zip(call_means[seq_name], call_means[ax_name], strict=True)]
    return {
        "paired_speedups": [round(x, 3) for x in paired],
        "paired_call_slowdowns": [round(x, 3) for x in slowdown],
        "loop_iterations": n,
        "one_call_s": statistics.median(call_means[seq_name]),
        "target_call_s": target_s,
        "k": k,
        "cpu_workers": workers,
        "cores": cores,
        "workers_started_by_warmup": started,
        "methods": rows,
    }


# -- reporting -----------------------------------------------------------------------


def _median(section: dict[str, Any], name: str) -> float:
    return float(next(r for r in section["methods"] if r["method"] == name)["median_s"])


def _ratio(
    name: str, value: float, target: float | None, higher: bool, note: str
) -> dict[str, Any]:
    if target is None:
        return {"ratio": name, "value": value, "target": "-", "met": None, "note": note}
    return {
        "ratio": name,
        "value": value,
        "target": f"{'≥' if higher else '≤'} {target:g}",
        "met": verdict(value, target, higher),
        "note": note,
    }


def compute_ratios(a: dict[str, Any], b: dict[str, Any], c: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    plain = _median(a, "asyncio.gather(*fn(i))")
    uv = _median(a, "asyncio.gather(*fn(i)) on uvloop")
    floor = a["floor_s"]
    for r in a["methods"]:
        if r["role"] != "ambidex":
            continue
        out.append(_ratio(f"(a) {r['method']} / floor", r["median_s"] / floor, 1.3, False, ""))
    out.append(_ratio("(a) asyncio.gather / floor", plain / floor, None, False, "anchor"))
    for r in a["methods"]:
        if r["role"] != "ambidex":
            continue
        out.append(
            _ratio(
                f"(a) {r['method']} / asyncio.gather",
                r["median_s"] / plain,
                1.1,
                False,
                f"ambidex on {r['loop']}, anchor on asyncio",
            )
        )
    ax_map = _median(a, "ambidex f.map(range(n)) from sync")
    out.append(
        _ratio(
            "(a) (extra) f.map / asyncio.gather on uvloop",
            ax_map / uv,
            None,
            False,
            "same loop type on both sides",
        )
    )
    ax_b = _median(b, "ambidex @ax.blocking f.map(range(n))")
    tpe = _median(b, "ThreadPoolExecutor.map(fn, range(n))")
    out.append(_ratio("(b) ambidex / ThreadPoolExecutor", ax_b / tpe, None, False, "no target"))
    out.append(_ratio("(b) ambidex / floor", ax_b / b["floor_s"], None, False, "no target"))
    seq = _median(c, "sequential, in-process")
    par = _median(c, "ambidex @ax.cpu f.map(items)")
    speedup = seq / par
    ppe = _median(c, "ProcessPoolExecutor.map(fn, items)")
    out.append(_ratio("(c) speedup (sequential / ambidex)", speedup, None, True, ""))
    out.append(
        _ratio(
            "(c) speedup / cores",
            speedup / c["cores"],
            0.9,
            True,
            f"cores = {c['cores']}, cpu_workers = {c['cpu_workers']}",
        )
    )
    out.append(
        _ratio(
            "(c) (extra) median of per-round speedups / cores",
            statistics.median(c["paired_speedups"]) / c["cores"],
            None,
            True,
            "each round's sequential and ambidex runs paired",
        )
    )
    out.append(
        _ratio(
            "(c) (extra) ProcessPoolExecutor speedup / cores",
            seq / ppe / c["cores"],
            None,
            True,
            "what the machine gives a stdlib pool",
        )
    )
    out.append(_ratio("(c) (extra) ambidex / ProcessPoolExecutor", par / ppe, None, False, ""))
    rows = {r["method"]: r for r in c["methods"]}
    out.append(
        _ratio(
            "(c) (extra) ambidex workers' busy fraction",
            rows["ambidex @ax.cpu f.map(items)"]["busy_fraction"],
            None,
            True,
            "sum of call times in workers / (workers x wall): dispatch gaps",
        )
    )
    out.append(
        _ratio(
            "(c) (extra) call time in a worker / in-process",
            statistics.median(c["paired_call_slowdowns"]),
            None,
            False,
            "> 1: each CPU runs slower when all are busy (the machine)",
        )
    )
    return out


def print_section(title: str, section: dict[str, Any], ref: float, ref_name: str) -> None:
    table = Table(title=title)
    for col in ("method", "role", "loop", "median s", "min s", "max s", f"÷ {ref_name}"):
        table.add_column(col, justify="left" if col in {"method", "role", "loop"} else "right")
    for r in section["methods"]:
        table.add_row(
            r["method"],
            r["role"],
            r["loop"],
            f"{r['median_s']:.4f}",
            f"{r['min_s']:.4f}",
            f"{r['max_s']:.4f}",
            f"{r['median_s'] / ref:.3f}",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--io-calls", type=int, default=None, help="(a) concurrent io calls")
    parser.add_argument("--blocking-calls", type=int, default=None, help="(b) blocking calls")
    parser.add_argument(
        "--threads", type=int, default=None, help="(b) T (default: ax.current_runtime().io_threads)"
    )
    parser.add_argument("--cpu-call-s", type=float, default=None, help="(c) seconds per call")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per scenario")
    parser.add_argument(
        "--output",
        default=None,
        help="results file name under benchmarks/results/ (default: fanout, or fanout-quick "
        "with --quick)",
    )
    args = parser.parse_args(argv)

    quick = args.quick
    io_calls = args.io_calls or (1000 if quick else 10_000)
    blocking_calls = args.blocking_calls or (100 if quick else 1000)
    cpu_call_s = args.cpu_call_s or (0.02 if quick else 0.05)
    repeats = args.repeats or (1 if quick else 5)
    threads = args.threads or ax.current_runtime().io_threads

    info = machine_info()
    info["ambidex_loop"] = ambidex_loop_name()
    console.print(
        f"[bold]fanout[/] {info['date_utc']}  nproc={info['nproc']}  "
        f"usable_cpus={info['usable_cpus']}  python {info['python']}  "
        f"ambidex loop thread: {info['ambidex_loop']}  repeats={repeats}"
    )
    console.print(
        f"(b) T = {threads} threads "
        f"(ambidex default io_threads = {ax.current_runtime().io_threads})"
    )
    started = time.perf_counter()
    a = bench_io(io_calls, repeats)
    b = bench_blocking(blocking_calls, threads, max(repeats, 3) if not quick else 1)
    c = bench_cpu(cpu_call_s, max(repeats, 7) if not quick else 1)
    ax.current_runtime().close()

    print_section(
        f"(a) {io_calls} concurrent io calls, each `await asyncio.sleep({IO_SLEEP_S})` "
        "(wall time; async methods timed inside the running loop)",
        a,
        a["floor_s"],
        "floor",
    )
    print_section(
        f"(b) {blocking_calls} blocking calls of time.sleep({BLOCK_SLEEP_S}) on T = {threads} "
        f"threads (floor = ceil(n / T) x {BLOCK_SLEEP_S} s = {b['floor_s']:.2f} s)",
        b,
        b["floor_s"],
        "floor",
    )
    seq = _median(c, "sequential, in-process")
    print_section(
        f"(c) cpu: K = {c['k']} calls of a pure-Python loop ({c['one_call_s'] * 1000:.0f} ms "
        f"each), cpu_workers = {c['cpu_workers']}, pool warmed before timing "
        f"({c['workers_started_by_warmup']} workers started)",
        c,
        seq,
        "sequential",
    )
    ratios = compute_ratios(a, b, c)
    print_ratios(console, ratios)
    elapsed = time.perf_counter() - started
    console.print(f"elapsed {elapsed:.1f} s")

    data = {
        "benchmark": "fanout",
        "machine": info,
        "settings": {
            "quick": quick,
            "io_calls": io_calls,
            "blocking_calls": blocking_calls,
            "threads": threads,
            "cpu_call_s": cpu_call_s,
            "repeats": repeats,
            "cpu_pool_warmed_before_timing": True,
        },
        "io": a,
        "blocking": b,
        "cpu": c,
        "ratios": ratios,
        "elapsed_s": elapsed,
    }
    path = write_json(args.output or ("fanout-quick" if args.quick else "fanout"), data)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
