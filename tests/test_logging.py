"""Library logging: quiet by default, one logger per module, nothing formatted on hot paths."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time

import pytest

import ambidex as ax
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


@ax.cpu
def _die() -> None:
    os._exit(3)


@ax.cpu(timeout_s=0.3)
def _hang() -> None:
    time.sleep(30)


_calls: list[int] = []


@ax.io(retries=2, backoff_s=0.0)
async def _flaky() -> str:
    _calls.append(1)
    if len(_calls) < 2:
        raise ConnectionError("refused")
    return "ok"


def _runtime_records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("ambidex.")]


def test_a_crashed_cpu_worker_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ambidex"), pytest.raises(ax.WorkerCrashedError):
        _die()
    ((level, message),) = _runtime_records(caplog)
    assert level == logging.WARNING
    assert re.fullmatch(r"cpu worker pid \d+ running _die\(\) died \(exited with code 3\)", message)


def test_a_worker_killed_at_its_timeout_is_logged_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="ambidex"), pytest.raises(ax.TaskTimeoutError):
        _hang()
    ((level, message),) = _runtime_records(caplog)
    assert level == logging.INFO
    assert re.fullmatch(r"cpu worker pid \d+ killed: _hang\(\) ran past 0.3 s", message)


def test_a_retry_is_logged_at_info_and_not_formatted_below(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _calls.clear()
    with caplog.at_level(logging.INFO, logger="ambidex"):
        assert _flaky() == "ok"
    assert _runtime_records(caplog) == [
        (logging.INFO, "_flaky failed (ConnectionError: refused); retry 1 of 2 in 0.00 s")
    ]
    caplog.clear()
    _calls.clear()
    with caplog.at_level(logging.WARNING, logger="ambidex"):
        assert _flaky() == "ok"
    assert _runtime_records(caplog) == []
