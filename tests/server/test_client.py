"""``ax.Client`` and ``ax.AsyncClient`` against a real job service on loopback."""

from __future__ import annotations

import asyncio
import pickle
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from _server_support import serve_in_thread

import ambidex as ax
from ambidex.client import JobConnectionError, JobPage
from ambidex.jobs import (
    Job,
    JobCancelledError,
    JobContext,
    JobFailedError,
    JobInputError,
    JobNotFinishedError,
    JobNotFoundError,
    JobServiceError,
    JobStatus,
    JobWaitTimeoutError,
    UnknownWorkloadError,
    WorkloadRegistry,
)
from ambidex.server import create_app

TOKEN = "s3cret-token"


async def boom(reason: str = "boom went off") -> None:
    """Always fails."""
    raise ValueError(reason)


async def steps(ctx: JobContext, n: int = 4, step_s: float = 0.05) -> dict[str, int]:
    """Reports progress after each of ``n`` steps."""
    for i in range(n):
        await asyncio.sleep(step_s)
        ctx.progress((i + 1) / n, f"step {i + 1}")
    return {"steps": n}


async def hold(seconds: float = 30.0) -> str:
    """Sleeps (a job to cancel)."""
    await asyncio.sleep(seconds)
    return "woke"


def _registry() -> WorkloadRegistry:
    registry = WorkloadRegistry()
    registry.register(boom)
    registry.register(steps)
    registry.register(hold)
    return registry


@pytest.fixture
def custom_url(tmp_path: Path) -> Iterator[str]:
    """A job service whose workloads are this module's: boom, steps and hold."""
    app = create_app(tmp_path / "custom.sqlite", registry=_registry(), concurrency=4, lease_s=5.0)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def token_url(tmp_path: Path) -> Iterator[str]:
    """A job service that wants ``Authorization: Bearer <TOKEN>``."""
    app = create_app(tmp_path / "auth.sqlite", registry=_registry(), token=TOKEN)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def client(custom_url: str) -> Iterator[ax.Client]:
    with ax.Client(custom_url) as c:
        yield c


@pytest.fixture
async def aclient(custom_url: str) -> AsyncIterator[ax.AsyncClient]:
    async with ax.AsyncClient(custom_url) as c:
        yield c


def _free_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _assert_increasing(fractions: list[float | None]) -> None:
    assert fractions, "no progress was reported"
    values = [f for f in fractions if f is not None]
    assert values == sorted(set(values)), values
    assert values[-1] == 1.0


# -- submit, wait, run ---------------------------------------------------------------------


def test_submit_and_wait_reports_increasing_progress_when_sync(server_url: str) -> None:
    seen: list[tuple[float | None, str | None]] = []
    with ax.Client(server_url) as client:
        job = client.submit("sleep", {"seconds": 0.6, "steps": 6})
        assert job.status is JobStatus.QUEUED
        done = client.wait(job.id, timeout_s=20, on_progress=lambda f, m: seen.append((f, m)))
    assert done.status is JobStatus.SUCCEEDED
    assert done.result == {"slept_s": 0.6, "steps": 6}
    _assert_increasing([f for f, _ in seen])
    assert seen[-1][1] == "step 6 of 6"
    assert abs(done.created_at - time.time()) < 60
    assert done.started_at is not None
    assert done.finished_at is not None
    assert done.created_at <= done.started_at <= done.finished_at


async def test_submit_and_wait_reports_increasing_progress_when_async(server_url: str) -> None:
    seen: list[float | None] = []

    async def on_progress(fraction: float | None, message: str | None) -> None:
        seen.append(fraction)

    async with ax.AsyncClient(server_url) as client:
        job = await client.submit("sleep", {"seconds": 0.6, "steps": 6})
        done = await client.wait(job.id, timeout_s=20, on_progress=on_progress)
        assert await client.result(job.id, wait=False) == {"slept_s": 0.6, "steps": 6}
    assert done.status is JobStatus.SUCCEEDED
    _assert_increasing(seen)


def test_run_returns_the_finished_job_when_it_ends_within_wait_s(client: ax.Client) -> None:
    job = client.run("steps", {"n": 2, "step_s": 0.01}, wait_s=20)
    assert job.status is JobStatus.SUCCEEDED
    assert job.result == {"steps": 2}
    assert job.progress == 1.0


def test_run_returns_the_running_job_when_wait_s_passes(client: ax.Client) -> None:
    job = client.run("hold", {"seconds": 30}, wait_s=0.1)
    assert not job.status.terminal
    assert client.get(job.id).id == job.id
    client.cancel(job.id)


async def test_run_returns_both_ways_when_async(aclient: ax.AsyncClient) -> None:
    done = await aclient.run("steps", {"n": 1, "step_s": 0.01}, wait_s=20)
    assert done.status is JobStatus.SUCCEEDED
    pending = await aclient.run("hold", {"seconds": 30}, wait_s=0.05)
    assert not pending.status.terminal
    cancelled = await aclient.cancel(pending.id)
    assert cancelled.cancel_requested or cancelled.status is JobStatus.CANCELLED


def test_run_returns_a_failed_job_rather_than_raising(client: ax.Client) -> None:
    job = client.run("boom", {"reason": "nope"}, wait_s=20)
    assert job.status is JobStatus.FAILED
    assert job.error == "ValueError: nope"


# -- outcomes ----------------------------------------------------------------------------


def test_result_raises_job_failed_error_when_the_workload_raises(client: ax.Client) -> None:
    job = client.submit("boom")
    with pytest.raises(JobFailedError, match="boom went off") as caught:
        client.result(job.id, timeout_s=20)
    assert isinstance(caught.value.job, Job)
    assert caught.value.job.status is JobStatus.FAILED
    assert caught.value.job.error == "ValueError: boom went off"
    assert job.id in str(caught.value)


async def test_result_raises_job_failed_error_when_async(aclient: ax.AsyncClient) -> None:
    job = await aclient.submit("boom", {"reason": "async boom"})
    with pytest.raises(JobFailedError, match="ValueError: async boom"):
        await aclient.result(job.id, timeout_s=20)


def test_result_raises_cancelled_error_when_the_job_was_cancelled(client: ax.Client) -> None:
    job = client.submit("hold", {"seconds": 30})
    client.cancel(job.id)
    with pytest.raises(JobCancelledError, match="was cancelled") as caught:
        client.result(job.id, timeout_s=20)
    assert caught.value.job.status is JobStatus.CANCELLED


async def test_result_raises_cancelled_error_when_async(aclient: ax.AsyncClient) -> None:
    job = await aclient.submit("hold", {"seconds": 30})
    await aclient.cancel(job.id)
    with pytest.raises(JobCancelledError):
        await aclient.result(job.id, timeout_s=20)


def test_result_without_wait_raises_not_finished_when_running(client: ax.Client) -> None:
    job = client.submit("hold", {"seconds": 30})
    with pytest.raises(JobNotFinishedError, match="no result yet") as caught:
        client.result(job.id, wait=False)
    assert not caught.value.job.status.terminal
    client.cancel(job.id)


def test_wait_raises_wait_timeout_error_when_the_job_outlasts_it(client: ax.Client) -> None:
    job = client.submit("hold", {"seconds": 30})
    start = time.monotonic()
    with pytest.raises(JobWaitTimeoutError, match=r"did not finish within 0\.3 s") as caught:
        client.wait(job.id, timeout_s=0.3)
    assert time.monotonic() - start < 5
    assert isinstance(caught.value, TimeoutError)
    assert not caught.value.job.status.terminal
    client.cancel(job.id)


async def test_wait_raises_wait_timeout_error_when_async(aclient: ax.AsyncClient) -> None:
    job = await aclient.submit("hold", {"seconds": 30})
    start = time.monotonic()
    with pytest.raises(JobWaitTimeoutError):
        await aclient.wait(job.id, timeout_s=0.3)
    assert time.monotonic() - start < 5
    await aclient.cancel(job.id)


def test_events_follow_the_job_to_its_terminal_event(client: ax.Client) -> None:
    job = client.submit("steps", {"n": 3, "step_s": 0.01})
    events = list(client.events(job.id, timeout_s=20))
    kinds = [e.kind for e in events]
    assert kinds[0] == "submitted"
    assert kinds[-1] == "succeeded"
    assert "started" in kinds
    assert all(e.job_id == job.id for e in events)
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))
    later = list(client.events(job.id, after=seqs[0]))
    assert [e.seq for e in later] == seqs[1:]
    assert list(client.events(job.id, after=seqs[-1])) == []  # 204: nothing more will come


def test_history_returns_the_events_so_far_without_waiting(client: ax.Client) -> None:
    job = client.submit("steps", {"n": 50, "step_s": 0.2})
    start = time.monotonic()
    history = client.history(job.id)
    assert time.monotonic() - start < 5.0  # not the job's 10 s
    assert history[0].kind == "submitted"
    assert client.get(job.id).status in (JobStatus.QUEUED, JobStatus.RUNNING)
    start = time.monotonic()
    later = client.history(job.id, after=history[-1].seq)  # what came since: not waited for
    assert time.monotonic() - start < 5.0
    assert all(e.seq > history[-1].seq for e in later)
    assert {e.kind for e in later} <= {"started", "progress"}, later  # the job has not ended
    client.cancel(job.id)
    with pytest.raises(JobNotFoundError):
        client.history("no-such-job")


# -- a dropped event stream ----------------------------------------------------------------


class _Cut(httpx.SyncByteStream):
    """Passes the first server-sent event, then drops the connection (or ends the stream)."""

    def __init__(self, inner: httpx.SyncByteStream, how: str) -> None:
        self.inner = inner
        self.how = how

    def __iter__(self) -> Iterator[bytes]:
        buffer = b""
        for chunk in self.inner:
            buffer += chunk
            if b"\n\n" in buffer:
                yield buffer[: buffer.index(b"\n\n") + 2]
                break
        if self.how == "drop":
            raise httpx.RemoteProtocolError("connection dropped by the test")

    def close(self) -> None:
        self.inner.close()


class _ACut(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, how: str) -> None:
        self.inner = inner
        self.how = how

    async def __aiter__(self) -> AsyncIterator[bytes]:
        buffer = b""
        async for chunk in self.inner:
            buffer += chunk
            if b"\n\n" in buffer:
                yield buffer[: buffer.index(b"\n\n") + 2]
                break
        if self.how == "drop":
            raise httpx.RemoteProtocolError("connection dropped by the test")

    async def aclose(self) -> None:
        await self.inner.aclose()


class CuttingTransport(httpx.BaseTransport):
    """Cuts the first ``cuts`` event streams after one event; records their Last-Event-ID."""

    def __init__(self, how: str, cuts: int = 2) -> None:
        self.inner = httpx.HTTPTransport()
        self.how = how
        self.cuts = cuts
        self.last_event_ids: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path.endswith("/events"):
            self.last_event_ids.append(request.headers.get("last-event-id"))
            if len(self.last_event_ids) <= self.cuts:
                assert isinstance(response.stream, httpx.SyncByteStream)
                response.stream = _Cut(response.stream, self.how)
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncCuttingTransport(httpx.AsyncBaseTransport):
    def __init__(self, how: str, cuts: int = 2) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.how = how
        self.cuts = cuts
        self.last_event_ids: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/events"):
            self.last_event_ids.append(request.headers.get("last-event-id"))
            if len(self.last_event_ids) <= self.cuts:
                assert isinstance(response.stream, httpx.AsyncByteStream)
                response.stream = _ACut(response.stream, self.how)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _assert_resumed(last_event_ids: list[str | None], cuts: int) -> None:
    assert last_event_ids[0] is None
    resumed = [int(x) for x in last_event_ids[1 : cuts + 1] if x is not None]
    assert len(resumed) == cuts
    assert resumed == sorted(set(resumed))


@pytest.mark.parametrize("how", ["drop", "end"])
def test_wait_resumes_with_last_event_id_when_the_stream_is_cut(custom_url: str, how: str) -> None:
    transport = CuttingTransport(how)
    seen: list[float | None] = []
    with ax.Client(custom_url, transport=transport) as client:
        job = client.submit("steps", {"n": 4, "step_s": 0.1})
        done = client.wait(job.id, timeout_s=20, on_progress=lambda f, m: seen.append(f))
        assert done.status is JobStatus.SUCCEEDED
        _assert_increasing(seen)
        _assert_resumed(transport.last_event_ids, 2)
        clean = [e.seq for e in client.events(job.id)]
    with ax.Client(custom_url, transport=CuttingTransport(how)) as cutting:
        assert [e.seq for e in cutting.events(job.id)] == clean


@pytest.mark.parametrize("how", ["drop", "end"])
async def test_wait_resumes_with_last_event_id_when_async(custom_url: str, how: str) -> None:
    transport = AsyncCuttingTransport(how)
    seen: list[float | None] = []
    async with ax.AsyncClient(custom_url, transport=transport) as client:
        job = await client.submit("steps", {"n": 4, "step_s": 0.1})
        done = await client.wait(job.id, timeout_s=20, on_progress=lambda f, m: seen.append(f))
        events = [e.seq async for e in client.events(job.id)]
    assert done.status is JobStatus.SUCCEEDED
    _assert_increasing(seen)
    _assert_resumed(transport.last_event_ids, 2)
    assert events == sorted(set(events))


# -- listing -------------------------------------------------------------------------------


def test_iter_jobs_walks_every_page_newest_first(client: ax.Client) -> None:
    ids = [client.submit("steps", {"n": 1, "step_s": 0}).id for _ in range(7)]
    client.submit("boom")
    page = client.list(workload="steps", limit=3)
    assert isinstance(page, JobPage)
    assert [j.id for j in page.jobs] == ids[::-1][:3]
    assert page.next_cursor is not None
    second = client.list(workload="steps", limit=3, cursor=page.next_cursor)
    assert [j.id for j in second.jobs] == ids[::-1][3:6]
    assert [j.id for j in client.iter_jobs(workload="steps", page_size=3)] == ids[::-1]
    assert len(list(client.iter_jobs(page_size=2))) == 8


async def test_iter_jobs_walks_every_page_when_async(aclient: ax.AsyncClient) -> None:
    ids = [(await aclient.submit("hold", {"seconds": 30})).id for _ in range(5)]
    for job_id in ids:
        await aclient.cancel(job_id)
        assert (await aclient.wait(job_id, timeout_s=20)).status is JobStatus.CANCELLED
    walked = [j.id async for j in aclient.iter_jobs(status="cancelled", page_size=2)]
    assert walked == ids[::-1]
    assert (await aclient.list(status=["queued", JobStatus.RUNNING])).jobs == []


def test_list_filters_by_status_when_asked(client: ax.Client) -> None:
    failed = client.submit("boom")
    ok = client.submit("steps", {"n": 1, "step_s": 0})
    for job_id in (failed.id, ok.id):
        client.wait(job_id, timeout_s=20)
    assert [j.id for j in client.list(status="failed").jobs] == [failed.id]
    both = client.list(status="failed,succeeded").jobs
    assert {j.id for j in both} == {failed.id, ok.id}
    with pytest.raises(ValueError, match="unknown job status 'done'"):
        client.list(status="done")


def test_workloads_and_health_describe_the_service(client: ax.Client) -> None:
    names = [w["name"] for w in client.workloads()]
    assert names == ["boom", "hold", "steps"]
    steps_schema = client.workloads()[2]["input_schema"]
    assert "n" in steps_schema["properties"]
    health = client.health()
    assert health["status"] == "ok"
    assert health["store"] == "sqlite"


# -- errors --------------------------------------------------------------------------------


def test_unknown_workload_raises_with_the_known_ones(client: ax.Client) -> None:
    for call in (lambda: client.submit("nope"), lambda: client.run("nope")):
        with pytest.raises(UnknownWorkloadError, match="unknown workload 'nope'") as caught:
            call()
        assert caught.value.known == ["boom", "hold", "steps"]
        assert isinstance(caught.value, KeyError)


def test_bad_input_raises_input_error_naming_each_field(client: ax.Client) -> None:
    with pytest.raises(JobInputError) as caught:
        client.submit("steps", {"n": "many", "extra": 1})
    locs = sorted(tuple(e["loc"]) for e in caught.value.errors)
    assert locs == [("extra",), ("n",)]
    assert caught.value.workload == "steps"
    assert "n: Input should be a valid integer" in str(caught.value)
    with pytest.raises(JobInputError) as run_caught:
        client.run("steps", {"n": "many"})
    assert [e["loc"] for e in run_caught.value.errors] == [["n"]]


async def test_bad_input_raises_input_error_when_async(aclient: ax.AsyncClient) -> None:
    with pytest.raises(JobInputError, match="n: Input should be a valid integer"):
        await aclient.run("steps", {"n": "many"})
    with pytest.raises(UnknownWorkloadError):
        await aclient.submit("nope")
    with pytest.raises(JobNotFoundError):
        await aclient.get("no-such-job")


def test_unknown_job_raises_not_found_from_every_method(client: ax.Client) -> None:
    calls = [
        lambda: client.get("no-such-job"),
        lambda: client.cancel("no-such-job"),
        lambda: client.wait("no-such-job", timeout_s=5),
        lambda: client.result("no-such-job", wait=False),
        lambda: list(client.events("no-such-job")),
    ]
    for call in calls:
        with pytest.raises(JobNotFoundError, match="no job with id 'no-such-job'"):
            call()


def test_other_error_answers_raise_service_error_with_the_detail(client: ax.Client) -> None:
    with pytest.raises(JobServiceError, match=r"HTTP 422: query\.wait_s") as caught:
        client.run("steps", wait_s=100_000)
    assert caught.value.status_code == 422
    assert not isinstance(caught.value, JobInputError)
    with pytest.raises(JobServiceError, match="invalid cursor"):
        client.list(cursor="garbage")


def test_token_is_required_and_accepted(token_url: str) -> None:
    with ax.Client(token_url) as anonymous:
        assert anonymous.health()["status"] == "ok"  # /healthz stays open
        with pytest.raises(JobServiceError, match="bearer token") as caught:
            anonymous.list()
        assert caught.value.status_code == 401
    with ax.Client(token_url, token="wrong") as wrong, pytest.raises(JobServiceError):
        wrong.submit("boom")
    with ax.Client(token_url, token=TOKEN) as client:
        assert client.run("steps", {"n": 1, "step_s": 0}).status is JobStatus.SUCCEEDED


async def test_token_is_required_and_accepted_when_async(token_url: str) -> None:
    async with ax.AsyncClient(token_url) as anonymous:
        with pytest.raises(JobServiceError) as caught:
            await anonymous.workloads()
        assert caught.value.status_code == 401
    async with ax.AsyncClient(token_url, token=TOKEN) as client:
        assert len(await client.workloads()) == 3


def test_unreachable_service_raises_a_clear_connection_error() -> None:
    url = _free_port_url()
    with ax.Client(url, timeout_s=5) as client:
        for call in (client.health, lambda: client.wait("x", timeout_s=5), client.list):
            with pytest.raises(JobConnectionError) as caught:
                call()
            message = str(caught.value)
            assert message.startswith(f"cannot reach the job service at {url}: ")
            assert isinstance(caught.value, JobServiceError)
            assert caught.value.__cause__ is None
            assert caught.value.__suppress_context__


async def test_unreachable_service_raises_a_clear_error_when_async() -> None:
    url = _free_port_url()
    async with ax.AsyncClient(url) as client:
        with pytest.raises(JobConnectionError, match=f"cannot reach the job service at {url}"):
            await client.submit("anything")


def test_connection_error_survives_pickling() -> None:
    error = JobConnectionError("http://127.0.0.1:1", "refused")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)
    assert copy.url == error.url
    assert copy.status_code == 0


def test_bad_client_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="not an http"):
        ax.Client("ftp://example.org")
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        ax.AsyncClient(timeout_s=0)


# -- the package surface ---------------------------------------------------------------------


def test_clients_and_jobs_are_reachable_from_ambidex() -> None:
    from ambidex import jobs
    from ambidex.client import AsyncClient, Client

    assert ax.Client is Client
    assert ax.AsyncClient is AsyncClient
    assert ax.jobs is jobs
    assert callable(ax.jobs.workload)
    assert {"AsyncClient", "Client", "jobs"} <= set(dir(ax))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = ax.nothing_here  # type: ignore[attr-defined]


def test_importing_ambidex_leaves_the_job_service_unloaded() -> None:
    code = "import sys, ambidex; print('httpx' in sys.modules, 'sqlalchemy' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.split() == ["False", "False"]
