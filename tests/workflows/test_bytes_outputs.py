"""Bytes in outputs and inputs: ``WorkflowResult.as_dict()`` and ``ambidex run --json``
write them as ``{"$base64": ...}``, whatever they hold, and never crash (issue 16).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic

import ambidex as ax

HERE = Path(__file__).resolve().parent


class Blob(pydantic.BaseModel):
    name: str
    data: bytes


@dataclasses.dataclass
class Frame:
    seq: int
    payload: bytes


def unbytes(value: Any) -> Any:
    """The JSON form read back: every ``{"$base64": ...}`` becomes its bytes again."""
    if isinstance(value, dict):
        if set(value) == {"$base64"}:
            return base64.b64decode(value["$base64"], validate=True)
        return {k: unbytes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unbytes(v) for v in value]
    return value


def test_bytes_outputs_and_inputs_are_base64_with_a_marker_and_round_trip() -> None:
    async def raw() -> bytes:
        return b"\xff\x00"

    async def text() -> bytes:
        return "café".encode()  # UTF-8, and still bytes: the same form

    async def nested(blob: bytes) -> dict[str, Any]:
        return {
            "list": [b"\x80", bytearray(b"\xfe"), "plain"],
            "model": Blob(name="b", data=b"\xff\xfe"),
            "frame": Frame(seq=1, payload=b"\x00\x81"),
            "view": memoryview(b"\xc3\x28"),
            "input": blob,
            b"\xff": "a bytes key",
        }

    wf = ax.Workflow("bytes", inputs={"blob": bytes})
    wf.node("raw", raw)
    wf.node("text", text)
    wf.node("nested", nested, input={"blob": wf.inputs.blob})
    result = wf.run({"blob": b"\xde\xad\xbe\xef"})

    data = result.as_dict()
    plain = json.loads(json.dumps(data))  # plain JSON, ASCII only
    nodes = plain["nodes"]
    assert nodes["raw"]["output"] == {"$base64": "/wA="}
    assert nodes["text"]["output"] == {"$base64": base64.b64encode("café".encode()).decode()}
    assert plain["inputs"] == {"blob": {"$base64": "3q2+7w=="}}
    assert unbytes(nodes["nested"]["output"]) == {
        "list": [b"\x80", b"\xfe", "plain"],
        "model": {"name": "b", "data": b"\xff\xfe"},
        "frame": {"seq": 1, "payload": b"\x00\x81"},
        "view": b"\xc3\x28",
        "input": b"\xde\xad\xbe\xef",
        "b'\\xff'": "a bytes key",  # a key cannot be an object: its repr
    }


def test_values_json_cannot_hold_are_shown_by_their_repr() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    async def odd() -> Any:
        loop: list[Any] = []
        loop.append(loop)  # a cycle
        return {"opaque": Opaque(), "set": {1}, "cycle": loop}

    wf = ax.Workflow("odd")
    wf.node("odd", odd)
    out = json.loads(json.dumps(wf.run().as_dict()))["nodes"]["odd"]["output"]
    assert out["opaque"] == "<opaque>"
    assert out["set"] == [1]
    assert "[...]" in json.dumps(out["cycle"])


def ambidex_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AMBIDEX_HOME": str(cwd / "home"), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "ambidex", "run", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )


def test_ambidex_run_json_writes_bytes_outputs(tmp_path: Path) -> None:
    flow = str(HERE / "bytes_flow.yaml")
    done = ambidex_run(flow, "--json", "--db", str(tmp_path / "runs.sqlite"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    nodes = json.loads(done.stdout)["nodes"]
    assert nodes["raw"]["output"] == {"$base64": "/wA="}
    assert unbytes(nodes["text"]["output"]) == "café".encode()
    # and the view for people prints them too
    shown = ambidex_run(flow, "--db", str(tmp_path / "runs.sqlite"), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "b'\\xff\\x00'" in shown.stdout
