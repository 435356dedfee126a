"""Evolution: propose -> evaluate -> select over programs, many candidates in flight at once.

    # packing.py
    import ambidex as ax

    @ax.evolve.target(goal="maximise the sum of radii", metric="sum_radii")
    def pack() -> list[tuple[float, float, float]]: ...

    def evaluate(pack) -> dict[str, float]: ...

    result = ax.evolve.evolve("packing.py", iterations=200, parallel=8, proposer="offline")
    result.best.code, result.best.score

Or ``ambidex evolve packing.py --iterations 200 --parallel 8``. Candidates run in
a sandbox (a fresh subprocess per candidate, killed with its whole process
group at the timeout, with CPU, memory and process limits, no network and no
files outside its directory where the OS allows); programs live in a MAP-Elites
database with islands, in SQLite, so a stopped run resumes. See docs/evolve.md.

Only the decorator is imported eagerly: candidate files ``import ambidex`` in
the sandbox, and should not pay for the coordinator there.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ambidex.evolve._target import (
    Target,
    TargetError,
    TargetSpec,
    evaluator,
    load_target,
    target,
)

if TYPE_CHECKING:
    from ambidex.evolve._coordinator import (
        EvolveError,
        EvolveProgress,
        EvolveResult,
        aevolve,
        default_db_path,
        evolve,
        make_proposer,
    )
    from ambidex.evolve._database import DatabaseError, Program, ProgramDatabase
    from ambidex.evolve._proposers import (
        LLMProposer,
        OfflineProposer,
        Proposal,
        ProposalContext,
        Proposer,
    )
    from ambidex.evolve._sandbox import EvalResult, Sandbox, SandboxError

_LAZY = {
    "EvolveError": "_coordinator",
    "EvolveProgress": "_coordinator",
    "EvolveResult": "_coordinator",
    "aevolve": "_coordinator",
    "default_db_path": "_coordinator",
    "make_proposer": "_coordinator",
    "evolve": "_coordinator",
    "DatabaseError": "_database",
    "Program": "_database",
    "ProgramDatabase": "_database",
    "LLMProposer": "_proposers",
    "OfflineProposer": "_proposers",
    "Proposal": "_proposers",
    "ProposalContext": "_proposers",
    "Proposer": "_proposers",
    "EvalResult": "_sandbox",
    "Sandbox": "_sandbox",
    "SandboxError": "_sandbox",
}


def __getattr__(name: str) -> Any:
    """The coordinator, database, proposers and sandbox, imported on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ambidex.evolve' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ambidex.evolve.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily imported ones included."""
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DatabaseError",
    "EvalResult",
    "EvolveError",
    "EvolveProgress",
    "EvolveResult",
    "LLMProposer",
    "OfflineProposer",
    "Program",
    "ProgramDatabase",
    "Proposal",
    "ProposalContext",
    "Proposer",
    "Sandbox",
    "SandboxError",
    "Target",
    "TargetError",
    "TargetSpec",
    "aevolve",
    "default_db_path",
    "evaluator",
    "evolve",
    "load_target",
    "make_proposer",
    "target",
]
