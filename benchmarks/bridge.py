"""Per-call overhead of crossing the sync/async boundary, ambidex vs the usual tools.

(a) sync -> async: call a trivial ``async def`` (returns its argument) from sync code:
    ambidex ``f(x)`` vs ``asyncio.run(fn(x))`` vs asgiref ``async_to_sync`` vs an anyio
    ``BlockingPortal``.
(b) async -> thread: offload a trivial sync function from async code:
    ambidex ``await g.aio(x)`` vs ``asyncio.to_thread`` vs ``anyio.to_thread.run_sync``,
    all inside one event loop started by ``asyncio.run`` (stdlib loop by default).

Each call is timed on its own with ``time.perf_counter_ns``; every method is warmed up,
then the calls are split into rounds and the methods take turns (in a rotating order)
so that drift in the machine's speed hits them all alike. The garbage collector is
disabled while a round is timed (as ``timeit`` does).

    .venv/bin/python benchmarks/bridge.py            # full run, writes results/bridge.json
    .venv/bin/python benchmarks/bridge.py --quick    # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from _common import ambidex_loop_name, machine_info, summarize_ns, verdict, write_json
from asgiref.sync import async_to_sync
from rich.console import Console
from rich.table import Table

import ambidex as ax

console = Console(width=int(os.environ.get("COLUMNS", "150")))


# -- the work being called ---------------------------------------------------------


async def echo(x: int) -> int:
    return x


def echo_sync(x: int) -> int:
    return x


echo_ax = ax.io(echo)
echo_blocking_ax = ax.blocking(echo_sync)


# -- timing loops --------------------------------------------------------------------


def time_sync(call: Callable[[int], Any], n: int, start: int = 0) -> list[int]:
    """Time ``n`` calls of ``call(i)`` one by one; check each result."""
    samples = [0] * n
    clock = time.perf_counter_ns
    for k in range(n):
        i = start + k
        t0 = clock()
        result = call(i)
        samples[k] = clock() - t0
        if result != i:
            raise AssertionError(f"wrong result {result!r} for {i}")
    return samples


async def time_async(make: Callable[[int], Awaitable[Any]], n: int, start: int = 0) -> list[int]:
    """Time ``n`` awaits of ``make(i)`` one by one; check each result."""
    samples = [0] * n
    clock = time.perf_counter_ns
    for k in range(n):
        i = start + k
        t0 = clock()
        result = await make(i)
        samples[k] = clock() - t0
        if result != i:
            raise AssertionError(f"wrong result {result!r} for {i}")
    return samples


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class Method:
    name: str
    role: str  # "ambidex", "anchor" or "extra" (informative, not part of the targets)
    loop: str
    calls: int
    call: Callable[[int], Any]
    samples: list[int] = field(default_factory=list)


def run_rounds_sync(methods: list[Method], rounds: int, warmup_frac: float) -> None:
    for m in methods:  # warm up every method before any timing
        time_sync(m.call, max(10, int(m.calls * warmup_frac)))
    for r in range(rounds):
        order = methods[r % len(methods) :] + methods[: r % len(methods)]
        for m in order:
            per_round = -(-m.calls // rounds)
            time_sync(m.call, max(2, per_round // 50))  # re-warm after the switch
            with gc_paused():
                m.samples += time_sync(m.call, per_round, start=len(m.samples))


async def run_rounds_async(methods: list[Method], rounds: int, warmup_frac: float) -> None:
    for m in methods:
        await time_async(m.call, max(10, int(m.calls * warmup_frac)))
    for r in range(rounds):
        order = methods[r % len(methods) :] + methods[: r % len(methods)]
        for m in order:
            per_round = -(-m.calls // rounds)
            await time_async(m.call, max(2, per_round // 50))
            with gc_paused():
                m.samples += await time_async(m.call, per_round, start=len(m.samples))


# -- (a) sync -> async ---------------------------------------------------------------


def bench_sync_to_async(calls: int, slow_calls: int, rounds: int, warmup: float) -> dict[str, Any]:
    ax_loop = ambidex_loop_name()
    stack = contextlib.ExitStack()
    with stack:
        portal = stack.enter_context(anyio.from_thread.start_blocking_portal())
        portal_uv = stack.enter_context(
            anyio.from_thread.start_blocking_portal(backend_options={"use_uvloop": True})
        )
        # The same ambidex call path (f.aio(x) handed to Runtime.call, exactly what
        # f(x) does) on a runtime whose loop thread runs the stdlib loop.
        os.environ["AMBIDEX_LOOP"] = "asyncio"
        try:
            rt_asyncio = ax.Runtime()
            _ = rt_asyncio.loop_thread  # start its loop now, with the variable set
        finally:
            os.environ.pop("AMBIDEX_LOOP")
        stack.callback(rt_asyncio.close)
        a2s = async_to_sync(echo)  # the wrapper is built once, outside the timing

        methods = [
            Method("ambidex f(x)", "ambidex", ax_loop, calls, echo_ax),
            Method("asyncio.run(fn(x))", "anchor", "asyncio", slow_calls, _asyncio_run),
            Method("asgiref async_to_sync(fn)(x)", "anchor", "asyncio", slow_calls, a2s),
            Method(
                "anyio BlockingPortal.call(fn, x)",
                "anchor",
                "asyncio",
                calls,
                lambda x: portal.call(echo, x),
            ),
            Method(
                "ambidex f(x), AMBIDEX_LOOP=asyncio",
                "extra",
                "asyncio",
                calls,
                lambda x: rt_asyncio.call(echo_ax.aio(x)),
            ),
            Method(
                "anyio BlockingPortal.call, use_uvloop",
                "extra",
                "uvloop",
                calls,
                lambda x: portal_uv.call(echo, x),
            ),
        ]
        run_rounds_sync(methods, rounds, warmup)
    return _report(methods)


def _asyncio_run(x: int) -> int:
    return asyncio.run(echo(x))


# -- (b) async -> thread -------------------------------------------------------------


def bench_async_to_thread(calls: int, rounds: int, warmup: float, loop: str) -> dict[str, Any]:
    holder: dict[str, Any] = {}

    async def main() -> None:
        running = asyncio.get_running_loop()
        name = f"{type(running).__module__}.{type(running).__name__}"
        methods = [
            Method("ambidex await g.aio(x)", "ambidex", name, calls, echo_blocking_ax.aio),
            Method(
                "await asyncio.to_thread(fn, x)",
                "anchor",
                name,
                calls,
                lambda x: asyncio.to_thread(echo_sync, x),
            ),
            Method(
                "await anyio.to_thread.run_sync(fn, x)",
                "anchor",
                name,
                calls,
                lambda x: anyio.to_thread.run_sync(echo_sync, x),
            ),
        ]
        await run_rounds_async(methods, rounds, warmup)
        holder["report"] = _report(methods)
        holder["loop"] = name

    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
    holder["report"]["loop"] = holder["loop"]
    return holder["report"]


# -- reporting -----------------------------------------------------------------------


def _report(methods: list[Method]) -> dict[str, Any]:
    rows = []
    for m in methods:
        rows.append({"method": m.name, "role": m.role, "loop": m.loop, **summarize_ns(m.samples)})
    return {"methods": rows}


def _row(report: dict[str, Any], role: str, loop: str | None = None) -> list[dict[str, Any]]:
    return [
        r for r in report["methods"] if r["role"] == role and (loop is None or r["loop"] == loop)
    ]


def _ratio(name: str, value: float, target: float, higher: bool, note: str) -> dict[str, Any]:
    cmp = "≥" if higher else "≤"
    return {
        "ratio": name,
        "value": value,
        "target": f"{cmp} {target:g}",
        "met": verdict(value, target, higher),
        "note": note,
    }


def _ratio_strict(name: str, value: float, target: float, note: str) -> dict[str, Any]:
    return {
        "ratio": name,
        "value": value,
        "target": f"> {target:g}",
        "met": value > target,
        "note": note,
    }


def compute_ratios(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    by_name = {r["method"]: r for r in a["methods"]}
    ours = by_name["ambidex f(x)"]["median_us"]
    ours_asyncio = by_name["ambidex f(x), AMBIDEX_LOOP=asyncio"]["median_us"]
    run = by_name["asyncio.run(fn(x))"]["median_us"]
    anchors = _row(a, "anchor")
    best = min(anchors, key=lambda r: r["median_us"])
    portal_uv = by_name["anyio BlockingPortal.call, use_uvloop"]["median_us"]

    b_by_name = {r["method"]: r for r in b["methods"]}
    ours_b = b_by_name["ambidex await g.aio(x)"]["median_us"]
    to_thread = b_by_name["await asyncio.to_thread(fn, x)"]["median_us"]
    anyio_b = b_by_name["await anyio.to_thread.run_sync(fn, x)"]["median_us"]
    return [
        _ratio("(a) asyncio.run / ambidex", run / ours, 4, True, "median, sync -> async"),
        _ratio_strict(
            "(a) best other / ambidex",
            best["median_us"] / ours,
            1,
            f"best other = {best['method']} (default settings)",
        ),
        _ratio_strict(
            "(a) (extra) best other / ambidex, both on the stdlib loop",
            best["median_us"] / ours_asyncio,
            1,
            "ambidex with AMBIDEX_LOOP=asyncio",
        ),
        _ratio_strict(
            "(a) (extra) anyio portal / ambidex, both on uvloop",
            portal_uv / ours,
            1,
            "anyio portal with use_uvloop",
        ),
        _ratio("(b) to_thread / ambidex", to_thread / ours_b, 1.0, True, f"loop: {b['loop']}"),
        _ratio(
            "(b) (extra) anyio run_sync / ambidex",
            anyio_b / ours_b,
            1.0,
            True,
            f"loop: {b['loop']}",
        ),
    ]


def print_table(title: str, report: dict[str, Any], ref_name: str) -> None:
    ref = next(r for r in report["methods"] if r["method"] == ref_name)["median_us"]
    table = Table(title=title)
    for col in ("method", "role", "loop", "calls", "median µs", "p90 µs", "p99 µs", "÷ ambidex"):
        table.add_column(col, justify="left" if col in {"method", "role", "loop"} else "right")
    for r in report["methods"]:
        table.add_row(
            r["method"],
            r["role"],
            r["loop"],
            str(r["n"]),
            f"{r['median_us']:.1f}",
            f"{r['p90_us']:.1f}",
            f"{r['p99_us']:.1f}",
            f"{r['median_us'] / ref:.2f}×",
        )
    console.print(table)


def print_ratios(ratios: list[dict[str, Any]]) -> None:
    table = Table(title="ratios (medians)")
    for col in ("ratio", "value", "target", "met", "note"):
        table.add_column(col, justify="right" if col in {"value"} else "left")
    for r in ratios:
        met = "[green]met[/]" if r["met"] else "[red]NOT met[/]"
        table.add_row(r["ratio"], f"{r['value']:.2f}×", r["target"], met, r["note"])
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few calls: a smoke test")
    parser.add_argument("--calls", type=int, default=None, help="calls per cheap method")
    parser.add_argument(
        "--slow-calls",
        type=int,
        default=None,
        help="calls for asyncio.run and asgiref (default: calls / 10)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    parser.add_argument(
        "--offload-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop for part (b) (default: the stdlib loop, via asyncio.run)",
    )
    parser.add_argument(
        "--output", default="bridge", help="results file name under benchmarks/results/"
    )
    args = parser.parse_args(argv)

    calls = args.calls or (1000 if args.quick else 20000)
    slow_calls = args.slow_calls or max(10, calls // 10)
    rounds = args.rounds or (2 if args.quick else 10)
    warmup = 0.05

    info = machine_info()
    info["ambidex_loop"] = ambidex_loop_name()
    console.print(
        f"[bold]bridge[/] {info['date_utc']}  nproc={info['nproc']}  "
        f"python {info['python']}  ambidex loop thread: {info['ambidex_loop']}  "
        f"calls={calls} slow_calls={slow_calls} rounds={rounds}"
    )
    started = time.perf_counter()
    a = bench_sync_to_async(calls, slow_calls, rounds, warmup)
    b = bench_async_to_thread(calls, rounds, warmup, args.offload_loop)
    ax.runtime().close()

    print_table("(a) sync -> async: call a trivial async def from sync code", a, "ambidex f(x)")
    print_table(
        f"(b) async -> thread: offload a trivial sync function (loop: {b['loop']})",
        b,
        "ambidex await g.aio(x)",
    )
    ratios = compute_ratios(a, b)
    print_ratios(ratios)
    elapsed = time.perf_counter() - started
    console.print(f"elapsed {elapsed:.1f} s")

    data = {
        "benchmark": "bridge",
        "machine": info,
        "settings": {
            "quick": args.quick,
            "calls": calls,
            "slow_calls": slow_calls,
            "rounds": rounds,
            "warmup_fraction": warmup,
            "offload_loop": args.offload_loop,
            "gc_disabled_while_timing": True,
        },
        "sync_to_async": a,
        "async_to_thread": b,
        "ratios": ratios,
        "elapsed_s": elapsed,
    }
    path = write_json(args.output, data)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
