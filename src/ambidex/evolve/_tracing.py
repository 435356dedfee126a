"""Spans of evolution runs and their candidates; imported only while tracing is on.

* ``ambidex.evolve <target>``: one run of ``evolve`` (``traced_evolution``).
* ``ambidex.evolve.candidate``: one iteration (``traced_candidate``), a child of
  the run's span, with two children of its own:
  ``ambidex.evolve.propose`` (the proposer; an ``LLMProposer``'s requests are
  ``chat <model>`` spans below it) and ``ambidex.evolve.evaluate`` (the
  sandboxed evaluation, waiting for the ``sandbox`` limit included).

The evaluation's own processes (the sandbox's runner, the evaluator and the
candidate) are not traced: they import no ambidex and are not trusted to report
anything but their result, so the trace context is not carried into them. On
a distributed cpu backend the evaluation is a cpu call, whose span the runtime
makes below ``ambidex.evolve.evaluate``.

Names and attributes: docs/observability.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Status, StatusCode

from ambidex import _otel
from ambidex._text import plain_text

if TYPE_CHECKING:
    from ambidex.evolve._coordinator import EvolveResult, _Evolution
    from ambidex.evolve._database import Program
    from ambidex.evolve._proposers import Proposal, ProposalContext, Proposer
    from ambidex.evolve._sandbox import EvalResult

__all__ = [
    "failure_kind",
    "traced_candidate",
    "traced_evaluate",
    "traced_evolution",
    "traced_propose",
]


def failure_kind(program: Program) -> str:
    """How a failed candidate failed, as the run counts it (``EvolveResult.failures``)."""
    return program.note.split(":", 1)[0] if program.note else "failed"


async def traced_evolution(run: _Evolution, db_path: Path) -> EvolveResult:
    """``run.go(db_path)`` inside the run's span ``ambidex.evolve <target>``."""
    attributes: dict[str, Any] = {
        "ambidex.evolve.target": run.target.name,
        "ambidex.evolve.metric": run.target.spec.metric,
        "ambidex.evolve.iterations": run.iterations,
        "ambidex.evolve.parallel": run.parallel,
        "ambidex.evolve.islands": run.islands,
        "ambidex.evolve.seed": run.seed,
        "ambidex.evolve.deterministic": run.deterministic,
        "ambidex.evolve.proposer": run.proposer.name,
        "ambidex.evolve.resumed_from": run.resumed_from,
    }
    with _otel.span(f"ambidex.evolve {run.target.name}", attributes) as span:
        result = await run.go(db_path)
        span.set_attribute("ambidex.evolve.done", result.done)
        span.set_attribute("ambidex.evolve.succeeded", result.succeeded)
        span.set_attribute("ambidex.evolve.failed", result.failed)
        for kind, count in sorted(result.failures.items()):
            span.set_attribute(f"ambidex.evolve.failures.{kind}", count)
        if result.best is not None and result.best.score is not None:
            span.set_attribute("ambidex.evolve.best_score", result.best.score)
        return result


async def traced_candidate(run: _Evolution, i: int, ctx: ProposalContext) -> Program:
    """``run._make_candidate(i, ctx)`` inside its span ``ambidex.evolve.candidate``.

    A candidate that fails (its proposal, its check or its evaluation) is an
    error of this span, ``error.type`` its failure kind (``timeout``, ``crash``,
    ``proposal``...). The database gives the candidate its id when it stores it,
    after this span has ended: the iteration names the candidate here.
    """
    attributes: dict[str, Any] = {
        "ambidex.evolve.iteration": i,
        "ambidex.evolve.island": i % run.islands,
        "ambidex.evolve.proposer": run.proposer.name,
        "ambidex.evolve.inspiration_ids": [p.id for p in ctx.inspirations if p.id is not None],
    }
    if ctx.parent.id is not None:
        attributes["ambidex.evolve.parent_id"] = ctx.parent.id
    if ctx.parent.score is not None:
        attributes["ambidex.evolve.parent_score"] = ctx.parent.score
    with _otel.span("ambidex.evolve.candidate", attributes) as span:
        program = await run._make_candidate(i, ctx)
        span.set_attribute("ambidex.evolve.ok", program.ok)
        if program.score is not None:
            span.set_attribute("ambidex.evolve.score", program.score)
        if not program.ok:
            kind = failure_kind(program)
            span.set_attribute("ambidex.evolve.failure_kind", kind)
            span.set_attribute("error.type", kind)
            # plain text: a lone surrogate (JSON from a server) fails the batch's encoding
            span.set_status(Status(StatusCode.ERROR, plain_text(program.error or kind)[:500]))
        return program


async def traced_propose(proposer: Proposer, ctx: ProposalContext) -> Proposal:
    """``proposer.propose(ctx)`` inside its span ``ambidex.evolve.propose``."""
    with _otel.span("ambidex.evolve.propose", {"ambidex.evolve.proposer": proposer.name}) as span:
        proposal = await proposer.propose(ctx)
        span.set_attribute("ambidex.evolve.proposed", proposal.code is not None)
        if proposal.code is None:
            span.set_attribute("ambidex.evolve.proposal.problem", proposal.note or "no change")
        return proposal


async def traced_evaluate(run: _Evolution, code: str) -> EvalResult:
    """``run._evaluate(code)`` inside its span ``ambidex.evolve.evaluate``."""
    with _otel.span("ambidex.evolve.evaluate", {"ambidex.limit": "sandbox"}) as span:
        result = await run._evaluate(code)
        span.set_attribute("ambidex.evolve.eval.kind", result.kind)
        span.set_attribute("ambidex.evolve.eval.elapsed_s", result.elapsed_s)
        if not result.ok:
            span.set_attribute("error.type", result.kind)
            span.set_status(Status(StatusCode.ERROR, plain_text(result.error or result.kind)[:500]))
        return result
