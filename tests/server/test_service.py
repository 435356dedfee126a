"""The service around the jobs: health, metrics, offline API docs, and the logs of serve and
worker."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _durable_support import wait_until
from _server_support import serve_in_thread, server_process

from ambidex.jobs import JobManager, JobStore, WorkloadRegistry
from ambidex.server import create_app

ROOT = Path(__file__).resolve().parents[2]
SERVICE_WORKLOADS = str(Path(__file__).with_name("service_workloads.py"))
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) \S+: ")


async def slow_fail(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)
    raise ConnectionError("the other side hung up")


async def quick(x: int = 1) -> int:
    return x


@pytest.fixture
def registry() -> WorkloadRegistry:
    reg = WorkloadRegistry()
    reg.register(slow_fail, retries=1, retry_backoff_s=0.01)
    reg.register(quick)
    return reg


@pytest.fixture
def url(tmp_path: Path, registry: WorkloadRegistry) -> Iterator[str]:
    app = create_app(tmp_path / "jobs.sqlite", registry=registry, concurrency=4, lease_s=3.0)
    with serve_in_thread(app) as base:
        yield base


def test_api_docs_need_no_internet(url: str) -> None:
    page = httpx.get(f"{url}/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets, page.text
    for asset in assets:
        assert asset.startswith("/"), f"{asset} is not served by the service itself"
        answer = httpx.get(f"{url}{asset}")
        assert answer.status_code == 200, asset
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    assert "cdn." not in page.text
    assert httpx.get(f"{url}/openapi.json").json()["info"]["title"] == "ambidex job service"


def test_metrics_carry_workload_labels_histograms_retries_and_runtime_gauges(url: str) -> None:
    with httpx.Client(base_url=url) as client:
        failing = client.post("/v1/jobs", json={"workload": "slow_fail"}).json()["id"]
        fine = client.post("/v1/run/quick?wait_s=5", json={"x": 2}).json()
        assert fine["status"] == "succeeded"
        wait_until(
            lambda: client.get(f"/v1/jobs/{failing}").json()["status"] == "failed",
            "the failing job to fail after its retry",
        )
        text = client.get("/metrics").text
    assert 'ambidex_jobs_by_workload{status="failed",workload="slow_fail"} 1.0' in text
    assert 'ambidex_job_retries_total{workload="slow_fail"} 1.0' in text
    assert 'ambidex_job_run_seconds_count{status="retrying",workload="slow_fail"} 1.0' in text
    assert 'ambidex_job_run_seconds_count{status="failed",workload="slow_fail"} 1.0' in text
    assert 'ambidex_job_queue_wait_seconds_count{workload="quick"} 1.0' in text
    assert 'ambidex_jobs_finished_here_total{status="succeeded"} 1.0' in text
    for gauge in ("ambidex_runtime_io_threads_busy", "ambidex_runtime_cpu_workers_busy"):
        assert re.search(rf"^{gauge} \d", text, re.M), gauge
    assert 'ambidex_http_requests_total{code="202",method="POST",route="/v1/jobs"}' in text


class _HeartbeatBreaks(JobStore):
    def heartbeat(self, *args: Any, **kwargs: Any) -> Any:
        raise GeneratorExit("a bug in the heartbeat")


def test_healthz_answers_503_saying_why_when_the_worker_stopped(
    tmp_path: Path, registry: WorkloadRegistry
) -> None:
    store = _HeartbeatBreaks(tmp_path / "jobs.sqlite")
    manager = JobManager(store, registry, concurrency=2, lease_s=2.0)
    try:
        with serve_in_thread(create_app(manager=manager)) as base:
            health = wait_until(
                lambda: (r := httpx.get(f"{base}/healthz")).status_code == 503 and r,
                "/healthz to report the dead heartbeat",
            )
            assert health.json()["problems"] == [
                "the lease heartbeat stopped: GeneratorExit: a bug in the heartbeat"
            ]
            # the front desk still takes jobs
            answer = httpx.post(f"{base}/v1/jobs", json={"workload": "quick"})
            assert answer.status_code == 202
    finally:
        store.close()


def test_serve_and_worker_log_alike_and_a_failing_job_with_its_traceback(tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.sqlite")
    workloads = ["--workloads", SERVICE_WORKLOADS]
    with server_process(
        "serve", "--port", "0", "--db", db, "--concurrency", "0", *workloads, log=tmp_path / "s.log"
    ) as serve:
        base = serve.wait_for_url()
        with server_process(
            "worker", "--db", db, "--lease-s", "2", *workloads, log=tmp_path / "w.log"
        ) as worker:
            job = httpx.post(f"{base}/v1/jobs", json={"workload": "explode"}).json()["id"]
            worker.wait_for_text(f"job {job} (explode) failed on attempt 1")
            worker.wait_for_text("Traceback (most recent call last)")
            worker.wait_for_text("RuntimeError: explode was asked to")
            log_lines = [line for line in worker.output().splitlines() if LOG_LINE.match(line)]
            assert any("failed on attempt 1: RuntimeError" in line for line in log_lines)
        serve_lines = [line for line in serve.output().splitlines() if LOG_LINE.match(line)]
        # uvicorn's own start-up lines come through the same format, at the same default level
        assert any("INFO uvicorn" in line for line in serve_lines), serve.output()


def test_a_worker_whose_own_loop_dies_exits_1_saying_why(tmp_path: Path) -> None:
    broken = str(Path(__file__).with_name("broken_worker_workloads.py"))
    with server_process(
        "worker",
        "--db",
        str(tmp_path / "jobs.sqlite"),
        "--workloads",
        broken,
        log=tmp_path / "w.log",
    ) as worker:
        code = worker.proc.wait(30)
        output = worker.output()
    assert code == 1, output
    assert (
        "error: the worker stopped: lease recovery stopped: RuntimeError: a bug in lease recovery"
        in output
    )


async def test_a_request_reaching_a_stopped_job_service_gets_503_not_500(
    tmp_path: Path, registry: WorkloadRegistry
) -> None:
    # Requests still in flight while `ambidex serve` shuts down reach a desk whose
    # store calls are closed: they are told to try again, not given a 500.
    manager = JobManager(tmp_path / "jobs.sqlite", registry, concurrency=0)
    app = create_app(manager=manager)
    async with manager:
        job = await manager.submit("quick")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ambidex") as client:
        answer = await client.get(f"/v1/jobs/{job.id}")
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "5"
    assert answer.json() == {"detail": "the job service is shutting down; try again"}
