"""The import contracts (.importlinter): they hold for ambidex, and they catch a wrong import.

The fixture package mirrors ambidex's layout (every layer the real contract names,
as an empty package or module) and is checked against the real contract with
``ambidex`` renamed, so what is tested is the contract CI runs, not a copy of it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".importlinter"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
FIXTURE = "layered"


def _lint(config: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = None if pythonpath is None else {**os.environ, "PYTHONPATH": str(pythonpath)}
    # From the project's root: the custom contract is tests._contracts.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _layer_names(config_text: str) -> list[str]:
    """Every name of the layers contract, optional ones (in parentheses) left out."""
    block = config_text.split("layers =\n", 1)[1]
    names: list[str] = []
    for line in block.splitlines():
        if not line.startswith("    "):
            break
        names += [n.strip() for n in re.split(r"[|:]", line) if not n.strip().startswith("(")]
    return names


def _fixture(tmp_path: Path) -> tuple[Path, Path]:
    """A package laid out like ambidex, with no imports, and the contract renamed to it."""
    text = CONFIG.read_text().replace("ambidex", FIXTURE)
    package = tmp_path / FIXTURE
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in _layer_names(text):
        if name.startswith("_") or name == "exceptions":  # a root module (or __main__)
            (package / f"{name}.py").write_text("")
        else:
            (package / name).mkdir()
            (package / name / "__init__.py").write_text("")
    config = tmp_path / ".importlinter"
    config.write_text(text)
    return package, config


def test_the_contracts_hold_when_linting_ambidex() -> None:
    proc = _lint(CONFIG)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"Contracts: 3 kept, 0 broken", proc.stdout), proc.stdout


def test_the_contracts_hold_when_a_fixture_has_no_wrong_import(tmp_path: Path) -> None:
    _, config = _fixture(tmp_path)
    proc = _lint(config, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_contracts_fail_when_a_layer_points_up_or_a_private_module_is_imported(
    tmp_path: Path,
) -> None:
    package, config = _fixture(tmp_path)
    (package / "evolve" / "_report.py").write_text("")
    # upward, and only inside a function: lazy imports count
    (package / "runtime" / "_core.py").write_text(f"def later():\n    import {FIXTURE}.jobs\n")
    (package / "cli" / "_evolve.py").write_text(f"from {FIXTURE}.evolve._report import x\n")
    (package / "client" / "_protocol.py").write_text(f"from {FIXTURE}.workflows import y\n")
    # under TYPE_CHECKING: never runs, so not counted
    (package / "sim" / "_run.py").write_text(
        f"from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import {FIXTURE}.cli\n"
    )
    proc = _lint(config, tmp_path)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert f"{FIXTURE}.runtime._core -> {FIXTURE}.jobs" in out
    assert f"- {FIXTURE}.cli._evolve -> {FIXTURE}.evolve._report (l.1)" in out
    assert f"{FIXTURE}.client is not allowed to import {FIXTURE}.workflows" in out
    assert f"{FIXTURE}.sim._run" not in out
    assert re.search(r"Contracts: 0 kept, 3 broken", out), out


def test_import_client_loads_no_store_orm_or_validation_when_imported_fresh() -> None:
    code = "import json, sys\nimport ambidex.client\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(proc.stdout)
    assert "ambidex.client" in loaded
    heavy = ("sqlalchemy", "pydantic", "ambidex.jobs", "ambidex.workflows", "ambidex.server")
    assert [m for m in loaded if m in heavy or m.startswith(tuple(h + "." for h in heavy))] == []


def test_the_contracts_see_imports_made_through_the_root_package_or_import_module(
    tmp_path: Path,
) -> None:
    # `import ambidex as ax` then `ax.jobs.x`: the root package imports ambidex.jobs
    # on first use, so the graph shows only `import ambidex`, which every contract
    # allowed; so did importlib.import_module of a private module.
    package, config = _fixture(tmp_path)
    (package / "evolve" / "_report.py").write_text("")
    (package / "__init__.py").write_text("_LAZY = {'JobThing': 'layered.jobs'}\n")
    (package / "sim" / "_run.py").write_text(
        f"import {FIXTURE} as ax\n\ndef f():\n    return ax.jobs.submit\n"
    )
    (package / "runtime" / "_core.py").write_text(f"import {FIXTURE}\nx = {FIXTURE}.JobThing\n")
    (package / "cli" / "_evolve.py").write_text(
        f"import importlib\nm = importlib.import_module('{FIXTURE}.evolve._report')\n"
    )
    (package / "client" / "_protocol.py").write_text(
        f"import {FIXTURE} as ax\nv = ax.workflows.run\n"
    )
    # never evaluated: an annotation, and a TYPE_CHECKING block
    (package / "llm" / "_chat.py").write_text(
        "from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
        f"import {FIXTURE} as ax\nif TYPE_CHECKING:\n    y = ax.cli.app\n"
        "def f(a: ax.cli.App) -> ax.server.App:\n    return a\n"
    )
    proc = _lint(config, tmp_path)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert f"{FIXTURE}.sim._run -> {FIXTURE}.jobs (l.4)" in out
    assert f"{FIXTURE}.runtime._core -> {FIXTURE}.jobs (l.2)" in out
    assert f"- {FIXTURE}.cli._evolve -> {FIXTURE}.evolve._report (l.2)" in out
    assert f"{FIXTURE}.client is not allowed to import {FIXTURE}.workflows" in out
    assert f"{FIXTURE}.llm" not in out
    assert re.search(r"Contracts: 0 kept, 3 broken", out), out
