"""``--json`` prints strict JSON: a NaN or an infinity is a string, never a bare word.

``json.dumps`` writes ``NaN`` and ``Infinity`` unquoted, which jq and
``JSON.parse`` refuse; one NaN output or metric made the whole answer unreadable.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ambidex.cli._json import json_text


def strict(text: str) -> Any:
    """``json.loads`` that refuses NaN and the infinities, as jq and JSON.parse do."""

    def refuse(word: str) -> None:
        raise ValueError(f"not JSON: {word}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_floats_are_named_and_nothing_else_changes() -> None:
    value = {
        "nan": math.nan,
        "inf": [math.inf, -math.inf, np.float64("nan"), np.float32(1.5)],
        "nested": {"deep": [{"x": math.nan}], "fine": 0.1, "n": 2**70},
        "array": np.array([1.0, np.inf]),
        "text": "NaN",
    }
    assert strict(json_text(value)) == {
        "nan": "NaN",
        "inf": ["Infinity", "-Infinity", "NaN", 1.5],
        "nested": {"deep": [{"x": "NaN"}], "fine": 0.1, "n": 2**70},
        "array": [1.0, "Infinity"],
        "text": "NaN",
    }
    plain = {"a": [1, 2.5, None, True, "é"]}
    assert json_text(plain) == json.dumps(plain, indent=2)  # the common case is untouched


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AMBIDEX_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "ambidex", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )


def test_a_workflow_whose_output_is_nan_prints_strict_json(tmp_path: Path) -> None:
    (tmp_path / "nanflow.py").write_text(
        "def nan(x):\n    return {'v': float('nan'), 'w': [float('inf')]}\n"
    )
    (tmp_path / "nan.yaml").write_text(
        textwrap.dedent(
            """\
            name: nan
            nodes:
              a:
                function: nanflow:nan
                input: 1
            """
        )
    )
    done = run_cli(tmp_path, "run", "nan.yaml", "--json")
    assert done.returncode == 0, done.stderr
    assert strict(done.stdout)["nodes"]["a"]["output"] == {"v": "NaN", "w": ["Infinity"]}


@pytest.mark.filterwarnings("ignore")
def test_a_simulation_whose_metric_is_nan_prints_strict_json(tmp_path: Path) -> None:
    (tmp_path / "nanmodel.py").write_text(
        textwrap.dedent(
            """\
            import numpy as np
            import ambidex as ax

            class Empty(ax.sim.Model):
                defaults = {"n": 0}

                def setup(self, params):
                    self.values = np.zeros(params.n)

                def step(self):
                    pass

                def metrics(self):
                    return {"mean": float(np.nan), "n": len(self.values)}
            """
        )
    )
    done = run_cli(tmp_path, "sim", "run", "nanmodel.py", "--steps", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert "NaN" in done.stdout
    strict(done.stdout)
