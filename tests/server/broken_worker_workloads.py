"""Workloads for ``test_service.py`` that also break the worker's recovery loop (as a bug would).

Loaded only by a subprocess (``--workloads``): it replaces ``JobWorker._recovery``
there with a loop that raises after half a second.
"""

from __future__ import annotations

import asyncio

import ambidex as ax
from ambidex.jobs import JobWorker


async def _broken_recovery(self: JobWorker) -> None:
    await asyncio.sleep(0.5)
    raise RuntimeError("a bug in lease recovery")


JobWorker._recovery = _broken_recovery  # type: ignore[method-assign]


@ax.jobs.workload
async def nap(seconds: float = 30.0) -> None:
    """Sleep: a job the worker is running when it breaks."""
    await asyncio.sleep(seconds)
