"""The client's event-stream half, I/O-free: follow a job's stream of server-sent events.

``EventFollower`` decides when to (re)open the stream, which events are new,
and when a wait has run out; the drivers in ``_client`` only move bytes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx

from ambidex._job_errors import JobServiceError
from ambidex._job_model import Job, JobEvent
from ambidex._sse import ServerSentEvent, SSEDecoder
from ambidex.client._protocol import (
    _TERMINAL_KINDS,
    RECONNECT_BACKOFF_S,
    REOPEN_SLACK_S,
    STREAM_IDLE_S,
    Call,
    _decode,
    _job_path,
    _none,
    parse_event,
    unreachable,
)

__all__ = ["EventFollower", "SSEDecoder", "ServerSentEvent"]


class EventFollower:
    """Follows a job's event stream to its end, across dropped connections, within a deadline.

    A driver loops: while ``following()``, open ``stream_call()``, hand the
    status to ``opened``, each line to ``feed`` (yielding the events it
    returns) until ``finished`` or ``should_reopen()``; on a transport error
    sleep ``dropped(exc)`` seconds; on a clean end without the terminal
    event, fetch the job and sleep ``ended(job)`` seconds. Reconnects send
    ``Last-Event-ID``, so no event is delivered twice or skipped.

    Args:
        job_id: the job.
        url: the service's base URL (for error messages).
        after: deliver events after this seq.
        timeout_s: stop following after this long (None: until the job finishes).
        clock: monotonic seconds (a parameter for tests).
    """

    def __init__(
        self,
        job_id: str,
        url: str,
        *,
        after: int = 0,
        timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_s is not None and timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s!r}")
        self.job_id = job_id
        self.url = url
        self.last_seq = after
        self.finished = False
        """True once the job's terminal event has been seen."""
        self._clock = clock
        self._deadline = None if timeout_s is None else clock() + timeout_s
        self._decoder = SSEDecoder()
        self._read_timeout_s = STREAM_IDLE_S
        self._failures = 0
        self._ever_opened = False
        self._events_since_open = 0
        self._quiet_ends = 0

    def remaining_s(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self._deadline is None else self._deadline - self._clock()

    def following(self) -> bool:
        """True while the driver should (re)open the stream."""
        left = self.remaining_s()
        return not self.finished and (left is None or left > 0)

    def stream_call(self) -> Call[None]:
        """The request that opens (or reopens) the stream after the last event seen."""
        left = self.remaining_s()
        self._read_timeout_s = (
            STREAM_IDLE_S if left is None else max(min(left, STREAM_IDLE_S), 0.01)
        )
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_seq:
            headers["Last-Event-ID"] = str(self.last_seq)
        return Call(
            "GET",
            _job_path(self.job_id) + "/events",
            _none,
            headers=headers,
            timeout_s=self._read_timeout_s,
            job_id=self.job_id,
        )

    def opened(self, status: int, content: bytes = b"") -> None:
        """The stream answered ``status`` (``content``: the body of an error answer).

        Raises:
            JobNotFoundError: no such job.
            JobServiceError: any other error answer.
        """
        if status == 204:  # the job has finished and no event follows last_seq
            self.finished = True
            self._ever_opened = True
            return
        if status != 200:
            call = Call("GET", _job_path(self.job_id) + "/events", _none, job_id=self.job_id)
            raise call.error_for(status, _decode(content))
        self._decoder = SSEDecoder()
        self._failures = 0
        self._ever_opened = True
        self._events_since_open = 0

    def feed(self, line: str) -> JobEvent | None:
        """Take one line of the stream; return the new event it completes, if any.

        Raises:
            JobServiceError: the event's data is not what the service sends.
        """
        sse = self._decoder.feed(line)
        if sse is None or not sse.data:
            return None
        try:
            event = parse_event(json.loads(sse.data))
        except (KeyError, TypeError, ValueError) as exc:
            raise JobServiceError(200, f"unexpected event from {self.url}: {exc!r}") from None
        if event.seq <= self.last_seq:
            return None
        self.last_seq = event.seq
        self._events_since_open += 1
        self._quiet_ends = 0
        if event.kind in _TERMINAL_KINDS:
            self.finished = True
        return event

    def should_reopen(self) -> bool:
        """True when the open stream's read timeout would overshoot the deadline.

        A stream's read timeout is fixed when it opens; reopening near the
        deadline keeps a wait from lasting much longer than ``timeout_s``.
        """
        left = self.remaining_s()
        return left is not None and left + REOPEN_SLACK_S < self._read_timeout_s

    def dropped(self, exc: httpx.RequestError) -> float:
        """The stream failed or could not open; seconds to pause before reopening it.

        Raises:
            JobConnectionError: the stream never opened in this follow, or
                failed ``len(RECONNECT_BACKOFF_S) + 1`` times in a row.
        """
        left = self.remaining_s()
        if left is not None and left <= 0:
            return 0.0
        if not self._ever_opened or self._failures >= len(RECONNECT_BACKOFF_S):
            raise unreachable(self.url, exc) from None
        pause = RECONNECT_BACKOFF_S[self._failures]
        self._failures += 1
        return pause if left is None else min(pause, left)

    def ended(self, job: Job) -> float:
        """The stream ended cleanly before the terminal event; ``job`` is the job now.

        Returns the seconds to pause before reopening: none after a stream
        that delivered events (a proxy closing a long response, say), a
        growing pause after streams that end at once with nothing new. A
        finished job's stream is reopened until it delivers nothing more, so
        no event before the terminal one is missed.
        """
        if self._events_since_open:
            return 0.0
        if job.status.terminal:
            self.finished = True
            return 0.0
        pause = RECONNECT_BACKOFF_S[min(self._quiet_ends, len(RECONNECT_BACKOFF_S) - 1)]
        self._quiet_ends += 1
        left = self.remaining_s()
        return pause if left is None else max(min(pause, left), 0.0)
