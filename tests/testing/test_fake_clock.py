"""The fake clock drives rate limits, retry waits and sleeps with no real sleeping."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time

import pytest

import ambidex as ax
from _waiting import await_for
from ambidex import _backoff
from ambidex.runtime import Backoff
from ambidex.testing import FakeClock, SystemClock, current_clock, use_clock

# Each test does at most a few ms of real work; a real sleep would cost 1 s or more.
WALL_S = 0.5


class _Wall:
    """Real elapsed time, to show that virtual seconds cost none."""

    def __enter__(self) -> _Wall:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


# -- installing --------------------------------------------------------------------------


def test_fake_clock_installed_for_the_block_when_entered() -> None:
    assert isinstance(current_clock(), SystemClock)
    with FakeClock() as clock:
        assert current_clock() is clock
    assert isinstance(current_clock(), SystemClock)


def test_fake_clock_starts_at_real_time_when_made() -> None:
    before_mono, before_wall = time.monotonic(), time.time()
    clock = FakeClock()
    assert before_mono <= clock.monotonic() <= time.monotonic()
    assert before_wall <= clock.time() <= time.time()
    clock.advance(60)
    assert clock.elapsed_s == 60
    assert clock.time() >= before_wall + 60


def test_blocks_ended_out_of_order_leave_no_ended_clock_installed() -> None:
    # Two blocks that end in the order they began (two tests on threads, a fixture
    # torn down after the block it wrapped): neither clock stays installed after.
    first, second = FakeClock(), FakeClock()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert current_clock() is second  # still inside its block
    second.__exit__(None, None, None)
    assert isinstance(current_clock(), SystemClock)


def test_a_clock_left_by_an_exception_in_its_block_is_taken_away() -> None:
    with pytest.raises(KeyError), FakeClock():
        raise KeyError("boom")
    assert isinstance(current_clock(), SystemClock)


def test_a_fake_clock_made_inside_another_starts_where_that_one_is() -> None:
    with FakeClock() as outer:
        outer.advance(3600)
        before = current_clock().monotonic(), current_clock().time()
        with FakeClock() as inner:
            assert (inner.monotonic(), inner.time()) == before  # time does not go back
            inner.advance(1)
        assert current_clock() is outer
        assert outer.monotonic() == before[0]


def test_use_clock_refuses_an_object_without_clock_methods() -> None:
    with pytest.raises(TypeError, match="not a clock"), use_clock(object()):  # type: ignore[arg-type]
        pass


def test_advance_refuses_to_go_back() -> None:
    with pytest.raises(ValueError, match="only moves forward"):
        FakeClock().advance(-1)


# -- rate limits -------------------------------------------------------------------------


async def test_rate_limit_spaces_async_callers_in_virtual_time() -> None:
    with _Wall() as wall, FakeClock() as clock:
        limit = ax.RateLimit("api", ax.Rate(10, burst=1))
        t0 = clock.monotonic()
        starts: list[float] = []

        async def call() -> None:
            await limit.acquire()
            starts.append(clock.monotonic() - t0)

        await asyncio.gather(*(call() for _ in range(11)))
    assert wall.seconds < WALL_S
    # The first token is there; each later caller starts 0.1 virtual s after the last.
    assert starts == pytest.approx([k / 10 for k in range(11)])
    assert clock.elapsed_s == pytest.approx(1.0)


def test_rate_limit_owes_no_virtual_seconds_in_real_time_after_the_clock_is_gone() -> None:
    limit = ax.RateLimit("api", ax.Rate(1, burst=1))  # made at import, used by many tests

    async def five_at_once() -> None:
        await asyncio.gather(*(limit.acquire() for _ in range(5)))

    with FakeClock() as clock:
        asyncio.run(five_at_once())  # 4 tokens reserved ahead, slept in virtual time
    assert clock.elapsed_s == pytest.approx(4.0)
    with _Wall() as wall:
        limit.acquire_sync()  # on the real clock: the bucket is new, not 5 s in debt
    assert wall.seconds < WALL_S


def test_rate_limit_starts_full_under_each_new_fake_clock() -> None:
    limit = ax.RateLimit("api", ax.Rate(10, burst=1))
    for _ in range(2):  # two tests in a row, one limit: the same virtual time in both
        with FakeClock() as clock:
            for _ in range(11):
                limit.acquire_sync()
        assert clock.elapsed_s == pytest.approx(1.0)


def test_rate_limit_spaces_sync_callers_on_threads_in_virtual_time() -> None:
    with _Wall() as wall, FakeClock() as clock:
        limit = ax.RateLimit("api", ax.Rate(10, burst=2))
        threads = [threading.Thread(target=limit.acquire_sync) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert wall.seconds < WALL_S
    # Two tokens of burst, then four more at 10 a second.
    assert clock.elapsed_s == pytest.approx(0.4)


async def test_runtime_rate_limit_spaces_marked_calls_when_the_clock_is_fake() -> None:
    with _Wall() as wall, FakeClock() as clock:
        ax.limits(api=ax.Rate(5, burst=1))

        @ax.io(limit="api")
        async def hit(i: int) -> float:
            return clock.elapsed_s

        # Half from async code, half from sync code on threads: one bucket.
        sync_calls = [asyncio.to_thread(hit, i) for i in range(3)]
        times = await asyncio.gather(*(hit.aio(i) for i in range(3)), *sync_calls)
        with ax.limit("api"):  # a manual holder waits its turn too
            pass
    assert wall.seconds < WALL_S
    assert sorted(times) == pytest.approx([k / 5 for k in range(6)])
    assert clock.elapsed_s == pytest.approx(6 / 5)


# -- retry waits -------------------------------------------------------------------------


async def test_backoff_sleeps_its_delays_on_the_fake_clock() -> None:
    backoff = Backoff(base_s=1.0, max_s=60.0, jitter="equal")
    with _Wall() as wall, FakeClock() as clock:
        delays = [await backoff.asleep(n, random.Random(1)) for n in range(1, 6)]
        delays += [backoff.sleep(6, random.Random(2))]
    assert wall.seconds < WALL_S
    expected = [backoff.delay_s(n, random.Random(1)) for n in range(1, 6)]
    expected += [backoff.delay_s(6, random.Random(2))]
    assert delays == expected
    assert clock.elapsed_s == pytest.approx(sum(expected))
    assert sum(expected) > 30  # 1 + 2 + 4 + 8 + 16 + 32 s of ceilings, halved at least


async def test_marked_function_retries_wait_their_backoff_in_virtual_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_backoff, "_rng", random.Random(5))
    stamps: list[float] = []

    with _Wall() as wall, FakeClock() as clock:

        @ax.io(retries=3, backoff_s=10, max_backoff_s=100)
        async def flaky() -> int:
            stamps.append(clock.elapsed_s)
            if len(stamps) < 4:
                raise ConnectionError("transient")
            return len(stamps)

        assert await flaky.aio() == 4
    assert wall.seconds < WALL_S
    rng = random.Random(5)  # full jitter: retry n waits uniform in [0, 10 * 2**(n-1)]
    waits = [rng.uniform(0, 10), rng.uniform(0, 20), rng.uniform(0, 40)]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps == pytest.approx(waits)
    assert clock.elapsed_s == pytest.approx(sum(waits))


# -- sleeping ----------------------------------------------------------------------------


async def test_concurrent_sleeps_overlap_and_wake_in_deadline_order() -> None:
    woke: list[tuple[float, float]] = []
    with FakeClock() as clock:

        async def nap(seconds: float) -> None:
            await clock.asleep(seconds)
            woke.append((seconds, clock.elapsed_s))

        await asyncio.gather(nap(3), nap(1), nap(2), nap(1))
    # Four sleeps at once take as long as the longest, as real ones would.
    assert woke == [(1, 1), (1, 1), (2, 2), (3, 3)]
    assert clock.elapsed_s == 3


async def test_sleep_started_by_a_woken_task_joins_the_line() -> None:
    with FakeClock() as clock:
        order: list[str] = []

        async def twice() -> None:
            await clock.asleep(1)
            await clock.asleep(1)
            order.append(f"twice@{clock.elapsed_s:g}")

        async def once() -> None:
            await clock.asleep(3)
            order.append(f"once@{clock.elapsed_s:g}")

        await asyncio.gather(once(), twice())
    assert order == ["twice@2", "once@3"]


async def test_cancelled_sleep_moves_no_time() -> None:
    with FakeClock() as clock:
        sleeper = asyncio.create_task(clock.asleep(100))
        await asyncio.sleep(0)  # parked, the jump not yet taken
        sleeper.cancel()
        await clock.asleep(1)
        with pytest.raises(asyncio.CancelledError):
            await sleeper
    assert clock.elapsed_s == 1


def test_a_loop_stopped_with_a_turn_pending_stalls_no_later_sleep() -> None:
    with FakeClock() as clock:
        loop = asyncio.new_event_loop()
        try:

            async def leave_a_sleeper() -> None:
                sleeper = loop.create_task(clock.asleep(10))
                await asyncio.sleep(0)
                assert not sleeper.done()

            # The sleeper's turn is taken as the loop stops: the next jump stays queued
            # on a loop that is not running.
            loop.run_until_complete(leave_a_sleeper())

            async def later() -> float:
                await clock.asleep(1)
                await clock.asleep(100)
                return clock.elapsed_s

            with _Wall() as wall:
                assert asyncio.run(asyncio.wait_for(later(), timeout=5)) == 111
            assert wall.seconds < WALL_S
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()


@pytest.mark.timeout(30)
async def test_a_sync_call_from_async_code_is_not_held_by_a_sleeper_of_its_loop() -> None:
    with FakeClock() as clock:
        ax.limits(api=ax.Rate(1, burst=1))

        @ax.io(limit="api")
        async def hit(i: int) -> float:
            return clock.elapsed_s

        assert await hit.aio(0) == 0  # the burst token
        stop = False

        async def tick() -> None:  # a sleeper of this loop
            while not stop:
                await clock.asleep(0.25)

        ticker = asyncio.ensure_future(tick())
        await asyncio.sleep(0)  # parked: the clock's next turn is queued on this loop
        # A sync call blocks this loop while the runtime's loop runs it, and its rate
        # limit sleeps there: the turn must not wait for this loop (the code before the
        # fix hung here for good: the timeout mark ends it).
        with _Wall() as wall:
            assert hit(9) == 1.0
        stop = True
        await ticker
    assert wall.seconds < 10  # a turn is taken back after 1 s of real time


async def test_manual_clock_holds_sleepers_until_advanced() -> None:
    with FakeClock(autojump=False) as clock:
        task = asyncio.create_task(clock.asleep(10))
        thread_done = threading.Event()
        thread = threading.Thread(target=lambda: (clock.sleep(5), thread_done.set()))
        thread.start()
        assert await await_for(lambda: clock.sleepers == 2)  # both parked: the task and thread
        assert not task.done()
        assert not thread_done.is_set()
        clock.advance(5)
        thread.join(timeout=5)
        assert thread_done.is_set()
        await asyncio.sleep(0.01)
        assert not task.done()
        clock.advance(5)
        await asyncio.wait_for(task, timeout=5)
    assert clock.elapsed_s == 10


async def test_manual_clock_holds_a_rate_limited_caller_until_advanced() -> None:
    with FakeClock(autojump=False) as clock:
        limit = ax.RateLimit("api", ax.Rate(1, burst=1))
        await limit.acquire()  # the burst token: at once
        second = asyncio.create_task(limit.acquire())
        assert await await_for(lambda: limit.statistics().waiting == 1)
        clock.advance(0.5)
        await asyncio.sleep(0.01)
        assert not second.done()
        clock.advance(0.5)
        await asyncio.wait_for(second, timeout=5)
    assert limit.statistics().waiting == 0
