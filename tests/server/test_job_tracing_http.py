"""One trace from a client's submit over HTTP to the job run by another process.

The test process is the client and the server (uvicorn on loopback, in a thread):
their spans go to the in-memory exporter of the ``spans`` fixture. The job runs in
an ``ambidex worker`` subprocess with ``AMBIDEX_OTEL=1``, whose spans come over
OTLP/HTTP to a small receiver here.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from _durable_support import wait_until
from _server_support import serve_in_thread, server_process

import ambidex as ax
from ambidex.jobs import JobContext, WorkloadRegistry
from ambidex.server import create_app

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
from _otel import one

WORKLOADS = str(Path(__file__).parents[1] / "jobs" / "job_tracing_workloads.py")
TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


@dataclass
class Exported:
    """A span as the worker exported it (OTLP), or as the in-memory exporter holds it."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    kind: str
    status: str
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    service: str = ""


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class OtlpReceiver:
    """An OTLP/HTTP trace endpoint on loopback that keeps what it is sent."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.spans: list[Exported] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._keep(request)
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _keep(self, request: Any) -> None:
        from opentelemetry.proto.trace.v1 import trace_pb2

        kept = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    kept.append(
                        Exported(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex() or None,
                            kind=trace_pb2.Span.SpanKind.Name(s.kind).removeprefix("SPAN_KIND_"),
                            status=trace_pb2.Status.StatusCode.Name(s.status.code).removeprefix(
                                "STATUS_CODE_"
                            ),
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            events=[
                                (e.name, {a.key: _value(a.value) for a in e.attributes})
                                for e in s.events
                            ],
                            links=[link.span_id.hex() for link in s.links],
                            service=str(resource.get("service.name", "")),
                        )
                    )
        with self._lock:
            self.spans.extend(kept)

    def named(self, name: str) -> list[Exported]:
        with self._lock:
            return [s for s in self.spans if s.name == name]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _in_memory(span: Any) -> Exported:
    return Exported(
        name=span.name,
        trace_id=f"{span.context.trace_id:032x}",
        span_id=f"{span.context.span_id:016x}",
        parent_id=f"{span.parent.span_id:016x}" if span.parent else None,
        kind=span.kind.name,
        status=span.status.status_code.name,
        attributes=dict(span.attributes or {}),
    )


def _chain(start: Exported, spans: list[Exported]) -> list[Exported]:
    """``start`` and its parents, up to the root (spans from every process)."""
    by_id = {s.span_id: s for s in spans}
    chain = [start]
    while chain[-1].parent_id is not None:
        parent = by_id.get(chain[-1].parent_id)
        assert parent is not None, f"no parent {chain[-1].parent_id} of {chain[-1].name}"
        chain.append(parent)
    return chain


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    try:
        yield r
    finally:
        r.close()


# The front desk's copies of the worker's workloads (it validates inputs; it runs nothing).
async def traced_step(x: int = 1) -> None: ...
async def flaky(ctx: JobContext) -> None: ...
async def explode() -> None: ...
async def otel_modules() -> None: ...


@pytest.fixture
def registry() -> WorkloadRegistry:
    reg = WorkloadRegistry()
    for fn in (traced_step, explode, otel_modules):
        reg.register(fn)
    reg.register(flaky, retries=1, retry_backoff_s=0.01)  # the desk stores the retry policy
    return reg


def test_one_trace_from_an_http_submit_to_a_job_run_by_an_ambidex_worker(
    tmp_path: Path, registry: WorkloadRegistry, receiver: OtlpReceiver, spans: Any
) -> None:
    from opentelemetry import trace

    db = tmp_path / "jobs.sqlite"
    env = {
        "AMBIDEX_OTEL": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_SERVICE_NAME": "ambidex-worker",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    app = create_app(db, registry=registry, concurrency=0)  # tracing is on: FastAPI's too
    with (
        serve_in_thread(app) as url,
        server_process(
            "worker", "--db", str(db), "--workloads", WORKLOADS, "--lease-s", "2",
            env=env, log=tmp_path / "w.log",
        ) as worker,
    ):  # fmt: skip
        with trace.get_tracer("tests").start_as_current_span("test root"), ax.Client(url) as c:
            job = c.submit("traced_step", {"x": 7})
            failing = c.submit("explode")
            retried = c.submit("flaky")
        wait_until(
            lambda: (
                receiver.named("user step")
                and receiver.named("ambidex.job explode")
                and len(receiver.named("ambidex.job flaky")) == 2
            ),
            f"the worker's spans; its output:\n{worker.output()}",
            timeout_s=30,
        )
        with ax.Client(url) as c:  # follows the job's event stream: a span per connection
            assert c.wait(job.id, timeout_s=10).status is ax.jobs.JobStatus.SUCCEEDED
    streams = [
        s
        for s in spans.get_finished_spans()
        if s.name == "ambidex.client GET /v1/jobs/{job_id}/events"
    ]
    assert streams
    assert all(s.status.status_code.name == "UNSET" for s in streams)
    local = [_in_memory(s) for s in spans.get_finished_spans()]
    everything = local + receiver.spans
    root = one(spans.get_finished_spans(), "test root")
    trace_id = f"{root.context.trace_id:032x}"

    # user step (worker) -> ambidex.io (the workload's call, worker) -> ambidex.job (worker)
    # -> POST /v1/jobs (server, SERVER)
    # -> ambidex.client POST /v1/jobs (client, CLIENT) -> test root: one trace
    [user] = receiver.named("user step")
    chain = _chain(user, everything)
    names = [s.name for s in chain]
    assert names[:3] == ["user step", "ambidex.io traced_step", "ambidex.job traced_step"], names
    assert names[-2:] == ["ambidex.client POST /v1/jobs", "test root"], names
    assert "POST /v1/jobs" in names, names
    assert {s.trace_id for s in chain} == {trace_id}
    server = chain[names.index("POST /v1/jobs")]
    assert server.kind == "SERVER"
    assert server.attributes["http.route"] == "/v1/jobs"
    assert server.attributes["http.response.status_code"] == 202
    client = chain[-2]
    assert client.kind == "CLIENT"
    assert client.attributes["url.template"] == "/v1/jobs"
    assert client.attributes["ambidex.job.workload"] == "traced_step"
    assert client.attributes["http.response.status_code"] == 202

    job_span = chain[2]
    assert job_span.kind == "CONSUMER"
    assert job_span.service == "ambidex-worker"
    assert job_span.links == [job_span.parent_id]
    assert job_span.attributes["ambidex.job.id"] == job.id
    assert job_span.attributes["ambidex.job.attempt"] == 1
    assert job_span.attributes["ambidex.job.outcome"] == "succeeded"
    assert str(job_span.attributes["ambidex.worker.id"]).count(":") == 2  # host:pid:random
    assert job_span.attributes["ambidex.job.queue_wait_s"] >= 0

    [bad] = receiver.named("ambidex.job explode")
    assert bad.attributes["ambidex.job.id"] == failing.id
    assert bad.status == "ERROR"
    assert bad.attributes["error.type"] == "RuntimeError"
    assert bad.trace_id == trace_id
    first, second = sorted(
        receiver.named("ambidex.job flaky"), key=lambda s: s.attributes["ambidex.job.attempt"]
    )
    assert first.attributes["ambidex.job.id"] == second.attributes["ambidex.job.id"] == retried.id
    assert first.status == "ERROR"
    assert [name for name, _ in first.events] == ["exception", "retry"]
    assert second.status == "UNSET"
    assert first.parent_id == second.parent_id  # both attempts continue the submit
    assert first.trace_id == second.trace_id == trace_id


def _raw_submit(url: str, header_lines: list[bytes]) -> tuple[int, bytes]:
    """POST /v1/jobs with these header lines as they are (NUL bytes and all)."""
    host, port = url.removeprefix("http://").split(":")
    body = b'{"workload": "traced_step", "input": {"x": 1}}'
    request = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: "
        + host.encode()
        + b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + b"".join(line + b"\r\n" for line in header_lines)
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


HOSTILE = [
    [b"traceparent: garbage"],
    [b"traceparent: 00-" + b"0" * 32 + b"-" + b"1" * 16 + b"-01"],
    [b"traceparent: 00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01\x00"],
    [b"traceparent: 00-" + b"a" * 32 + b"-\x00" + b"b" * 15 + b"-01"],
    [b"traceparent: 00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01" + b"x" * 8000],
    [b"traceparent: ff-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"],
    [b"traceparent: 00-" + b"A" * 32 + b"-" + b"b" * 16 + b"-01"],
    [
        b"traceparent: 00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01",
        b"traceparent: 00-" + b"c" * 32 + b"-" + b"d" * 16 + b"-01",
    ],
    [
        b"traceparent: 00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01",
        b"tracestate: " + b"k=v," * 2000,
    ],
    [b"baggage: " + b"k=v," * 2000],
    ["traceparent: 00-ääää".encode()],
]


def test_hostile_traceparent_headers_never_break_a_submit(
    tmp_path: Path, registry: WorkloadRegistry, spans: Any
) -> None:
    db = tmp_path / "jobs.sqlite"
    app = create_app(db, registry=registry, concurrency=0)
    with serve_in_thread(app) as url:
        for lines in HOSTILE:
            status, body = _raw_submit(url, lines)
            if status == 400:  # refused by the HTTP parser, before the app: not a submit
                assert b"\x00" in b"".join(lines), (lines, body)
                continue
            assert status == 202, (lines, body)
            job_id = json.loads(body)["id"]
            with sqlite3.connect(db) as conn:
                [stored] = conn.execute(
                    "SELECT trace_context FROM ambidex_jobs WHERE id = ?", (job_id,)
                ).fetchone()
            # the server's own span (a new trace, or the one a valid header names)
            carrier = json.loads(stored)
            assert set(carrier) <= {"traceparent", "tracestate"}
            assert TRACEPARENT.fullmatch(carrier["traceparent"])
            assert len(carrier.get("tracestate", "")) <= 512
        assert httpx.get(f"{url}/healthz").status_code == 200
    servers = [s for s in spans.get_finished_spans() if s.name == "POST /v1/jobs"]
    assert len(servers) >= len(HOSTILE) - 2


def test_with_tracing_off_nothing_is_stored_and_the_worker_loads_no_opentelemetry(
    tmp_path: Path, registry: WorkloadRegistry
) -> None:
    db = tmp_path / "jobs.sqlite"
    app = create_app(db, registry=registry, concurrency=0)
    sent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    with (
        serve_in_thread(app) as url,
        server_process(
            "worker", "--db", str(db), "--workloads", WORKLOADS,
            env={"AMBIDEX_OTEL": ""}, log=tmp_path / "w.log",
        ) as worker,
    ):  # fmt: skip
        answer = httpx.post(
            f"{url}/v1/jobs", json={"workload": "otel_modules"}, headers={"traceparent": sent}
        )
        assert answer.status_code == 202
        job_id = answer.json()["id"]
        done = wait_until(
            lambda: (
                (j := httpx.get(f"{url}/v1/jobs/{job_id}").json())["status"] == "succeeded" and j
            ),
            f"the job to run; worker output:\n{worker.output()}",
        )
    assert done["result"] == []
    with sqlite3.connect(db) as conn:
        [stored] = conn.execute(
            "SELECT trace_context FROM ambidex_jobs WHERE id = ?", (job_id,)
        ).fetchone()
    assert stored is None


async def test_the_async_client_sends_its_span_as_the_requests_parent(
    tmp_path: Path, registry: WorkloadRegistry, spans: Any
) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, StatusCode

    app = create_app(tmp_path / "jobs.sqlite", registry=registry, concurrency=1)
    with serve_in_thread(app) as url:
        async with ax.AsyncClient(url) as c:
            with trace.get_tracer("tests").start_as_current_span("test root"):
                job = await c.submit("traced_step", {"x": 1})
                await c.get(job.id)
                with pytest.raises(ax.jobs.JobNotFoundError):
                    await c.get("no-such-job")
                done = await c.wait(job.id, timeout_s=10)
                assert done.status is ax.jobs.JobStatus.SUCCEEDED
                # a stream's span is never the current one: a span here is the root's child
                with trace.get_tracer("tests").start_as_current_span("after") as after:
                    pass
    finished = spans.get_finished_spans()
    root = one(finished, "test root")
    assert after.parent.span_id == root.context.span_id  # type: ignore[attr-defined]
    gets = [s for s in finished if s.name == "ambidex.client GET /v1/jobs/{job_id}"]
    assert len(gets) >= 2  # one name for every job id (wait reads the job at the end too)
    streams = [s for s in finished if s.name == "ambidex.client GET /v1/jobs/{job_id}/events"]
    assert streams
    for client in [one(finished, "ambidex.client POST /v1/jobs"), *gets, *streams]:
        assert client.parent.span_id == root.context.span_id
        assert client.kind is SpanKind.CLIENT
        [server] = [s for s in finished if s.parent and s.parent.span_id == client.context.span_id]
        assert server.kind is SpanKind.SERVER
        assert (
            server.name
            == f"{client.attributes['http.request.method']} {server.attributes['http.route']}"
        )
    missing = next(s for s in gets if s.attributes["ambidex.job.id"] == "no-such-job")
    assert missing.status.status_code is StatusCode.ERROR
    assert missing.attributes["http.response.status_code"] == 404
    assert missing.attributes["error.type"] == "JobNotFoundError"
