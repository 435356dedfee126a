"""Workloads every job service has, so that ``ambidex serve`` is useful out of the box."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from ambidex.jobs._workloads import JobContext, WorkloadRegistry
from ambidex.runtime import cpu

__all__ = ["register"]


async def sleep(ctx: JobContext, seconds: float = 1.0, steps: int = 10) -> dict[str, Any]:
    """Wait ``seconds`` in ``steps`` steps, reporting progress after each (io work)."""
    if seconds < 0 or steps < 1:
        raise ValueError("seconds must be >= 0 and steps >= 1")
    for i in range(steps):
        await asyncio.sleep(seconds / steps)
        ctx.progress((i + 1) / steps, f"step {i + 1} of {steps}")
    return {"slept_s": seconds, "steps": steps}


async def echo(value: Any = None) -> Any:
    """Return the input value unchanged (a trivial job, for tests and benchmarks)."""
    return value


@cpu
def primes(n: int = 1_000_000) -> dict[str, int]:
    """Count the primes below ``n`` with a plain-Python sieve (cpu work, in a worker process)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    if n < 3:
        return {"n": n, "primes": 0}
    sieve = bytearray([1]) * n
    sieve[0:2] = b"\x00\x00"
    for i in range(2, math.isqrt(n - 1) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, n, i)))
    return {"n": n, "primes": sum(sieve)}


def register(registry: WorkloadRegistry) -> None:
    """Add ``sleep``, ``echo`` and ``primes`` to ``registry``."""
    registry.register(sleep, timeout_s=3600)
    registry.register(echo)
    registry.register(primes, timeout_s=600)
