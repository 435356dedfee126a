"""Named limits shared by every caller: capacity (at most N at once) and rate.

An ``asyncio.Semaphore`` belongs to one loop and a ``threading.Semaphore``
blocks the loop that waits on it. A limit here is shared by sync callers
(whose work runs on the runtime's loop thread), by async callers on their own
loops, and by plain threads, so both primitives are built on a
``threading.Lock`` with waiters that are asyncio futures on whichever loop
asked; a release hands the slot to the first waiter on that waiter's loop.
Waiters are served first come, first served.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from ambidex._clock import Clock, current_clock
from ambidex.runtime._histogram import WaitHistogram
from ambidex.runtime._waits import acquire_interruptibly

__all__ = ["CapacityLimit", "LimitStatistics", "Rate", "RateLimit", "RateLimitStatistics"]


@dataclass(frozen=True)
class Rate:
    """A rate limit: ``per_second`` calls on average, bursts of up to ``burst``.

    Use it as a value in ``ax.limits(openai=ax.Rate(10, burst=20))``.
    """

    per_second: float
    burst: int = 1

    def __post_init__(self) -> None:
        if not (self.per_second > 0 and math.isfinite(self.per_second)):
            raise ValueError(f"Rate.per_second must be a positive number, got {self.per_second!r}")
        if self.burst < 1:
            raise ValueError(f"Rate.burst must be at least 1, got {self.burst!r}")


@dataclass(frozen=True)
class LimitStatistics:
    """A snapshot of one capacity limit."""

    capacity: int
    in_use: int
    waiting: int
    waits: int = 0
    """Acquisitions that found the limit full and waited (since the limit was declared)."""
    wait_s: float = 0.0
    """Their time waiting for a slot, in seconds."""


@dataclass(frozen=True)
class RateLimitStatistics:
    """A snapshot of one rate limit."""

    per_second: float
    burst: int
    waiting: int
    """Callers sleeping for a token now."""
    waits: int = 0
    """Acquisitions that found no token and slept for one (since the limit was declared)."""
    wait_s: float = 0.0
    """Their time sleeping, in seconds (on the limit's clock: a test's fake clock, virtual ones)."""


_AsyncWaiter = tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]


def _grant(fut: asyncio.Future[None], limit: CapacityLimit) -> None:
    # Runs on the waiter's loop. If the waiter was cancelled meanwhile, pass
    # the slot on rather than lose it.
    if fut.cancelled():
        limit.release()
    else:
        fut.set_result(None)


class CapacityLimit:
    """At most ``capacity`` holders at once, across threads and event loops.

    Use ``async with limit:`` in async code and ``with limit:`` in sync code.
    """

    def __init__(self, name: str, capacity: int) -> None:
        _check_capacity(name, capacity)
        self.name = name
        self._capacity = capacity
        self._in_use = 0
        self._lock = threading.Lock()
        # One first-come-first-served line: an async waiter is (loop, future),
        # a sync waiter is a locked threading.Lock that release() unlocks.
        self._waiters: deque[_AsyncWaiter | threading.Lock] = deque()
        self.waits = WaitHistogram()  # written under self._lock, by callers that waited

    @property
    def capacity(self) -> int:
        """How many may hold the limit at once."""
        return self._capacity

    def resize(self, capacity: int) -> None:
        """Change the capacity; growing it lets waiters in at once."""
        _check_capacity(self.name, capacity)
        with self._lock:
            grow = capacity - self._capacity
            self._capacity = capacity
            for _ in range(max(0, grow)):
                self._in_use += 1
                self._release_locked()

    def _try_take_locked(self) -> bool:
        if self._in_use < self._capacity and not self._waiters:
            self._in_use += 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a slot. Cancelling the wait gives up the place in line."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._try_take_locked():
                return
            fut: asyncio.Future[None] = loop.create_future()
            waiter = (loop, fut)
            self._waiters.append(waiter)
        started = time.perf_counter()
        try:
            await fut
            self._waited(started)
        except asyncio.CancelledError:
            picked = self._leave_line(waiter)
            # If the hand-over arrived before the cancellation, give the slot
            # back; if it arrives after, _grant sees the cancelled future and
            # passes it on.
            if picked and fut.done() and not fut.cancelled():
                self.release()
            raise

    def acquire_sync(self) -> None:
        """Block this thread until a slot is free."""
        with self._lock:
            if self._try_take_locked():
                return
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append(gate)
        started = time.perf_counter()
        try:
            acquire_interruptibly(gate)  # release() unlocks it, handing us the slot
            self._waited(started)
        except BaseException:  # Ctrl-C: give up the place in line, or the slot
            if self._leave_line(gate):
                self.release()
            raise

    def _waited(self, started: float) -> None:
        with self._lock:
            self.waits.observe(time.perf_counter() - started)

    def _leave_line(self, waiter: _AsyncWaiter | threading.Lock) -> bool:
        """Take ``waiter`` out of the line; True if release() had already handed it the slot."""
        with self._lock:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                return True
            return False

    def release(self) -> None:
        """Give a slot back, handing it to the longest waiter if there is one."""
        with self._lock:
            self._release_locked()

    def _release_locked(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if isinstance(waiter, tuple):
                loop, fut = waiter
                if fut.done() or loop.is_closed():  # cancelled while queued
                    continue
                try:
                    loop.call_soon_threadsafe(_grant, fut, self)
                except RuntimeError:  # that loop closed meanwhile
                    continue
            else:
                waiter.release()
            return
        if self._in_use <= 0:
            raise RuntimeError(f"limit {self.name!r} released more often than acquired")
        self._in_use -= 1

    def statistics(self) -> LimitStatistics:
        """A snapshot: capacity, slots in use, waiters."""
        with self._lock:
            return LimitStatistics(
                capacity=self._capacity,
                in_use=self._in_use,
                waiting=len(self._waiters),
                waits=self.waits.count,
                wait_s=self.waits.total_s,
            )

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __enter__(self) -> None:
        self.acquire_sync()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"CapacityLimit({self.name!r}, capacity={self._capacity})"


def _check_capacity(name: str, capacity: int) -> None:
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"limit {name!r}: capacity must be a positive integer, got {capacity!r}")


class RateLimit:
    """A token bucket shared across threads and loops.

    Each caller reserves the next token under a lock and then sleeps until its
    time comes, so callers are served in order and the bucket never needs a
    background refill task. Time is read from ``current_clock()``, so a test's
    fake clock drives the bucket without real sleeping.
    """

    def __init__(self, name: str, rate: Rate) -> None:
        self.name = name
        self.rate = rate
        self._lock = threading.Lock()
        self._tokens = float(rate.burst)
        self._clock = current_clock()
        self._updated = self._clock.monotonic()
        self._waiting = 0
        self.waits = WaitHistogram()  # written under self._lock, by callers that slept

    def _reserve(self, clock: Clock) -> float | None:
        """Take a token (possibly from the future); return when it may be used, None for now."""
        with self._lock:
            now = clock.monotonic()
            rate = self.rate
            if clock is not self._clock:
                # Another clock (a test's fake clock installed, or taken away): the
                # bucket's times are the old clock's and mean nothing on this one, nor
                # does a debt of tokens reserved on it (virtual seconds that would
                # become real ones), so the bucket starts full, as a new one would.
                self._clock, self._tokens, self._updated = clock, float(rate.burst), now
            elapsed = now - self._updated
            self._tokens = min(rate.burst, self._tokens + elapsed * rate.per_second)
            self._updated = now
            self._tokens -= 1.0
            if self._tokens >= 0:
                return None
            return now - self._tokens / rate.per_second

    def _count_waiting(self, delta: int, waited_s: float | None = None) -> None:
        """Count a sleeper in (+1) or out (-1), with its wait when it slept to the end."""
        with self._lock:
            self._waiting += delta
            if waited_s is not None:
                self.waits.observe(waited_s)

    async def acquire(self) -> None:
        """Wait until this call may start."""
        clock = current_clock()
        ready_at = self._reserve(clock)
        if ready_at is not None:
            self._count_waiting(+1)
            started, waited_s = clock.monotonic(), None
            try:
                # Until the reserved moment, not for a length measured at the
                # reservation: other callers' sleeps may have moved a fake clock.
                await clock.asleep(ready_at - started)
                waited_s = clock.monotonic() - started
            finally:
                self._count_waiting(-1, waited_s)

    def acquire_sync(self) -> None:
        """Block this thread until this call may start."""
        clock = current_clock()
        ready_at = self._reserve(clock)
        if ready_at is not None:
            self._count_waiting(+1)
            started, waited_s = clock.monotonic(), None
            try:
                clock.sleep(ready_at - started)
                waited_s = clock.monotonic() - started
            finally:
                self._count_waiting(-1, waited_s)

    def release(self) -> None:
        """Nothing to give back: a rate token is spent when taken."""

    def statistics(self) -> RateLimitStatistics:
        """A snapshot: the rate and callers sleeping for a token."""
        return RateLimitStatistics(
            per_second=self.rate.per_second,
            burst=self.rate.burst,
            waiting=self._waiting,
            waits=self.waits.count,
            wait_s=self.waits.total_s,
        )

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def __enter__(self) -> None:
        self.acquire_sync()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def __repr__(self) -> str:
        return f"RateLimit({self.name!r}, {self.rate.per_second}/s, burst={self.rate.burst})"
