"""The coordinator end to end: real sandbox, real SQLite, K in flight, failures, resume, jobs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _evolve_db import iterations_done

import ambidex as ax
from ambidex.evolve import ProgramDatabase, Proposal, ProposalContext
from ambidex.jobs import JobManager, JobStatus, WorkloadRegistry, load_workloads

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "examples" / "evolve" / "quick" / "approx_pi.py"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AMBIDEX_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


class Scripted:
    """A proposer that answers from a script (per iteration), to test the coordinator alone."""

    name = "scripted"

    def __init__(self, answers: dict[int, str | None], default: str) -> None:
        self.answers = answers
        self.default = default
        self.calls: list[int] = []

    async def propose(self, ctx: ProposalContext) -> Proposal:
        i = len(self.calls)
        self.calls.append(i)
        code = self.answers.get(i, self.default)
        if code is None:
            return Proposal(code=None, note="nothing", error="scripted: no code")
        return Proposal(code=code, note=f"scripted answer {i}")


def test_offline_evolution_improves_the_quick_example(tmp_path: Path) -> None:
    seen: list[ax.evolve.EvolveProgress] = []
    result = ax.evolve.evolve(
        QUICK,
        iterations=24,
        parallel=4,
        proposer="offline",
        db=tmp_path / "quick.sqlite",
        seed=3,
        timeout_s=20,
        on_progress=seen.append,
    )
    assert result.done == 24
    assert result.initial is not None
    assert result.best is not None
    assert result.best.score is not None
    assert result.initial.score is not None
    assert result.best.score > result.initial.score
    assert result.improved
    assert max(p.in_flight for p in seen) == 4  # K candidates really were in flight at once
    assert seen[-1].done == 24
    db = ax.evolve.ProgramDatabase(
        tmp_path / "quick.sqlite", metric="score", islands=4, features={"error": (0.0, 1.0, 4)}
    )
    try:
        lineage = db.lineage(result.best.id)  # type: ignore[arg-type]
        assert lineage[0].proposer == "initial"
        assert lineage[-1].id == result.best.id
        assert len(db.history()) == 24 + 4  # the initial program on each island, then 24
    finally:
        db.close()


class HoldFirst:
    """A proposer whose first proposal waits until ``release`` is set (at most 60 s)."""

    name = "hold-first"

    def __init__(self, first: str, rest: str) -> None:
        self.first, self.rest = first, rest
        self.calls = 0
        self.release = asyncio.Event()

    async def propose(self, ctx: ProposalContext) -> Proposal:
        self.calls += 1
        if self.calls > 1:
            return Proposal(code=self.rest, note="fast")
        with contextlib.suppress(TimeoutError):  # a barrier would hold the others: then fail
            await asyncio.wait_for(self.release.wait(), 60)
        return Proposal(code=self.first, note="slow")


def test_a_slow_candidate_does_not_hold_the_others(tmp_path: Path) -> None:
    fast = "def approx() -> float:\n    return 3.0 + 0.1\n"
    slow = "def approx() -> float:\n    return 3.0 + 0.14\n"
    proposer = HoldFirst(slow, fast)

    def on_progress(p: ax.evolve.EvolveProgress) -> None:
        if p.done == 7:  # the other slot did every other candidate meanwhile
            proposer.release.set()

    t0 = time.monotonic()
    result = ax.evolve.evolve(
        QUICK,
        iterations=8,
        parallel=2,
        proposer=proposer,
        db=tmp_path / "p.sqlite",
        deterministic=False,  # stored as they finish: the slow one last
        on_progress=on_progress,
    )
    assert time.monotonic() - t0 < 50, "the slow proposal held the other slot"
    assert result.done == 8
    conn = sqlite3.connect(tmp_path / "p.sqlite")
    order = [r[0] for r in conn.execute("SELECT iteration FROM programs ORDER BY id")]
    conn.close()
    assert order[-1] == 1, order  # iteration 1 was stored after all seven others
    assert result.best is not None
    assert result.best.code == slow


async def test_the_database_is_used_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every SQLite call of a run (open, sample, store, progress, close) is on an I/O thread."""
    threads: list[str] = []

    def spied(name: str) -> None:
        method = getattr(ProgramDatabase, name)

        def spy(self: ProgramDatabase, *args: Any, **kwargs: Any) -> Any:
            threads.append(threading.current_thread().name)
            return method(self, *args, **kwargs)

        monkeypatch.setattr(ProgramDatabase, name, spy)

    for name in ("__init__", "_check_open", "close"):  # every public call checks it is open
        spied(name)
    seen: list[ax.evolve.EvolveProgress] = []
    result = await ax.evolve.aevolve(
        QUICK, iterations=6, parallel=2, db=tmp_path / "t.sqlite", on_progress=seen.append
    )
    assert result.done == 6
    assert seen[-1].done == 6
    assert seen[-1].best_id is not None
    assert len(threads) > 6 * 3  # opened, and at least a sample, a store and a report each
    assert threading.current_thread().name not in threads, sorted(set(threads))


def test_failures_are_recorded_with_their_reason_and_stderr(tmp_path: Path) -> None:
    broken = "def approx() -> float:\n    return 1 / 0\n"
    unparsable = "def approx( -> float:\n    return 1\n"
    answers: dict[int, str | None] = {
        0: broken,
        1: unparsable,
        2: None,
    }
    proposer = Scripted(answers, default="def approx() -> float:\n    return 3.1\n")
    result = ax.evolve.evolve(
        QUICK, iterations=4, parallel=1, proposer=proposer, db=tmp_path / "f.sqlite"
    )
    assert result.failed == 3
    assert result.succeeded == 1
    db = ax.evolve.ProgramDatabase(
        tmp_path / "f.sqlite", metric="score", islands=4, features={"error": (0.0, 1.0, 4)}
    )
    try:
        failed = [p for p in db.history() if not p.ok]
    finally:
        db.close()
    by_iteration = {p.iteration: p for p in failed}
    assert "ZeroDivisionError" in (by_iteration[1].error or "")
    assert "ZeroDivisionError" in by_iteration[1].stderr
    assert "does not parse" in (by_iteration[2].error or "")
    assert "scripted: no code" in (by_iteration[3].error or "")


def test_hostile_proposals_fail_alone_and_the_run_goes_on(tmp_path: Path) -> None:
    """Text SQLite or the parser refuse fails its own candidate, never the run."""
    answers: dict[int, str | None] = {
        0: "def approx() -> float:\n    return '\udcff'\n",  # a lone surrogate
        1: "def approx() -> float:\n    return 1\x00\n",  # a NUL byte
        2: "def approx() -> float:\n    return " + "-" * 100_000 + "1\n",  # too deep
        3: "def approx() -> float:\n    raise ValueError(chr(0xDCFF) + chr(0xD800))\n",
    }
    proposer = Scripted(answers, default="def approx() -> float:\n    return 3.1\n")
    result = ax.evolve.evolve(
        QUICK, iterations=5, parallel=2, proposer=proposer, db=tmp_path / "h.sqlite"
    )
    assert (result.done, result.failed, result.succeeded) == (5, 4, 1)
    assert result.failures == {"proposal": 3, "crash": 1}
    db = ax.evolve.ProgramDatabase(
        tmp_path / "h.sqlite", metric="score", islands=4, features={"error": (0.0, 1.0, 4)}
    )
    try:
        by_iteration = {p.iteration: p for p in db.history() if not p.ok}
    finally:
        db.close()
    assert "not UTF-8 text" in (by_iteration[1].error or "")
    assert "\\udcff" in by_iteration[1].code  # stored escaped, not refused
    assert by_iteration[2].error == "the code holds a NUL byte"
    assert "nested too deeply for the parser" in (by_iteration[3].error or "")
    assert (by_iteration[4].error or "").startswith("crashed: ValueError: \\udcff")


def test_an_initial_program_that_fails_stops_the_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad_target.py"
    bad.write_text(
        QUICK.read_text().replace("return 2.0 + 0.5", "raise RuntimeError('broken start')")
    )
    with pytest.raises(ax.evolve._coordinator.EvolveError, match="broken start"):
        ax.evolve.evolve(bad, iterations=2, db=tmp_path / "b.sqlite")


def test_resume_after_a_kill_continues_from_the_database(tmp_path: Path) -> None:
    db = tmp_path / "resume.sqlite"
    cmd = [
        sys.executable, "-m", "ambidex", "evolve", str(QUICK), "--iterations", "30",
        "--parallel", "2", "--db", str(db), "--json", "--timeout-s", "20",
    ]  # fmt: skip
    env = {**os.environ, "AMBIDEX_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 40
    while iterations_done(db) < 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    done_before = iterations_done(db)
    assert 6 <= done_before < 30
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["resumed_from"] == done_before
    assert summary["done"] == 30
    conn = sqlite3.connect(db)
    iterations = [r[0] for r in conn.execute("SELECT iteration FROM programs WHERE iteration > 0")]
    conn.close()
    assert sorted(set(iterations)) == list(range(1, 31))


async def test_evolution_as_a_job_with_progress_events(tmp_path: Path) -> None:
    reg = WorkloadRegistry()
    assert load_workloads(str(QUICK), reg) == ["evolve.approx"]
    async with JobManager(tmp_path / "jobs.sqlite", registry=reg, poll_s=0.05) as m:
        job = await m.submit("evolve.approx", {"iterations": 8, "parallel": 2, "seed": 1})
        done = await m.wait(job.id, timeout_s=50)
        events = await m.events(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.result["done"] == 8
    messages = [e.data.get("message") or "" for e in events if e.kind == "progress"]
    assert any("in flight" in m and "best" in m for m in messages), messages


def test_the_cli_prints_the_best_program(tmp_path: Path) -> None:
    env = {**os.environ, "AMBIDEX_HOME": str(tmp_path / "home")}
    args = ["evolve", str(QUICK), "--iterations", "8", "--parallel", "4", "--seed", "2"]
    proc = subprocess.run(
        [sys.executable, "-m", "ambidex", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "best: #" in proc.stdout
    assert "def approx()" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "ambidex", "evolve", str(tmp_path / "none.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 2
    assert "target file not found" in bad.stderr
    assert "Traceback" not in bad.stderr
