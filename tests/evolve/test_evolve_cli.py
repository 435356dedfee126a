"""``ambidex evolve FILE | run | show | lineage``: real subprocesses on a real small evolution."""

from __future__ import annotations

import html
import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _evolve_db import iterations_done

import ambidex as ax
from ambidex.evolve import EvolveProgress, Program
from ambidex.evolve.report import open_database

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "examples" / "evolve" / "quick" / "approx_pi.py"

# Offline variants of this target sometimes set x = 0.0 and crash dividing by it.
FLAKY = """
import ambidex as ax


@ax.evolve.target(
    goal="Return a float close to pi.",
    metric="score",
    alternatives=[["x = 1.0", "x = 0.0", "x = 2.0"]],
)
def approx() -> float:
    x = 1.0
    return 2.0 + 0.5 / x


def evaluate(approx) -> dict[str, float]:
    return {"score": -abs(float(approx()) - 3.14159)}
"""


def _env(home: Path, **changes: str | None) -> dict[str, str]:
    # Wide enough that rich never wraps a long temporary path inside a word.
    env = {**os.environ, "AMBIDEX_HOME": str(home), "COLUMNS": "400"}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def ambidex(
    *args: str, home: Path, timeout_s: float = 60, **env: str | None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ambidex", *args],
        env=_env(home, **env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


class Evolved:
    """A real short run of the flaky target, made once for the module."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.target = root / "flaky.py"
        self.target.write_text(FLAKY)
        self.db = root / "flaky.sqlite"
        self.run = ambidex(
            "evolve", str(self.target), "--iterations", "16", "--parallel", "4",
            "--seed", "1", "--db", str(self.db), home=self.home,
        )  # fmt: skip


@pytest.fixture(scope="module")
def evolved(tmp_path_factory: pytest.TempPathFactory) -> Evolved:
    made = Evolved(tmp_path_factory.mktemp("evolved"))
    assert made.run.returncode == 0, made.run.stderr
    return made


def _programs(db: Path) -> list[Program]:
    with open_database(db) as database:
        return database.history()


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    return lines[0]


# -- running ---------------------------------------------------------------------


def test_a_run_ends_with_failures_by_kind_each_with_an_example(evolved: Evolved) -> None:
    out = evolved.run.stdout
    programs = _programs(evolved.db)
    crashes = [p for p in programs if not p.ok]
    assert crashes, "the seeded run is expected to try x = 0.0"
    assert f'failures: crash {len(crashes)} (e.g. "crashed: ZeroDivisionError:' in out
    assert "{" not in out.split("failures:")[1].splitlines()[0]  # no raw dict
    assert "best: #" in out
    assert "def approx()" in out


def test_run_is_also_a_subcommand_and_options_may_come_first(tmp_path: Path) -> None:
    target = tmp_path / "flaky.py"
    target.write_text(FLAKY)
    db = tmp_path / "two.sqlite"
    common = ["--parallel", "2", "--seed", "1", "--db", str(db), "--json"]
    first = ambidex("evolve", "run", str(target), "--iterations", "3", *common, home=tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["done"] == 3
    # the old single-command form, with its options before the file: it resumes the same db
    again = ambidex("evolve", "--iterations", "6", *common, str(target), home=tmp_path)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["resumed_from"], summary["done"]) == (3, 6)
    assert set(summary["failure_examples"]) >= set(summary["failures"])


def test_ctrl_c_exits_130_and_keeps_the_finished_candidates(tmp_path: Path) -> None:
    db = tmp_path / "stopped.sqlite"
    cmd = [
        sys.executable, "-m", "ambidex", "evolve", str(QUICK), "--iterations", "5000",
        "--parallel", "2", "--db", str(db),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=_env(tmp_path / "home"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while iterations_done(db) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    done = iterations_done(db)
    assert 3 <= done < 5000
    assert f"stopped: {done} of 5000 candidates are kept in {db}" in " ".join(err.split())
    finished = [p for p in _programs(db) if p.iteration > 0]
    assert len(finished) == done  # every finished candidate is in the database


def test_llm_proposer_without_an_api_key_is_one_line_before_the_run(tmp_path: Path) -> None:
    db = tmp_path / "llm.sqlite"
    proc = ambidex(
        "evolve", str(QUICK), "--proposer", "llm", "--db", str(db),
        home=tmp_path, OPENAI_API_KEY=None, OPENAI_BASE_URL=None,
    )  # fmt: skip
    line = _one_error_line(proc)
    assert "--proposer llm" in line
    assert "OPENAI_API_KEY" in line
    assert not db.exists()  # refused before the run started


def test_the_progress_line_shows_an_eta_once_something_finished() -> None:
    starting = EvolveProgress(100, 40, 4, 0, 0, None, None, 2.0)
    assert starting.eta_s is None
    assert starting.line().endswith("eta -")
    # resumed at 40: this run finished 10 (8 ok, 2 failed) in 20 s, so 50 left take 100 s
    going = EvolveProgress(100, 50, 4, 8, 2, 1.5, 7, 20.0)
    assert going.eta_s == pytest.approx(100.0)
    assert going.line() == "50/100 done, 4 in flight, 80% ok, best 1.5 (#7), eta 1m40s"
    assert EvolveProgress(100, 100, 0, 10, 0, 1.5, 7, 9.0).eta_s == 0.0


# -- show --------------------------------------------------------------------------


def test_show_lists_the_best_programs_and_the_failures(evolved: Evolved) -> None:
    programs = _programs(evolved.db)
    with open_database(evolved.db) as database:
        best = database.best()
    assert best is not None
    proc = ambidex("evolve", "show", str(evolved.db), "--top", "3", home=evolved.home)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"{len(programs)} programs" in out
    assert "failures: crash " in out
    assert '(e.g. "crashed: ZeroDivisionError:' in out
    assert f"best: #{best.id} score" in out
    assert best.code.strip() in out
    assert len(re.findall(r"^│\s+\d\s+│\s+#\d+", out, re.MULTILINE)) == 3  # the table's rows

    data = json.loads(
        ambidex("evolve", "show", str(evolved.db), "--top", "2", "--json", home=evolved.home).stdout
    )
    assert [row["rank"] for row in data["best"]] == [1, 2]
    assert data["best"][0]["id"] == best.id
    assert data["best"][0]["code"] == best.code
    assert data["best"][0]["score"] >= data["best"][1]["score"]  # maximised
    assert data["programs"] == len(programs)
    assert data["failures"][0]["kind"] == "crash"
    assert data["failures"][0]["example"].startswith("crashed: ZeroDivisionError")


def test_show_writes_an_html_report_with_the_plot_and_the_best_code(
    evolved: Evolved, tmp_path: Path
) -> None:
    out = tmp_path / "reports" / "flaky.html"
    proc = ambidex("evolve", "show", str(evolved.db), "--html", str(out), home=evolved.home)
    assert proc.returncode == 0, proc.stderr
    assert f"report: {out}" in " ".join(proc.stdout.split())
    page = out.read_text(encoding="utf-8")
    with open_database(evolved.db) as database:
        best = database.best()
    assert best is not None
    assert '<img src="data:image/png;base64,' in page
    assert 'alt="score over iterations"' in page
    assert html.escape(best.code) in page
    assert "crashed: ZeroDivisionError" in page


def test_show_html_without_matplotlib_names_the_extra(evolved: Evolved, tmp_path: Path) -> None:
    out = tmp_path / "never.html"
    script = (
        "import sys; sys.modules['matplotlib'] = None; "  # import matplotlib now fails
        "from ambidex.cli import main; sys.argv = ['ambidex'] + sys.argv[1:]; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "evolve", "show", str(evolved.db), "--html", str(out)],
        env=_env(evolved.home),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "pip install 'ambidex[sim]'" in _one_error_line(proc)
    assert not out.exists()


# -- lineage -----------------------------------------------------------------------


def test_lineage_goes_back_to_the_initial_program_with_diffs(evolved: Evolved) -> None:
    with open_database(evolved.db) as database:
        best = database.best()
        expected = database.lineage(best.id)  # type: ignore[union-attr, arg-type]
    assert best is not None
    assert len(expected) >= 2
    args = ["evolve", "lineage", str(evolved.db), str(best.id)]
    proc = ambidex(*args, "--diff", home=evolved.home)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    shown = [line.split()[0] for line in lines if line.startswith("#")]
    assert shown == [f"#{p.id}" for p in expected]
    assert "initial: the program as written" in proc.stdout
    assert f"+++ #{best.id}" in proc.stdout

    chain = json.loads(ambidex(*args, "--json", "--diff", home=evolved.home).stdout)
    assert [row["id"] for row in chain] == [p.id for p in expected]
    assert chain[0]["proposer"] == "initial"
    assert "diff" not in chain[0]
    for parent, child in itertools.pairwise(chain):
        assert child["parent_id"] == parent["id"]
        assert {"iteration", "score", "note", "diff"} <= child.keys()


# -- mistakes ----------------------------------------------------------------------


def test_mistakes_are_one_line_and_exit_2(evolved: Evolved, tmp_path: Path) -> None:
    not_sqlite = tmp_path / "notes.sqlite"
    not_sqlite.write_text("hello")
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE things (a)")
    conn.close()
    missing = tmp_path / "missing.sqlite"
    cases = [
        (["show", str(missing)], f"no evolve database at {missing}"),
        (["lineage", str(missing), "1"], f"no evolve database at {missing}"),
        (["show", str(tmp_path)], "is a directory, not an evolve database"),
        (["show", str(not_sqlite)], "is not an evolve database"),
        (["show", str(other)], "is not an evolve database"),
        (["lineage", str(evolved.db), "9999"], "no program #9999 in"),
    ]
    for args, message in cases:
        line = _one_error_line(ambidex("evolve", *args, home=tmp_path))
        assert message in line, (args, line)
    assert not missing.exists()  # looking did not create it


def test_help_lists_the_subcommands_and_the_short_form(tmp_path: Path) -> None:
    proc = ambidex("evolve", "--help", home=tmp_path)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for word in ("run", "show", "lineage", "ambidex evolve FILE"):
        assert word in text
    bare = ambidex("evolve", home=tmp_path)
    assert "lineage" in bare.stdout + bare.stderr
    options = ambidex("evolve", str(QUICK), "--help", home=tmp_path)
    assert options.returncode == 0
    assert "--iterations" in options.stdout


def test_failure_kinds_group_by_the_notes_word(tmp_path: Path) -> None:
    def failed(note: str, error: str) -> Program:
        return Program(
            code="def f(): pass", metrics={}, score=None, ok=False, error=error, note=note
        )

    with ax.evolve.ProgramDatabase(tmp_path / "k.sqlite", metric="m", islands=1) as db:
        db.add(failed("crash: literal '1' -> '0' (line 2)", "crashed: ZeroDivisionError: x"))
        db.add(failed("timeout: literal '2' -> '9' (line 2)", "timeout after 1 s"))
        db.add(failed("crash: alternative 'a: b' -> 'c' (line 3)", "crashed: KeyError: 'k'"))
        db.add(failed("literal 'a: b' -> 'c'", "bad metrics: the metric 'm' is nan"))
        db.add(failed("", "the proposer gave no code"))
        assert db.failure_kinds() == [
            ("crash", 2, "crashed: KeyError: 'k'"),
            ("bad_metrics", 1, "bad metrics: the metric 'm' is nan"),
            ("failed", 1, "the proposer gave no code"),
            ("timeout", 1, "timeout after 1 s"),
        ]
