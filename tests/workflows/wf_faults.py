"""Functions for the workflow files of the fault tests (``resume_flow.yaml``, ``bytes_flow.yaml``).

``ambidex run`` imports them by path (``wf_faults:flaky``) from the workflow
file's directory. Each appends its name to ``<workdir>/calls`` so a test can
tell which nodes ran, in which process run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path


def _log(workdir: str, name: str) -> None:
    with open(Path(workdir) / "calls", "a") as f:
        f.write(name + "\n")


def flaky(workdir: str) -> str:
    """Fails until ``<workdir>/fixed`` exists."""
    _log(workdir, "flaky")
    if not (Path(workdir) / "fixed").exists():
        raise RuntimeError("not fixed yet")
    return "fixed"


async def after(value: str | None, workdir: str) -> str:
    """Takes a moment, so that a run that stops early would catch it running."""
    _log(workdir, "after")
    await asyncio.sleep(0.05)
    return f"after {value}"


def raw_bytes() -> bytes:
    """Bytes that are not UTF-8."""
    return b"\xff\x00"


def text_bytes() -> bytes:
    """Bytes that happen to be UTF-8."""
    return b"caf\xc3\xa9"
