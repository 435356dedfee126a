"""A workload that fails, for the logging test of ``test_service.py`` (loaded by subprocesses)."""

from __future__ import annotations

import ambidex as ax


@ax.jobs.workload
async def explode() -> None:
    """Fail at once, with a traceback to log."""
    raise RuntimeError("explode was asked to")
