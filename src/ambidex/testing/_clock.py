"""A fake clock for tests: ambidex's waits take no real time, and time moves when the test says.

Virtual time starts at the current clock's reading when the clock is made (the
real clock's, or that of the fake clock whose block it is made in), so time read
through ``current_clock()`` does not go back when it is installed, and then moves
only when something sleeps on it or the test calls ``advance``.

With ``autojump=True`` (the default, like trio's ``MockClock(autojump_threshold=0)``)
a sleep never waits for the test. A task's ``asleep`` parks the task; once the
tasks ready on that loop have run (and parked their own sleeps), the clock jumps
to the earliest deadline of all parked tasks, on every loop, and wakes that
sleeper; after the woken task has taken its next step, the next one. So tasks
wake in deadline order and each reads its own deadline as the time, and five
tasks that each sleep 1 s at once move the clock by 1 s, not 5. A thread's
``sleep`` cannot know what other threads are about to do, so it moves the clock
to its own deadline and returns at once.

With ``autojump=False`` sleepers wait (for real) until ``advance`` moves the
clock past their deadline, for tests that look at the world mid-wait.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from contextlib import ExitStack
from types import TracebackType

from ambidex._clock import current_clock, use_clock

__all__ = ["FakeClock"]

# A parked task: (deadline in virtual seconds since the clock's start, tie-breaker, its
# loop, its future).
_Sleeper = tuple[float, int, asyncio.AbstractEventLoop, asyncio.Future[None]]


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
        # The current clock's reading, not the system's: a clock made inside
        # another fake clock's block starts where that one is, so time read
        # through current_clock() does not go back when it is installed.
        base = current_clock()
        self._start_monotonic = base.monotonic()
        self._start_time = base.time()
        self._elapsed = 0.0
        self._changed = threading.Condition()
        self._sleepers: list[_Sleeper] = []  # a heap, across every loop
        self._jumping = False  # a jump is scheduled on some loop
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
        """The virtual ``time.time()``: the current clock's time when made, plus ``elapsed_s``."""
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
            while self._sleepers and self._sleepers[0][0] <= self._elapsed:
                _, _, loop, fut = heapq.heappop(self._sleepers)
                due.append((loop, fut))
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
            heapq.heappush(self._sleepers, (deadline, next(self._order), loop, fut))
            jump = self.autojump and not self._jumping
            self._jumping |= jump
        if jump:
            # After the callbacks ready now: the tasks woken with this one
            # park their sleeps first, so the earliest deadline goes first.
            loop.call_soon(self._jump)
        await fut

    def _jump(self) -> None:
        """Give the earliest parked sleeper, on whichever loop, its turn (on its own loop)."""
        here = asyncio.get_running_loop()
        while True:
            with self._changed:
                if not self._sleepers:
                    self._jumping = False
                    return
                deadline, _, loop, fut = heapq.heappop(self._sleepers)
            if loop is here:
                self._turn(deadline, fut)
                return
            try:
                loop.call_soon_threadsafe(self._turn, deadline, fut)
                return
            except RuntimeError:  # its loop closed: nobody waits there any more
                continue

    def _turn(self, deadline: float, fut: asyncio.Future[None]) -> None:
        """On the sleeper's loop: move time to its deadline, wake it, jump again after its step."""
        if not fut.done():  # a cancelled sleeper (a timeout) moves no time
            with self._changed:
                self._move_to(deadline)
            fut.set_result(None)
        # Scheduled after the woken task's next step, so whatever it does at
        # its own deadline (read the time, sleep again) happens before time moves on.
        asyncio.get_running_loop().call_soon(self._jump)

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
