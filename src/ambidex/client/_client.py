"""``Client`` and ``AsyncClient``: the job service over HTTP, from sync and from async code.

Both are thin drivers over httpx: every request, answer, error and event is
built or read by ``_protocol``, so the two faces behave the same. Each method
of ``AsyncClient`` is the ``Client`` method of the same name, awaited.
"""

from __future__ import annotations

import builtins
import contextlib
import inspect
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import datetime
from typing import Any, TypeVar

import httpx

from ambidex import _observe
from ambidex._clock import current_clock
from ambidex._job_model import Attempt, Job, JobEvent, JobStatus
from ambidex.client._protocol import (
    DEFAULT_URL,
    Call,
    JobPage,
    ProgressCallback,
    SubmitOptions,
    attempts_call,
    batch_call,
    cancel_call,
    check_url,
    client_headers,
    get_call,
    health_call,
    history_call,
    list_call,
    outcome,
    progress_of,
    rerun_call,
    retry_call,
    run_call,
    submit_call,
    unreachable,
    waited,
    workers_call,
    workloads_call,
)
from ambidex.client._stream import EventFollower

__all__ = ["AsyncClient", "Client"]

T = TypeVar("T")
Statuses = JobStatus | str | Iterable[JobStatus | str] | None


def _span_attributes(call: Call[Any], url: httpx.URL) -> dict[str, Any]:
    """The attributes of a request's CLIENT span (HTTP semantic conventions, and the job's)."""
    attributes: dict[str, Any] = {
        "http.request.method": call.method,
        "url.template": call.route,
        "server.address": url.host,
    }
    if url.port is not None:
        attributes["server.port"] = url.port
    if call.job_id is not None:
        attributes["ambidex.job.id"] = call.job_id
    if call.workload is not None:
        attributes["ambidex.job.workload"] = call.workload
    return attributes


def _traced_options(call: Call[Any], carrier: Mapping[str, str] | None) -> dict[str, Any]:
    """``call``'s request options with the current trace context in its headers."""
    options = call.request_options()
    if carrier:
        options["headers"] = {**options.get("headers", {}), **carrier}
    return options


class _StreamSpan:
    """The CLIENT span of one connection of an event stream: never the current span.

    A stream is read by a generator that yields to its caller between events: a
    span made current there would be the caller's current span as well. So its
    context goes only into the request's headers, and it ends with the connection.
    """

    def __init__(self, call: Call[Any], url: httpx.URL) -> None:
        from opentelemetry import trace

        from ambidex import _otel

        self._otel = _otel
        self.span = _otel.tracer().start_span(
            f"ambidex.client {call.method} {call.route}",
            kind=_otel.SpanKind.CLIENT,
            attributes=_span_attributes(call, url),
        )
        self.options = _traced_options(call, _otel.inject(trace.set_span_in_context(self.span)))

    def answered(self, status: int) -> None:
        self.span.set_attribute("http.response.status_code", status)

    def failed(self, exc: BaseException) -> None:
        if not isinstance(exc, GeneratorExit):  # the caller stopped reading: not a failure
            self._otel.fail(self.span, exc)


def _check_timeout(timeout_s: float) -> float:
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    return float(timeout_s)


class Client:
    """The job service, from plain (sync) code.

    ```python
    with ax.Client("http://127.0.0.1:8000") as client:
        job = client.submit("sleep", {"seconds": 3})
        done = client.wait(job.id, on_progress=lambda f, msg: print(f, msg))
    ```

    Args:
        url: the service's base URL (``ambidex serve`` prints it).
        token: the bearer token the service was started with, if any.
        timeout_s: how long one request may take (``run`` and ``wait`` add
            the time they are asked to wait).
        transport: an httpx transport to send the requests through (tests,
            custom networking); default: httpx's own.

    Every method raises, besides what it names: ``JobConnectionError`` (a
    ``JobServiceError``) when the service cannot be reached or does not
    answer in time, and ``JobServiceError`` for any other error answer (401
    without the right token, 413 for a body too large...).

    Raises:
        ValueError: ``url`` is not an http(s) URL, or ``timeout_s`` is not positive.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = check_url(url)
        self.timeout_s = _check_timeout(timeout_s)
        self._http = httpx.Client(
            base_url=self.url,
            headers=client_headers(token),
            timeout=self.timeout_s,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the client's connections."""
        self._http.close()

    def _send(self, call: Call[T]) -> T:
        if _observe.on:
            return self._send_traced(call)
        try:
            response = self._http.request(**call.request_options())
        except httpx.RequestError as exc:
            raise unreachable(self.url, exc) from None
        return call.answer(response.status_code, response.content)

    def _send_traced(self, call: Call[T]) -> T:
        """``_send`` in a CLIENT span whose context goes with the request (``traceparent``)."""
        from ambidex import _otel

        name = f"ambidex.client {call.method} {call.route}"
        attributes = _span_attributes(call, self._http.base_url)
        with _otel.span(name, attributes, kind=_otel.SpanKind.CLIENT) as span:
            try:
                response = self._http.request(**_traced_options(call, _otel.inject()))
            except httpx.RequestError as exc:
                raise unreachable(self.url, exc) from None
            span.set_attribute("http.response.status_code", response.status_code)
            return call.answer(response.status_code, response.content)

    def submit(
        self,
        workload: str,
        input: Any = None,
        *,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        priority: int | None = None,
        delay_s: float | None = None,
        run_at: float | datetime | None = None,
        idempotency_key: str | None = None,
        retries: int | None = None,
        retry_on: Any = None,
        retry_backoff_s: float | None = None,
        retry_max_backoff_s: float | None = None,
    ) -> Job:
        """Submit a job; it is stored (durable) when this returns, and runs later.

        Every option left out (None) takes the workload's value.

        Args:
            workload: a workload the service offers (see ``workloads``).
            input: the workload's input, a JSON object (None: ``{}``).
            max_attempts: starts allowed before a lost worker fails the job.
            timeout_s: stop the job after this long.
            priority: higher starts first (within ±1,000,000).
            delay_s: start no sooner than this many seconds from now.
            run_at: start no sooner than this time (epoch seconds or an aware
                ``datetime``); not with ``delay_s``.
            idempotency_key: if a job was submitted with this key before (and
                not yet pruned), that job is returned and nothing is stored, so
                a submit retried after a timeout never runs the work twice.
            retries: how many times a failure is retried (see ``RetryPolicy``).
            retry_on: the exception types (or their names) that are retried.
            retry_backoff_s: the first retry's wait; each later one doubles.
            retry_max_backoff_s: the cap of one retry's wait.

        Returns:
            The queued job (``job.id`` to ask about it later).

        Raises:
            UnknownWorkloadError: the service has no such workload (``known`` lists its own).
            JobInputError: the input does not fit the workload; ``errors`` names each field.
            JobOptionError: an option is out of range.
            JobConflictError: the idempotency key names a job of another workload or input.
        """
        options = SubmitOptions(
            max_attempts,
            timeout_s,
            priority,
            delay_s,
            run_at,
            idempotency_key,
            retries,
            retry_on,
            retry_backoff_s,
            retry_max_backoff_s,
        )
        return self._send(submit_call(workload, input, options))

    def submit_batch(self, jobs: Sequence[Mapping[str, Any]]) -> builtins.list[Job]:
        """Submit several jobs in one request and one transaction: all of them, or none.

        Each job is a mapping of ``workload``, ``input`` and any of ``submit``'s
        options, e.g. ``{"workload": "sleep", "input": {"seconds": 1},
        "priority": 5}``; the service takes up to 1,000 at once. Returns the
        jobs in order (a job whose idempotency key named an existing job is
        that job).

        Raises:
            JobBatchError: the service refused some jobs and stored none;
                ``failures`` names each by its index with its own error
                (``UnknownWorkloadError``, ``JobInputError``,
                ``JobOptionError``, ``JobConflictError``).
            JobServiceError: the batch as a whole was refused (over 1,000 jobs:
                422; a body over the service's size limit: 413).
        """
        return self._send(batch_call(jobs))

    def run(
        self,
        workload: str,
        input: Any = None,
        *,
        wait_s: float = 30,
        idempotency_key: str | None = None,
    ) -> Job:
        """Run a job and wait up to ``wait_s`` for it, in one request.

        Returns:
            The job: finished (succeeded, failed or cancelled: see
            ``job.status``) or, after ``wait_s``, still queued or running
            (``wait`` for it then). A failed job is returned, not raised.

        With an ``idempotency_key`` naming a job submitted before, that job is
        waited for instead of a new one.

        Raises:
            UnknownWorkloadError: the service has no such workload.
            JobInputError: the input does not fit the workload.
            JobServiceError: ``wait_s`` is beyond the service's limit (422).
        """
        return self._send(run_call(workload, input, wait_s, self.timeout_s, idempotency_key))

    def get(self, job_id: str) -> Job:
        """The job as it is now.

        Raises:
            JobNotFoundError: no such job (it never existed, or was pruned).
        """
        return self._send(get_call(job_id))

    def history(self, job_id: str, *, after: int = 0) -> list[JobEvent]:
        """The job's events so far (after ``after``), oldest first, without waiting.

        Raises:
            JobNotFoundError: no such job.
        """
        return self._send(history_call(job_id, after))

    def _follow(self, follower: EventFollower) -> Generator[JobEvent, None, None]:
        while follower.following():
            pause = 0.0
            call = follower.stream_call()
            traced = _StreamSpan(call, self._http.base_url) if _observe.on else None
            options = call.request_options() if traced is None else traced.options
            try:
                with self._http.stream(**options) as response:
                    if traced is not None:
                        traced.answered(response.status_code)
                    error_body = response.read() if response.status_code != 200 else b""
                    follower.opened(response.status_code, error_body)
                    for line in response.iter_lines():
                        event = follower.feed(line)
                        if event is not None:
                            yield event
                        if follower.finished or follower.should_reopen():
                            break
                    else:
                        pause = follower.ended(self.get(follower.job_id))
            except BaseException as exc:
                if traced is not None:
                    traced.failed(exc)
                if not isinstance(exc, httpx.RequestError):
                    raise
                pause = follower.dropped(exc)
            finally:
                if traced is not None:
                    traced.span.end()
            if pause > 0:
                current_clock().sleep(pause)  # a FakeClock in a test skips the wait

    def events(
        self, job_id: str, *, after: int = 0, timeout_s: float | None = None
    ) -> Iterator[JobEvent]:
        """The job's events, as they happen, until it has finished.

        Follows ``GET /v1/jobs/{id}/events``, reconnecting (with
        ``Last-Event-ID``) if the stream drops. Ends quietly after the
        terminal event, or once ``timeout_s`` has passed.

        Args:
            job_id: the job.
            after: only events with a ``seq`` above this.
            timeout_s: stop after this long (None: when the job finishes).

        Raises:
            JobNotFoundError: no such job.
        """
        follower = EventFollower(job_id, self.url, after=after, timeout_s=timeout_s)
        with contextlib.closing(self._follow(follower)) as events:
            yield from events

    def wait(
        self,
        job_id: str,
        *,
        timeout_s: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Job:
        """Wait until the job has finished; return it (succeeded, failed or cancelled).

        Follows the job's event stream (reconnecting if it drops) and calls
        ``on_progress(fraction, message)`` for each progress report.

        Raises:
            JobWaitTimeoutError: ``timeout_s`` passed first (``.job`` is the
                job then; it goes on running).
            JobNotFoundError: no such job.
        """
        follower = EventFollower(job_id, self.url, timeout_s=timeout_s)
        with contextlib.closing(self._follow(follower)) as events:
            for event in events:
                progress = progress_of(event)
                if progress is not None and on_progress is not None:
                    on_progress(*progress)
        return waited(self.get(job_id), timeout_s)

    def result(self, job_id: str, *, wait: bool = True, timeout_s: float | None = None) -> Any:
        """The job's result, waiting for it to finish unless ``wait=False``.

        Raises:
            JobFailedError: the job failed (``.job.error`` says why).
            JobCancelledError: the job was cancelled.
            JobNotFinishedError: ``wait=False`` and the job has not finished.
            JobWaitTimeoutError: ``timeout_s`` passed before it finished.
            JobNotFoundError: no such job.
        """
        job = self.wait(job_id, timeout_s=timeout_s) if wait else self.get(job_id)
        return outcome(job)

    def cancel(self, job_id: str) -> Job:
        """Cancel the job: a queued one at once, a running one as soon as its worker sees it.

        Returns:
            The job after the request (``cancelled``, or ``running`` with
            ``cancel_requested``; a finished job is unchanged).

        Raises:
            JobNotFoundError: no such job.
        """
        return self._send(cancel_call(job_id))

    def retry(self, job_id: str) -> Job:
        """Put a failed or cancelled job back in the queue, as it is (same id and input).

        Raises:
            JobNotFoundError: no such job.
            JobConflictError: the job has not failed and was not cancelled.
        """
        return self._send(retry_call(job_id))

    def rerun(self, job_id: str) -> Job:
        """Run a finished job again: a new job with its workload and input (``rerun_of``).

        Raises:
            JobNotFoundError: no such job.
            JobConflictError: the job has not finished.
        """
        return self._send(rerun_call(job_id))

    def attempts(self, job_id: str) -> builtins.list[Attempt]:
        """Each start of the job and how it ended, with its error and traceback.

        Raises:
            JobNotFoundError: no such job.
        """
        return self._send(attempts_call(job_id))

    def workers(self) -> dict[str, Any]:
        """The workers sharing the service's store.

        Returns ``{"workers": [WorkerInfo...], "alive": n, "queued": n,
        "running": n}``: with ``alive`` 0 and jobs queued, nothing consumes the queue.
        """
        return self._send(workers_call())

    def list(
        self,
        *,
        status: Statuses = None,
        workload: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        id_prefix: str | None = None,
    ) -> JobPage:
        """One page of jobs, newest first.

        Args:
            status: only jobs in these states (``"queued,running"`` or a list).
            workload: only jobs of this workload.
            limit: jobs per page (1..500).
            cursor: the ``next_cursor`` (older) or ``prev_cursor`` (newer) of a page.
            id_prefix: only jobs whose id starts with this.

        Raises:
            ValueError: an unknown status.
        """
        return self._send(list_call(status, workload, limit, cursor, id_prefix))

    def iter_jobs(
        self, *, status: Statuses = None, workload: str | None = None, page_size: int = 100
    ) -> Iterator[Job]:
        """Every job (newest first), fetched a page at a time; filters as for ``list``."""
        cursor: str | None = None
        while True:
            page = self.list(status=status, workload=workload, limit=page_size, cursor=cursor)
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def workloads(self) -> builtins.list[dict[str, Any]]:
        """The workloads the service runs: name, kind, description, limits, input schema."""
        return self._send(workloads_call())

    def health(self) -> dict[str, Any]:
        """The service's health (``status``, ``version``, ``store``, queued and running counts).

        Raises:
            JobServiceError: the service answers but its store does not (503).
        """
        return self._send(health_call())


class AsyncClient:
    """The job service, from async code: ``Client``'s methods, awaited.

    ```python
    async with ax.AsyncClient("http://127.0.0.1:8000") as client:
        job = await client.submit("sleep", {"seconds": 3})
        done = await client.wait(job.id)
        async for event in client.events(job.id): ...
    ```

    The arguments are ``Client``'s (``transport`` is an
    ``httpx.AsyncBaseTransport``). An ``on_progress`` callback may be a
    plain function or return an awaitable, which is awaited. Use a client on
    one event loop.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = check_url(url)
        self.timeout_s = _check_timeout(timeout_s)
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=client_headers(token),
            timeout=self.timeout_s,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        if _observe.on:
            return await self._send_traced(call)
        try:
            response = await self._http.request(**call.request_options())
        except httpx.RequestError as exc:
            raise unreachable(self.url, exc) from None
        return call.answer(response.status_code, response.content)

    async def _send_traced(self, call: Call[T]) -> T:
        """``_send`` in a CLIENT span whose context goes with the request (``traceparent``)."""
        from ambidex import _otel

        name = f"ambidex.client {call.method} {call.route}"
        attributes = _span_attributes(call, self._http.base_url)
        with _otel.span(name, attributes, kind=_otel.SpanKind.CLIENT) as span:
            try:
                response = await self._http.request(**_traced_options(call, _otel.inject()))
            except httpx.RequestError as exc:
                raise unreachable(self.url, exc) from None
            span.set_attribute("http.response.status_code", response.status_code)
            return call.answer(response.status_code, response.content)

    async def submit(
        self,
        workload: str,
        input: Any = None,
        *,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        priority: int | None = None,
        delay_s: float | None = None,
        run_at: float | datetime | None = None,
        idempotency_key: str | None = None,
        retries: int | None = None,
        retry_on: Any = None,
        retry_backoff_s: float | None = None,
        retry_max_backoff_s: float | None = None,
    ) -> Job:
        """Submit a job (see ``Client.submit``)."""
        options = SubmitOptions(
            max_attempts,
            timeout_s,
            priority,
            delay_s,
            run_at,
            idempotency_key,
            retries,
            retry_on,
            retry_backoff_s,
            retry_max_backoff_s,
        )
        return await self._send(submit_call(workload, input, options))

    async def submit_batch(self, jobs: Sequence[Mapping[str, Any]]) -> builtins.list[Job]:
        """Submit several jobs at once, all or none (see ``Client.submit_batch``)."""
        return await self._send(batch_call(jobs))

    async def run(
        self,
        workload: str,
        input: Any = None,
        *,
        wait_s: float = 30,
        idempotency_key: str | None = None,
    ) -> Job:
        """Run a job and wait up to ``wait_s`` for it (see ``Client.run``)."""
        return await self._send(run_call(workload, input, wait_s, self.timeout_s, idempotency_key))

    async def get(self, job_id: str) -> Job:
        """The job as it is now (see ``Client.get``)."""
        return await self._send(get_call(job_id))

    async def history(self, job_id: str, *, after: int = 0) -> list[JobEvent]:
        """The job's events so far, without waiting (see ``Client.history``)."""
        return await self._send(history_call(job_id, after))

    async def _follow(self, follower: EventFollower) -> AsyncGenerator[JobEvent, None]:
        while follower.following():
            pause = 0.0
            call = follower.stream_call()
            traced = _StreamSpan(call, self._http.base_url) if _observe.on else None
            options = call.request_options() if traced is None else traced.options
            try:
                async with self._http.stream(**options) as response:
                    if traced is not None:
                        traced.answered(response.status_code)
                    error_body = await response.aread() if response.status_code != 200 else b""
                    follower.opened(response.status_code, error_body)
                    async for line in response.aiter_lines():
                        event = follower.feed(line)
                        if event is not None:
                            yield event
                        if follower.finished or follower.should_reopen():
                            break
                    else:
                        pause = follower.ended(await self.get(follower.job_id))
            except BaseException as exc:
                if traced is not None:
                    traced.failed(exc)
                if not isinstance(exc, httpx.RequestError):
                    raise
                pause = follower.dropped(exc)
            finally:
                if traced is not None:
                    traced.span.end()
            if pause > 0:
                await current_clock().asleep(pause)

    async def events(
        self, job_id: str, *, after: int = 0, timeout_s: float | None = None
    ) -> AsyncIterator[JobEvent]:
        """The job's events until it has finished: ``async for event in client.events(id)``.

        See ``Client.events``.
        """
        follower = EventFollower(job_id, self.url, after=after, timeout_s=timeout_s)
        async with contextlib.aclosing(self._follow(follower)) as events:
            async for event in events:
                yield event

    async def wait(
        self,
        job_id: str,
        *,
        timeout_s: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Job:
        """Wait until the job has finished; return it (see ``Client.wait``)."""
        follower = EventFollower(job_id, self.url, timeout_s=timeout_s)
        async with contextlib.aclosing(self._follow(follower)) as events:
            async for event in events:
                progress = progress_of(event)
                if progress is not None and on_progress is not None:
                    called = on_progress(*progress)
                    if inspect.isawaitable(called):
                        await called
        return waited(await self.get(job_id), timeout_s)

    async def result(
        self, job_id: str, *, wait: bool = True, timeout_s: float | None = None
    ) -> Any:
        """The job's result, waiting for it unless ``wait=False`` (see ``Client.result``)."""
        job = await self.wait(job_id, timeout_s=timeout_s) if wait else await self.get(job_id)
        return outcome(job)

    async def cancel(self, job_id: str) -> Job:
        """Cancel the job (see ``Client.cancel``)."""
        return await self._send(cancel_call(job_id))

    async def retry(self, job_id: str) -> Job:
        """Put a failed or cancelled job back in the queue (see ``Client.retry``)."""
        return await self._send(retry_call(job_id))

    async def rerun(self, job_id: str) -> Job:
        """Run a finished job again as a new job (see ``Client.rerun``)."""
        return await self._send(rerun_call(job_id))

    async def attempts(self, job_id: str) -> builtins.list[Attempt]:
        """Each start of the job and how it ended (see ``Client.attempts``)."""
        return await self._send(attempts_call(job_id))

    async def workers(self) -> dict[str, Any]:
        """The workers sharing the service's store (see ``Client.workers``)."""
        return await self._send(workers_call())

    async def list(
        self,
        *,
        status: Statuses = None,
        workload: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        id_prefix: str | None = None,
    ) -> JobPage:
        """One page of jobs, newest first (see ``Client.list``)."""
        return await self._send(list_call(status, workload, limit, cursor, id_prefix))

    async def iter_jobs(
        self, *, status: Statuses = None, workload: str | None = None, page_size: int = 100
    ) -> AsyncIterator[Job]:
        """Every job (newest first), a page at a time: ``async for job in client.iter_jobs()``."""
        cursor: str | None = None
        while True:
            page = await self.list(status=status, workload=workload, limit=page_size, cursor=cursor)
            for job in page.jobs:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def workloads(self) -> builtins.list[dict[str, Any]]:
        """The workloads the service runs (see ``Client.workloads``)."""
        return await self._send(workloads_call())

    async def health(self) -> dict[str, Any]:
        """The service's health (see ``Client.health``)."""
        return await self._send(health_call())
