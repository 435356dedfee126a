"""The response cache: keyed on the whole request, in memory (TTL, LRU) and in SQLite."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ambidex.llm import (
    LLM,
    AsyncLLM,
    LLMConfigError,
    MemoryCache,
    MockLLMServer,
    SQLiteCache,
    _cache,
)
from ambidex.llm._cache import cache_key


async def test_memory_cache_sends_no_request_when_request_repeats(server: MockLLMServer) -> None:
    async with AsyncLLM("mock-llm", base_url=server.url, cache="memory") as llm:
        first = await llm.chat("cached question", temperature=0)
        second = await llm.chat("cached question", temperature=0)
        usage = llm.usage
    assert not first.cached
    assert second.cached
    assert second.text == first.text
    assert second.usage == first.usage
    assert server.stats().requests == 1
    assert usage.requests == 1
    assert usage.cache_hits == 1
    assert usage.completion_tokens == first.usage.completion_tokens  # hits cost nothing


async def test_cache_misses_when_any_part_of_the_request_differs(server: MockLLMServer) -> None:
    async with AsyncLLM("mock-llm", base_url=server.url, cache=MemoryCache()) as llm:
        await llm.chat("q", temperature=0)
        await llm.chat("q", temperature=0.5)
        await llm.chat("q", temperature=0, model="mock-llm-large")
        await llm.chat([{"role": "system", "content": "s"}, {"role": "user", "content": "q"}])
        await llm.chat("q", temperature=0)
    assert server.stats().requests == 4


class FakeTime:
    """Stands in for the cache module's ``time``: both clocks move only when told."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(_cache, "time", fake)
    return fake


def test_cache_key_ignores_key_order_and_streaming_switches() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0}
    reordered = {"temperature": 0, "messages": [{"content": "x", "role": "user"}], "model": "m"}
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    assert cache_key(body) == cache_key(reordered) == cache_key(streamed)
    assert len(cache_key(body)) == 64
    assert cache_key(body) != cache_key({**body, "temperature": 1})


async def test_cached_raw_is_a_copy_when_caller_mutates_it(server: MockLLMServer) -> None:
    async with AsyncLLM("mock-llm", base_url=server.url, cache="memory") as llm:
        first = await llm.chat("mutable")
        first.raw["choices"][0]["message"]["content"] = "tampered"
        second = await llm.chat("mutable")
    assert second.cached
    assert second.text == first.text != "tampered"


def test_memory_cache_expires_entries_when_ttl_passes(clock: FakeTime) -> None:
    cache = MemoryCache(ttl_s=0.05)
    cache.set_now("k", "v")
    assert cache.get_now("k") == "v"
    clock.now += 0.049
    assert cache.get_now("k") == "v"
    clock.now += 0.002
    assert cache.get_now("k") is None
    assert len(cache) == 0


def test_memory_cache_evicts_least_recently_used_when_full() -> None:
    cache = MemoryCache(max_entries=2, ttl_s=None)
    cache.set_now("a", "1")
    cache.set_now("b", "2")
    assert cache.get_now("a") == "1"  # a is now the most recently used
    cache.set_now("c", "3")
    assert cache.get_now("b") is None
    assert (cache.get_now("a"), cache.get_now("c")) == ("1", "3")


def test_cache_options_are_checked_when_constructed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryCache(max_entries=0)
    with pytest.raises(ValueError, match="ttl_s"):
        SQLiteCache(tmp_path / "c.db", ttl_s=0)
    with pytest.raises(LLMConfigError, match="cache must be"):
        AsyncLLM("m", base_url="http://127.0.0.1:9/v1", cache="disk")  # type: ignore[arg-type]


async def test_sqlite_cache_survives_new_client_when_same_file(
    server: MockLLMServer, tmp_path: Path
) -> None:
    path = tmp_path / "cache" / "llm.sqlite"  # the directory is created
    async with AsyncLLM("mock-llm", base_url=server.url, cache=SQLiteCache(path)) as llm:
        first = await llm.chat("persist me")
    async with AsyncLLM("mock-llm", base_url=server.url, cache=SQLiteCache(path)) as fresh:
        second = await fresh.chat("persist me")
        assert fresh.usage.cache_hits == 1
    assert second.cached
    assert second.text == first.text
    assert server.stats().requests == 1
    with SQLiteCache(path) as cache:
        assert len(cache) == 1


class _ThreadRecordingCache(SQLiteCache):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.threads: set[str] = set()

    def get_blocking(self, key: str) -> str | None:
        self.threads.add(threading.current_thread().name)
        return super().get_blocking(key)

    def set_blocking(self, key: str, value: str) -> None:
        self.threads.add(threading.current_thread().name)
        super().set_blocking(key, value)


async def test_sqlite_cache_runs_on_io_threads_when_used_from_a_loop(
    server: MockLLMServer, tmp_path: Path
) -> None:
    cache = _ThreadRecordingCache(tmp_path / "c.db")
    async with AsyncLLM("mock-llm", base_url=server.url, cache=cache) as llm:
        await llm.chat("off the loop")
        await llm.chat("off the loop")
    assert cache.threads
    assert all(name.startswith("ambidex-io-") for name in cache.threads)


def test_sqlite_cache_expires_entries_when_ttl_passes(tmp_path: Path, clock: FakeTime) -> None:
    with SQLiteCache(tmp_path / "c.db", ttl_s=0.05) as cache:
        cache.set_blocking("k", "v")
        assert cache.get_blocking("k") == "v"
        clock.now += 0.049
        assert cache.get_blocking("k") == "v"
        clock.now += 0.002
        assert cache.get_blocking("k") is None


def test_sqlite_cache_logs_and_misses_when_file_unusable(
    tmp_path: Path, server: MockLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache's directory should be")
    with LLM("mock-llm", base_url=server.url, cache=SQLiteCache(blocker / "c.db")) as llm:
        assert llm.chat("still answered").text
    assert "could not read the LLM response cache" in caplog.text
    assert "could not write the LLM response cache" in caplog.text
