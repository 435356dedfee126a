"""``POST /v1/jobs:batch`` and ``Client.submit_batch`` against a real server on loopback.

One invalid job anywhere in a batch: 422 naming the job's index and field, and
nothing stored (no job, no event). The checks of single submits (NaN, lone
surrogates, NUL, deep nesting, unknown fields, options out of range) apply to
each job; the size limit (1,000 jobs: 422) and the body limit (413) to the batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _server_support import serve_in_thread

import ambidex as ax
from _pg_support import fresh_pg_database
from ambidex.jobs import (
    MAX_BATCH_JOBS,
    JobBatchError,
    JobConflictError,
    JobInputError,
    JobOptionError,
    JobServiceError,
    UnknownWorkloadError,
)
from ambidex.server import create_app

JSON = {"content-type": "application/json"}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A job service with no worker (jobs stay queued), on each engine."""
    if request.param == "sqlite":
        app = create_app(tmp_path / "jobs.sqlite", concurrency=0)
        with serve_in_thread(app) as base:
            yield base
        return
    with fresh_pg_database() as pg, serve_in_thread(create_app(pg, concurrency=0)) as base:
        yield base


@pytest.fixture
def api(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


def stored(api: httpx.Client) -> list[dict[str, Any]]:
    """Every job the server holds."""
    return list(api.get("/v1/jobs", params={"limit": 500}).json()["jobs"])


def sleeps(n: int) -> list[dict[str, Any]]:
    return [{"workload": "sleep", "input": {"seconds": 0.01 * i}} for i in range(n)]


def test_one_invalid_job_is_422_naming_its_index_and_field_and_nothing_is_stored(
    api: httpx.Client,
) -> None:
    jobs = sleeps(6)
    jobs[3]["input"] = {"seconds": "later"}
    r = api.post("/v1/jobs:batch", json={"jobs": jobs})
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "jobs", 3, "input", "seconds"]
    assert "number" in error["msg"]
    assert stored(api) == []


def test_a_batch_is_stored_in_order_each_job_with_its_submitted_event(
    api: httpx.Client,
) -> None:
    jobs = [*sleeps(3), {"workload": "echo", "input": {"value": "x"}, "priority": 7}]
    r = api.post("/v1/jobs:batch", json={"jobs": jobs})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["created"] == [True] * 4
    assert [j["input"] for j in body["jobs"]] == [
        {"seconds": 0.0, "steps": 10},  # the workload's defaults filled in, as in single submits
        {"seconds": 0.01, "steps": 10},
        {"seconds": 0.02, "steps": 10},
        {"value": "x"},
    ]
    assert body["jobs"][3]["priority"] == 7
    assert {j["id"] for j in stored(api)} == {j["id"] for j in body["jobs"]}
    for job in body["jobs"]:
        events = api.get(f"/v1/jobs/{job['id']}/events", params={"follow": "false"}).json()
        assert [e["kind"] for e in events["events"]] == ["submitted"]


@pytest.mark.parametrize(
    ("job", "loc"),
    [
        ({"workload": "echo", "input": {"value": [1, {"x": "NaN!"}]}}, ["input", "value", 1, "x"]),
        ({"workload": "e\x00cho"}, ["workload"]),
        ({"workload": "echo", "idempotency_key": "a\x00b"}, ["idempotency_key"]),
        ({"workload": "echo", "priority": 10**7}, ["priority"]),
        ({"workload": "echo", "max_attempts": True}, ["max_attempts"]),
        ({"workload": "echo", "colour": "red"}, ["colour"]),
        ({"workload": "echo", "input": [1, 2]}, ["input"]),
        ({"workload": "sleep", "input": {"seconds": 1, "extra": 2}}, ["input", "extra"]),
        ({"workload": "echo", "delay_s": 1, "run_at": "2030-01-01T00:00:00Z"}, ["run_at"]),
        ({"workload": "no-such-workload"}, ["workload"]),
    ],
)
def test_each_check_of_a_single_submit_applies_to_each_job(
    api: httpx.Client, job: dict[str, Any], loc: list[Any]
) -> None:
    text = json.dumps({"jobs": [*sleeps(2), job]}).replace('"NaN!"', "NaN")
    r = api.post("/v1/jobs:batch", content=text, headers=JSON)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "jobs", 2, *loc]
    assert stored(api) == []


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ('"\\ud800"', ["input", "value"]),  # a lone surrogate
        ("[" * 150 + "]" * 150, ["input", "value"]),  # nesting past 100 levels
        ("1e400", ["input", "value"]),  # infinity
    ],
)
def test_a_value_no_store_can_hold_in_one_job_is_refused_naming_it(
    api: httpx.Client, raw: str, loc: list[Any]
) -> None:
    item = f'{{"workload": "echo", "input": {{"value": {raw}}}}}'
    text = f'{{"jobs": [{{"workload": "echo"}}, {item}]}}'
    r = api.post("/v1/jobs:batch", content=text, headers=JSON)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][: 3 + len(loc)] == ["body", "jobs", 1, *loc]
    assert stored(api) == []


def test_idempotency_keys_within_a_batch_and_against_stored_jobs(api: httpx.Client) -> None:
    keyed = [
        {"workload": "echo", "input": {"value": 1}, "idempotency_key": "k"},
        {"workload": "echo", "input": {"value": 1}, "idempotency_key": "k"},
        {"workload": "echo", "input": {"value": 2}},
    ]
    first = api.post("/v1/jobs:batch", json={"jobs": keyed})
    assert first.status_code == 202
    assert first.json()["created"] == [True, False, True]
    ids = [j["id"] for j in first.json()["jobs"]]
    assert ids[0] == ids[1]
    # the keyed job alone again: 200, the same job, nothing stored
    again = api.post("/v1/jobs:batch", json={"jobs": keyed[:2]})
    assert again.status_code == 200
    assert [j["id"] for j in again.json()["jobs"]] == ids[:2]
    # a key that names a stored job of another input: 409 naming the index and that job
    clash = api.post(
        "/v1/jobs:batch",
        json={
            "jobs": [
                *sleeps(2),
                {"workload": "echo", "input": {"value": 9}, "idempotency_key": "k"},
            ]
        },
    )
    assert clash.status_code == 409, clash.text
    assert "job 2: idempotency key 'k' already names job" in clash.json()["detail"]
    assert clash.json()["errors"][0]["loc"] == ["body", "jobs", 2, "idempotency_key"]
    assert clash.json()["job_ids"] == {"2": ids[0]}
    # one key given to two jobs of different inputs in one batch: 409, nothing stored
    twice = [
        {"workload": "echo", "input": {"value": 1}, "idempotency_key": "new"},
        {"workload": "echo", "input": {"value": 2}, "idempotency_key": "new"},
    ]
    r = api.post("/v1/jobs:batch", json={"jobs": twice})
    assert r.status_code == 409
    assert "job 0 of the batch" in r.json()["errors"][0]["msg"]
    assert len(stored(api)) == 2


def test_the_size_limit_is_1000_jobs_and_one_more_is_422_naming_jobs(api: httpx.Client) -> None:
    assert MAX_BATCH_JOBS == 1000
    one = {"workload": "echo"}
    over = api.post("/v1/jobs:batch", json={"jobs": [one] * (MAX_BATCH_JOBS + 1)})
    assert over.status_code == 422
    (error,) = over.json()["detail"]
    assert error["loc"] == ["body", "jobs"]
    assert error["type"] == "too_long"
    assert stored(api) == []
    full = api.post("/v1/jobs:batch", json={"jobs": [one] * MAX_BATCH_JOBS})
    assert full.status_code == 202
    assert len(full.json()["jobs"]) == MAX_BATCH_JOBS
    assert api.get("/healthz").json()["queued"] == MAX_BATCH_JOBS


def test_a_batch_over_the_body_limit_is_413(tmp_path: Path) -> None:
    app = create_app(tmp_path / "jobs.sqlite", concurrency=0, max_body_bytes=4096)
    with serve_in_thread(app) as base, httpx.Client(base_url=base) as api:
        jobs = [{"workload": "echo", "input": {"value": "x" * 100}}] * 50
        r = api.post("/v1/jobs:batch", json={"jobs": jobs})
        assert r.status_code == 413
        assert stored(api) == []


def test_the_client_submits_a_batch_and_maps_each_refusal_to_its_own_error(url: str) -> None:
    with ax.Client(url) as client:
        jobs = client.submit_batch(
            [{"workload": "echo", "input": {"value": i}, "priority": i} for i in range(5)]
        )
        assert [j.priority for j in jobs] == list(range(5))
        assert [client.get(j.id).input for j in jobs] == [{"value": i} for i in range(5)]
        with pytest.raises(JobBatchError) as refused:
            client.submit_batch(
                [
                    {"workload": "sleep", "input": {"seconds": "soon"}},
                    {"workload": "echo"},
                    {"workload": "nope"},
                    {"workload": "echo", "delay_s": 1, "run_at": 2e9},
                ]
            )
        failures = dict(refused.value.failures)
        assert sorted(failures) == [0, 2, 3]
        assert isinstance(failures[0], JobInputError)
        assert failures[0].errors[0]["loc"] == ["seconds"]
        assert isinstance(failures[2], UnknownWorkloadError)
        assert isinstance(failures[3], JobOptionError)
        assert failures[3].option == "run_at"
        # what the request schema refuses is named the same way (and alone: checked first)
        with pytest.raises(JobBatchError) as schema:
            client.submit_batch([{"workload": "echo"}, {"workload": "echo", "retries": -1}])
        assert schema.value.index == 1
        assert isinstance(schema.value.error, JobOptionError)
        assert schema.value.error.option == "retries"
        client.submit("echo", {"value": "a"}, idempotency_key="k")
        with pytest.raises(JobBatchError) as clash:
            client.submit_batch(
                [{"workload": "echo", "input": {"value": "b"}, "idempotency_key": "k"}]
            )
        assert isinstance(clash.value.error, JobConflictError)
        with pytest.raises(JobServiceError) as too_many:
            client.submit_batch([{"workload": "echo"}] * (MAX_BATCH_JOBS + 1))
        assert too_many.value.status_code == 422
        with pytest.raises(ValueError, match="unknown option 'colour'"):
            client.submit_batch([{"workload": "echo", "colour": "red"}])
        assert len(client.list(limit=100).jobs) == 6


async def test_the_async_client_submits_a_batch(url: str) -> None:
    async with ax.AsyncClient(url) as client:
        jobs = await client.submit_batch([{"workload": "echo", "input": {"value": 1}}] * 3)
        assert len({j.id for j in jobs}) == 3
        with pytest.raises(JobBatchError) as refused:
            await client.submit_batch(
                [{"workload": "echo"}, {"workload": "sleep", "input": {"seconds": []}}]
            )
        assert refused.value.index == 1
        assert len((await client.list()).jobs) == 3
