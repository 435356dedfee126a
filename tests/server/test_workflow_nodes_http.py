"""``GET /v1/jobs/{id}/nodes`` and the job page's picture of a workflow job's DAG.

A real job service on loopback runs a workflow whose middle node waits while a
gate file exists, so the answers can be read while it runs and after. The
browser test of the live table is in ``test_dashboard.py``.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _server_support import serve_in_thread

import ambidex as ax
from ambidex.jobs import WorkflowNode, WorkloadRegistry
from ambidex.server import create_app
from ambidex.server._dag import MAX_DRAWN, dag_svg


async def first(gate: str) -> str:
    return gate


def closed(gate: str) -> bool:
    """Whether the gate file exists (a sync helper: the check never blocks for long)."""
    return os.path.exists(gate)


async def held(gate: str) -> int:
    while closed(gate):
        await asyncio.sleep(0.02)
    return 7


async def last(n: int) -> int:
    return n * 6


async def echo(value: Any) -> Any:
    return value


def registry() -> WorkloadRegistry:
    reg = WorkloadRegistry()
    reg.register(echo)
    wf = ax.Workflow("gated", inputs={"gate": str})
    f = wf.node("first", first, input={"gate": wf.inputs.gate})
    h = wf.node("held", held, input={"gate": f.output})
    wf.node("last", last, input={"n": h.output})
    reg.register_workflow(wf)
    return reg


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    app = create_app(tmp_path / "jobs.sqlite", registry=registry(), concurrency=2, lease_s=5.0)
    with serve_in_thread(app) as base:
        yield base


def nodes(url: str, job_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/v1/jobs/{job_id}/nodes")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def until(probe: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_the_nodes_of_a_workflow_job_while_it_runs_and_after(url: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    submitted = httpx.post(
        f"{url}/v1/jobs", json={"workload": "gated", "input": {"gate": str(gate)}}
    )
    job_id = submitted.json()["id"]

    def held_running() -> dict[str, Any] | None:
        body = nodes(url, job_id)
        by_node = {n["node"]: n for n in body["nodes"]}
        return body if by_node["held"]["status"] == "running" else None

    body = until(held_running)
    assert body["job_id"] == job_id
    assert body["status"] == "running"
    shown = [(n["node"], n["status"], n["after"]) for n in body["nodes"]]
    assert shown == [
        ("first", "succeeded", []),
        ("held", "running", ["first"]),
        ("last", "pending", ["held"]),
    ]
    done_first, running = body["nodes"][0], body["nodes"][1]
    assert done_first["attempts"] == 1
    assert done_first["job_attempt"] == 1
    assert done_first["duration_s"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", done_first["finished_at"])
    assert running["finished_at"] is None
    assert running["duration_s"] is None
    assert running["started_at"] is not None

    page = httpx.get(f"{url}/jobs/{job_id}").text
    assert 'id="workflow-graph"' in page
    assert re.search(r'<g class="dag-node" data-node="held" data-status="running"', page)
    assert re.search(r'<tr data-node="last" data-status="pending">', page)

    gate.unlink()
    httpx.get(f"{url}/v1/jobs/{job_id}/events", timeout=30)  # the stream ends with the job
    body = nodes(url, job_id)
    assert body["status"] == "succeeded"
    assert [(n["node"], n["status"]) for n in body["nodes"]] == [
        ("first", "succeeded"),
        ("held", "succeeded"),
        ("last", "succeeded"),
    ]
    assert all(n["duration_s"] is not None for n in body["nodes"])


def test_a_job_that_is_not_a_workflow_has_no_nodes_and_an_unknown_job_is_404(url: str) -> None:
    job = httpx.post(f"{url}/v1/run/echo", json={"value": 1}, timeout=30).json()
    assert nodes(url, job["id"]) == {"job_id": job["id"], "status": "succeeded", "nodes": []}
    assert 'id="workflow-card"' not in httpx.get(f"{url}/jobs/{job['id']}").text
    missing = httpx.get(f"{url}/v1/jobs/no-such-job/nodes")
    assert missing.status_code == 404
    assert "no-such-job" in missing.json()["detail"]


def test_the_dag_is_drawn_in_layers_with_its_edges() -> None:
    diamond = [
        WorkflowNode("a", "succeeded"),
        WorkflowNode("b", "running"),
        WorkflowNode("c", "pending", after=["a", "b"]),
        WorkflowNode("d", "pending", after=["c"]),
        WorkflowNode('<x "y">', "pending", after=["a"]),
    ]
    svg = dag_svg(diamond)
    assert svg.startswith('<svg id="workflow-graph"')
    found = re.findall(r'data-node="([^"]*)" data-status="[^"]*" transform="translate\((\d+),', svg)
    column = {node: int(x) for node, x in found}
    assert column["a"] == column["b"] == 8  # the roots: the first column
    assert column["c"] == column["&lt;x &quot;y&quot;&gt;"] > 8
    assert column["d"] > column["c"]
    edges = re.findall(r'data-from="([^"]*)" data-to="([^"]*)"', svg)
    assert sorted(edges) == [("a", "&lt;x &quot;y&quot;&gt;"), ("a", "c"), ("b", "c"), ("c", "d")]
    assert "<x" not in svg  # names are text, never markup
    long_chain = [
        WorkflowNode(f"n{i}", "pending", after=[f"n{i - 1}"] if i else []) for i in range(3000)
    ]
    assert dag_svg(long_chain) == ""  # over MAX_DRAWN: not drawn
    assert len(long_chain) > MAX_DRAWN
    assert dag_svg(long_chain[:MAX_DRAWN]).count('class="dag-node"') == MAX_DRAWN
