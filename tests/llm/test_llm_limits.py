"""The runtime's shared ``llm`` limit, max_in_flight and rate limits bound real concurrency."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

import ambidex as ax
from _waiting import await_for
from ambidex.llm import DEFAULT_LLM_CAPACITY, LLM, AsyncLLM, MockLLMServer
from ambidex.llm._http import SHARD_REQUESTS, LoopPool
from ambidex.testing import FakeClock

LATENCY_MS = 100


@pytest.fixture(scope="module")
def slow_module_server() -> Iterator[MockLLMServer]:
    with MockLLMServer(latency_ms=LATENCY_MS, seed=5) as server:
        yield server


@pytest.fixture
def slow(slow_module_server: MockLLMServer) -> MockLLMServer:
    slow_module_server.reset()
    return slow_module_server


async def test_declared_limit_bounds_concurrency_when_batch_is_larger(
    slow: MockLLMServer,
) -> None:
    ax.limits(llm=3)
    async with AsyncLLM("mock-llm", base_url=slow.url) as llm:
        start = time.monotonic()
        replies = await llm.batch([f"q{i}" for i in range(12)])
        elapsed = time.monotonic() - start
    assert len(replies) == 12
    assert slow.stats().peak_in_flight == 3
    assert elapsed >= 4 * LATENCY_MS / 1000  # 12 / 3 rounds


async def test_default_limit_declared_when_runtime_has_none(slow: MockLLMServer) -> None:
    with pytest.raises(ax.UnknownLimitError):
        ax.limit("llm")
    async with AsyncLLM("mock-llm", base_url=slow.url) as llm:
        await llm.batch([f"q{i}" for i in range(DEFAULT_LLM_CAPACITY + 8)])
    limit = ax.limit("llm")
    assert isinstance(limit, ax.CapacityLimit)
    assert limit.capacity == DEFAULT_LLM_CAPACITY == 16
    assert slow.stats().peak_in_flight == DEFAULT_LLM_CAPACITY


async def test_clients_share_limit_when_used_from_sync_and_async_code(
    slow: MockLLMServer,
) -> None:
    ax.limits(llm=4)
    sync_llm = LLM("mock-llm", base_url=slow.url)
    results: list[int] = []
    thread = threading.Thread(
        target=lambda: results.append(len(sync_llm.batch([f"s{i}" for i in range(8)])))
    )
    async with (
        AsyncLLM("mock-llm", base_url=slow.url) as one,
        AsyncLLM("mock-llm", base_url=slow.url) as two,
    ):
        thread.start()
        batches = await asyncio.gather(
            one.batch([f"a{i}" for i in range(8)]), two.batch([f"b{i}" for i in range(8)])
        )
        await asyncio.to_thread(thread.join)
    sync_llm.close()
    assert [len(b) for b in batches] == [8, 8]
    assert results == [8]
    stats = slow.stats()
    assert stats.completions == 24
    assert stats.peak_in_flight == 4


async def test_max_in_flight_bounds_batch_when_below_the_limit(slow: MockLLMServer) -> None:
    async with AsyncLLM("mock-llm", base_url=slow.url) as llm:
        await llm.batch([f"q{i}" for i in range(6)], max_in_flight=2)
    assert slow.stats().peak_in_flight == 2


async def test_no_limit_leaves_batch_unbounded_when_limit_is_none(slow: MockLLMServer) -> None:
    async with AsyncLLM("mock-llm", base_url=slow.url, limit=None) as llm:
        await llm.batch([f"q{i}" for i in range(30)])
    assert slow.stats().peak_in_flight == 30
    with pytest.raises(ax.UnknownLimitError):
        ax.limit("llm")  # nothing was declared


async def test_limit_not_held_while_waiting_to_retry(slow: MockLLMServer) -> None:
    ax.limits(llm=1)
    slow.fail_next(1, status=429, retry_after_s=0.3)
    # A manual fake clock: the retry waits until the test moves time on, however
    # slow the machine, so the other request surely runs while it waits.
    with FakeClock(autojump=False) as clock:
        async with (
            AsyncLLM("mock-llm", base_url=slow.url, backoff_s=0.01) as retrying,
            AsyncLLM("mock-llm", base_url=slow.url) as other,
        ):
            first = asyncio.create_task(retrying.chat("gets a 429"))
            # the 429 comes back at once
            assert await await_for(lambda: retrying.usage.retries > 0)
            await other.chat("runs meanwhile")  # the limit of 1 is free
            assert not first.done()
            clock.advance(0.3)  # the Retry-After has passed
            await first
    assert slow.stats().requests == 3


async def test_rate_limit_spaces_requests_when_given(server: MockLLMServer) -> None:
    with FakeClock() as clock:
        async with AsyncLLM(
            "mock-llm", base_url=server.url, rate=ax.Rate(20, burst=1), limit=None
        ) as llm:
            await llm.batch([f"q{i}" for i in range(5)])
    # One token at once, then four more at 20 a second: exactly 0.2 virtual s.
    assert clock.elapsed_s == pytest.approx(4 / 20)
    assert server.stats().completions == 5


def test_pool_spreads_requests_over_small_clients_when_many_run_at_once() -> None:
    created: list[httpx.AsyncClient] = []

    def new_client() -> httpx.AsyncClient:
        created.append(httpx.AsyncClient())
        return created[-1]

    pool = LoopPool(new_client)
    shards = [pool.checkout() for _ in range(2 * SHARD_REQUESTS + 1)]
    assert len(created) == 3
    assert [s.in_flight for s in pool.shards] == [SHARD_REQUESTS, SHARD_REQUESTS, 1]
    pool.checkin(shards[0])
    assert pool.checkout() is shards[0]  # the first client with room is reused first
    asyncio.run(pool.aclose())
    assert all(c.is_closed for c in created)


async def test_batch_opens_one_client_per_few_requests_when_concurrent(
    slow: MockLLMServer,
) -> None:
    ax.limits(llm=12)
    async with AsyncLLM("mock-llm", base_url=slow.url) as llm:
        await llm.batch([f"q{i}" for i in range(12)])
        (pool,) = [entry[0] for entry in llm._pools._pools.values()]
        assert len(pool.shards) == 12 // SHARD_REQUESTS
        assert all(shard.in_flight == 0 for shard in pool.shards)
    assert slow.stats().peak_in_flight == 12
