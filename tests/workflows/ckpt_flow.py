"""A checkpointed workflow that a test runs in a subprocess, crashes, and resumes.

Nodes ``a`` and ``b`` append their names to ``<workdir>/counter`` (so a test
can tell whether they ran again) and return a ``Part`` carrying the pid of the
process they ran in. Node ``c`` kills its process with ``os._exit(1)`` unless
``<workdir>/allow_c`` exists; ``d`` runs after ``c``.

``build_fan_in`` is the same story with twenty roots and a sink that dies at once.

Run as ``python -c "import ckpt_flow; ckpt_flow.main()" SHAPE DB WORKDIR RUN_ID CRASH_DELAY_S``
with SHAPE ``abcd`` or ``fan-in``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pydantic

import ambidex as ax

NAME = "checkpointed"


class Part(pydantic.BaseModel):
    value: int
    pid: int


def _log(workdir: str, name: str) -> None:
    with open(Path(workdir) / "counter", "a") as f:
        f.write(name + "\n")


async def step_a(workdir: str) -> Part:
    _log(workdir, "a")
    return Part(value=2, pid=os.getpid())


def step_b(workdir: str) -> Part:  # a sync node: runs on an I/O thread
    _log(workdir, "b")
    return Part(value=3, pid=os.getpid())


async def step_c(x: Part, y: Part, workdir: str, crash_delay_s: float) -> dict[str, int]:
    _log(workdir, "c")
    if not (Path(workdir) / "allow_c").exists():
        if crash_delay_s:
            await asyncio.sleep(crash_delay_s)
        os._exit(1)  # the whole process dies: no cleanup, no exception
    return {"total": x.value + y.value}


async def step_d(total: int, workdir: str) -> int:
    _log(workdir, "d")
    return total * 10


def build(name: str = NAME) -> ax.Workflow:
    wf = ax.Workflow(name, inputs={"workdir": str, "crash_delay_s": float})
    workdir = wf.inputs.workdir
    a = wf.node("a", step_a, input={"workdir": workdir})
    b = wf.node("b", step_b, input={"workdir": workdir})
    c = wf.node(
        "c",
        step_c,
        input={
            "x": a.output,
            "y": b.output,
            "workdir": workdir,
            "crash_delay_s": wf.inputs.crash_delay_s,
        },
    )
    wf.node("d", step_d, input={"total": c.output.total, "workdir": workdir})
    return wf


async def root(i: int, workdir: str) -> int:
    _log(workdir, f"root{i}")
    return i


async def sink(total: int, workdir: str) -> int:
    _log(workdir, "sink")
    if not (Path(workdir) / "allow_c").exists():
        os._exit(1)
    return total


def build_fan_in(n: int = 20) -> ax.Workflow:
    """``n`` instant roots, then a sink that dies the moment it starts."""
    wf = ax.Workflow("fan-in", inputs={"workdir": str})
    names = [
        wf.node(f"root{i}", root, input={"i": i, "workdir": wf.inputs.workdir}).name
        for i in range(n)
    ]
    wf.node(
        "sink",
        sink,
        input=lambda o: {"total": sum(o[name] for name in names), "workdir": o.inputs["workdir"]},
        after=names,
    )
    return wf


def main() -> None:
    shape, db, workdir, run_id, crash_delay_s = sys.argv[1:6]
    if shape == "fan-in":
        build_fan_in().run({"workdir": workdir}, checkpoint=db, run_id=run_id)
        return
    build().run(
        {"workdir": workdir, "crash_delay_s": float(crash_delay_s)},
        checkpoint=db,
        run_id=run_id,
    )
