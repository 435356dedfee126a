"""``ambidex sim run|sweep|report``: real subprocesses on a small model file."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import ambidex as ax
import ambidex.sim
from ambidex.cli import app
from ambidex.cli._sim import parse_grid, parse_params

MODEL = """
import numpy as np

import ambidex.sim


class Walk(ambidex.sim.Model):
    defaults = {"n": 20, "drift": 0.0}

    def setup(self, params):
        self.pos = np.zeros(params.n)

    def step(self):
        self.pos += self.rng.normal(self.params.drift, 1.0, self.params.n)

    def metrics(self):
        return {"mean": float(self.pos.mean()), "spread": float(self.pos.std())}
"""


class Steps(ambidex.sim.Model):
    """A tiny model for records made in this process."""

    defaults = {"n": 8}

    def setup(self, params: Any) -> None:
        self.x = np.zeros(params.n)

    def step(self) -> None:
        self.x += self.rng.random(self.params.n)

    def metrics(self) -> dict[str, float]:
        return {"total": float(self.x.sum())}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    # a fresh module name: the in-process tests import it, and names must not clash
    path = tmp_path / f"walk_{uuid.uuid4().hex[:12]}.py"
    path.write_text(MODEL)
    return path


def sim(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m ambidex sim ARGS`` in a subprocess with AMBIDEX_HOME=home."""
    env = {**os.environ, "AMBIDEX_HOME": str(home), "COLUMNS": "200"}
    env.pop("AMBIDEX_CPU_WORKERS", None)
    done = subprocess.run(
        [sys.executable, "-m", "ambidex", "sim", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def sim_here(*args: str, home: Path) -> tuple[int, str, str]:
    """``ambidex sim ARGS`` in this process (for the quick error cases)."""
    result = CliRunner().invoke(
        app, ["sim", *args], env={"AMBIDEX_HOME": str(home), "COLUMNS": "200"}
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def shown(out: str, label: str) -> Path:
    """The path printed on the ``label: PATH`` line of a command's output."""
    found = re.search(rf"^{label}: (.+)$", out, re.MULTILINE)
    assert found is not None, out
    return Path(found.group(1))


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_run_records_in_ambidex_home_and_is_deterministic(
    tmp_path: Path, home: Path, model_file: Path
) -> None:
    args = (model_file.name, "--param", "n=30", "-p", "drift=0.25", "--steps", "20", "--seed", "3")
    done = sim("run", *args, "--json", home=home, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["model"] == "Walk"
    assert payload["params"] == {"n": 30, "drift": 0.25}
    assert (payload["steps"], payload["seed"], payload["run_id"]) == (20, 3, 1)
    assert set(payload["final"]) == {"step", "mean", "spread"}
    record = Path(payload["record"])
    assert record.parent == home / "sim"
    assert re.fullmatch(r"Walk-\d{8}-\d{6}(-\d+)?\.sqlite", record.name)
    opened = ax.sim.open_record(record)
    assert opened.meta == {
        "kind": "run",
        "model": "Walk",
        "steps": 20,
        "seed": 3,
        "params": {"n": 30, "drift": 0.25},
    }
    assert [r.digest for r in opened.runs] == [payload["digest"]]
    assert opened.metrics(1)["spread"][-1] == payload["final"]["spread"]

    # the same run again, shown as a table, with a report: same digest, a new record
    done = sim("run", *args, "--report", home=home, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Walk: final metrics" in out
    assert re.search(r"│ mean\s+│", out)
    assert re.search(r"│ spread\s+│", out)
    assert re.search(r"20 steps in [\d.]+ s \([\d,]+ steps/s\), seed 3", out)
    second = shown(out, "record")
    html = shown(out, "report")
    assert second != record
    assert second.parent == home / "sim"
    assert ax.sim.open_record(second).runs[0].digest == payload["digest"]
    assert html == second.with_suffix(".html")
    assert "data:image/png;base64," in html.read_text(encoding="utf-8")


def test_a_bad_param_is_one_line_and_exit_2(tmp_path: Path, home: Path, model_file: Path) -> None:
    done = sim("run", model_file.name, "--param", "n=abc", home=home, cwd=tmp_path)
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert line.startswith("error: ")
    assert "'n'" in line
    assert "expects int" in line
    assert "'abc'" in line
    assert done.stdout == ""
    assert not (home / "sim").exists()  # nothing recorded


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "{model}", "-p", "nope=1"], "unknown parameter(s) nope; the model takes: n=20"),
        (["run", "{model}", "-p", "n30"], "--param 'n30': expected key=value"),
        (["run", "{model}", "-p", "=3"], "the parameter name before '=' is empty"),
        (["run", "{model}", "-p", "drift=fast"], "'drift' expects float, got 'fast'"),
        (["run", "{model}:Other"], "has no Model class 'Other' (models: Walk)"),
        (["run", "missing.py"], "model file not found: missing.py"),
        (["run", "{model}", "--record", "out.csv"], "--record out.csv: name it *.sqlite"),
        (["sweep", "{model}", "--grid", "n=1,x"], "--grid: Walk: parameter 'n' expects int"),
        (["sweep", "{model}", "--grid", "n=1,,2"], "no empty value"),
        (["sweep", "{model}", "--grid", "n"], "--grid 'n': expected key=value"),
        (
            ["sweep", "{model}", "-g", "n=1,2", "-p", "n=3"],
            "n: given both as --grid and as --param",
        ),
        (["report", "missing.sqlite"], "no record at missing.sqlite"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(
    tmp_path: Path,
    home: Path,
    model_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = sim_here(*(a.format(model=model_file.name) for a in args), home=home)
    assert code == 2, err
    line = one_line(err)
    assert line.startswith("error: ")
    assert message in line
    assert out == ""
    assert not (home / "sim").exists()


def test_an_existing_record_is_not_overwritten(tmp_path: Path, model_file: Path) -> None:
    record = tmp_path / "taken.sqlite"
    record.write_bytes(b"")
    code, _, err = sim_here("run", str(model_file), "--record", str(record), home=tmp_path)
    assert code == 2
    assert f"{record} exists already" in one_line(err)


def test_sweep_with_two_workers(tmp_path: Path, home: Path, model_file: Path) -> None:
    common = ("--grid", "drift=0,0.5", "-p", "n=12", "--replicates", "2", "--steps", "10")
    record = tmp_path / "records" / "walk.parquet"
    done = sim(
        "sweep", model_file.name, *common, "--seed", "5", "--workers", "2", "--record",
        str(record), "--json", "--report", home=home, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["grid"] == {"drift": [0.0, 0.5]}  # typed by the model's defaults
    assert payload["params"] == {"n": 12}
    assert (payload["runs"], payload["workers"], payload["replicates"]) == (4, 2, 2)
    assert [p["point"] for p in payload["points"]] == [{"drift": 0.0}, {"drift": 0.5}]
    assert set(payload["points"][1]["final"]) == {"mean", "spread"}
    assert payload["record"] == str(record)
    assert payload["report"] == str(record.with_suffix(".html"))
    assert 'alt="final spread vs drift"' in Path(payload["report"]).read_text(encoding="utf-8")
    opened = ax.sim.open_record(record)
    assert opened.meta["kind"] == "sweep"
    assert opened.meta["grid"] == {"drift": [0.0, 0.5]}
    assert [(r.point, r.replicate) for r in opened.runs] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(r.params == {"n": 12, "drift": 0.5} for r in opened.runs[2:])

    # one worker, default record, a table: the same digest
    done = sim(
        "sweep", model_file.name, *common, "--seed", "5", "--workers", "1", home=home, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Walk: final metrics per grid point (mean ± sd over 2 replicates)" in out
    assert re.search(r"│\s+1 │\s+0.5 │\s+\S+ ± \S+ │\s+\S+ ± \S+ │", out)
    assert "4 runs (2 points x 2 replicates) in" in out
    assert "on 1 worker(s)" in out
    assert f"digest: {payload['digest']}" in out
    default = shown(out, "record")
    assert default.parent == home / "sim"
    assert re.fullmatch(r"Walk-sweep-\d{8}-\d{6}(-\d+)?\.sqlite", default.name)


def test_report_command(tmp_path: Path, home: Path) -> None:
    record = tmp_path / "steps.sqlite"
    ax.sim.run(Steps, steps=5, seed=2, record=record)
    out = tmp_path / "reports" / "steps-report.html"
    done = sim(
        "report", record.name, "-o", str(out), "--title", "Steps <1>", home=home, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    page = out.read_text(encoding="utf-8")
    assert "<title>Steps &lt;1&gt;</title>" in page
    assert 'alt="total over time"' in page


def test_help_imports_no_numpy() -> None:
    code = (
        "import sys, ambidex.cli, ambidex.cli._sim; "
        "print(sorted(m for m in ('numpy', 'matplotlib', 'pyarrow') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
    result = CliRunner().invoke(app, ["sim", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for command in ("run", "sweep", "report"):
        assert re.search(rf"│ {command}\s", result.stdout)


def test_parse_params_and_grid() -> None:
    assert parse_params(["a=1", "b = x=y"]) == {"a": "1", "b": " x=y"}
    assert parse_grid(["n=1, 2,3", 'v=[[1, 2], "a"]']) == {
        "n": ["1", "2", "3"],
        "v": ["[1, 2]", "a"],
    }
    with pytest.raises(ValueError, match="given twice"):
        parse_params(["a=1", "a=2"])
    with pytest.raises(ValueError, match="not a valid JSON list"):
        parse_grid(["v=[1,"])


def test_without_numpy_the_sim_commands_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from ambidex.cli import app

    for name in [m for m in sys.modules if m == "ambidex.sim" or m.startswith("ambidex.sim.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "numpy", None)  # an import of numpy now fails
    result = CliRunner().invoke(app, ["sim", "report", "x.sqlite"])
    assert result.exit_code == 2
    assert "ambidex.sim needs numpy: pip install 'ambidex[sim]'" in result.output


INCOMPLETE_MODEL = """\
import ambidex.sim


class Stub(ambidex.sim.Model):
    def step(self):
        pass
"""

NO_AGENTS_MODEL = """\
import ambidex.sim


class Counter(ambidex.sim.Model):
    def setup(self, params):
        self.n = 0

    def step(self):
        self.n += 1

    def metrics(self):
        return {"n": self.n}
"""


def test_a_model_missing_its_methods_is_refused_when_loaded(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "stub.py").write_text(INCOMPLETE_MODEL)
    monkeypatch.chdir(tmp_path)
    code, _, err = sim_here("run", "stub.py", "--steps", "2", home=home)
    assert code == 2, err
    line = one_line(err)
    assert line.endswith("stub.py:4: Stub must define setup(self, params), metrics(self)")
    assert "unexpected" not in line
    with pytest.raises(ambidex.sim.ModelError, match="must define setup"):
        ambidex.sim.load_model(f"{tmp_path / 'stub.py'}:Stub")


def test_recording_agents_of_a_model_without_an_agents_table_is_a_user_error(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "counter.py").write_text(NO_AGENTS_MODEL)
    monkeypatch.chdir(tmp_path)
    code, _, err = sim_here("run", "counter.py", "--steps", "2", "--snapshot-every", "1", home=home)
    assert code == 2, err
    assert one_line(err) == (
        "error: Counter has no self.agents table: define snapshot(self) to record agents"
    )


SLOW_MODEL = """
import time
from pathlib import Path

import numpy as np

import ambidex.sim


class Slow(ambidex.sim.Model):
    defaults = {"n": 5, "delay": 0.05, "marker": ""}

    def setup(self, params):
        self.x = np.zeros(params.n)
        self.t = 0

    def step(self):
        self.t += 1
        time.sleep(self.params.delay)
        self.x += self.rng.random(self.params.n)
        if self.params.marker and self.t == 3 and self.params.delay > 0.01:
            Path(self.params.marker).touch()  # the test's cue: the run is under way

    def metrics(self):
        return {"total": float(self.x.sum())}
"""


def interrupted(*args: str, marker: Path, home: Path, cwd: Path) -> str:
    """``python -m ambidex sim ARGS``, sent SIGINT once the model touched ``marker``; stderr."""
    env = {**os.environ, "AMBIDEX_HOME": str(home), "COLUMNS": "200"}
    env.pop("AMBIDEX_CPU_WORKERS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ambidex", "sim", *args, "-p", f"marker={marker}"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the model never started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    return err


def test_ctrl_c_during_a_run_leaves_a_record_the_report_reads(tmp_path: Path, home: Path) -> None:
    (tmp_path / "slow.py").write_text(SLOW_MODEL)
    record = tmp_path / "stopped.sqlite"
    args = ("run", "slow.py", "--steps", "1000", "--record", str(record))
    err = interrupted(*args, marker=tmp_path / "started", home=home, cwd=tmp_path)
    assert one_line(err) == f"error: interrupted; what was recorded so far is in {record}"
    (run,) = ax.sim.open_record(record).runs
    assert run.status == "interrupted"
    assert run.steps is not None
    assert 3 <= run.steps < 1000
    assert len(ax.sim.open_record(record).metrics(1)) == run.steps + 1

    done = sim("report", str(record), home=home, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = Path(done.stdout.strip()).read_text(encoding="utf-8")
    assert f"This run was interrupted at step {run.steps} of 1000" in page
    assert "data:image/png;base64," in page  # its steps so far are drawn


def test_ctrl_c_during_a_sweep_keeps_the_finished_runs(tmp_path: Path, home: Path) -> None:
    (tmp_path / "slow.py").write_text(SLOW_MODEL)
    record = tmp_path / "stopped-sweep.sqlite"
    # one worker: the quick point's run finishes, the slow one is interrupted midway
    args = ("sweep", "slow.py", "-g", "delay=0.001,0.05", "--steps", "100", "--workers", "1")
    interrupted(
        *args, "--record", str(record), marker=tmp_path / "started", home=home, cwd=tmp_path
    )
    opened = ax.sim.open_record(record)
    assert [r.status for r in opened.runs] == ["done", "interrupted"]
    assert len(opened.metrics(1)) == 101

    done = sim("report", str(record), home=home, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = Path(done.stdout.strip()).read_text(encoding="utf-8")
    assert "Interrupted: 1 of 2 runs finished" in page


def test_a_package_module_model_resolves_from_the_current_directory(
    tmp_path: Path, home: Path
) -> None:
    # the ambidex console script: its sys.path starts with its bin folder, not the
    # current directory (python -m would hide the problem)
    script = Path(sys.executable).parent / "ambidex"
    if not script.is_file():
        pytest.skip("no ambidex console script beside this Python")
    package = tmp_path / "mymodels"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "walk.py").write_text(MODEL)
    env = {**os.environ, "AMBIDEX_HOME": str(home), "COLUMNS": "200"}
    env.pop("AMBIDEX_CPU_WORKERS", None)
    for args in (
        ("run", "mymodels.walk:Walk", "--steps", "3", "--json"),
        ("sweep", "mymodels.walk:Walk", "-g", "n=3,4", "--steps", "3", "--workers", "2", "--json"),
    ):
        done = subprocess.run(
            [str(script), "sim", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["model"] == "Walk"
    done = subprocess.run(
        [str(script), "sim", "run", "mymodels.nothing:Walk"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert one_line(done.stderr).startswith("error: cannot load model 'mymodels.nothing:Walk'")


EXITING = """
import sys

import ambidex.sim


class Quits(ambidex.sim.Model):
    defaults = {"quit": 1}

    def setup(self, params):
        self.t = 0

    def step(self):
        self.t += 1
        if self.params.quit and self.t == 2:
            sys.exit(3)

    def metrics(self):
        return {"t": self.t}
"""


def test_a_model_that_calls_sys_exit_fails_its_run_with_the_line_that_did(
    tmp_path: Path, home: Path
) -> None:
    """``sim run`` used to exit 3 without a word; ``sim sweep`` with a CancelledError."""
    (tmp_path / "quits.py").write_text(EXITING)
    done = sim("run", "quits.py", "--steps", "4", "--record", "one.sqlite", home=home, cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "error: model Quits raised SystemExit: 3 (quits.py, line 16, in step)"
    done = sim(
        "sweep",
        "quits.py",
        "-g",
        "quit=0,1",
        "-r",
        "2",
        "--steps",
        "4",
        "--workers",
        "2",
        "--record",
        "many.sqlite",
        home=home,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    line = one_line(done.stderr)
    # runs 2 and 3 both exit: the sweep names whichever failed first
    assert re.fullmatch(
        r"error: run [23] of the sweep failed \(point 1: \{'quit': 1\}, replicate [01], "
        r"seed .*\): SystemExit: 3",
        line,
    ), line


SLOW = """
import time

import ambidex.sim


class Slow(ambidex.sim.Model):
    defaults = {"k": 0}

    def setup(self, params):
        self.t = 0

    def step(self):
        time.sleep(0.05)
        self.t += 1

    def metrics(self):
        return {"t": self.t, "k": self.params.k}
"""


def test_a_sweep_killed_with_sigkill_keeps_the_runs_it_finished(tmp_path: Path, home: Path) -> None:
    """Finished runs are written at most a second after they end, not only at close."""
    (tmp_path / "slow.py").write_text(SLOW)
    record = tmp_path / "killed.sqlite"
    env = {**os.environ, "AMBIDEX_HOME": str(home), "COLUMNS": "200"}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "ambidex", "sim", "sweep", "slow.py"),
            *("-g", "k=" + ",".join(map(str, range(40))), "-r", "10", "--steps", "10"),
            *("--workers", "2", "--record", str(record)),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # 400 runs of 0.5 s on 2 workers: ~100 s to the close's flush, which the
        # deadline does not wait for; a run is written ~1 s after it ends
        deadline = time.monotonic() + 40
        done: list[tuple[int, int]] = []
        while time.monotonic() < deadline and len(done) < 3:
            time.sleep(0.1)
            if record.exists():
                db = sqlite3.connect(record)
                try:
                    done = db.execute(
                        "SELECT run_id, steps FROM runs WHERE status = 'done'"
                    ).fetchall()
                except sqlite3.OperationalError:  # not created yet
                    done = []
                finally:
                    db.close()
        assert len(done) >= 3, "no finished run was written within 40 s"
        assert proc.poll() is None  # still sweeping: what is read is not the close's flush
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    back = ambidex.sim.open_record(record)
    kept = {run.run_id: run for run in back.runs if run.status == "done"}
    assert {run_id for run_id, _ in done} <= set(kept)
    for run_id in kept:
        assert back.metrics(run_id)["t"].tolist() == list(range(11))
