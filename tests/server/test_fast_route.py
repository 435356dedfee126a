"""POST /v1/jobs through the fast route answers what FastAPI's own handler answers.

``server/_fast_route.py`` takes the common submit itself and hands every other
request to FastAPI's handler. Each request here goes to two apps: the one
``create_app`` builds, and the same app with FastAPI's handler put back on the
route (as ``APIRoute`` builds it). Refusals must be the same bytes; acceptances
the same status and job (ids and times differ).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from _durable_support import wait_until
from _server_support import serve_in_thread
from fastapi import FastAPI
from fastapi.routing import APIRoute, request_response

from ambidex.jobs import JobManager
from ambidex.server import create_app

Request = tuple[bytes, dict[str, str]]
JSON = "application/json"


def _declared_handler_back(app: FastAPI) -> None:
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.path == "/v1/jobs" and "POST" in route.methods:
            route.app = request_response(route.get_route_handler())
            return
    raise AssertionError("no POST /v1/jobs route")


@asynccontextmanager
async def _client(app: FastAPI, manager: JobManager) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with manager, httpx.AsyncClient(transport=transport, base_url="http://a") as client:
        yield client


@asynccontextmanager
async def _pair(
    root: Path, token: str | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    fast_jm = JobManager(root / "fast.sqlite", concurrency=0)
    declared_jm = JobManager(root / "declared.sqlite", concurrency=0)
    fast = create_app(manager=fast_jm, token=token, max_body_bytes=4096)
    declared = create_app(manager=declared_jm, token=token, max_body_bytes=4096)
    _declared_handler_back(declared)
    async with _client(fast, fast_jm) as a, _client(declared, declared_jm) as b:
        yield a, b


_VOLATILE = ("id", "created_at", "run_at")


def _ids_masked(content: bytes) -> bytes:
    """A 409 names the job that holds the key: each app has its own."""
    return re.sub(rb"\b[2-7a-z]{26}\b", b"<id>", content)


def _job_fields(answer: httpx.Response) -> dict[str, Any]:
    return {k: v for k, v in answer.json().items() if k not in _VOLATILE}


async def _same(pair: tuple[httpx.AsyncClient, httpx.AsyncClient], request: Request) -> int:
    body, headers = request
    fast, declared = [await c.post("/v1/jobs", content=body, headers=headers) for c in pair]
    assert fast.status_code == declared.status_code, (body, fast.text, declared.text)
    if fast.status_code in (200, 202):
        assert _job_fields(fast) == _job_fields(declared)
        assert fast.headers["location"].startswith("/v1/jobs/")
        assert fast.headers["content-type"] == declared.headers["content-type"]
    else:
        assert _ids_masked(fast.content) == _ids_masked(declared.content), body
        assert fast.headers.get("www-authenticate") == declared.headers.get("www-authenticate")
    return fast.status_code


def _json(body: Any, content_type: str | None = JSON, **headers: str) -> Request:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return raw, ({"content-type": content_type} if content_type else {}) | headers


ECHO = {"workload": "echo", "input": {"value": 1}}
CASES: dict[str, Request] = {
    "plain": _json(ECHO),
    "charset": _json(ECHO, "application/json; charset=utf-8"),
    "upper case type": _json(ECHO, "APPLICATION/JSON"),
    "suffix type": _json(ECHO, "application/vnd.ax+json"),
    "text type": _json(ECHO, "text/plain"),
    "no type": _json(ECHO, None),
    "empty body": _json(b""),
    "not json": _json(b'{"workload": "echo",'),
    "not utf-8": _json(b'{"workload": "\xff\xfe"}'),
    "a list": _json([ECHO]),
    "a string": _json("echo"),
    "null": _json(None),
    "nan in input": _json(b'{"workload": "echo", "input": {"value": NaN}}'),
    "nan option": _json(b'{"workload": "echo", "timeout_s": NaN}'),
    "infinity option": _json(b'{"workload": "echo", "delay_s": Infinity}'),
    "lone surrogate in input": _json(b'{"workload": "echo", "input": {"value": "\\ud800"}}'),
    "lone surrogate workload": _json(b'{"workload": "\\udfff"}'),
    "nul in workload": _json(b'{"workload": "ec\\u0000ho"}'),
    "deep nesting": _json(
        b'{"workload": "echo", "input": {"value": ' + b"[" * 1500 + b"]" * 1500 + b"}}"
    ),
    "extra field": _json({**ECHO, "colour": "red"}),
    "bool priority": _json({**ECHO, "priority": True}),
    "float attempts": _json({**ECHO, "max_attempts": 2.0}),
    "huge priority": _json({**ECHO, "priority": 10**30}),
    "unknown workload": _json({"workload": "nope"}),
    "bad input": _json({"workload": "sleep", "input": {"seconds": "long"}}),
    "missing workload": _json({"input": {}}),
    "duplicate keys": _json(b'{"workload": "nope", "workload": "echo"}'),
    "options": _json({**ECHO, "priority": 3, "retries": 2, "retry_on": ["ValueError"]}),
    "body key": _json({**ECHO, "idempotency_key": "k-1"}),
    "body key again, other input": _json({"workload": "echo", "idempotency_key": "k-1"}),
    "header key": _json(ECHO, **{"idempotency-key": "k-2"}),
    "empty header key": _json(ECHO, **{"idempotency-key": ""}),
    "header and body keys differ": _json(
        {**ECHO, "idempotency_key": "k-3"}, **{"idempotency-key": "k-4"}
    ),
    "over the size limit": _json({**ECHO, "input": {"value": "x" * 5000}}),
}


async def test_every_case_is_answered_as_fastapis_handler_answers(tmp_path: Path) -> None:
    statuses = {}
    async with _pair(tmp_path) as pair:
        for name, request in CASES.items():
            statuses[name] = await _same(pair, request)
    # The cases reach every kind of answer, so the comparison compared something.
    assert statuses["plain"] == statuses["charset"] == statuses["suffix type"] == 202
    assert statuses["body key again, other input"] == 409
    assert statuses["unknown workload"] == 404
    assert statuses["over the size limit"] == 413
    assert {statuses["not json"], statuses["bad input"], statuses["nan option"]} == {422}
    assert statuses["deep nesting"] in (400, 422)


async def test_with_a_token_every_request_is_fastapis(tmp_path: Path) -> None:
    async with _pair(tmp_path, token="s3cret") as pair:
        assert await _same(pair, _json(ECHO)) == 401
        assert await _same(pair, _json(ECHO, authorization="Bearer wrong")) == 401
        assert await _same(pair, _json(ECHO, authorization="Bearer s3cret")) == 202


async def test_the_fast_route_keeps_the_routes_metrics_label(tmp_path: Path) -> None:
    async with _pair(tmp_path) as (fast, _):
        assert (await fast.post("/v1/jobs", json=ECHO)).status_code == 202
        metrics = (await fast.get("/metrics")).text
    assert 'ambidex_http_requests_total{code="202",method="POST",route="/v1/jobs"} 1.0' in metrics


FIELDS = ["workload", "input", "priority", "max_attempts", "timeout_s", "delay_s", "retries"]
FIELDS += ["retry_on", "run_at", "idempotency_key", "retry_backoff_s", "other"]
SCALARS: list[Any] = [None, True, False, 0, 1, -1, 2**63, 1.5, -0.0, 1e308, "", "x", "2026-01-01"]
SCALARS += [float("nan"), float("inf"), "\ud800", "a\x00b", "ValueError", 10**40]


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(4 if depth < 3 else 1)
    if kind == 1:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    if kind == 2:
        return {rng.choice(["a", "value", "seconds", ""]): _value(rng, depth + 1)}
    return rng.choice(SCALARS)


def _body(rng: random.Random) -> bytes:
    body: dict[str, Any] = {"workload": rng.choice(["echo", "sleep", "nope", "", 3])}
    for field in rng.sample(FIELDS, rng.randrange(4)):
        body[field] = _value(rng)
    if rng.random() < 0.5:
        body["input"] = {rng.choice(["value", "seconds"]): _value(rng)}
    # json.dumps writes a lone surrogate as \\udXXX, NaN as NaN: both reach the server
    return json.dumps(body, allow_nan=True).encode()


async def test_random_bodies_are_answered_alike(tmp_path: Path) -> None:
    rng = random.Random(20261206)
    statuses: set[int] = set()
    async with _pair(tmp_path) as pair:
        for _ in range(400):
            statuses.add(await _same(pair, _json(_body(rng))))
    assert {202, 404, 422} <= statuses


def _submit_answered(base: str) -> str | None:
    """The code the metrics counted for POST /v1/jobs, once they count one."""
    found = re.search(
        r'ambidex_http_requests_total\{code="(\d+)",method="POST",route="/v1/jobs"\} 1.0',
        httpx.get(f"{base}/metrics").text,
    )
    return found and found[1]


def test_a_client_gone_mid_body_is_answered_as_fastapis_handler_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn on loopback; the client sends half its declared body and hangs up.

    FastAPI's handler turns the failed read into a 400 ("There was an error
    parsing the body"); the fast route must too, not let ``ClientDisconnect``
    out of the app (a 500 in the metrics, "Exception in ASGI application" logged).
    """
    codes = {}
    for name in ("fast", "declared"):
        app = create_app(manager=JobManager(tmp_path / f"{name}.sqlite", concurrency=0))
        if name == "declared":
            _declared_handler_back(app)
        with caplog.at_level(logging.ERROR), serve_in_thread(app) as base:
            port = int(base.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port)) as conn:
                conn.sendall(
                    b"POST /v1/jobs HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                    b'Content-Length: 200\r\n\r\n{"workload": "echo", '
                )
            codes[name] = wait_until(lambda: _submit_answered(base), "the submit to be counted")
    assert codes == {"fast": "400", "declared": "400"}
    assert "Exception in ASGI application" not in caplog.text


async def test_a_body_over_the_limit_without_a_length_is_refused_alike(tmp_path: Path) -> None:
    """Chunked (no Content-Length): the size limit trips while the body is read."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"workload": "echo", "input": {"value": "'
        for _ in range(5):
            yield b"x" * 1000
        yield b'"}}'

    async with _pair(tmp_path) as pair:
        fast, declared = [
            await c.post("/v1/jobs", content=chunks(), headers={"content-type": JSON}) for c in pair
        ]
    assert "content-length" not in fast.request.headers
    assert (fast.status_code, fast.content) == (declared.status_code, declared.content)
    assert fast.status_code == 413


def test_fastapis_telemetry_is_on_only_where_opentelemetry_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ambidex.server._app import _fastapi_telemetry

    for name in [n for n in os.environ if n.startswith("OTEL_") or n == "AMBIDEX_OTEL"]:
        monkeypatch.delenv(name)
    assert _fastapi_telemetry() == {"tracing": False, "metrics": False, "logs": False}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert _fastapi_telemetry() is None  # FastAPI's defaults: spans and metrics on
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.setenv("AMBIDEX_OTEL", "1")
    assert _fastapi_telemetry() is None
