"""``ambidex.testing`` is public, complete, and costs nothing until used."""

from __future__ import annotations

import subprocess
import sys

import ambidex as ax
import ambidex.testing


def test_every_name_in_all_exists_when_looked_up() -> None:
    missing = [name for name in ambidex.testing.__all__ if not hasattr(ambidex.testing, name)]
    assert missing == []
    assert ax.testing is ambidex.testing


def test_clock_names_are_the_runtime_ones_when_reached_either_way() -> None:
    assert ax.current_clock is ambidex.testing.current_clock
    assert ax.use_clock is ambidex.testing.use_clock
    assert ax.Clock is ambidex.testing.Clock
    assert isinstance(ambidex.testing.FakeClock(), ax.Clock)


def test_import_ambidex_loads_no_testing_tools_and_the_clock_loads_no_jobs_or_llm() -> None:
    code = (
        "import sys, ambidex as ax\n"
        "assert 'ambidex.testing' not in sys.modules\n"
        "ax.testing.FakeClock\n"
        "heavy = [m for m in ('sqlalchemy', 'fastapi', 'uvicorn', 'ambidex.jobs') "
        "if m in sys.modules]\n"
        "assert heavy == [], heavy\n"
        "ax.testing.drain, ax.testing.mock_llm\n"
        "assert 'sqlalchemy' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
