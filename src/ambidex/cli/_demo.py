"""``ambidex demo``: io, blocking and cpu work at once, and where each ran."""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import ambidex as ax

__all__ = ["DemoResult", "run_demo"]


@ax.io
async def fetch(i: int, latency_s: float) -> tuple[str, float]:
    """Stands in for an HTTP or LLM call: waits on the event loop."""
    start = time.perf_counter()
    await asyncio.sleep(latency_s)
    return threading.current_thread().name, time.perf_counter() - start


@ax.blocking
def lookup(i: int, latency_s: float) -> tuple[str, float]:
    """Stands in for a blocking driver: a real SQLite query plus a slow disk."""
    start = time.perf_counter()
    with sqlite3.connect(":memory:") as db:
        db.execute("create table t (k integer primary key, v text)")
        db.executemany("insert into t values (?, ?)", ((k, str(k)) for k in range(100)))
        db.execute("select count(*) from t where k % 7 = ?", (i % 7,)).fetchone()
    db.close()
    time.sleep(latency_s)
    return threading.current_thread().name, time.perf_counter() - start


@ax.cpu
def count_primes(limit: int) -> tuple[str, float, int]:
    """Pure-Python computing: holds the GIL, so it needs its own process."""
    start = time.perf_counter()
    count = 0
    for n in range(2, limit):
        if all(n % d for d in range(2, math.isqrt(n) + 1)):
            count += 1
    return f"pid {os.getpid()}", time.perf_counter() - start, count


@dataclass(frozen=True)
class DemoResult:
    """One row of the demo's table."""

    kind: str
    calls: int
    ran_on: list[str]
    wall_s: float
    busy_s: float
    """Sum of the calls' own durations: the time they would take one after another."""


async def _timed(coro: Awaitable[list[Any]]) -> tuple[list[Any], float]:
    start = time.perf_counter()
    result = await coro
    return result, time.perf_counter() - start


def _row(kind: str, outcome: tuple[list[Any], float]) -> DemoResult:
    results, wall_s = outcome
    places = sorted({r[0] for r in results})
    return DemoResult(kind, len(results), places, wall_s, sum(r[1] for r in results))


def run_demo(scale: float = 1.0) -> list[DemoResult]:
    """Run the three kinds of work concurrently; return a row per kind."""
    rt = ax.current_runtime()
    io_calls = max(1, int(500 * scale))
    blocking_calls = max(1, int(4 * rt.io_threads * scale))
    cpu_calls = max(1, int(2 * rt.cpu_workers * scale))
    prime_limit = 300_000

    rows = ax.gather(
        _timed(ax.agather(*(fetch.aio(i, 0.2) for i in range(io_calls)))),
        _timed(ax.agather(*(lookup.aio(i, 0.05) for i in range(blocking_calls)))),
        _timed(count_primes.amap([prime_limit] * cpu_calls)),
    )
    return [_row("io", rows[0]), _row("blocking", rows[1]), _row("cpu", rows[2])]
