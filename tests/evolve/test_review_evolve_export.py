"""A failed candidate's span exports whatever text its failure carries.

The candidate and evaluation spans set their status text from the candidate's
error (a proposer's, an evaluator's, read back from JSON): a lone surrogate in
it made the whole OTLP batch, every trace's spans in it, fail to encode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import ambidex as ax
from ambidex.evolve import Proposal, ProposalContext

pytest.importorskip("opentelemetry.exporter.otlp.proto.common")

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from _otel import one

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "examples" / "evolve" / "quick" / "approx_pi.py"


class Garbled:
    name = "garbled"

    async def propose(self, ctx: ProposalContext) -> Proposal:
        # e.g. a server's JSON error text with "\udcff" escapes: json.loads makes them lone
        return Proposal(code=None, note="nothing", error="the server said: caf\udcc3\udca9")


async def test_a_failure_text_with_lone_surrogates_exports(
    spans: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMBIDEX_HOME", str(tmp_path / "home"))
    result = await ax.evolve.aevolve(
        QUICK, iterations=1, parallel=1, proposer=Garbled(), db=tmp_path / "t.sqlite"
    )
    assert result.failures == {"proposal": 1}
    got = spans.get_finished_spans()
    candidate = one(got, "ambidex.evolve.candidate")
    assert "the server said: caf" in (candidate.status.description or "")
    encode_spans(got).SerializeToString()  # raised UnicodeEncodeError: the batch was lost
