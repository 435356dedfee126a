"""A fake clock for tests: ambidex's waits take no real time, and time moves when the test says.

Virtual time starts at the real clock's reading when the clock is made (so a
rate limit made earlier sees no jump back) and then moves only when something
sleeps on it or the test calls ``advance``.

With ``autojump=True`` (the default, like trio's ``MockClock(autojump_threshold=0)``)
a sleep never waits for the test. A task's ``asleep`` parks the task; once the
tasks ready on that loop have run (and parked their own sleeps), the clock jumps
to the earliest deadline and wakes that sleeper, then the next, in deadline
order: five tasks that each sleep 1 s at once move the clock by 1 s, not 5. A
thread's ``sleep`` cannot know what other threads are about to do, so it moves
the clock to its own deadline and returns at once.

With ``autojump=False`` sleepers wait (for real) until ``advance`` moves the
clock past their deadline, for tests that look at the world mid-wait.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from contextlib import ExitStack
from types import TracebackType

from ambidex._clock import use_clock

__all__ = ["FakeClock"]

# A parked task: (deadline as virtual seconds since the clock's start, tie-breaker, its future).
_Sleeper = tuple[float, int, asyncio.Future[None]]


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():  # a sleeper cancelled meanwhile (a timeout) stays cancelled
        fut.set_result(None)


class FakeClock:
    """Virtual time for ambidex's rate limits, retry waits and job leases.

    ``with FakeClock() as clock:`` installs it for the whole process (every
    thread and event loop, the runtime's too) and puts the real clock back on
    exit. Timeouts (``timeout_s``) keep real time: they bound real work.

    Args:
        autojump: sleeps return without real waiting, moving the clock to their
            end (see the module docstring). False: sleepers wait for ``advance``.
    """

    def __init__(self, *, autojump: bool = True) -> None:
        self.autojump = autojump
        self._start_monotonic = time.monotonic()
        self._start_time = time.time()
        self._elapsed = 0.0
        self._changed = threading.Condition()
        self._sleepers: dict[asyncio.AbstractEventLoop, list[_Sleeper]] = {}
        self._jumping: set[asyncio.AbstractEventLoop] = set()
        self._order = itertools.count()
        self._installed: ExitStack | None = None

    # -- reading -----------------------------------------------------------------------

    @property
    def elapsed_s(self) -> float:
        """Virtual seconds passed since the clock was made."""
        return self._elapsed

    def monotonic(self) -> float:
        """The virtual ``time.monotonic()``."""
        return self._start_monotonic + self._elapsed

    def time(self) -> float:
        """The virtual ``time.time()``: the wall time when made, plus ``elapsed_s``."""
        return self._start_time + self._elapsed

    # -- moving ------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking every sleeper whose deadline has come.

        Raises:
            ValueError: ``seconds`` is negative (time never goes back).
        """
        if not seconds >= 0:
            raise ValueError(f"a clock only moves forward, got advance({seconds!r})")
        due: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        with self._changed:
            self._elapsed += seconds
            self._changed.notify_all()
            for loop, heap in self._sleepers.items():
                while heap and heap[0][0] <= self._elapsed:
                    due.append((loop, heapq.heappop(heap)[2]))
        for loop, fut in due:
            try:
                loop.call_soon_threadsafe(_wake, fut)
            except RuntimeError:  # that loop closed: nothing is waiting there any more
                continue

    def _move_to(self, elapsed: float) -> None:
        # Caller holds self._changed.
        if elapsed > self._elapsed:
            self._elapsed = elapsed
            self._changed.notify_all()

    # -- sleeping ----------------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        """A thread's sleep: returns at once moving time to its end (autojump), or waits for it."""
        with self._changed:
            deadline = self._elapsed + max(seconds, 0.0)
            if self.autojump:
                self._move_to(deadline)
                return
            while self._elapsed < deadline:
                self._changed.wait()

    async def asleep(self, seconds: float) -> None:
        """A task's sleep: parked until virtual time reaches its end (see the module docstring)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._changed:
            deadline = self._elapsed + max(seconds, 0.0)
            heapq.heappush(self._sleepers.setdefault(loop, []), (deadline, next(self._order), fut))
            if self.autojump and loop not in self._jumping:
                self._jumping.add(loop)
                # After the callbacks ready now: the tasks woken with this one
                # park their sleeps first, so the earliest deadline goes first.
                loop.call_soon(self._jump, loop)
        await fut

    def _jump(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake ``loop``'s earliest sleeper, moving time to its deadline; again next iteration."""
        with self._changed:
            heap = self._sleepers.get(loop, [])
            while heap and heap[0][2].done():  # cancelled: it moves no time
                heapq.heappop(heap)
            if not heap:
                self._jumping.discard(loop)
                self._sleepers.pop(loop, None)
                return
            deadline, _, fut = heapq.heappop(heap)
            self._move_to(deadline)
        _wake(fut)
        # Scheduled after the woken task's next step, so a sleep it starts
        # now joins the line before the clock jumps again.
        loop.call_soon(self._jump, loop)

    # -- installing --------------------------------------------------------------------

    def __enter__(self) -> FakeClock:
        if self._installed is not None:
            raise RuntimeError("this FakeClock is installed already")
        stack = ExitStack()
        stack.enter_context(use_clock(self))
        self._installed = stack
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._installed = self._installed, None
        if stack is not None:
            stack.close()

    def __repr__(self) -> str:
        return f"FakeClock(elapsed_s={self._elapsed:g}, autojump={self.autojump})"
