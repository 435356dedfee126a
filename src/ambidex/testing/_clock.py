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

The turn never waits on a loop that cannot take it: a sleeper whose loop is
stopped (between two ``run_until_complete``) has its time come and is woken for
when that loop runs again, and a turn left for a second of real time on a loop
that is running but blocked (a sync call made from async code, waiting there for
work on another loop) is taken back by a loop with sleepers of its own.

With ``autojump=False`` sleepers wait (for real) until ``advance`` moves the
clock past their deadline, for tests that look at the world mid-wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
import weakref
from contextlib import ExitStack
from types import TracebackType

from ambidex._clock import current_clock, use_clock

__all__ = ["FakeClock"]

# A parked task: (deadline in virtual seconds since the clock's start, tie-breaker, its
# loop, its future).
_Sleeper = tuple[float, int, asyncio.AbstractEventLoop, asyncio.Future[None]]


# How long (real seconds) a loop handed the turn has to take it before the turn comes
# back: far beyond a loop's reaction time, short enough that a blocked loop costs little.
_HANDOVER_S = 1.0


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():  # a sleeper cancelled meanwhile (a timeout) stays cancelled
        fut.set_result(None)


def _wake_on(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> None:
    """Wake ``fut`` on its own loop, whenever that runs (a closed loop's sleepers are gone)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_wake, fut)


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
        self._waiting_threads = 0  # threads in sleep() under a manual clock
        # The turn (autojump): the token of the one jump (or handed-over turn) scheduled,
        # on some loop, None when no sleeper is parked. A step holding an older token
        # (its turn taken over or taken back) does nothing.
        self._chain: object | None = None
        self._chain_loop: asyncio.AbstractEventLoop | None = None
        self._handed = False  # the turn is a sleeper's, handed to its loop (_take_back)
        # The loops a _watchdog runs on (weak: a closed loop's watch ends with it).
        self._watched: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._order = itertools.count()
        self._installed: ExitStack | None = None

    # -- reading -----------------------------------------------------------------------

    @property
    def elapsed_s(self) -> float:
        """Virtual seconds passed since the clock was made."""
        return self._elapsed

    @property
    def sleepers(self) -> int:
        """Tasks and threads asleep on this clock now, waiting for time to reach their end.

        What a test waits for before ``advance``: a sleeper that has not parked
        yet would count its sleep from the time after the advance.
        """
        with self._changed:
            parked = sum(1 for *_, fut in self._sleepers if not fut.done())
            return parked + self._waiting_threads

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
            self._waiting_threads += 1
            try:
                while self._elapsed < deadline:
                    self._changed.wait()
            finally:
                self._waiting_threads -= 1

    async def asleep(self, seconds: float) -> None:
        """A task's sleep: parked until virtual time reaches its end (see the module docstring)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._changed:
            deadline = self._elapsed + max(seconds, 0.0)
            heapq.heappush(self._sleepers, (deadline, next(self._order), loop, fut))
            # A turn left on a loop that stopped (its jump queued when run_until_complete
            # returned) would never come: this loop takes the turn over.
            chain = self.autojump and (
                self._chain is None
                or (self._chain_loop is not None and not self._chain_loop.is_running())
            )
            if chain:
                token = self._pass_turn(loop)
            elif self.autojump and self._chain_loop is not loop and loop not in self._watched:
                self._watched.add(loop)
                loop.call_later(_HANDOVER_S, self._watchdog, self._chain)
        if chain:
            # After the callbacks ready now: the tasks woken with this one
            # park their sleeps first, so the earliest deadline goes first.
            loop.call_soon(self._jump, token)
        await fut

    def _pass_turn(self, loop: asyncio.AbstractEventLoop | None, *, handed: bool = False) -> object:
        """A new token for the turn, now held on ``loop`` (caller holds self._changed)."""
        token = self._chain = object()
        self._chain_loop = loop
        self._handed = handed
        return token

    def _watchdog(self, seen: object) -> None:
        """On a loop with sleepers: take over a turn stuck on a blocked loop.

        A jump queued on a loop that is running but blocked (a sync call made from
        async code, waiting there for work on another loop, perhaps for one of this
        loop's sleepers) would hold every sleeper's time. A turn that has not moved
        on for a second of real time is taken over here.
        """
        here = asyncio.get_running_loop()
        with self._changed:
            if self._chain is None or self._chain_loop is here:
                self._watched.discard(here)
                return
            if self._chain is not seen or self._handed:  # it moved on (a handover has its own)
                here.call_later(_HANDOVER_S, self._watchdog, self._chain)
                return
            self._watched.discard(here)
            token = self._pass_turn(here)
        self._jump(token)

    def _jump(self, token: object) -> None:
        """Give the earliest parked sleeper, on whichever loop, its turn (on its own loop)."""
        here = asyncio.get_running_loop()
        while True:
            with self._changed:
                if token is not self._chain:
                    return  # a turn taken over or taken back meanwhile
                if not self._sleepers:
                    self._chain = self._chain_loop = None
                    return
                deadline, _, loop, fut = heapq.heappop(self._sleepers)
                if loop is not here and not loop.is_running():
                    # A stopped loop (between two run_until_complete) would hold the
                    # turn, and every sleeper's on every loop, until it runs again,
                    # perhaps never. Its sleeper's time comes all the same: it is woken
                    # for when its loop runs, and the turn stays here.
                    if not fut.done():
                        self._move_to(deadline)
                    _wake_on(loop, fut)
                    continue
                if loop is not here:
                    token = self._pass_turn(loop, handed=True)
            if loop is here:
                self._turn(deadline, fut, token)
                return
            try:
                loop.call_soon_threadsafe(self._turn, deadline, fut, token)
            except RuntimeError:  # its loop closed: nobody waits there any more
                with self._changed:
                    token = self._pass_turn(here)
                continue
            # A running loop may be blocked (a sync call made from async code waits
            # there for work on another loop, perhaps for a sleeper of this one): if it
            # has not taken its turn by then, the turn comes back here.
            here.call_later(_HANDOVER_S, self._take_back, token, deadline, loop, fut)
            return

    def _turn(self, deadline: float, fut: asyncio.Future[None], token: object) -> None:
        """On the sleeper's loop: move time to its deadline, wake it, jump again after its step."""
        loop = asyncio.get_running_loop()
        with self._changed:
            mine = token is self._chain
            if mine:
                token = self._pass_turn(loop)
                if not fut.done():  # a cancelled sleeper (a timeout) moves no time
                    self._move_to(deadline)
        _wake(fut)  # taken back meanwhile: its time came then, and the turn went on
        if mine:
            # Scheduled after the woken task's next step, so whatever it does at its
            # own deadline (read the time, sleep again) happens before time moves on.
            loop.call_soon(self._jump, token)

    def _take_back(
        self,
        token: object,
        deadline: float,
        loop: asyncio.AbstractEventLoop,
        fut: asyncio.Future[None],
    ) -> None:
        """The turn handed to ``loop`` was not taken in time: wake its sleeper there, go on here."""
        with self._changed:
            if token is not self._chain:
                return  # taken
            token = self._pass_turn(asyncio.get_running_loop())
            if not fut.done():
                self._move_to(deadline)
        _wake_on(loop, fut)
        self._jump(token)

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
