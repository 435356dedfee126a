"""Reading a target file: the decorator's arguments, the function's source, splicing."""

from __future__ import annotations

from pathlib import Path

import pytest

import ambidex as ax
from ambidex.evolve import TargetError, load_target

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "examples" / "evolve" / "quick" / "approx_pi.py"
PACKING = ROOT / "examples" / "evolve" / "circle_packing" / "packing.py"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "target_file.py"
    p.write_text(text)
    return p


def test_the_examples_load() -> None:
    t = load_target(QUICK)
    assert (t.name, t.spec.metric, t.spec.maximize) == ("approx", "score", True)
    assert t.code.startswith("def approx()")
    assert t.with_code(t.code) == t.source
    p = load_target(PACKING)
    assert p.spec.features["min_radius"] == (0.0, 0.15, 6)
    assert len(p.spec.alternatives[0]) == 6


def test_with_code_replaces_only_the_function(tmp_path: Path) -> None:
    t = load_target(QUICK)
    new = "def approx() -> float:\n    return 3.14\n"
    assert t.check(new) is None
    spliced = t.with_code(new)
    assert "return 3.14" in spliced
    assert "@ax.evolve.target(" in spliced  # the decorator stays
    assert spliced.count("def evaluate(") == 1


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("def approx(:\n    pass\n", "does not parse: line 1"),
        ("def other() -> float:\n    return 1.0\n", "it must stay 'approx'"),
        ("x = 1\ndef approx():\n    return x\n", "exactly one function definition"),
    ],
)
def test_check_says_why_code_cannot_be_used(code: str, reason: str) -> None:
    assert reason in (load_target(QUICK).check(code) or "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("def f():\n    pass\n", "no function marked @ax.evolve.target"),
        (
            "import ambidex as ax\n@ax.evolve.target(goal='g', metric='m')\ndef f():\n    pass\n"
            "@ax.evolve.target(goal='g', metric='m')\ndef g():\n    pass\n"
            "def evaluate(f):\n    return {}\n",
            "one @ax.evolve.target per file, found 2",
        ),
        (
            "import ambidex as ax\nG = 'x'\n@ax.evolve.target(goal=G, metric='m')\ndef f():\n"
            "    pass\ndef evaluate(f):\n    return {}\n",
            "argument 'goal' must be a literal",
        ),
        (
            "import ambidex as ax\n@ax.evolve.target(goal='g', metric='m')\ndef f():\n    pass\n",
            "no evaluator function 'evaluate'",
        ),
        (
            "import ambidex as ax\n@ax.evolve.target(goal='g', metric='m', speed=3)\ndef f():\n"
            "    pass\ndef evaluate(f):\n    return {}\n",
            "unknown @target argument(s) speed",
        ),
        (
            "import ambidex as ax\n@ax.evolve.target(goal='g', metric='m', "
            "features={'length': (5, 1, 3)})\ndef f():\n    pass\n"
            "def evaluate(f):\n    return {}\n",
            "feature 'length' must be (low, high, bins)",
        ),
        ("def f(:\n", "the file does not parse"),
    ],
)
def test_bad_target_files_are_named_with_their_line(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(TargetError, match=r"target_file\.py") as info:
        load_target(write(tmp_path, text))
    assert message in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(TargetError, match="target file not found"):
        load_target("/nonexistent/file.py")


def test_the_decorator_leaves_the_function_working() -> None:
    @ax.evolve.target(goal="g", metric="m")
    def f(x: int) -> int:
        return x + 1

    assert f(1) == 2
    assert f.__ax_evolve__.metric == "m"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="goal must be a non-empty string"):
        ax.evolve.target(goal="", metric="m")
