"""The sync face (LLM) from plain code and threads, and one AsyncLLM used from several loops."""

from __future__ import annotations

import asyncio
import threading

import pytest

import ambidex as ax
from ambidex.llm import LLM, AsyncLLM, ChatResponse, LLMError, MockLLMServer


def test_sync_chat_returns_reply_when_called_from_sync_code(server: MockLLMServer) -> None:
    with LLM("mock-llm", base_url=server.url, cache="memory") as llm:
        reply = llm.chat("from plain code")
        text = llm.complete("from plain code")
        replies = llm.batch(["x", "y", "z"], max_in_flight=2)
        usage = llm.usage
    assert isinstance(reply, ChatResponse)
    assert text == reply.text
    assert [r.text.split("'")[1] for r in replies] == ["x", "y", "z"]
    assert usage.cache_hits == 1
    assert usage.requests == 4
    assert llm.closed
    assert repr(llm).startswith("LLM(model='mock-llm'")
    with pytest.raises(LLMError, match="is closed"):
        llm.chat("after close")


def test_sync_face_works_when_thread_has_a_running_loop(server: MockLLMServer) -> None:
    # What Jupyter does: the calling thread's own loop is running.
    outcome: list[object] = []

    async def notebook_cell() -> None:
        with LLM("mock-llm", base_url=server.url) as llm:
            outcome.append(llm.complete("inside a running loop"))

    def thread_main() -> None:
        try:
            asyncio.run(notebook_cell())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=thread_main)
    thread.start()
    thread.join(10)
    assert len(outcome) == 1
    assert isinstance(outcome[0], str)
    assert "inside a running loop" in outcome[0]


def test_sync_batch_returns_errors_in_place_when_asked(server: MockLLMServer) -> None:
    server.fail_next(1, status=422)
    with LLM("mock-llm", base_url=server.url) as llm:
        results = llm.batch(["a", "b"], max_in_flight=1, return_exceptions=True)
    assert isinstance(results[0], LLMError)
    assert isinstance(results[1], ChatResponse)


async def test_async_client_serves_several_loops_when_shared(server: MockLLMServer) -> None:
    llm = AsyncLLM("mock-llm", base_url=server.url)

    @ax.io
    async def on_runtime_loop(prompt: str) -> str:
        return await llm.complete(prompt)

    async def on_other_loop() -> str:
        return await llm.complete("asyncio.run in a thread")

    here = await llm.complete("the test's loop")
    there = await asyncio.to_thread(on_runtime_loop, "ambidex's loop thread")
    elsewhere = await asyncio.to_thread(asyncio.run, on_other_loop())
    # asyncio.run closed its pool when its loop shut down; two pools remain.
    assert len(llm._pools) == 2
    await llm.aclose()
    assert len(llm._pools) == 0
    assert "the test's loop" in here
    assert "ambidex's loop thread" in there
    assert "asyncio.run in a thread" in elsewhere


def test_sync_call_from_ambidex_loop_raises_runtime_error_when_made(
    server: MockLLMServer,
) -> None:
    with LLM("mock-llm", base_url=server.url) as llm:

        @ax.io
        async def wrong() -> str:
            return llm.complete("sync inside the loop")

        with pytest.raises(RuntimeError, match="aio"):
            wrong()

        @ax.io
        async def right() -> str:
            return await llm.aio.complete("async inside the loop")

        assert "async inside the loop" in right()
