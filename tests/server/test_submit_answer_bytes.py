"""POST /v1/jobs answers the bytes FastAPI's response_model path gave, as every other answer.

The answer is built by hand (to skip a second validation); Python's ``json.dumps``
would render floats as ``1e-07`` where pydantic-core (FastAPI 0.165, pydantic 2.14)
gives ``1e-7``, as GET /v1/jobs/{id}, /v1/run and /v1/jobs:batch do.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ambidex.jobs import JobManager
from ambidex.server import create_app


@pytest.mark.parametrize(
    "body",
    [
        {"workload": "echo", "input": {"value": 1e-7}},
        {"workload": "echo", "input": {"value": 1}, "timeout_s": 1e-7},
        {"workload": "echo", "input": {"value": 1}, "retries": 1, "retry_backoff_s": 1e-7},
    ],
)
async def test_submit_answers_the_bytes_get_answers_for_the_same_job(
    tmp_path: Path, body: dict[str, object]
) -> None:
    manager = JobManager(tmp_path / "jobs.sqlite", concurrency=0)  # nothing runs: stays queued
    app = create_app(manager=manager)
    transport = httpx.ASGITransport(app=app)
    async with manager, httpx.AsyncClient(transport=transport, base_url="http://a") as client:
        submitted = await client.post("/v1/jobs", json=body)
        assert submitted.status_code == 202
        got = await client.get(submitted.headers["location"])
        assert got.status_code == 200
        # Observed on main: b'..."value":1e-07...' against b'..."value":1e-7...'.
        assert submitted.content == got.content
