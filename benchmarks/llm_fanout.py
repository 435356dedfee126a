"""LLM fan-out: N chat completions against ``ambidex mock-llm`` at 200 ms latency.

The mock server runs in a separate process started by this script (``--latency-ms 200``,
no jitter, no faults). Every prompt is different and no cache is used, so every call is
a real HTTP request. Methods:

* sequential: one ``httpx.Client``, one call after another. Only a sample of
  ``--sample`` calls (default 20) is timed and the wall time is extrapolated to N
  (N x the sample's mean per call); the output says so.
* thread pool: ``ThreadPoolExecutor(32)`` of sync calls, one ``httpx.Client`` per thread.
* ambidex ``await AsyncLLM.batch(prompts)`` inside ``asyncio.run``, with
  ``ax.limits(llm=L)`` (default L = 256).
* (extra) ambidex ``LLM.batch(prompts)`` from sync code (the sync face, on ambidex's loop
  thread), same limit.
* (extra) ambidex ``AsyncLLM.batch`` with ``llm`` = N, i.e. unbounded.

Floor: ceil(N / concurrency) x latency for a bounded method, one latency for an unbounded
one. Before each timed run a method is warmed with one round (its concurrency's worth of
calls), so its connections are open; the server's statistics are reset before and read
after each timed run (peak concurrent requests, request count), and the CPU time of the
client process and of the server process are recorded.

    .venv/bin/python benchmarks/llm_fanout.py            # full run, writes results/llm_fanout.json
    .venv/bin/python benchmarks/llm_fanout.py --quick    # smoke test (100 calls), < 15 s
    .venv/bin/python benchmarks/llm_fanout.py --calls 2000 --limit 512
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.table import Table

import ambidex as ax
from _common import ambidex_loop_name, machine_info, write_json
from ambidex.llm import LLM, AsyncLLM

console = Console(width=int(os.environ.get("COLUMNS", "150")))

MODEL = "mock-llm"


# -- the server ------------------------------------------------------------------------


def _server_command() -> list[str]:
    """``ambidex mock-llm`` once it is registered in the CLI, else the command's module."""
    from ambidex.cli import app
    from ambidex.cli._llm import mock_llm

    if any(c.callback is mock_llm for c in app.registered_commands):
        return [sys.executable, "-m", "ambidex", "mock-llm"]
    return [sys.executable, "-m", "ambidex.cli._llm"]


@contextmanager
def mock_server(latency_ms: float) -> Iterator[tuple[str, psutil.Process, list[str]]]:
    """Start mock-llm in a subprocess; yield its base URL, process and command line."""
    command = [*_server_command(), "--port", "0", "--latency-ms", f"{latency_ms:g}"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        found = re.search(r"serving (http://\S+/v1)", banner)
        if not found:
            raise RuntimeError(f"mock-llm did not start: {banner!r}")
        url = found.group(1)
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(url.removesuffix("/v1") + "/healthz").raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url, psutil.Process(proc.pid), command
    finally:
        proc.terminate()
        proc.wait(10)


class Server:
    """Statistics of the mock server process."""

    def __init__(self, url: str, process: psutil.Process) -> None:
        self.root = url.removesuffix("/v1")
        self.process = process
        self.http = httpx.Client(base_url=self.root)

    def reset(self) -> None:
        self.http.post("/stats/reset").raise_for_status()

    def stats(self) -> dict[str, int]:
        data: dict[str, int] = self.http.get("/stats").json()
        return data

    def cpu_s(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)


def _body(prompt: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}


def _prompts(n: int, tag: str) -> list[str]:
    return [f"{tag} question {i}: what is {i} + {i}?" for i in range(n)]


def _sync_call(client: httpx.Client, prompt: str) -> str:
    response = client.post("/chat/completions", json=_body(prompt))
    response.raise_for_status()
    text: str = response.json()["choices"][0]["message"]["content"]
    return text


def _check(texts: list[str], prompts: list[str]) -> None:
    for text, prompt in zip(texts, prompts, strict=True):
        if prompt.split(":")[0] not in text:
            raise AssertionError(f"reply {text!r} does not answer {prompt!r}")


# -- the methods -----------------------------------------------------------------------


def timed_run(server: Server, run: Callable[[], list[str]], prompts: list[str]) -> dict[str, Any]:
    """Reset the server's statistics, time ``run``, check its replies; one measurement."""
    server.reset()
    cpu0, server_cpu0 = time.process_time(), server.cpu_s()
    t0 = time.perf_counter()
    texts = run()
    wall = time.perf_counter() - t0
    cpu, server_cpu = time.process_time() - cpu0, server.cpu_s() - server_cpu0
    _check(texts, prompts)
    stats = server.stats()
    if stats["completions"] != len(prompts):
        raise AssertionError(f"server completed {stats['completions']} of {len(prompts)}")
    return {
        "wall_s": wall,
        "client_cpu_s": cpu,
        "server_cpu_s": server_cpu,
        "server_peak_in_flight": stats["peak_in_flight"],
        "server_requests": stats["requests"],
    }


def bench_sequential(server: Server, url: str, sample: int) -> dict[str, Any]:
    prompts = _prompts(sample, "seq")
    with httpx.Client(base_url=url) as client:
        _sync_call(client, "warm-up")
        run = timed_run(server, lambda: [_sync_call(client, p) for p in prompts], prompts)
    return run


def bench_threads(server: Server, url: str, n: int, threads: int, tag: str) -> dict[str, Any]:
    local = threading.local()
    clients: list[httpx.Client] = []
    lock = threading.Lock()

    def call(prompt: str) -> str:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=url)
            with lock:
                clients.append(client)
        return _sync_call(client, prompt)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        # Warm-up: start every thread and open its connection (a barrier makes each of
        # the first `threads` calls run on its own thread).
        barrier = threading.Barrier(threads)

        def warm(prompt: str) -> str:
            barrier.wait(10)
            return call(prompt)

        list(pool.map(warm, _prompts(threads, "warm")))
        prompts = _prompts(n, tag)
        run = timed_run(server, lambda: list(pool.map(call, prompts)), prompts)
    for client in clients:
        client.close()
    return run


def bench_ambidex_async(server: Server, url: str, n: int, limit: int, tag: str) -> dict[str, Any]:
    ax.limits(llm=limit)
    prompts = _prompts(n, tag)

    async def main() -> dict[str, Any]:
        async with AsyncLLM(MODEL, base_url=url) as llm:
            await llm.batch(_prompts(min(limit, n), "warm"))

            async def batch() -> list[str]:
                return [r.text for r in await llm.batch(prompts)]

            # timed_run is sync; time inside the loop with the same bookkeeping.
            server.reset()
            cpu0, server_cpu0 = time.process_time(), server.cpu_s()
            t0 = time.perf_counter()
            texts = await batch()
            wall = time.perf_counter() - t0
            cpu, server_cpu = time.process_time() - cpu0, server.cpu_s() - server_cpu0
            _check(texts, prompts)
            stats = server.stats()
            assert stats["completions"] == n, stats
            assert llm.usage.retries == 0
            return {
                "wall_s": wall,
                "client_cpu_s": cpu,
                "server_cpu_s": server_cpu,
                "server_peak_in_flight": stats["peak_in_flight"],
                "server_requests": stats["requests"],
            }

    return asyncio.run(main())


def bench_ambidex_sync(server: Server, llm: LLM, n: int, limit: int, tag: str) -> dict[str, Any]:
    ax.limits(llm=limit)
    llm.batch(_prompts(min(limit, n), "warm"))
    prompts = _prompts(n, tag)
    return timed_run(server, lambda: [r.text for r in llm.batch(prompts)], prompts)


# -- reporting -------------------------------------------------------------------------


def _summary(
    name: str, role: str, concurrency: str, floor_s: float, runs: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    walls = [r["wall_s"] for r in runs]
    return {
        "method": name,
        "role": role,
        "concurrency": concurrency,
        "floor_s": floor_s,
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "runs_s": [round(w, 4) for w in walls],
        "client_cpu_s": statistics.median(r["client_cpu_s"] for r in runs),
        "server_cpu_s": statistics.median(r["server_cpu_s"] for r in runs),
        "server_peak_in_flight": max(r["server_peak_in_flight"] for r in runs),
        **extra,
    }


def print_table(n: int, latency_s: float, rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"{n} chat completions, mock-llm latency {latency_s * 1000:.0f} ms")
    columns = (
        "method",
        "role",
        "at once",
        "median s",
        "floor s",
        "÷ floor",
        "vs seq.",
        "vs pool",
        "peak",
        "cpu s",
        "srv cpu s",
    )
    for col in columns:
        table.add_column(col, justify="left" if col in {"method", "role"} else "right")
    seq = next(r for r in rows if r["role"] == "anchor, sequential")["median_s"]
    pool = next(r for r in rows if r["role"] == "anchor, threads")["median_s"]
    for r in rows:
        table.add_row(
            r["method"],
            r["role"],
            r["concurrency"],
            f"{r['median_s']:.3f}" + (" (extrap.)" if r.get("extrapolated") else ""),
            f"{r['floor_s']:.3f}",
            f"{r['median_s'] / r['floor_s']:.2f}",
            f"{seq / r['median_s']:.1f}x",
            f"{pool / r['median_s']:.2f}x",
            str(r["server_peak_in_flight"]),
            f"{r['client_cpu_s']:.2f}",
            f"{r['server_cpu_s']:.2f}",
        )
    console.print(table)
    console.print(
        "÷ floor: median / floor. vs seq., vs pool: how many times faster than sequential and "
        "than the thread pool. peak: most requests the server handled at once. cpu s / srv "
        "cpu s: CPU time of this process / of the server process during the timed run."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 calls, 1 repeat: a smoke test")
    parser.add_argument("--calls", type=int, default=None, help="N (default 1000; 100 quick)")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="mock-llm latency")
    parser.add_argument("--limit", type=int, default=256, help="ax.limits(llm=L) for ambidex")
    parser.add_argument("--threads", type=int, default=32, help="thread pool size")
    parser.add_argument("--sample", type=int, default=None, help="sequential calls timed")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per method")
    parser.add_argument(
        "--output",
        default=None,
        help="results file name under benchmarks/results/ (default: llm_fanout, or "
        "llm_fanout-quick with --quick)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    n = args.calls or (100 if quick else 1000)
    sample = args.sample or (5 if quick else 20)
    repeats = args.repeats or (1 if quick else 3)
    limit, threads, latency_s = args.limit, args.threads, args.latency_ms / 1000.0

    info = machine_info()
    info["ambidex_loop"] = ambidex_loop_name()
    console.print(
        f"[bold]llm_fanout[/] {info['date_utc']}  nproc={info['nproc']}  "
        f"usable_cpus={info['usable_cpus']}  python {info['python']}  N={n}  "
        f"latency={args.latency_ms:g} ms  ax.limits(llm={limit})  threads={threads}  "
        f"repeats={repeats}"
    )
    started = time.perf_counter()
    with mock_server(args.latency_ms) as (url, process, command):
        server = Server(url, process)
        console.print(f"mock-llm: {' '.join(command[1:])} -> {url} (pid {process.pid})")
        seq_run = bench_sequential(server, url, sample)
        seq_total = seq_run["wall_s"] / sample * n
        runs: dict[str, list[dict[str, Any]]] = {
            "pool": [],
            "ax": [],
            "ax_sync": [],
            "ax_unbounded": [],
        }
        with LLM(MODEL, base_url=url) as sync_llm:
            for r in range(repeats):
                # Alternate the order so drift in the machine's speed hits all methods alike.
                order = ["pool", "ax", "ax_sync", "ax_unbounded"]
                order = order[r % len(order) :] + order[: r % len(order)]
                for name in order:
                    tag = f"r{r}-{name}"
                    if name == "pool":
                        runs[name].append(bench_threads(server, url, n, threads, tag))
                    elif name == "ax":
                        runs[name].append(bench_ambidex_async(server, url, n, limit, tag))
                    elif name == "ax_sync":
                        runs[name].append(bench_ambidex_sync(server, sync_llm, n, limit, tag))
                    else:
                        runs[name].append(bench_ambidex_async(server, url, n, n, tag))
        server.http.close()
    ax.current_runtime().close()

    seq_row = _summary(
        f"sequential httpx.Client ({sample} timed, x {n / sample:g})",
        "anchor, sequential",
        "1",
        n * latency_s,
        [{**seq_run, "wall_s": seq_total}],
        extrapolated=True,
        sample_calls=sample,
        sample_wall_s=seq_run["wall_s"],
        sample_per_call_ms=seq_run["wall_s"] / sample * 1000,
    )
    rows = [
        seq_row,
        _summary(
            f"ThreadPoolExecutor({threads}), a httpx.Client each",
            "anchor, threads",
            str(threads),
            math.ceil(n / threads) * latency_s,
            runs["pool"],
        ),
        _summary(
            "ambidex await AsyncLLM.batch",
            "ambidex",
            f"llm={limit}",
            math.ceil(n / limit) * latency_s,
            runs["ax"],
        ),
        _summary(
            "ambidex LLM.batch from sync code",
            "extra",
            f"llm={limit}",
            math.ceil(n / limit) * latency_s,
            runs["ax_sync"],
        ),
        _summary(
            "ambidex await AsyncLLM.batch, unbounded",
            "extra",
            f"llm={n}",
            latency_s,
            runs["ax_unbounded"],
        ),
    ]
    print_table(n, latency_s, rows)
    console.print(
        f"sequential: {sample} calls timed ({seq_run['wall_s']:.3f} s, "
        f"{seq_row['sample_per_call_ms']:.1f} ms a call), extrapolated to {n} calls"
    )
    pool, axr = rows[1]["median_s"], rows[2]["median_s"]
    ratios = {
        "ambidex_vs_sequential_speedup": seq_total / axr,
        "ambidex_vs_thread_pool_speedup": pool / axr,
        "ambidex_over_floor": axr / rows[2]["floor_s"],
        "thread_pool_over_floor": pool / rows[1]["floor_s"],
        "sequential_over_floor": seq_total / seq_row["floor_s"],
        "ambidex_sync_over_floor": rows[3]["median_s"] / rows[3]["floor_s"],
        "ambidex_unbounded_over_floor": rows[4]["median_s"] / rows[4]["floor_s"],
    }
    for key, value in ratios.items():
        console.print(f"  {key}: {value:.2f}")
    elapsed = time.perf_counter() - started
    console.print(f"total benchmark time {elapsed:.1f} s")
    data = {
        "benchmark": "llm_fanout",
        "settings": {
            "calls": n,
            "latency_ms": args.latency_ms,
            "llm_limit": limit,
            "threads": threads,
            "sequential_sample": sample,
            "repeats": repeats,
            "server_command": command[1:],
        },
        "machine": info,
        "methods": rows,
        "ratios": ratios,
        "elapsed_s": elapsed,
    }
    path = write_json(args.output or ("llm_fanout-quick" if quick else "llm_fanout"), data)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
