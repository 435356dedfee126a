"""Reproducible by seed: the same target, seed, proposer and K give the same database.

Timing is made adversarial on purpose: the evaluator sleeps for a time drawn
from a hash of the candidate's value (so evaluations finish out of iteration
order), proposals wait a random delay from the operating system's random source
(not the seed), and the mock LLM server's latency jitter is seeded differently
in each run. The databases are compared by a digest of every program, elite and
migration (everything but the ``created_at`` times).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import ambidex as ax
from ambidex.evolve import LLMProposer, OfflineProposer, Proposal, ProposalContext, Proposer
from ambidex.llm import MockLLMServer

K = 4

TARGET = """
import hashlib
import math
import time

import ambidex as ax


@ax.evolve.target(
    goal="Return a float as close to pi as possible.",
    metric="score",
    features={"error": (0.0, 1.0, 4)},
)
def approx() -> float:
    x = 2.0 + 0.5
    if x > 3.05:
        raise ValueError(f"{x} is too big")
    return x


def evaluate(approx) -> dict[str, float]:
    value = float(approx())
    # Up to 0.15 s, by a hash of the value: candidates finish out of iteration order.
    time.sleep(hashlib.sha256(repr(value).encode()).digest()[0] / 255 * 0.15)
    return {"score": -abs(value - math.pi), "error": min(abs(value - math.pi), 1.0)}
"""


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AMBIDEX_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return tmp_path / "home"


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "approx_target.py"
    path.write_text(TARGET)
    return path


class Jittery:
    """A proposer that waits a random delay (not from the seed) before the wrapped one answers."""

    def __init__(self, inner: Proposer, max_delay_s: float = 0.06) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_delay_s = max_delay_s
        self._jitter = random.SystemRandom()

    async def propose(self, ctx: ProposalContext) -> Proposal:
        await asyncio.sleep(self._jitter.uniform(0.0, self.max_delay_s))
        return await self.inner.propose(ctx)


class RecordingSandbox(ax.evolve.Sandbox):
    """A sandbox that notes the order evaluations finish in (by the order they started)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.started = 0
        self.finished: list[int] = []

    async def evaluate(self, source: str, **options: Any) -> ax.evolve.EvalResult:
        n = self.started
        self.started += 1
        result = await super().evaluate(source, **options)
        self.finished.append(n)
        return result


def digest(db: Path) -> str:
    """A digest of every program, elite and migration, in id order (times left out)."""
    conn = sqlite3.connect(db)
    try:
        programs = conn.execute(
            "SELECT id, code, metrics, score, ok, error, stderr, parent_id, island, features, "
            "iteration, proposer, note FROM programs ORDER BY id"
        ).fetchall()
        elites = conn.execute(
            "SELECT island, cell, program_id FROM elites ORDER BY 1, 2"
        ).fetchall()
        migrations = conn.execute(
            "SELECT source_island, target_island, program_id, placed FROM migrations ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    text = json.dumps([programs, elites, migrations])
    return hashlib.sha256(text.encode()).hexdigest()


def programs(db: Path) -> list[ax.evolve.Program]:
    with ax.evolve.ProgramDatabase(
        db, metric="score", islands=4, features={"error": (0.0, 1.0, 4)}
    ) as pdb:
        return pdb.history()


def check_each_saw_only_iterations_k_back(db: Path, k: int) -> None:
    """Iteration i's parent is the program as written or one of iterations 1..i-K."""
    history = programs(db)
    by_id = {p.id: p for p in history}
    for prog in history:
        if prog.iteration > 0:
            parent = by_id[prog.parent_id]
            assert parent.iteration <= max(prog.iteration - k, 0), (
                prog.iteration,
                parent.iteration,
            )


async def run(
    target: Path, db: Path, iterations: int, proposer: Proposer, **options: Any
) -> ax.evolve.EvolveResult:
    return await ax.evolve.aevolve(
        target,
        iterations=iterations,
        parallel=K,
        proposer=proposer,
        db=db,
        seed=7,
        timeout_s=20,
        **options,
    )


async def test_the_same_seed_gives_the_same_database_when_offline_and_timing_differs(
    target: Path, tmp_path: Path
) -> None:
    boxes = [RecordingSandbox(timeout_s=20), RecordingSandbox(timeout_s=20)]
    dbs = [tmp_path / "a.sqlite", tmp_path / "b.sqlite"]
    for box, db in zip(boxes, dbs, strict=True):
        result = await run(target, db, 24, Jittery(OfflineProposer()), sandbox=box)
        assert result.done == 24
    assert digest(dbs[0]) == digest(dbs[1])
    # the timing really was adversarial: evaluations finished out of the order they started
    assert any(box.finished != sorted(box.finished) for box in boxes)
    history = programs(dbs[0])
    assert [p.iteration for p in history] == [0] * 4 + list(range(1, 25))  # ids in order
    failed = [p for p in history if not p.ok]
    assert failed, "the target should make some candidates fail"
    assert all("ambidex-evolve-" not in p.stderr + (p.error or "") for p in failed)
    assert any("<sandbox>/" in p.stderr for p in failed)  # the evaluation directory, renamed
    check_each_saw_only_iterations_k_back(dbs[0], K)
    with ax.evolve.ProgramDatabase(
        dbs[0], metric="score", islands=4, features={"error": (0.0, 1.0, 4)}
    ) as pdb:
        assert pdb.migrations()  # 25 successes: a migration is part of what is compared


async def test_the_same_seed_gives_the_same_database_when_an_llm_proposes(
    target: Path, tmp_path: Path
) -> None:
    dbs = [tmp_path / "a.sqlite", tmp_path / "b.sqlite"]
    for n, db in enumerate(dbs):
        # Each run its own server: the latency jitter is drawn from another seed each time.
        with MockLLMServer(
            latency_ms=5, jitter_ms=120, seed=random.SystemRandom().randrange(2**32)
        ) as server:
            proposer = LLMProposer("mock-code", base_url=server.url, api_key="", temperature=0)
            try:
                result = await run(target, db, 16, proposer)
            finally:
                await proposer.aclose()
            assert result.done == 16, n
            assert server.stats().requests >= 16
    assert digest(dbs[0]) == digest(dbs[1])
    history = programs(dbs[0])
    assert any(p.ok and p.iteration > 0 for p in history)
    check_each_saw_only_iterations_k_back(dbs[0], K)


async def test_a_run_interrupted_extended_and_resumed_ends_as_an_uninterrupted_one(
    target: Path, tmp_path: Path
) -> None:
    whole = tmp_path / "whole.sqlite"
    await run(target, whole, 16, Jittery(OfflineProposer()))

    pieces = tmp_path / "pieces.sqlite"
    first = await run(target, pieces, 5, Jittery(OfflineProposer()))  # a shorter run first
    assert first.done == 5

    task: asyncio.Task[ax.evolve.EvolveResult] | None = None

    def interrupt(p: ax.evolve.EvolveProgress) -> None:
        if p.done >= 9 and task is not None:
            task.cancel()  # as Ctrl-C would: candidates in flight (and held back) are lost

    task = asyncio.ensure_future(
        run(target, pieces, 16, Jittery(OfflineProposer()), on_progress=interrupt)
    )
    with pytest.raises(asyncio.CancelledError):
        await task
    conn = sqlite3.connect(pieces)
    stored = [r[0] for r in conn.execute("SELECT iteration FROM programs WHERE iteration > 0")]
    (pending,) = conn.execute("SELECT value FROM meta WHERE key = 'pending_contexts'").fetchone()
    samples = json.loads(pending)
    assert sorted(stored) == list(range(1, max(stored) + 1))  # stored in order: a prefix
    assert 9 <= max(stored) < 16
    assert sorted(map(int, samples)) == list(range(max(stored) + 1, max(stored) + 1 + K))
    # As if killed between storing an iteration and sampling the one K later: that sample
    # is drawn again on resume, from the same stored prefix.
    del samples[str(max(stored) + K)]
    conn.execute("UPDATE meta SET value = ? WHERE key = 'pending_contexts'", (json.dumps(samples),))
    conn.commit()
    conn.close()

    resumed = await run(target, pieces, 16, Jittery(OfflineProposer()))
    assert resumed.resumed_from == max(stored)
    assert resumed.done == 16
    assert digest(pieces) == digest(whole)


async def test_free_running_stores_every_iteration_when_not_deterministic(
    target: Path, tmp_path: Path
) -> None:
    db = tmp_path / "free.sqlite"
    result = await run(target, db, 12, Jittery(OfflineProposer()), deterministic=False)
    assert result.done == 12
    assert sorted(p.iteration for p in programs(db) if p.iteration > 0) == list(range(1, 13))
