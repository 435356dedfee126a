"""The nodes of the durable workflow of ``test_workflow_durability``, run by real workers.

Each node performs its side effect first: one ``write`` of a line with
``O_APPEND`` to ``<log_dir>/effects-<pid>.log`` (lines of concurrent processes
never mix, and a ``kill -9`` cannot leave half a line)::

    <node> <idempotency key> <pid>

Then ``c`` waits while the file ``gate`` exists, so a test can kill its worker
mid-node; the test removes it to let the next attempt through. ``d`` returns
the pids of the processes that ran ``a``, ``b``, ``c`` and itself, so the
result shows which outputs were restored from an earlier attempt.

Loaded through ``durable_flow.yaml`` or ``durable_flow_workload.py``; only the
workers import it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import ambidex as ax


def effect(log_dir: str, node: str) -> None:
    key = ax.workflows.current_node_key()
    line = f"{node} {key} {os.getpid()}\n"
    path = Path(log_dir) / f"effects-{os.getpid()}.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


async def step_a(log_dir: str) -> dict[str, int]:
    effect(log_dir, "a")
    return {"pid": os.getpid()}


def step_b(log_dir: str) -> dict[str, int]:  # a plain def: on an I/O thread
    effect(log_dir, "b")
    return {"pid": os.getpid()}


def closed(gate: str) -> bool:
    """Whether the gate file exists (a sync helper: the check never blocks for long)."""
    return os.path.exists(gate)


async def step_c(log_dir: str, gate: str, a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    effect(log_dir, "c")
    while closed(gate):
        await asyncio.sleep(0.02)
    return {"a": a["pid"], "b": b["pid"], "c": os.getpid()}


async def step_d(log_dir: str, c: dict[str, int]) -> dict[str, int]:
    effect(log_dir, "d")
    return {**c, "d": os.getpid()}


def build() -> ax.Workflow:
    """The workflow of ``durable_flow.yaml``, in Python."""
    wf = ax.Workflow("durable-diamond", inputs={"log_dir": str, "gate": str})
    log_dir = wf.inputs.log_dir
    a = wf.node("a", step_a, input={"log_dir": log_dir})
    b = wf.node("b", step_b, input={"log_dir": log_dir})
    c = wf.node(
        "c",
        step_c,
        input={"log_dir": log_dir, "gate": wf.inputs.gate, "a": a.output, "b": b.output},
    )
    wf.node("d", step_d, input={"log_dir": log_dir, "c": c.output})
    return wf
