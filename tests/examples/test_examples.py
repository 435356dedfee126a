"""The examples run end to end against a real mock LLM server on loopback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import ambidex as ax
from ambidex.llm import MockLLMServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def llm_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockLLMServer]:
    with MockLLMServer(latency_ms=20) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        yield server


@pytest.fixture
def repo_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.chdir(ROOT)


def test_emissions_workflow_from_the_cli(llm_server: MockLLMServer, tmp_path: Path) -> None:
    env = {**os.environ, "AMBIDEX_HOME": str(tmp_path)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ambidex",
            "run",
            "examples/emissions/workflow.yaml",
            "-i",
            "litres=100",
            "-i",
            "kwh=200",
            "-i",
            "region=UK",
            "--json",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["succeeded"]
    report = result["nodes"]["report"]["output"]
    assert report["total_kg_co2"] == pytest.approx(100 * 2.68 + 200 * 0.21)
    assert report["title"] == "Emissions in UK"
    assert report["summary"]  # written by the (mock) LLM
    assert llm_server.stats().requests >= 1
    assert (tmp_path / "runs.sqlite").exists()


def test_emissions_unknown_region_is_a_clear_failure(
    llm_server: MockLLMServer, repo_on_path: None
) -> None:
    wf = ax.Workflow.from_yaml("examples/emissions/workflow.yaml")
    with pytest.raises(ax.WorkflowError, match="no grid factor for region 'XX'") as info:
        wf.run({"litres": 1, "region": "XX"})
    assert info.value.node == "grid"


def test_research_workflow_uses_all_three_executors(
    llm_server: MockLLMServer, repo_on_path: None
) -> None:
    from examples.research.workflow import build

    result = build(questions=12).run({"topic": "battery recycling"})
    summary = result["summary"]
    assert summary["answers"] == 12
    assert len(summary["best"]) == 3
    assert llm_server.stats().requests == 12
    assert len(result["sources"]) > 0
    kinds = ax.current_runtime().statistics().kinds
    assert kinds["io"].calls >= 1
    assert kinds["blocking"].calls >= 1
    assert kinds["cpu"].calls == 12


def _readme_workflow_command() -> str:
    """The README's ``ambidex run examples/...`` command, exactly as written there."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^ambidex run examples/\S+.*$", text, flags=re.MULTILINE)
    assert len(commands) == 1, commands
    return commands[0]


def test_the_readme_workflow_command_runs_as_written_on_a_fresh_machine(tmp_path: Path) -> None:
    """No OPENAI_* variables, no LLM running: the example starts the mock LLM and says so."""
    command = _readme_workflow_command()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AMBIDEX_"))}
    env["AMBIDEX_HOME"] = str(tmp_path / "home")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        ["bash", "-e", "-c", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    notice = [line for line in proc.stderr.splitlines() if "OPENAI_BASE_URL" in line]
    assert len(notice) == 1, proc.stderr
    assert "ambidex's mock LLM" in notice[0]
    assert "`ambidex mock-llm` serves one on port 8001" in notice[0]
    assert "succeeded" in proc.stdout
    assert "mock reply" in proc.stdout  # the report's summary, written by the mock
    assert "total_kg_co2=321.6" in "".join(proc.stdout.split())  # 120 litres of diesel


def test_an_example_uses_the_configured_llm_and_starts_none(
    llm_server: MockLLMServer, repo_on_path: None, capsys: pytest.CaptureFixture[str]
) -> None:
    wf = ax.Workflow.from_yaml("examples/emissions/workflow.yaml")
    result = wf.run({"litres": 10})
    assert result["report"].summary.startswith("mock reply")
    assert llm_server.stats().requests == 1
    assert "OPENAI_BASE_URL" not in capsys.readouterr().err
