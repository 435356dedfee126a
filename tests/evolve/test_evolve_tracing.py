"""An evolution run as spans: a span per candidate, with its proposal and evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import ambidex as ax
from _otel import by_name, one, parent_of, tree
from ambidex.evolve import Proposal, ProposalContext

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "examples" / "evolve" / "quick" / "approx_pi.py"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AMBIDEX_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


class Scripted:
    """Answers from a script, one per call; None is a proposal without code."""

    name = "scripted"

    def __init__(self, answers: list[str | Exception | None]) -> None:
        self.answers = answers
        self.calls = 0

    async def propose(self, ctx: ProposalContext) -> Proposal:
        answer = self.answers[self.calls]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        if answer is None:
            return Proposal(code=None, note="nothing", error="scripted: no code")
        return Proposal(code=answer, note=f"scripted answer {self.calls}")


async def test_candidates_are_spans_with_proposal_evaluation_and_failure_kind(
    spans: Any, tmp_path: Path
) -> None:
    answers: list[str | Exception | None] = [
        "def approx() -> float:\n    return 3.1\n",  # ok
        "def approx() -> float:\n    return 1 / 0\n",  # crash
        "def approx( -> float:\n    return 1\n",  # does not parse: proposal
        None,  # no code: proposal
        ConnectionError("the proposer's server is down"),  # proposal (raised)
    ]
    result = await ax.evolve.aevolve(
        QUICK,
        iterations=len(answers),
        parallel=1,
        proposer=Scripted(answers),
        db=tmp_path / "t.sqlite",
        timeout_s=20,
    )
    assert result.failures == {"crash": 1, "proposal": 3}
    got = spans.get_finished_spans()
    shown = tree(got)
    run = one(got, "ambidex.evolve approx")
    assert run.attributes["ambidex.evolve.iterations"] == 5
    assert run.attributes["ambidex.evolve.proposer"] == "scripted"
    assert run.attributes["ambidex.evolve.succeeded"] == 1
    assert run.attributes["ambidex.evolve.failures.proposal"] == 3
    cands = sorted(
        by_name(got, "ambidex.evolve.candidate"),
        key=lambda s: s.attributes["ambidex.evolve.iteration"],
    )
    assert [c.attributes["ambidex.evolve.iteration"] for c in cands] == [1, 2, 3, 4, 5]
    kinds = [c.attributes.get("ambidex.evolve.failure_kind") for c in cands]
    assert kinds == [None, "crash", "proposal", "proposal", "proposal"], shown
    for c in cands:
        assert parent_of(c, got) is run, shown
        assert c.attributes["ambidex.evolve.parent_id"] >= 1
        children = sorted(
            (s for s in got if parent_of(s, got) is c), key=lambda s: s.start_time or 0
        )
        names = [s.name for s in children]
        if c.attributes.get("ambidex.evolve.failure_kind") == "proposal":
            assert names == ["ambidex.evolve.propose"], shown
            assert c.status.status_code.name == "ERROR"
        else:
            assert names == ["ambidex.evolve.propose", "ambidex.evolve.evaluate"], shown
    ok = cands[0]
    assert ok.status.status_code.name == "UNSET"
    assert ok.attributes["ambidex.evolve.ok"] is True
    assert ok.attributes["ambidex.evolve.score"] == pytest.approx(-abs(3.1 - 3.141592653589793))
    evaluations = {
        c.attributes["ambidex.evolve.iteration"]: s
        for c in cands
        for s in got
        if s.name == "ambidex.evolve.evaluate" and parent_of(s, got) is c
    }
    assert evaluations[1].attributes["ambidex.evolve.eval.kind"] == "ok"
    assert evaluations[2].attributes["error.type"] == "crash"
    assert evaluations[2].status.status_code.name == "ERROR"
    assert cands[1].attributes["error.type"] == "crash"
    raised = [
        s for s in got if s.name == "ambidex.evolve.propose" and parent_of(s, got) is cands[4]
    ]
    assert raised[0].attributes["error.type"] == "ConnectionError"
    no_code = [
        s for s in got if s.name == "ambidex.evolve.propose" and parent_of(s, got) is cands[3]
    ]
    assert no_code[0].attributes["ambidex.evolve.proposed"] is False
