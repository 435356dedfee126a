"""Shared fixtures: every test gets a fresh default runtime, closed after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import ambidex as ax


@pytest.fixture(autouse=True)
def fresh_runtime() -> Iterator[ax.Runtime]:
    """A new default runtime per test (small pools keep tests quick), closed afterwards."""
    with ax.Runtime(io_threads=8, cpu_workers=2) as rt:
        yield rt
