"""Fixtures of the server tests: a real job service on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _server_support import serve_in_thread

from ambidex.server import create_app


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    """A job service (built-in workloads, fresh SQLite file) served in a thread."""
    app = create_app(tmp_path / "jobs.sqlite", concurrency=4, lease_s=5.0)
    with serve_in_thread(app) as url:
        yield url
