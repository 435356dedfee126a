"""A traced process exits promptly when its OTLP collector is down.

With ``AMBIDEX_OTEL=1`` and no collector listening, the provider ambidex builds
flushed its spans at exit with the exporter's retries (about 7 s of backoff, up
to its 10 s timeout per batch): every traced command hung that long at exit.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import ambidex as ax
from ambidex import _observe
assert _observe.on

@ax.io
async def work() -> int:
    return 1

assert work() == 1
print("done", flush=True)
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


def test_exit_with_the_collector_down_is_prompt() -> None:
    env = {
        **os.environ,
        "AMBIDEX_OTEL": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("OTEL_BSP_EXPORT_TIMEOUT", None)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "done" in done.stdout
    assert took < 5.5, f"exit took {took:.1f} s"  # was ~8 s (the exporter's retries)
