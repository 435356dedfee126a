"""Library logging: quiet by default, one logger per module, nothing formatted on hot paths."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from ambidex._log import get_logger


def test_ambidex_logger_has_one_null_handler() -> None:
    handlers = logging.getLogger("ambidex").handlers
    assert sum(isinstance(h, logging.NullHandler) for h in handlers) == 1


def test_module_loggers_sit_under_the_ambidex_logger() -> None:
    log = get_logger("ambidex.sim._run")
    assert log.name == "ambidex.sim._run"
    assert log.parent is not None
    assert log.parent.name in ("ambidex.sim", "ambidex")


def test_an_unconfigured_application_sees_no_ambidex_warning() -> None:
    # Python's last-resort handler prints warnings of loggers without handlers to stderr.
    code = (
        "from ambidex._log import get_logger\n"
        "get_logger('ambidex.runtime.x').warning('should stay quiet')\n"
        "import logging\n"
        "logging.getLogger('elsewhere').warning('not ours')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "should stay quiet" not in done.stderr
    assert "not ours" in done.stderr


def test_import_ambidex_does_not_import_logging() -> None:
    # a sandboxed candidate imports ambidex on every evaluation: logging loads only when used
    code = "import sys, ambidex, ambidex.evolve; print('logging' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_a_sim_run_logs_its_start_and_finish_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    np = pytest.importorskip("numpy")
    import ambidex.sim

    class Counter(ambidex.sim.Model):
        defaults = {"n": 3}

        def setup(self, params: ambidex.sim.Params) -> None:
            self.x = np.zeros(params.n)

        def step(self) -> None:
            self.x += 1

        def metrics(self) -> dict[str, float]:
            return {"total": float(self.x.sum())}

    with caplog.at_level(logging.INFO, logger="ambidex"):
        ambidex.sim.run(Counter, steps=2, seed=1)
    assert [r for r in caplog.records if r.name == "ambidex.sim._run"] == []
    with caplog.at_level(logging.DEBUG, logger="ambidex"):
        ambidex.sim.run(Counter, steps=2, seed=1)
    messages = [r.getMessage() for r in caplog.records if r.name == "ambidex.sim._run"]
    assert messages[0] == "run Counter: 2 steps, seed 1"
    assert messages[1].startswith("run Counter: 2 steps in ")
