"""HTTP job service: submits/s and latency with 200 concurrent clients on loopback.

The servers run as real subprocesses; the load generator runs in this process.

(a) ``POST /v1/jobs`` ``{"workload": "echo", "input": {"value": i}}`` -> 202, against
    ``python -m ambidex serve --port 0 --db <fresh temp file> --concurrency C``, whose
    in-process workers run the echo jobs while the submits arrive.
(b) ``POST /v1/run/echo`` ``{"value": i}`` -> 200 with the finished job: the latency
    includes storing, claiming, running and finishing the job.
(c) ``features``: (a) with the queue features in use on every submit: a priority, an
    idempotency key of its own and a retry policy. Its ratio to (a) is their cost
    (target: within 10%).
floor: a minimal FastAPI app (in this file, run as ``python jobs_http.py --serve-floor``)
    with the same uvicorn settings as ``ambidex serve``, whose ``POST /v1/jobs`` does one
    durable INSERT per request (an autocommit transaction into an SQLite file in WAL mode,
    ``synchronous=NORMAL``: ambidex's durability setting) and answers 202 with the id. It
    is the least a durable submit must do.
(d) ``batch``: ``POST /v1/jobs:batch`` with 500 ``echo`` jobs a request, on 4
    connections, ``ambidex serve --concurrency 0`` (what the service takes in; issue 15's
    target: >= 10,000 jobs/s); its req/s column counts jobs. ``benchmarks/jobs_batch_http.py``
    measures batches alone, with a ``kill -9`` after each round.

Client: C = 200 asyncio tasks, each with its own keep-alive HTTP/1.1 connection, closed
loop (a task sends its next request when its answer is in), on uvloop; requests and
answers are written and parsed by hand on ``asyncio`` streams (~0.1 ms of client CPU a
request), because a full client costs more CPU per request than the servers measured
here, on a 2-CPU machine that the client shares with the server: one
``httpx.AsyncClient`` with a pool of 200 connections (``--client httpx``) took ~9 ms of
client CPU a request against the floor server and managed under 100 req/s. The client's
and the server's CPU time over the measured window are reported, to show which side is
the bottleneck. Every connection first sends one warm-up request (``--warmup``), not
counted, and the measured phase starts on fresh connections.

Each scenario stops after N requests or T seconds, whichever comes first (requests in
flight at T are completed and counted). Every scenario run gets a fresh server and a
fresh database file. Every job acknowledged (202, or 200 for (b)) is looked up in the
store afterwards, after the server was killed with SIGKILL: nothing accepted may be lost.
The scenarios take turns in a rotating order for R rounds (fewer if the next round could
end past the time budget); the tables show medians over the rounds, and the ratios
divide ambidex's medians by the floor's.

    .venv/bin/python benchmarks/jobs_http.py          # N = 5,000 / T = 30 s, 3 rounds
    .venv/bin/python benchmarks/jobs_http.py --quick  # N = 100 / T = 5 s, 20 clients, 1 round:
                                                      # a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib.util
import json
import os
import re
import resource
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from _common import REPO_ROOT, machine_info, percentile, print_ratios, write_json

console = Console(width=int(os.environ.get("COLUMNS", "150")))

HOST = "127.0.0.1"
BANNER = re.compile(r"on http://([0-9.]+):(\d+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the floor server (run in a subprocess: this file with --serve-floor) ---------------


def serve_floor(db: str, port: int) -> None:
    """FastAPI + uvicorn, one durable SQLite INSERT per POST /v1/jobs, answers 202."""
    import socket

    import uvicorn
    from fastapi import FastAPI

    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS jobs (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
        "body TEXT NOT NULL, created_at REAL NOT NULL)"
    )
    app = FastAPI()

    @app.post("/v1/jobs", status_code=202)
    async def submit(body: dict[str, Any]) -> dict[str, str]:
        job_id = secrets.token_urlsafe(16)
        # Autocommit: the INSERT is its own transaction, committed (to the WAL) on return.
        conn.execute(
            "INSERT INTO jobs (id, body, created_at) VALUES (?, ?, ?)",
            (job_id, json.dumps(body, separators=(",", ":")), time.time()),
        )
        return {"id": job_id, "status": "queued"}

    sock = socket.create_server((HOST, port))
    print(f"floor on http://{HOST}:{sock.getsockname()[1]}", flush=True)
    # The settings `ambidex serve` uses (src/ambidex/cli/_serve.py) at its default log level.
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


# -- server subprocesses ------------------------------------------------------------------


class Server:
    """A server subprocess on a free port; its CPU time is read from /proc."""

    def __init__(self, name: str, argv: list[str], workdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout_s: float = 60.0) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = BANNER.search(self.log.read_text(errors="replace"))
            if found:
                self.port = int(found.group(2))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text(errors='replace')}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server process (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def kill(self) -> None:
        """SIGKILL: whatever it acknowledged must already be in the store."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def system_busy() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# -- the load generator ---------------------------------------------------------------------


@dataclass
class Tally:
    """What the clients saw."""

    latencies_ns: list[int] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    accepted_ids: list[str] = field(default_factory=list)
    # Jobs acknowledged with another 2xx than expected (a run still going after wait_s: 202).
    other_acked_ids: list[str] = field(default_factory=list)
    warmup_ids: list[str] = field(default_factory=list)
    issued: int = 0
    first_start_ns: int = 0
    last_done_ns: int = 0


@dataclass(frozen=True)
class Scenario:
    """One kind of request: where it goes, its body, and how to check the answer."""

    name: str
    path: str
    body: Callable[[int], bytes]
    expect_status: int
    # Returns the job ids from the answer body, or raises ValueError if the answer is wrong.
    check: Callable[[int, bytes], list[str]]
    jobs_per_request: int = 1
    clients: int | None = None  # at most this many connections (None: --clients)


def _submit_body(i: int) -> bytes:
    return b'{"workload":"echo","input":{"value":%d}}' % i


_RUN_TOKEN = secrets.token_hex(4).encode()


def _features_body(i: int) -> bytes:
    return (
        b'{"workload":"echo","input":{"value":%d},"priority":%d,"idempotency_key":"%s-%d",'
        b'"retries":2,"retry_on":["ConnectionError"]}' % (i, i % 5, _RUN_TOKEN, i)
    )


def _run_body(i: int) -> bytes:
    return b'{"value":%d}' % i


BATCH_JOBS = 500
"""Jobs in one ``POST /v1/jobs:batch`` of scenario (d)."""
BATCH_CLIENTS = 4
"""Connections of scenario (d): 4 x 500 jobs in flight."""


def _batch_body(i: int) -> bytes:
    first = i * BATCH_JOBS
    jobs = b",".join(
        b'{"workload":"echo","input":{"value":%d}}' % (first + k) for k in range(BATCH_JOBS)
    )
    return b'{"jobs":[' + jobs + b"]}"


def _check_accepted(_i: int, body: bytes) -> list[str]:
    data = json.loads(body)
    if "id" not in data:
        raise ValueError(f"unexpected answer {body[:200]!r}")
    return [str(data["id"])]


def _check_batch(_i: int, body: bytes) -> list[str]:
    data = json.loads(body)
    ids = [str(job["id"]) for job in data.get("jobs", ())]
    if len(ids) != BATCH_JOBS or not all(data.get("created", ())):
        raise ValueError(f"expected {BATCH_JOBS} new jobs, got {body[:200]!r}")
    return ids


def _check_ran(i: int, body: bytes) -> list[str]:
    data = json.loads(body)
    if data.get("status") != "succeeded" or data.get("result") != i:
        raise ValueError(f"expected succeeded with result {i}, got {body[:300]!r}")
    return [str(data["id"])]


SUBMIT = Scenario("submit", "/v1/jobs", _submit_body, 202, _check_accepted)
FEATURES = Scenario("features", "/v1/jobs", _features_body, 202, _check_accepted)
RUN = Scenario("run", "/v1/run/echo", _run_body, 200, _check_ran)
BATCH = Scenario(
    "batch",
    "/v1/jobs:batch",
    _batch_body,
    202,
    _check_batch,
    jobs_per_request=BATCH_JOBS,
    clients=BATCH_CLIENTS,
)


class _Conn:
    """One keep-alive HTTP/1.1 connection, requests written and answers parsed by hand."""

    def __init__(self, port: int, path: str) -> None:
        self.port = port
        self.head = (
            f"POST {path} HTTP/1.1\r\nhost: {HOST}:{port}\r\n"
            "content-type: application/json\r\ncontent-length: "
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(b"%s%d\r\n\r\n%s" % (self.head, len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:
            raise ValueError(f"answer without content-length: {head[:200]!r}")
        end = lower.find(b"\r\n", at + 2)
        length = int(lower[at + 17 : end])
        payload = await self.reader.readexactly(length)
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, payload


class _HttpxConn:
    """The same interface over a shared ``httpx.AsyncClient``."""

    def __init__(self, client: Any, port: int, path: str) -> None:
        self.client = client
        self.url = f"http://{HOST}:{port}{path}"

    async def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        r = await self.client.post(
            self.url, content=body, headers={"content-type": "application/json"}
        )
        return r.status_code, r.content


class _Driver:
    """C connections in a closed loop, until N requests were sent or T seconds passed."""

    def __init__(self, scenario: Scenario, tally: Tally, timeout_s: float) -> None:
        self.scenario = scenario
        self.tally = tally
        self.timeout_s = timeout_s
        self.counter = iter(range(10**9))
        self.max_requests = 0
        self.deadline = 0.0

    async def one(self, conn: Any, warm: bool) -> None:
        i = next(self.counter)
        tally, scenario = self.tally, self.scenario
        t0 = time.perf_counter_ns()
        try:
            async with asyncio.timeout(self.timeout_s):
                status, payload = await conn.post(scenario.body(i))
        except TimeoutError:
            conn.close()
            tally.errors.append(f"timeout after {self.timeout_s:g} s")
            return
        except Exception as exc:  # OSError, IncompleteReadError, httpx's errors
            conn.close()
            tally.errors.append(f"{type(exc).__name__}: {exc}")
            return
        t1 = time.perf_counter_ns()
        if warm:
            if status == scenario.expect_status:
                tally.warmup_ids.extend(scenario.check(i, payload))
            return
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        tally.latencies_ns.append(t1 - t0)
        tally.last_done_ns = max(tally.last_done_ns, t1)
        if status != scenario.expect_status:
            tally.errors.append(f"HTTP {status}: {payload[:200]!r}")
            if 200 <= status < 300:
                with contextlib.suppress(ValueError, KeyError):
                    tally.other_acked_ids.append(str(json.loads(payload)["id"]))
            return
        try:
            tally.accepted_ids.extend(scenario.check(i, payload))
        except (ValueError, KeyError) as exc:
            tally.errors.append(str(exc))

    async def warm(self, conn: Any, requests: int) -> None:
        await conn.open()
        for _ in range(requests):
            await self.one(conn, True)

    async def drive(self, conn: Any) -> None:
        while self.tally.issued < self.max_requests and time.monotonic() < self.deadline:
            self.tally.issued += 1
            await self.one(conn, False)


async def _load(
    port: int,
    scenario: Scenario,
    *,
    clients: int,
    max_requests: int,
    max_s: float,
    warmup_per_client: int,
    timeout_s: float,
    client_kind: str,
    on_start: Callable[[], None],
) -> tuple[Tally, dict[str, float]]:
    tally = Tally()
    driver = _Driver(scenario, tally, timeout_s)
    httpx_client: Any = None
    if client_kind == "httpx":
        import httpx

        httpx_client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients),
            timeout=timeout_s,
        )
        conns: list[Any] = [_HttpxConn(httpx_client, port, scenario.path) for _ in range(clients)]
    else:
        conns = [_Conn(port, scenario.path) for _ in range(clients)]
    try:
        await asyncio.gather(*(driver.warm(c, warmup_per_client) for c in conns))
        warm_errors = len(tally.errors)
        # Fresh connections for the measured phase: a connection that finished its warm-up
        # early may have sat idle past the server's keep-alive timeout (5 s in uvicorn).
        for c in conns:
            c.close()
        await asyncio.gather(*(c.open() for c in conns))
        on_start()
        cpu0 = time.process_time()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        driver.max_requests = max_requests
        driver.deadline = time.monotonic() + max_s
        tally.first_start_ns = time.perf_counter_ns()
        await asyncio.gather(*(driver.drive(c) for c in conns))
        cpu1 = time.process_time()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        for c in conns:
            c.close()
        if httpx_client is not None:
            await httpx_client.aclose()
    window_s = (tally.last_done_ns - tally.first_start_ns) / 1e9
    cpu = {
        "client_cpu_s": cpu1 - cpu0,
        "client_user_s": ru1.ru_utime - ru0.ru_utime,
        "client_sys_s": ru1.ru_stime - ru0.ru_stime,
        "window_s": window_s,
        "warmup_errors": warm_errors,
    }
    return tally, cpu


def run_load(port: int, scenario: Scenario, **kwargs: Any) -> tuple[Tally, dict[str, float]]:
    """Run ``_load`` on uvloop (if installed) in a fresh event loop."""
    try:
        import uvloop

        return uvloop.run(_load(port, scenario, **kwargs))
    except ImportError:
        return asyncio.run(_load(port, scenario, **kwargs))


# -- the store, read directly -----------------------------------------------------------


def _read_db(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)


def ambidex_counts(db: Path) -> dict[str, int]:
    with contextlib.closing(_read_db(db)) as conn:
        rows = conn.execute("SELECT status, count(*) FROM ambidex_jobs GROUP BY status").fetchall()
    return {str(s): int(n) for s, n in rows}


def verify_stored(db: Path, table: str, tally: Tally, *, want_status: str | None = None) -> Any:
    """Count how many acknowledged jobs are rows of ``table``.

    With ``want_status``, also count the jobs answered with the expected status whose
    stored status differs.
    """
    ids = tally.warmup_ids + tally.accepted_ids + tally.other_acked_ids
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        conn.execute("CREATE TEMP TABLE acked (id TEXT PRIMARY KEY)")
        conn.executemany("INSERT OR IGNORE INTO acked VALUES (?)", ((i,) for i in ids))
        conn.execute("CREATE TEMP TABLE answered (id TEXT PRIMARY KEY)")
        conn.executemany(
            "INSERT OR IGNORE INTO answered VALUES (?)",
            ((i,) for i in tally.warmup_ids + tally.accepted_ids),
        )
        found = conn.execute(f"SELECT count(*) FROM {table} JOIN acked USING (id)").fetchone()[0]
        rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        out: dict[str, Any] = {
            "acknowledged": len(ids),
            "distinct_acknowledged": len(set(ids)),
            "found_in_store": int(found),
            "missing": len(set(ids)) - int(found),
            "rows_in_store": int(rows),
        }
        if want_status is not None:
            wrong = conn.execute(
                f"SELECT count(*) FROM {table} JOIN answered USING (id) WHERE status != ?",
                (want_status,),
            ).fetchone()[0]
            out[f"not_{want_status}"] = int(wrong)
    return out


# -- one scenario -----------------------------------------------------------------------------


def summarize(tally: Tally, cpu: dict[str, float], server_cpu_s: float) -> dict[str, Any]:
    lat = sorted(ns / 1e6 for ns in tally.latencies_ns)
    ok = len(tally.accepted_ids)
    window = cpu["window_s"]
    out: dict[str, Any] = {
        "requests": len(tally.latencies_ns),
        "ok": ok,
        "errors": len(tally.errors) - int(cpu["warmup_errors"]),
        "warmup_errors": int(cpu["warmup_errors"]),
        "error_kinds": dict(
            collections.Counter(
                e.split(":", 1)[0] for e in tally.errors[int(cpu["warmup_errors"]) :]
            )
        ),
        "error_samples": tally.errors[:5],
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "window_s": window,
        "ok_per_s": ok / window if window > 0 else 0.0,
        "client_cpu_s": cpu["client_cpu_s"],
        "client_cpu_fraction": cpu["client_cpu_s"] / window if window > 0 else 0.0,
        "client_cpu_us_per_request": 1e6 * cpu["client_cpu_s"] / max(len(lat), 1),
        "server_cpu_s": server_cpu_s,
        "server_cpu_fraction": server_cpu_s / window if window > 0 else 0.0,
        "server_cpu_us_per_request": 1e6 * server_cpu_s / max(len(lat), 1),
    }
    if lat:
        out.update(
            p50_ms=percentile(lat, 50),
            p90_ms=percentile(lat, 90),
            p99_ms=percentile(lat, 99),
            max_ms=lat[-1],
            mean_ms=sum(lat) / len(lat),
        )
    return out


def measure(
    server: Server,
    scenario: Scenario,
    args: argparse.Namespace,
    *,
    between: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Start the server, load it, kill it; the figures as a dict."""
    server.start()
    marks: dict[str, Any] = {}
    profiler: subprocess.Popen[bytes] | None = None

    def on_start() -> None:
        nonlocal profiler
        marks["server_cpu0"] = server.cpu_s()
        marks["sys0"] = system_busy()
        if args.profile:
            out = Path(args.profile) / f"{server.name}.txt"
            profiler = subprocess.Popen(
                [
                    shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(server.pid),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    *args.profile_flags.split(),
                    "-o",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    try:
        per = scenario.jobs_per_request
        tally, cpu = run_load(
            server.port,
            scenario,
            clients=min(args.clients, scenario.clients or args.clients),
            # a batch scenario stores about 10 times the jobs of the others
            max_requests=args.requests if per == 1 else max(10, 10 * args.requests // per),
            max_s=args.seconds,
            warmup_per_client=args.warmup,
            timeout_s=args.timeout_s,
            client_kind=args.client,
            on_start=on_start,
        )
        server_cpu = server.cpu_s() - marks["server_cpu0"]
        sys1 = system_busy()
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
        result = summarize(tally, cpu, server_cpu)
        busy = sys1[0] - marks["sys0"][0]
        total = sys1[1] - marks["sys0"][1]
        result["machine_cpu_busy_fraction"] = busy / total if total else 0.0
        result["other_cpu_fraction"] = max(
            0.0,
            result["machine_cpu_busy_fraction"] * (os.cpu_count() or 1)
            - result["server_cpu_fraction"]
            - result["client_cpu_fraction"],
        )
        result["server_threads"] = server.threads()
        if between is not None:
            result.update(between())
    finally:
        server.kill()
    result["server_pid"] = server.pid
    result["_tally"] = tally
    return result


# -- reporting ----------------------------------------------------------------------------------


ROWS = [
    ("floor", "floor"),
    ("submit", "(a) submit"),
    ("run", "(b) run"),
    ("features", "(c) features"),
    ("batch", "(d) batch"),
]
LEGEND = (
    "floor: FastAPI + uvicorn, POST /v1/jobs does one durable SQLite INSERT and answers 202; "
    "(a) ambidex POST /v1/jobs -> 202 while its workers run the echo jobs; "
    "(b) ambidex POST /v1/run/echo -> 200 with the finished job (latency includes running it); "
    "(c) (a) with a priority, an idempotency key and a retry policy on every submit; "
    f"(d) ambidex POST /v1/jobs:batch, {BATCH_JOBS} echo jobs a request on {BATCH_CLIENTS} "
    "connections, no workers (--concurrency 0): its req/s column counts jobs."
)
MEDIAN_FIELDS = (
    "ok_per_s",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "server_cpu_fraction",
    "server_cpu_us_per_request",
    "client_cpu_fraction",
    "client_cpu_us_per_request",
    "other_cpu_fraction",
)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds of one scenario; counts are summed."""
    out: dict[str, Any] = {f: statistics.median(r[f] for r in runs) for f in MEDIAN_FIELDS}
    out["rounds"] = len(runs)
    for f in ("requests", "ok", "errors"):
        out[f] = sum(r[f] for r in runs)
    kinds: collections.Counter[str] = collections.Counter()
    for r in runs:
        kinds.update(r["error_kinds"])
    out["error_kinds"] = dict(kinds)
    out["verify"] = {
        f: sum(r["verify"][f] for r in runs)
        for f in ("acknowledged", "found_in_store", "missing", "rows_in_store")
    }
    if "not_succeeded" in runs[0]["verify"]:
        out["verify"]["not_succeeded"] = sum(r["verify"]["not_succeeded"] for r in runs)
    return out


def _round_list(runs: list[dict[str, Any]], field: str, fmt: str = "{:.0f}") -> str:
    return ", ".join(fmt.format(r[field]) for r in runs)


def print_results(
    runs: dict[str, list[dict[str, Any]]], agg: dict[str, dict[str, Any]], clients: int
) -> None:
    floor_rate = agg["floor"]["ok_per_s"]
    table = Table(
        title=f"{clients} concurrent keep-alive clients on loopback (closed loop); "
        f"medians over {len(next(iter(runs.values())))} round(s)"
    )
    cols = [
        "scenario",
        "requests",
        "errors",
        "req/s",
        "÷ floor",
        "p50 ms",
        "p99 ms",
        "server CPU",
        "server µs/req",
        "client CPU",
        "others CPU",
        "req/s by round",
    ]
    for c in cols:
        table.add_column(c, justify="left" if c == "scenario" else "right", no_wrap=True)
    for key, label in ROWS:
        if key not in agg:
            continue
        r = agg[key]
        table.add_row(
            label,
            str(r["requests"]),
            str(r["errors"]),
            f"{r['ok_per_s']:.0f}",
            f"{r['ok_per_s'] / floor_rate:.3f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{100 * r['server_cpu_fraction']:.0f}%",
            f"{r['server_cpu_us_per_request']:.0f}",
            f"{100 * r['client_cpu_fraction']:.0f}%",
            f"{100 * r['other_cpu_fraction']:.0f}%",
            _round_list(runs[key], "ok_per_s"),
        )
    console.print(table)
    for key, _ in ROWS:
        if key in agg and agg[key]["errors"]:
            kinds = ", ".join(f"{n} x {k}" for k, n in agg[key]["error_kinds"].items())
            console.print(f"[red]{key}: {agg[key]['errors']} errors[/]: {kinds}")
    console.print(LEGEND)
    console.print(
        "CPU columns are shares of one CPU over the measured window (server: its process, all "
        "threads; client: this process; others: every other process on the machine, from "
        "/proc/stat)."
    )


def print_store_check(runs: dict[str, list[dict[str, Any]]], agg: dict[str, Any]) -> None:
    store = Table(
        title="nothing accepted lost: acknowledged jobs found in the store after SIGKILL "
        "(all rounds)"
    )
    for c in ("scenario", "acknowledged", "found", "missing", "rows in store", "notes"):
        store.add_column(c, justify="left" if c in {"scenario", "notes"} else "right")
    for key, label in ROWS:
        if key not in agg:
            continue
        v = agg[key]["verify"]
        note = ""
        if key == "submit":
            done = ", ".join(str(r["counts_at_end_of_load"].get("succeeded", 0)) for r in runs[key])
            drains = ", ".join(
                "-" if r["drain_s"] is None else f"{r['drain_s']:.1f}" for r in runs[key]
            )
            note = f"jobs done at end of load: {done}; rest done after (s): {drains}"
        if "not_succeeded" in v:
            note = f"{v['not_succeeded']} answered 200 but not succeeded in the store"
        store.add_row(
            label,
            str(v["acknowledged"]),
            str(v["found_in_store"]),
            str(v["missing"]),
            str(v["rows_in_store"]),
            note,
        )
    console.print(store)


def compute_ratios(
    runs: dict[str, list[dict[str, Any]]], agg: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    def row(name: str, value: float, note: str, target: str = "-", met: bool | None = None) -> Any:
        return {"ratio": name, "value": value, "target": target, "met": met, "note": note}

    floor = agg["floor"]
    out = []
    for key, tag in (("submit", "(a) submit"), ("run", "(b) run"), ("features", "(c) features")):
        if key not in agg:
            continue
        r = agg[key]
        extra = "; a run also claims, runs, finishes the job" if key == "run" else ""
        paired = [
            a["ok_per_s"] / f["ok_per_s"] for a, f in zip(runs[key], runs["floor"], strict=False)
        ]
        value = r["ok_per_s"] / floor["ok_per_s"]
        out.append(
            row(
                f"{tag} req/s ÷ floor req/s",
                value,
                "by round: " + ", ".join(f"{x:.2f}" for x in paired) + extra,
                *(("≥ 0.8", value >= 0.8) if key == "submit" else ()),
            )
        )
        out.append(row(f"{tag} p50 ÷ floor p50", r["p50_ms"] / floor["p50_ms"], extra[2:]))
        out.append(row(f"{tag} p99 ÷ floor p99", r["p99_ms"] / floor["p99_ms"], extra[2:]))
        out.append(
            row(
                f"{tag} server CPU µs/req ÷ floor's",
                r["server_cpu_us_per_request"] / floor["server_cpu_us_per_request"],
                "server CPU time per answered request",
            )
        )
    if "batch" in agg:
        rate = agg["batch"]["ok_per_s"]
        out.append(
            row(
                "(d) batch submits, jobs/s",
                rate,
                f"{BATCH_JOBS} jobs a request; by round: " + _round_list(runs["batch"], "ok_per_s"),
                "≥ 10,000",
                rate >= 10_000,
            )
        )
    if "features" in agg and "submit" in agg:
        paired = [
            f["ok_per_s"] / s["ok_per_s"]
            for f, s in zip(runs["features"], runs["submit"], strict=False)
        ]
        ratio = agg["features"]["ok_per_s"] / agg["submit"]["ok_per_s"]
        out.append(
            row(
                "(c) submits with features ÷ (a) plain submits, req/s",
                ratio,
                "by round: " + ", ".join(f"{x:.2f}" for x in paired),
                "≥ 0.9",
                ratio >= 0.9,
            )
        )
    for key, r in agg.items():
        v = r["verify"]
        out.append(
            row(
                f"{key}: acknowledged jobs missing from the store",
                float(v["missing"]),
                f"{v['found_in_store']} of {v['acknowledged']} found after SIGKILL",
                "= 0",
                v["missing"] == 0,
            )
        )
        out.append(
            row(
                f"{key}: client errors",
                float(r["errors"]),
                f"{r['requests']} requests",
                "= 0",
                r["errors"] == 0,
            )
        )
    return out


def uvicorn_settings() -> dict[str, Any]:
    """What uvicorn's "auto" settings pick here (both servers use them)."""
    import uvicorn

    return {
        "uvicorn": uvicorn.__version__,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "log_level": "warning",
        "access_log": False,
        "workers": 1,
    }


# -- main -----------------------------------------------------------------------------------------


def run_scenario(key: str, work: Path, round_no: int, args: argparse.Namespace) -> dict[str, Any]:
    """One scenario on a fresh server and a fresh database file."""
    py = sys.executable
    db = work / f"{key}-{round_no}.sqlite"
    name = f"{key}-{round_no}" if key == "floor" else f"ambidex-{key}-{round_no}"
    if key == "floor":
        server = Server(name, [py, str(Path(__file__).resolve()), "--serve-floor", str(db)], work)
        r = measure(server, SUBMIT, args)
        r["verify"] = verify_stored(db, "jobs", r.pop("_tally"))
        return r
    argv = [py, "-m", "ambidex", "serve", "--port", "0", "--db", str(db)]
    server = Server(name, [*argv, "--concurrency", str(args.concurrency)], work)

    def after_submit() -> dict[str, Any]:
        out: dict[str, Any] = {"counts_at_end_of_load": ambidex_counts(db), "drain_s": None}
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.drain_s:
            counts = ambidex_counts(db)
            if not counts.get("queued") and not counts.get("running"):
                out["drain_s"] = time.monotonic() - t0
                break
            time.sleep(0.1)
        out["counts_after_drain"] = ambidex_counts(db)
        return out

    if key == "batch":  # what the service takes in: no workers beside it
        argv = [*argv, "--concurrency", "0"]
        server = Server(name, argv, work)
        r = measure(server, BATCH, args)
        r["verify"] = verify_stored(db, "ambidex_jobs", r.pop("_tally"))
        return r
    if key in ("submit", "features"):
        r = measure(server, SUBMIT if key == "submit" else FEATURES, args, between=after_submit)
        r["verify"] = verify_stored(db, "ambidex_jobs", r.pop("_tally"))
    else:
        r = measure(server, RUN, args)
        r["verify"] = verify_stored(db, "ambidex_jobs", r.pop("_tally"), want_status="succeeded")
    return r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="N = 100, T = 5 s, 20 clients: a smoke test"
    )
    parser.add_argument("--requests", type=int, default=None, help="N: stop after N requests")
    parser.add_argument("--seconds", type=float, default=None, help="T: or after T seconds")
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds, scenarios in rotating order (3; quick 1)"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=170.0,
        help="start no further round if it could end later than this (the slowest round so "
        "far is the guess)",
    )
    parser.add_argument(
        "--clients", type=int, default=None, help="concurrent connections (200; quick 20)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="ambidex serve --concurrency")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up requests per client")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="per-request timeout")
    parser.add_argument(
        "--drain-s",
        type=float,
        default=None,
        help="(a) after the load, wait up to this long for the queue to empty (5; quick 3)",
    )
    parser.add_argument(
        "--client", choices=["raw", "httpx"], default="raw", help="load generator (see above)"
    )
    parser.add_argument(
        "--scenarios",
        default="floor,submit,run,features,batch",
        help="comma-separated: floor,submit,run,features,batch",
    )
    parser.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="record each server with py-spy (raw collapsed stacks) into DIR; the figures of "
        "such a run are not measurements",
    )
    parser.add_argument(
        "--profile-flags",
        default="--threads --nonblocking",
        help="py-spy record flags with --profile (e.g. '--threads --gil --nonblocking')",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="results file name under benchmarks/results/ (default: jobs_http, or "
        "jobs_http-quick with --quick)",
    )
    parser.add_argument("--serve-floor", default=None, metavar="DB", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_floor:
        serve_floor(args.serve_floor, args.port)
        return 0

    quick = args.quick
    # The smoke test only needs every scenario to run and every acknowledged job to be
    # found: a few concurrent clients and a hundred requests do (each client's warm-up
    # request comes on top).
    args.requests = args.requests or (100 if quick else 5000)
    args.clients = args.clients or (20 if quick else 200)
    args.seconds = args.seconds or (5.0 if quick else 30.0)
    args.drain_s = args.drain_s if args.drain_s is not None else (3.0 if quick else 5.0)
    rounds = args.rounds or (1 if quick else 3)
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if "floor" not in wanted or not set(wanted) <= {"floor", "submit", "run", "features", "batch"}:
        parser.error("--scenarios: floor (needed for the ratios), submit, run, features, batch")
    wanted = list(dict.fromkeys(wanted))
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)

    info = machine_info()
    settings = {
        "quick": quick,
        "max_requests": args.requests,
        "max_seconds": args.seconds,
        "rounds_asked": rounds,
        "budget_s": args.budget_s,
        "clients": args.clients,
        "client": args.client,
        "client_detail": (
            f"{args.clients} asyncio tasks on uvloop, each with its own keep-alive HTTP/1.1 "
            "connection, requests written and answers parsed by hand"
            if args.client == "raw"
            else f"one httpx.AsyncClient, pool of {args.clients} keep-alive connections, "
            f"{args.clients} tasks"
        ),
        "closed_loop": True,
        "warmup_requests_per_client": args.warmup,
        "request_timeout_s": args.timeout_s,
        "ambidex_concurrency": args.concurrency,
        "drain_limit_s": args.drain_s,
        "server_stopped_with": "SIGKILL, before the store is checked",
        "floor_store": "sqlite3, journal_mode=WAL, synchronous=NORMAL, autocommit INSERT on the "
        "event loop",
        "ambidex_store": "SQLite file (ambidex default engine: WAL, synchronous=NORMAL)",
        "profiled": bool(args.profile),
        **uvicorn_settings(),
    }
    console.print(
        f"[bold]jobs_http[/] {info['date_utc']}  nproc={info['nproc']}  python {info['python']}  "
        f"ambidex {info['git_commit']}  N={args.requests} T={args.seconds:g}s  "
        f"rounds={rounds}  clients={args.clients} ({args.client})  "
        f"concurrency={args.concurrency}  "
        f"uvicorn {settings['uvicorn']} ({settings['loop']}, {settings['http']})"
        + ("  [red]PROFILED: not a measurement[/]" if args.profile else "")
    )

    started = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in wanted}
    slowest_round = 0.0
    with tempfile.TemporaryDirectory(prefix="ambidex-jobs-http-") as tmp:
        for round_no in range(rounds):
            elapsed = time.perf_counter() - started
            if round_no and elapsed + slowest_round > args.budget_s:
                console.print(f"[yellow]stopping after {round_no} rounds: time budget[/]")
                break
            t0 = time.perf_counter()
            order = wanted[round_no % len(wanted) :] + wanted[: round_no % len(wanted)]
            for key in order:
                r = run_scenario(key, Path(tmp), round_no, args)
                r["round"] = round_no
                runs[key].append(r)
                console.print(
                    f"  round {round_no + 1} {key}: {r['ok']} ok, {r['errors']} errors, "
                    f"{r['ok_per_s']:.0f} req/s, p50 {r.get('p50_ms', 0):.1f} ms, "
                    f"p99 {r.get('p99_ms', 0):.1f} ms"
                )
            slowest_round = max(slowest_round, time.perf_counter() - t0)

    agg = {key: aggregate(rs) for key, rs in runs.items() if rs}
    print_results(runs, agg, args.clients)
    print_store_check(runs, agg)
    ratios = compute_ratios(runs, agg)
    print_ratios(
        console,
        ratios,
        title="ratios (medians over the rounds, same run)",
        value_format=lambda v: f"{v:,.0f}" if v >= 1000 else f"{v:.3g}",
    )
    elapsed = time.perf_counter() - started
    console.print(f"elapsed {elapsed:.1f} s")
    data = {
        "benchmark": "jobs_http",
        "machine": info,
        "settings": settings,
        "medians": agg,
        "runs": runs,
        "ratios": ratios,
        "elapsed_s": elapsed,
    }
    name = args.output or ("jobs_http-quick" if quick else "jobs_http")
    if args.profile and not args.output:
        name += "-profiled"
    path = write_json(name, data)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
