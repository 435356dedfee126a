"""HTTP batch submits: jobs/s through ``POST /v1/jobs:batch``, 1,000 jobs per request.

``python -m ambidex serve --port 0 --db <fresh SQLite file> --concurrency C`` runs as a
real subprocess (C = 0 by default: a front end alone, so the figure is the submit path's:
validation, one transaction of 1,000 jobs and their 1,000 ``submitted`` event rows, the
answer). K clients (``httpx.AsyncClient``, one keep-alive connection each, closed loop)
send batches of ``{"workload": "echo", "input": {"value": i}}`` until N batches are
answered. Reported: jobs/s over the measured window (first request sent to last answer
read), the median and worst batch latency, the server's and this process's CPU time per
job, and the load average. Afterwards the server is killed with SIGKILL and every job
acknowledged (a 202) is looked up in the SQLite file: nothing accepted may be lost.

Target (issue 15): batch submits >= 10,000 jobs/s.

    .venv/bin/python benchmarks/jobs_batch_http.py                 # 3 rounds of 30 batches, K = 2
    .venv/bin/python benchmarks/jobs_batch_http.py --batches 5 --rounds 1   # a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
BANNER = re.compile(r"ambidex job service on (http://\S+?:(\d+))")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _start(db: Path, concurrency: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    argv = [sys.executable, "-m", "ambidex", "serve", "--port", "0", "--db", str(db)]
    argv += ["--concurrency", str(concurrency)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = BANNER.search(log.read_text(errors="replace"))
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the server did not start:\n{log.read_text(errors='replace')}")


def _batch(start: int, size: int) -> bytes:
    jobs = [{"workload": "echo", "input": {"value": i}} for i in range(start, start + size)]
    return json.dumps({"jobs": jobs}).encode()


async def _load(url: str, clients: int, batches: int, size: int) -> dict[str, Any]:
    bodies = [_batch(b * size, size) for b in range(batches)]  # built before the clock starts
    todo = list(range(batches))
    latencies: list[float] = []
    acked: list[str] = []
    headers = {"content-type": "application/json"}

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            await http.get("/healthz")  # connect first: not measured
            await ready.wait()
            while todo:
                body = bodies[todo.pop()]
                t0 = time.perf_counter()
                r = await http.post("/v1/jobs:batch", content=body, headers=headers)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 202:
                    raise RuntimeError(f"{r.status_code}: {r.text[:300]}")
                acked.extend(j["id"] for j in r.json()["jobs"])

    ready = asyncio.Event()
    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    await asyncio.sleep(0.5)
    t0 = time.perf_counter()
    ready.set()
    await asyncio.gather(*tasks)
    return {"elapsed_s": time.perf_counter() - t0, "latencies": latencies, "acked": acked}


def one_round(args: argparse.Namespace, workdir: Path, n: int) -> dict[str, Any]:
    db = workdir / f"round{n}.sqlite"
    proc, url = _start(db, args.concurrency, workdir / f"round{n}.log")
    try:
        cpu0, own0 = _cpu_s(proc.pid), time.process_time()
        load = asyncio.run(_load(url, args.clients, args.batches, args.size))
        cpu1, own1 = _cpu_s(proc.pid), time.process_time()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    jobs = len(load["acked"])
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT count(*) FROM ambidex_jobs").fetchone()[0]
        events = conn.execute(
            "SELECT count(*) FROM ambidex_job_events WHERE kind = 'submitted'"
        ).fetchone()[0]
    lost = jobs - stored
    lat = sorted(load["latencies"])
    return {
        "jobs": jobs,
        "jobs_per_s": jobs / load["elapsed_s"],
        "batch_ms_median": 1000 * statistics.median(lat),
        "batch_ms_max": 1000 * lat[-1],
        "server_cpu_us_per_job": 1e6 * (cpu1 - cpu0) / jobs,
        "client_cpu_us_per_job": 1e6 * (own1 - own0) / jobs,
        "lost": lost,
        "submitted_events": events,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30, help="batches per round")
    parser.add_argument("--size", type=int, default=1000, help="jobs per batch")
    parser.add_argument("--clients", type=int, default=2, help="concurrent connections")
    parser.add_argument("--concurrency", type=int, default=0, help="the server's own workers")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ambidex-batch-bench-") as tmp:
        for n in range(args.rounds):
            row = one_round(args, Path(tmp), n)
            rows.append(row)
            print(
                f"round {n + 1}: {row['jobs']:,} jobs, {row['jobs_per_s']:,.0f} jobs/s, "
                f"batch {row['batch_ms_median']:.0f} ms median ({row['batch_ms_max']:.0f} max), "
                f"server CPU {row['server_cpu_us_per_job']:.0f} µs/job, "
                f"client CPU {row['client_cpu_us_per_job']:.0f} µs/job, lost {row['lost']}, "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    rates = [r["jobs_per_s"] for r in rows]
    print(
        f"median {statistics.median(rates):,.0f} jobs/s (range {min(rates):,.0f}-{max(rates):,.0f})"
        f" over {len(rows)} rounds of {args.batches} batches of {args.size}, {args.clients} "
        f"clients, server --concurrency {args.concurrency}; lost {sum(r['lost'] for r in rows)};"
        f" load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; target >= 10,000 jobs/s"
    )
    if any(r["lost"] for r in rows) or any(r["submitted_events"] != r["jobs"] for r in rows):
        raise SystemExit("a job acknowledged is missing from the store, or its submitted event")


if __name__ == "__main__":
    main()
