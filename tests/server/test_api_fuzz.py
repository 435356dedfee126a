"""The HTTP API under malformed and random requests: a clear 4xx, never a 5xx.

The first test lets schemathesis generate requests for each operation of the
app's own OpenAPI schema (schema-valid ones, and deliberately invalid bodies
and parameters) against a real server on a fresh SQLite file. Random job ids and
workload names only ever meet a 404, so each request that has a ``job_id``
or ``workload`` in its path is sent a second time naming a job that exists
and the ``echo`` workload. The generation is derandomized (the same examples
on every run) and bounded: a few seconds in all.

The tests after it send the malformed requests a client really makes and
check both the status and that the message names the problem.
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from _server_support import serve_in_thread
from fastapi import FastAPI
from hypothesis import given, settings
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error

from _pg_support import fresh_pg_database
from ambidex.jobs import JobStatus
from ambidex.server import create_app

MAX_WAIT_S = 1.0  # the longest /v1/run wait the fuzzed server allows
KNOWN_JOB = "fuzz-known-job"
MAX_BODY = 4096
JSON = {"content-type": "application/json"}


def _openapi() -> dict[str, Any]:
    """The schema of the app the tests serve (it does not depend on the store)."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Path(tmp) / "schema.sqlite", concurrency=0, max_wait_s=MAX_WAIT_S)
        try:
            return app.openapi()
        finally:
            app.state.manager.store.close()


schema = schemathesis.openapi.from_dict(_openapi())


def _cases() -> list[tuple[APIOperation, GenerationMode]]:
    """Every operation with valid data; those with a body or a query too with invalid data.

    (A lone path parameter is any string: nothing in it can be made invalid.)
    """
    cases = []
    for result in schema.get_all_operations():
        operation = result.ok()
        cases.append((operation, GenerationMode.POSITIVE))
        if list(operation.body) or list(operation.query) or list(operation.headers):
            cases.append((operation, GenerationMode.NEGATIVE))
    return cases


def wait_for_status(url: str, job_id: str, status: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/v1/jobs/{job_id}").json().get("status") == status:
            return
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not become {status} within {timeout_s} s")


@pytest.fixture(scope="module")
def fuzz_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server of the built-in workloads on a fresh SQLite file, with one finished echo job."""
    app = create_app(
        tmp_path_factory.mktemp("fuzz") / "jobs.sqlite",
        concurrency=1,
        lease_s=5.0,
        max_wait_s=MAX_WAIT_S,
    )
    app.state.manager.store.submit("echo", {"value": "known"}, job_id=KNOWN_JOB)
    with serve_in_thread(app) as url:
        wait_for_status(url, KNOWN_JOB, "succeeded")
        yield url


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server without a token, whose request bodies may be at most ``MAX_BODY`` bytes."""
    app = create_app(
        tmp_path_factory.mktemp("api") / "jobs.sqlite",
        concurrency=1,
        lease_s=5.0,
        max_body_bytes=MAX_BODY,
    )
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def guarded_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server that wants the bearer token ``s3cret``."""
    app = create_app(
        tmp_path_factory.mktemp("guarded") / "jobs.sqlite",
        concurrency=1,
        lease_s=5.0,
        token="s3cret",
    )
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def api(api_url: str) -> Iterator[httpx.Client]:
    """A client of its own (a connection one test breaks is never reused by the next)."""
    with httpx.Client(base_url=api_url, timeout=10) as client:
        yield client


@pytest.fixture
def guarded(guarded_url: str) -> Iterator[httpx.Client]:
    """A client of the server with a token, sending none."""
    with httpx.Client(base_url=guarded_url, timeout=10) as client:
        yield client


# -- generated requests ---------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("operation", "mode"), _cases(), ids=lambda v: v.label if isinstance(v, APIOperation) else v
)
def test_no_generated_request_gets_a_server_error(
    operation: APIOperation, mode: GenerationMode, fuzz_url: str
) -> None:
    known = {"job_id": KNOWN_JOB, "workload": "echo"}

    @settings(max_examples=25, deadline=None, derandomize=True, database=None)
    @given(case=operation.as_strategy(mode))
    def no_server_error(case: Case) -> None:
        case.call_and_validate(base_url=fuzz_url, checks=[not_a_server_error], timeout=10)
        path = dict(case.path_parameters or {})
        if any(name in path for name in known):  # again, naming what exists
            case.path_parameters = {**path, **{k: v for k, v in known.items() if k in path}}
            case.call_and_validate(base_url=fuzz_url, checks=[not_a_server_error], timeout=10)

    no_server_error()


# -- bodies -----------------------------------------------------------------------------


def test_submit_with_invalid_json_is_422_naming_the_json_error(api: httpx.Client) -> None:
    r = api.post("/v1/jobs", content=b'{"workload": "echo",', headers=JSON)
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["type"] == "json_invalid"
    assert error["msg"] == "JSON decode error"


def test_submit_of_a_json_array_is_422_asking_for_an_object(api: httpx.Client) -> None:
    r = api.post("/v1/jobs", json=["echo"])
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body"]
    assert "object" in error["msg"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"workload": 5}, "workload", "valid string"),
        ({"workload": "echo", "input": "x"}, "input", "valid dictionary"),
        ({"workload": "echo", "max_attempts": "many"}, "max_attempts", "valid integer"),
        ({"workload": "echo", "max_attempts": 0}, "max_attempts", "greater than or equal to 1"),
        ({"workload": "echo", "timeout_s": -1}, "timeout_s", "greater than 0"),
        ({"input": {}}, "workload", "Field required"),
    ],
)
def test_submit_with_a_field_of_the_wrong_type_is_422_naming_the_field(
    api: httpx.Client, body: dict[str, Any], field: str, words: str
) -> None:
    r = api.post("/v1/jobs", json=body)
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", field]
    assert words in error["msg"]


def test_submit_with_an_unknown_field_is_422_naming_it(api: httpx.Client) -> None:
    r = api.post("/v1/jobs", json={"workload": "echo", "colour": "red"})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "colour"]
    assert error["type"] == "extra_forbidden"


def test_submit_with_an_unknown_input_field_is_422_naming_it_and_the_workload(
    api: httpx.Client,
) -> None:
    r = api.post("/v1/jobs", json={"workload": "sleep", "input": {"secs": 1}})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "input", "secs"]
    assert "invalid input for workload 'sleep'" in r.json()["message"]


def test_submit_with_an_input_of_the_wrong_type_is_422_naming_the_input_field(
    api: httpx.Client,
) -> None:
    r = api.post("/v1/jobs", json={"workload": "sleep", "input": {"seconds": "long"}})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "input", "seconds"]
    assert "valid number" in error["msg"]


def test_run_with_an_input_of_the_wrong_type_is_422_naming_the_field(api: httpx.Client) -> None:
    r = api.post("/v1/run/sleep", json={"seconds": "long"})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "seconds"]


def test_submit_of_an_unknown_workload_is_404_listing_the_known_ones(api: httpx.Client) -> None:
    r = api.post("/v1/jobs", json={"workload": "summarise"})
    assert r.status_code == 404
    assert "unknown workload 'summarise'" in r.json()["detail"]
    assert {"echo", "sleep", "primes"} <= set(r.json()["known"])


def test_a_body_over_the_limit_is_413_saying_the_limit(api: httpx.Client) -> None:
    r = api.post("/v1/jobs", json={"workload": "echo", "input": {"value": "x" * 2 * MAX_BODY}})
    assert r.status_code == 413
    assert r.json()["detail"] == f"request body too large: at most {MAX_BODY} bytes"


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/run/echo"])
def test_a_chunked_body_over_the_limit_is_413_saying_the_limit(
    api: httpx.Client, path: str
) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is only seen while reading
        for _ in range(8):
            yield b" " * MAX_BODY

    r = api.post(path, content=chunks(), headers=JSON)
    assert r.status_code == 413
    assert r.json()["detail"] == f"request body too large: at most {MAX_BODY} bytes"


# -- ids, filters, cursors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("GET", "/result"), ("GET", "/events"), ("DELETE", "")],
)
def test_an_unknown_job_id_is_404_naming_the_id(
    api: httpx.Client, method: str, suffix: str
) -> None:
    r = api.request(method, f"/v1/jobs/no-such-job{suffix}")
    assert r.status_code == 404
    assert r.json()["detail"] == "no job with id 'no-such-job'"


@pytest.mark.parametrize("status", ["done", "queued,bogus", "QUEUED"])
def test_an_unknown_status_filter_is_422_naming_status_and_the_valid_ones(
    api: httpx.Client, status: str
) -> None:
    r = api.get("/v1/jobs", params={"status": status})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["query", "status"]
    assert "unknown status" in error["msg"]
    assert "queued, running, succeeded, failed, cancelled" in error["msg"]


@pytest.mark.parametrize("cursor", ["garbage!!", "eDEy", "c2FiYw"])
def test_a_cursor_that_was_never_handed_out_is_422_naming_cursor(
    api: httpx.Client, cursor: str
) -> None:
    r = api.get("/v1/jobs", params={"cursor": cursor})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["query", "cursor"]
    assert "invalid cursor" in error["msg"]
    assert "next_cursor" in error["msg"]


@asynccontextmanager
async def in_process(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client calling ``app`` in this thread: an exception the app raises reaches the test.

    (The bug tests below use it rather than a served app: a traceback the server
    thread logs while pytest formats another can end the whole session with
    "SystemError: AST constructor recursion depth mismatch" on this CPython 3.11;
    python/cpython gh-106905, pytest-dev/pytest#10763.)
    """
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            yield client
    finally:
        await app.state.manager.aclose()  # never started; this closes its threads and store


async def test_a_cursor_beyond_any_position_is_422_not_a_server_error(tmp_path: Path) -> None:
    cursor = base64.urlsafe_b64encode(b"s" + b"9" * 30).decode().rstrip("=")
    async with in_process(create_app(tmp_path / "jobs.sqlite", concurrency=0)) as client:
        r = await client.get("/v1/jobs", params={"cursor": cursor})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize("how", ["query", "header"])
async def test_events_after_a_position_beyond_any_end_at_once(tmp_path: Path, how: str) -> None:
    app = create_app(tmp_path / "jobs.sqlite", concurrency=0)
    store = app.state.manager.store
    job = store.submit("echo", {"value": 1})
    (claimed,) = store.claim("test", lease_s=30)
    assert store.finish(job.id, "test", claimed.attempts, JobStatus.SUCCEEDED, result=1)
    huge = "9" * 30
    async with in_process(app) as client:
        if how == "query":
            r = await client.get(f"/v1/jobs/{job.id}/events", params={"after": huge})
        else:
            r = await client.get(f"/v1/jobs/{job.id}/events", headers={"Last-Event-ID": huge})
    # 204: finished, nothing follows; 200: a stream without events; 422: naming after.
    assert r.status_code in (200, 204, 422)
    if r.status_code == 200:
        assert "event: " not in r.text
    if r.status_code == 422:
        assert r.json()["detail"][0]["loc"] == ["query", "after"]


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("GET", "/v1/jobs/a%00b", {}),
        ("DELETE", "/v1/jobs/a%00b", {}),
        ("GET", "/v1/jobs", {"workload": "a\x00b"}),
    ],
)
async def test_a_nul_byte_in_an_id_or_a_filter_is_not_a_server_error_on_postgresql(
    method: str, path: str, params: dict[str, str]
) -> None:
    with fresh_pg_database() as url:
        async with in_process(create_app(url, concurrency=0)) as client:
            r = await client.request(method, path, params=params)
    assert r.status_code in (200, 404, 422)
    if r.status_code == 200:
        assert r.json()["jobs"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": "0"}, "limit"), ({"limit": "ten"}, "limit"), ({"limit": "501"}, "limit")],
)
def test_a_bad_page_size_is_422_naming_limit(
    api: httpx.Client, params: dict[str, str], field: str
) -> None:
    r = api.get("/v1/jobs", params=params)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", field]


async def test_a_run_without_wait_s_waits_no_longer_than_max_wait_s(tmp_path: Path) -> None:
    app = create_app(tmp_path / "jobs.sqlite", concurrency=0, max_wait_s=0.2)  # never runs it
    async with in_process(app) as client:
        r = await asyncio.wait_for(client.post("/v1/run/echo", json={"value": 1}), 2.0)
    assert r.status_code == 202
    assert r.json()["status"] == "queued"


def test_a_negative_run_wait_is_422_naming_wait_s(api: httpx.Client) -> None:
    r = api.post("/v1/run/echo", params={"wait_s": "-1"}, json={})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "wait_s"]


# -- the token ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs/some-id"),
        ("DELETE", "/v1/jobs/some-id"),
        ("POST", "/v1/run/echo"),
        ("GET", "/v1/workloads"),
        ("GET", "/metrics"),
    ],
)
def test_a_request_without_the_token_is_401_saying_how_to_send_it(
    guarded: httpx.Client, method: str, path: str
) -> None:
    r = guarded.request(method, path, json={"workload": "echo"} if method == "POST" else None)
    assert r.status_code == 401
    assert r.json()["detail"] == (
        "missing or wrong bearer token: send 'Authorization: Bearer <token>'"
    )
    assert r.headers["www-authenticate"] == "Bearer"


def test_a_request_with_a_wrong_token_is_401(guarded: httpx.Client) -> None:
    r = guarded.get("/v1/jobs", headers={"Authorization": "Bearer guess"})
    assert r.status_code == 401
    assert "wrong bearer token" in r.json()["detail"]


def test_the_token_opens_the_api_and_healthz_needs_none(guarded: httpx.Client) -> None:
    assert guarded.get("/healthz").status_code == 200
    r = guarded.post("/v1/run/echo", json={"value": 7}, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200
    assert r.json()["result"] == 7


def test_a_last_event_id_of_non_ascii_digits_is_ignored_not_a_server_error(
    api: httpx.Client,
) -> None:
    job = api.post("/v1/jobs", json={"workload": "echo", "input": {"value": 1}}).json()
    r = api.get(
        f"/v1/jobs/{job['id']}/events",
        params={"follow": "false"},
        headers={"Last-Event-ID": "²".encode("latin-1")},
    )
    assert r.status_code == 200
    assert r.json()["events"][0]["kind"] == "submitted"


def test_an_error_never_carries_a_huge_rejected_value_back(api: httpx.Client) -> None:
    long_id = "x" * 3000
    r = api.get(f"/v1/jobs/{long_id}")
    assert r.status_code == 404
    assert len(r.text) < 300
    r = api.post(f"/v1/run/{'y' * 3000}", json={})
    assert r.status_code == 404
    assert len(r.json()["detail"]) < 300
    r = api.get("/v1/jobs", params={"cursor": "z" * 150})
    assert r.status_code == 422
    assert "z" * 50 not in r.text


def test_a_run_at_in_milliseconds_is_refused_over_http(api: httpx.Client) -> None:
    r = api.post("/v1/jobs", json={"workload": "echo", "run_at": 1_700_000_000_000})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "run_at"]
    assert "milliseconds" in error["msg"]


def test_an_idempotency_key_in_header_and_body_must_agree(api: httpx.Client) -> None:
    body = {"workload": "echo", "idempotency_key": "body-key"}
    r = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "header-key"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    same = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "body-key"})
    assert same.status_code == 202


@pytest.mark.parametrize("field", ["priority", "retries", "max_attempts"])
def test_a_boolean_is_not_taken_for_an_integer_option(api: httpx.Client, field: str) -> None:
    r = api.post("/v1/jobs", json={"workload": "echo", field: True})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", field]
