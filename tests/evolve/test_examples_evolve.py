"""The evolution examples: their evaluators judge correctly, in and out of the sandbox."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest

from ambidex.evolve import Sandbox, load_target

ROOT = Path(__file__).resolve().parents[2]
PACKING = ROOT / "examples" / "evolve" / "circle_packing" / "packing.py"


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("packing_example_under_test", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_naive_packing_is_valid_and_scores_its_documented_value() -> None:
    m = _module(PACKING)
    metrics = m.evaluate(m.pack)
    assert metrics["sum_radii"] == pytest.approx(2.294)
    assert metrics["min_radius"] > 0


@pytest.mark.parametrize(
    ("circles", "message"),
    [
        ([(0.5, 0.5, 0.1)] * 25, "expected 26 circles, got 25"),
        (
            [(0.05, 0.5, 0.1)] + [(0.5, 0.1 + i * 0.03, 0.001) for i in range(25)],
            "leaves the square",
        ),
        ([(0.5, 0.5, 0.1), (0.55, 0.5, 0.1)] + [(0.1, 0.1, 0.01)] * 24, "overlap"),
        ([(0.5, 0.5, math.nan)] * 26, "needs finite values"),
    ],
)
def test_the_packing_evaluator_rejects_bad_geometry(
    circles: list[tuple[float, float, float]], message: str
) -> None:
    m = _module(PACKING)
    with pytest.raises(ValueError, match=message):
        m.evaluate(lambda: circles)


async def test_the_packing_evaluates_in_the_sandbox() -> None:
    target = load_target(PACKING)
    result = await Sandbox(timeout_s=20).evaluate(target.source, target=target.name)
    assert result.ok, result.stderr
    assert result.metrics["sum_radii"] == pytest.approx(2.294)
    crowded = target.code.replace("margin_x = 0.13", "margin_x = -0.5")
    bad = await Sandbox(timeout_s=20).evaluate(target.with_code(crowded), target=target.name)
    assert not bad.ok
    assert "ValueError" in (bad.error or "")
