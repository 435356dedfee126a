"""Tools for testing code that uses ambidex, as trio ships MockClock and httpx MockTransport.

::

    import ambidex as ax

    def test_a_rate_limited_batch_takes_a_second_of_virtual_time():
        with ax.testing.FakeClock() as clock:        # no real sleeping
            ax.limits(api=ax.Rate(10))
            for _ in range(11):
                with ax.limit("api"):
                    pass
            assert clock.elapsed_s == pytest.approx(1.0)

    async def test_a_job_runs():
        async with ax.testing.open_job_manager() as manager:   # a throwaway store
            await manager.submit("sleep", {"seconds": 0})
            [job] = await ax.testing.drain(manager)            # runs it here, now

    def test_a_reply():
        with ax.testing.mock_llm() as llm:           # a real server on loopback
            llm.reply_next("hello")
            ...

* ``FakeClock``: virtual time for rate limits, retry waits (``Backoff``, the
  runtime's ``retries``, the LLM client's, workflow nodes') and job leases.
* ``temporary_store``, ``open_job_manager``, ``drain``: a job store that
  vanishes after the test, and a worker that runs the queue to empty, in-process.
* ``mock_llm``: the mock OpenAI-compatible server for one block.

The job and LLM tools load their packages on first use. See docs/testing.md.
"""

import typing

from ambidex._clock import Clock, SystemClock, current_clock, use_clock
from ambidex.testing._clock import FakeClock

if typing.TYPE_CHECKING:
    from ambidex.testing._jobs import drain, drain_sync, open_job_manager, temporary_store
    from ambidex.testing._llm import MockLLM, mock_llm

_LAZY = {
    "MockLLM": "ambidex.testing._llm",
    "mock_llm": "ambidex.testing._llm",
    "drain": "ambidex.testing._jobs",
    "drain_sync": "ambidex.testing._jobs",
    "open_job_manager": "ambidex.testing._jobs",
    "temporary_store": "ambidex.testing._jobs",
}


def __getattr__(name: str) -> typing.Any:
    """The job and LLM tools, imported on first use (SQLAlchemy, FastAPI and uvicorn are slow)."""
    import importlib

    if name not in _LAZY:
        raise AttributeError(f"module 'ambidex.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily imported ones included."""
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Clock",
    "FakeClock",
    "MockLLM",
    "SystemClock",
    "current_clock",
    "drain",
    "drain_sync",
    "mock_llm",
    "open_job_manager",
    "temporary_store",
    "use_clock",
]
