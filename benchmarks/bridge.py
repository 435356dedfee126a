"""Per-call overhead of crossing the sync/async boundary, ambidex vs the usual tools.

(a) sync -> async: call a trivial ``async def`` (returns its argument) from sync code:
    ambidex ``f(x)`` vs ``asyncio.run(fn(x))`` vs asgiref ``async_to_sync`` vs an anyio
    ``BlockingPortal``.
(b) async -> thread: offload a trivial sync function from async code:
    ambidex ``await g.aio(x)`` vs ``asyncio.to_thread`` vs ``anyio.to_thread.run_sync``,
    all inside one event loop started by ``asyncio.run`` (stdlib loop by default).
(c) (a) again with the caller and the loop thread pinned to one CPU, then to two CPUs.
(d) (b) again with every thread of the process pinned to one CPU.
(a) and (b) have a tracing-on row (role ``traced``): the same ambidex call with
    ``ax.instrument(tracer_provider=...)`` on, every span going through a
    ``SimpleSpanProcessor`` to an exporter that drops it. So it costs what ambidex
    adds (the span, its attributes, the context hops) plus the SDK's per-span
    work up to the exporter, not a real exporter's encoding or network; it is left
    out when OpenTelemetry is not installed.
    A sync call is two thread wake-ups; on a VM a wake-up across CPUs can cost several
    times one that stays on a CPU, and the scheduler picks which happens, so (a) and (b)
    swing between two levels from run to run. (c) and (d) show each level on its own.

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
import queue
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from asgiref.sync import async_to_sync
from rich.console import Console
from rich.table import Table

import ambidex as ax
from _common import (
    ambidex_loop_name,
    machine_info,
    print_ratios,
    summarize_ns,
    tracing,
    tracing_provider,
    verdict,
    write_json,
)

console = Console(width=int(os.environ.get("COLUMNS", "150")))


# -- the work being called ---------------------------------------------------------


async def echo(x: int) -> int:
    return x


def echo_sync(x: int) -> int:
    return x


echo_ax = ax.io(echo)
echo_blocking_ax = ax.blocking(echo_sync)


def tracing_cost(report: dict[str, Any], untraced: str, traced: str) -> float | None:
    """Median µs a call pays for tracing: the traced row's median minus the untraced one's."""
    by_name = {r["method"]: r["median_us"] for r in report["methods"]}
    if traced not in by_name:
        return None
    return float(by_name[traced] - by_name[untraced])


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
    traced: bool = False  # timed with ambidex's tracing on
    samples: list[int] = field(default_factory=list)
    round_medians_us: list[float] = field(default_factory=list)


def run_rounds_sync(methods: list[Method], rounds: int, warmup_frac: float) -> None:
    for m in methods:  # warm up every method before any timing
        with tracing(m.traced):
            time_sync(m.call, max(10, int(m.calls * warmup_frac)))
    for r in range(rounds):
        order = methods[r % len(methods) :] + methods[: r % len(methods)]
        for m in order:
            per_round = -(-m.calls // rounds)
            with tracing(m.traced):
                time_sync(m.call, max(2, per_round // 50))  # re-warm after the switch
                with gc_paused():
                    got = time_sync(m.call, per_round, start=len(m.samples))
            m.samples += got
            m.round_medians_us.append(statistics.median(got) / 1000)


async def run_rounds_async(methods: list[Method], rounds: int, warmup_frac: float) -> None:
    for m in methods:
        with tracing(m.traced):
            await time_async(m.call, max(10, int(m.calls * warmup_frac)))
    for r in range(rounds):
        order = methods[r % len(methods) :] + methods[: r % len(methods)]
        for m in order:
            per_round = -(-m.calls // rounds)
            with tracing(m.traced):
                await time_async(m.call, max(2, per_round // 50))
                with gc_paused():
                    got = await time_async(m.call, per_round, start=len(m.samples))
            m.samples += got
            m.round_medians_us.append(statistics.median(got) / 1000)


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

        floor = stack.enter_context(ThreadRoundTrip())
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
            Method("floor: bare thread round trip", "floor", "-", calls, floor.call),
        ]
        if tracing_provider() is not None:
            methods.insert(
                1, Method("ambidex f(x), tracing on", "traced", ax_loop, calls, echo_ax, True)
            )
        run_rounds_sync(methods, rounds, warmup)
    return _report(methods)


class ThreadRoundTrip:
    """The least any run-it-on-another-thread design pays: hand a call to a waiting
    thread through a queue and block on a lock it releases (no event loop at all)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self.native_id = self._thread.native_id

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            item[0].release()

    def call(self, x: int) -> int:
        lock = threading.Lock()
        lock.acquire()
        self._queue.put((lock, x))
        lock.acquire()
        return x

    def __enter__(self) -> ThreadRoundTrip:
        return self

    def __exit__(self, *exc: object) -> None:
        self._queue.put(None)
        self._thread.join()


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
        if tracing_provider() is not None:
            traced = "ambidex await g.aio(x), tracing on"
            methods.insert(1, Method(traced, "traced", name, calls, echo_blocking_ax.aio, True))
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


# -- (c) thread placement ---------------------------------------------------------------


async def _native_id() -> int:
    return threading.get_native_id()


def bench_placement(calls: int, rounds: int) -> dict[str, Any] | None:
    """(a) again with the threads pinned: caller and loop thread on one CPU, or on two.

    A sync call wakes another thread and is woken back; on a VM a wake-up that
    crosses CPUs can cost far more than one that stays on a CPU, and the
    scheduler decides which happens. Pinning shows each case on its own.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        return None
    first, second = cpus[0], cpus[1]
    main_tid = threading.get_native_id()
    results: dict[str, Any] = {"cpus": [first, second], "placements": {}}
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        ThreadRoundTrip() as floor,
    ):
        ax_tid = ax.current_runtime().call(_native_id())
        portal_tid = portal.call(threading.get_native_id)
        floor_tid = floor.native_id
        try:
            for label, other in (("same CPU", first), ("two CPUs", second)):
                os.sched_setaffinity(main_tid, {first})
                for tid in (ax_tid, portal_tid, floor_tid):
                    os.sched_setaffinity(tid, {other})
                methods = [
                    Method("ambidex f(x)", "ambidex", ambidex_loop_name(), calls, echo_ax),
                    Method("asyncio.run(fn(x))", "anchor", "asyncio", calls // 10, _asyncio_run),
                    Method(
                        "anyio BlockingPortal.call(fn, x)",
                        "anchor",
                        "asyncio",
                        calls,
                        lambda x: portal.call(echo, x),
                    ),
                    Method("floor: bare thread round trip", "floor", "-", calls, floor.call),
                ]
                run_rounds_sync(methods, rounds, 0.05)
                results["placements"][label] = _report(methods)
        finally:
            for tid in (main_tid, ax_tid, portal_tid, floor_tid):
                os.sched_setaffinity(tid, set(cpus))
    return results


def _pin_process(cpus: set[int]) -> None:
    """Set the CPU affinity of every thread of this process (new threads inherit it)."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError, OSError):
            os.sched_setaffinity(int(tid), cpus)


def bench_offload_one_cpu(
    calls: int, rounds: int, warmup: float, loop: str
) -> dict[str, Any] | None:
    """(b) again with every thread of the process on one CPU: no cross-CPU wake-ups."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2 or not os.path.isdir("/proc/self/task"):
        return None
    _pin_process({cpus[0]})
    try:
        report = bench_async_to_thread(calls, rounds, warmup, loop)
    finally:
        _pin_process(set(cpus))
    report["cpu"] = cpus[0]
    return report


def placement_ratios(c: dict[str, Any] | None, d: dict[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    if d is not None:
        by_name = {r["method"]: r["median_us"] for r in d["methods"]}
        ours = by_name["ambidex await g.aio(x)"]
        out.append(
            _ratio(
                "(d) (extra) one CPU: to_thread / ambidex",
                by_name["await asyncio.to_thread(fn, x)"] / ours,
                1.0,
                True,
                "whole process pinned to one CPU",
            )
        )
    if c is None:
        return out
    for label, report in c["placements"].items():
        by_name = {r["method"]: r["median_us"] for r in report["methods"]}
        ours = by_name["ambidex f(x)"]
        out.append(
            _ratio(
                f"(c) (extra) {label}: asyncio.run / ambidex",
                by_name["asyncio.run(fn(x))"] / ours,
                4,
                True,
                "caller and loop thread pinned",
            )
        )
        out.append(
            _ratio_strict(
                f"(c) (extra) {label}: anyio portal / ambidex",
                by_name["anyio BlockingPortal.call(fn, x)"] / ours,
                1,
                "caller and portal thread pinned",
            )
        )
    return out


# -- reporting -----------------------------------------------------------------------


def _report(methods: list[Method]) -> dict[str, Any]:
    rows = []
    for m in methods:
        rows.append(
            {
                "method": m.name,
                "role": m.role,
                "loop": m.loop,
                **summarize_ns(m.samples),
                "round_medians_us": [round(v, 2) for v in m.round_medians_us],
            }
        )
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
            f"{r['median_us'] / ref:.2f}x",
        )
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
        "--no-placement",
        action="store_true",
        help="skip (c) and (d), the runs with threads pinned to CPUs",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="results file name under benchmarks/results/ (default: bridge, or bridge-quick "
        "with --quick)",
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
    c = None if args.no_placement else bench_placement(max(10, calls // 4), max(2, rounds // 2))
    d = (
        None
        if args.no_placement
        else bench_offload_one_cpu(
            max(10, calls // 4), max(2, rounds // 2), warmup, args.offload_loop
        )
    )
    ax.current_runtime().close()

    print_table("(a) sync -> async: call a trivial async def from sync code", a, "ambidex f(x)")
    print_table(
        f"(b) async -> thread: offload a trivial sync function (loop: {b['loop']})",
        b,
        "ambidex await g.aio(x)",
    )
    if c is not None:
        for label, report in c["placements"].items():
            print_table(
                f"(c) sync -> async again, caller and loop thread pinned: {label} "
                f"(CPUs {c['cpus']})",
                report,
                "ambidex f(x)",
            )
    if d is not None:
        print_table(
            f"(d) async -> thread again, every thread pinned to CPU {d['cpu']} (loop: {d['loop']})",
            d,
            "ambidex await g.aio(x)",
        )
    ratios = compute_ratios(a, b) + placement_ratios(c, d)
    print_ratios(console, ratios, value_format=lambda v: f"{v:.2f}x")
    traced_cost = {
        "sync_to_async_us": tracing_cost(a, "ambidex f(x)", "ambidex f(x), tracing on"),
        "async_to_thread_us": tracing_cost(
            b, "ambidex await g.aio(x)", "ambidex await g.aio(x), tracing on"
        ),
    }
    if traced_cost["sync_to_async_us"] is not None:
        console.print(
            "tracing on costs (median, traced - untraced): "
            f"(a) {traced_cost['sync_to_async_us']:.1f} µs per sync call, "
            f"(b) {traced_cost['async_to_thread_us']:.1f} µs per offloaded call"
        )
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
        "placement": c,
        "async_to_thread_one_cpu": d,
        "ratios": ratios,
        "tracing_cost": traced_cost,
        "elapsed_s": elapsed,
    }
    path = write_json(args.output or ("bridge-quick" if args.quick else "bridge"), data)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
