"""The coordinator: K candidates in flight as a pipeline, propose -> evaluate -> keep.

An iteration samples a parent and inspirations from its island, asks the
proposer for a variant (LLM requests hold the runtime's ``llm`` limit),
evaluates it in the sandbox (holding the ``sandbox`` limit) and stores the
outcome. Nothing waits for the slowest of a batch: by default (``deterministic``)
candidates are stored in iteration order and iteration i starts the moment
iteration i-K is stored, so what it sees does not depend on timing; otherwise
each candidate is stored when it finishes and the next starts in its slot.
Every stored candidate is committed with the count of iterations done, so a
killed run started again with the same database continues where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from ambidex import _observe
from ambidex._log import get_logger
from ambidex._paths import data_dir
from ambidex._text import describe_exception
from ambidex.evolve._database import Program, ProgramDatabase
from ambidex.evolve._proposers import LLMProposer, OfflineProposer, ProposalContext, Proposer
from ambidex.evolve._sandbox import EvalResult, Sandbox
from ambidex.evolve._target import Target, load_target
from ambidex.exceptions import AmbidexError, UnknownLimitError
from ambidex.runtime import Runtime, cpu, current_runtime, sync_facade, to_thread

__all__ = [
    "EvolveError",
    "EvolveProgress",
    "EvolveResult",
    "aevolve",
    "default_db_path",
    "evolve",
    "make_proposer",
]

_PROGRESS_EVERY_S = 0.5

T = TypeVar("T")
log = get_logger(__name__)


class EvolveError(AmbidexError, RuntimeError):
    """The evolution cannot start or go on (e.g. the initial program fails its evaluation)."""


@dataclass(frozen=True)
class EvolveProgress:
    """How far a run is: what the live view and job progress events show."""

    iterations: int
    """Candidates to try in all (earlier runs on the same database included)."""
    done: int
    """Candidates finished in all (earlier runs on the same database included)."""
    in_flight: int
    succeeded: int
    """Candidates of this run that evaluated successfully."""
    failed: int
    """Candidates of this run that failed."""
    best_score: float | None
    best_id: int | None
    elapsed_s: float
    """Seconds since this run started."""

    @property
    def success_rate(self) -> float:
        """Share of finished candidates that evaluated successfully."""
        finished = self.succeeded + self.failed
        return self.succeeded / finished if finished else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds until the last candidate is done at this run's pace so far.

        None until a candidate of this run finished (no pace yet). The pace is
        this run's own (``succeeded + failed`` over ``elapsed_s``), so a resumed
        run is not credited with the candidates an earlier run did.
        """
        finished = self.succeeded + self.failed
        if finished <= 0 or self.elapsed_s <= 0:
            return None
        return max(self.iterations - self.done, 0) * self.elapsed_s / finished

    @property
    def total(self) -> float | None:
        """``ax.Progress``: the candidates to try in all (``iterations``)."""
        return self.iterations

    @property
    def message(self) -> str:
        """``ax.Progress``: :meth:`line`."""
        return self.line()

    def line(self) -> str:
        """One line: ``12/100 done, 8 in flight, 75% ok, best 2.61 (#9), eta 1m05s``."""
        best = "-" if self.best_score is None else f"{self.best_score:.6g} (#{self.best_id})"
        eta = self.eta_s
        return (
            f"{self.done}/{self.iterations} done, {self.in_flight} in flight, "
            f"{self.success_rate:.0%} ok, best {best}, "
            f"eta {'-' if eta is None else self._clock(eta)}"
        )

    @staticmethod
    def _clock(seconds: float) -> str:
        """``7s``, ``1m05s``, ``2h03m``: a duration as short as it reads well."""
        s = round(seconds)
        if s < 60:
            return f"{s}s"
        if s < 3600:
            return f"{s // 60}m{s % 60:02d}s"
        return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass
class EvolveResult:
    """The outcome of a run: the best program and what happened on the way."""

    best: Program | None
    initial: Program | None
    iterations: int
    done: int
    succeeded: int
    failed: int
    elapsed_s: float
    db_path: Path
    resumed_from: int = 0
    """Iterations already in the database when this run started."""
    failures: dict[str, int] = field(default_factory=dict)
    """Failed candidates by kind (``proposal``, ``timeout``, ``crash``, ...)."""

    @property
    def improved(self) -> bool:
        """The best program scores better than the initial one."""
        if self.best is None or self.initial is None or self.initial.score is None:
            return False
        return self.best.score != self.initial.score and self.best.id != self.initial.id

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (what ``--json`` prints and a job returns)."""
        return {
            "best": None
            if self.best is None
            else {
                "id": self.best.id,
                "score": self.best.score,
                "metrics": self.best.metrics,
                "code": self.best.code,
                "iteration": self.best.iteration,
            },
            "initial_score": None if self.initial is None else self.initial.score,
            "improved": self.improved,
            "iterations": self.iterations,
            "done": self.done,
            "resumed_from": self.resumed_from,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "failures": self.failures,
            "elapsed_s": self.elapsed_s,
            "db": str(self.db_path),
        }


def default_db_path(target_file: str | Path) -> Path:
    """``$AMBIDEX_HOME/evolve/<stem>-<hash of the absolute path>.sqlite``."""
    p = Path(target_file).resolve()
    digest = hashlib.sha256(str(p).encode()).hexdigest()[:10]
    return data_dir() / "evolve" / f"{p.stem}-{digest}.sqlite"


def make_proposer(proposer: str | Proposer, model: str | None = None) -> Proposer:
    """The proposer ``evolve`` uses for ``proposer``: a name (``"offline"``, ``"llm"``) or one.

    ``"llm"`` is an ``LLMProposer`` of ``model`` (default ``gpt-4o-mini``). Made
    before a run starts, it reports a missing API key at once.

    Raises:
        EvolveError: an unknown proposer name.
        LLMConfigError: ``"llm"`` without an API key for a remote server.
    """
    if not isinstance(proposer, str):
        return proposer
    if proposer == "offline":
        return OfflineProposer()
    if proposer == "llm":
        return LLMProposer(model or "gpt-4o-mini")
    raise EvolveError(f"proposer must be 'offline' or 'llm', got {proposer!r}")


# Limits this module declared itself (not the user), per runtime: they grow with ``parallel``.
_auto_limits: weakref.WeakKeyDictionary[Runtime, dict[str, int]] = weakref.WeakKeyDictionary()


def _ensure_limit(name: str, size: int) -> None:
    """Declare ``name`` with ``size`` unless the user declared it; grow our own to ``size``."""
    rt = current_runtime()
    ours = _auto_limits.setdefault(rt, {})
    try:
        rt.limit(name)
    except UnknownLimitError:
        rt.limits(**{name: size})
        ours[name] = size
        return
    if name in ours and ours[name] < size:
        rt.limits(**{name: size})
        ours[name] = size


async def aevolve(
    target: str | Path | Target,
    *,
    iterations: int,
    parallel: int = 4,
    proposer: str | Proposer = "offline",
    model: str | None = None,
    db: str | Path | None = None,
    fresh: bool = False,
    seed: int = 0,
    timeout_s: float = 30.0,
    memory_mb: int = 1024,
    islands: int = 4,
    sandbox: Sandbox | None = None,
    on_progress: Callable[[EvolveProgress], None] | None = None,
    deterministic: bool = True,
) -> EvolveResult:
    """Evolve the target until ``iterations`` candidates (in all runs on this database) are done.

    Args:
        target: the file (or a loaded ``Target``).
        iterations: candidates to try in total; a resumed run does the rest.
        parallel: candidates in flight at once (K).
        proposer: ``"offline"`` (mutates literals, swaps alternatives; no
            network), ``"llm"`` (``model`` through the LLM client) or a ``Proposer``.
        model: the LLM proposer's model (default ``gpt-4o-mini``; the client
            reads ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``).
        db: the program database (default ``default_db_path(file)``); an
            existing one is continued.
        fresh: delete the database first and start over.
        seed: seeds every sampling and proposal choice; with ``deterministic``
            the same seed, ``parallel``, target and proposer give the same
            programs, scores and database (see docs/evolve.md, "Reproducible by
            seed", for what the proposer and evaluator must do for that).
        timeout_s: the sandbox's wall-clock limit per candidate.
        memory_mb: the sandbox's memory limit per candidate.
        islands: MAP-Elites islands (migration between them is periodic).
        sandbox: a ``Sandbox`` of your own (then ``timeout_s``/``memory_mb`` are unused).
        on_progress: called after every stored candidate and twice a second.
        deterministic: store candidates in iteration order and start iteration
            i the moment iteration i-K is stored, so what each proposal sees
            does not depend on timing (a candidate that finishes early waits
            for its predecessors, which can leave slots idle behind a slow
            one). False: store each candidate when it finishes and start the
            next at once (a bit faster, not reproducible).

    Raises:
        TargetError: the file is not a usable target.
        EvolveError: bad arguments, or the initial program fails its own evaluation.
    """
    tgt = target if isinstance(target, Target) else load_target(target)
    for label, value in (("iterations", iterations), ("parallel", parallel), ("islands", islands)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise EvolveError(f"{label} must be a positive integer, got {value!r}")
    db_path = Path(db) if db is not None else default_db_path(tgt.path)
    opening = asyncio.ensure_future(to_thread(_open_database, tgt, db_path, fresh, islands, seed))
    try:
        database = await _finish_first(opening)
        box = sandbox or Sandbox(timeout_s=timeout_s, memory_mb=memory_mb)
        prop = make_proposer(proposer, model)
        _ensure_limit("sandbox", parallel)
        run = _Evolution(
            tgt,
            database,
            box,
            prop,
            iterations,
            parallel,
            seed,
            islands,
            on_progress,
            deterministic=deterministic,
            stored=await to_thread(database.iterations),
        )
        if _observe.on:  # the run's span (ambidex.evolve._tracing)
            from ambidex.evolve._tracing import traced_evolution

            return await traced_evolution(run, db_path)
        return await run.go(db_path)
    finally:
        if opening.done() and not opening.cancelled() and opening.exception() is None:
            await _finish_first(to_thread(opening.result().close))


async def _finish_first(step: Awaitable[T]) -> T:
    """Await ``step`` to its end; a cancellation that arrives meanwhile follows it.

    The database calls run on the runtime's I/O threads, and a call that its caller
    stops waiting for goes on there regardless. So that a cancelled run never leaves
    one behind (the close racing it), nor stops halfway through a step that must be
    whole (storing a candidate, then sampling and noting the one K later), these are
    awaited through this: the run stops between them, as it did when they did not
    wait at all.
    """
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller sees
        raise


def _open_database(
    tgt: Target, db_path: Path, fresh: bool, islands: int, seed: int
) -> ProgramDatabase:
    """The run's database (started over if ``fresh``), noting the target it evolves.

    Blocking (files, SQLite): ``aevolve`` runs it on the runtime's I/O threads.
    """
    db_path.parent.mkdir(parents=True, exist_ok=True)
    if fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    spec = tgt.spec
    database = ProgramDatabase(
        db_path,
        metric=spec.metric,
        maximize=spec.maximize,
        islands=islands,
        features=spec.features,
        seed=seed,
    )
    try:
        stored = database.get_meta("target_digest")
        if stored is not None and stored != tgt.digest:
            database.set_meta(target_changed_at=time.time())
        database.set_meta(target_file=str(tgt.path), target_digest=tgt.digest)
    except BaseException:
        database.close()
        raise
    return database


evolve = sync_facade(
    aevolve,
    name="evolve",
    doc="""``aevolve`` from sync code (runs on the ambidex loop); same arguments.""",
)


class _Evolution:
    """One run: the program as written, then the iterations not yet stored, K at a time.

    Two schedules (``deterministic``), both without a batch barrier:

    * in order (True): a finished candidate waits until every earlier
      iteration is stored, and the moment the j-th iteration to do is stored
      (before the (j+1)-th), the (j+K)-th is sampled and started. So iteration
      i sees exactly iterations 1..i-K (the first K see the program as
      written), and everything it is shown is a function of that prefix and
      the seed. Each started iteration's sample (parent and inspiration ids,
      error texts) is kept in the meta ``pending_contexts`` until it is
      stored: a run resumed after a kill restarts those iterations with the
      samples they had. The K iterations after the last are sampled too (not
      started), so extending a run later goes on as a longer run would have.
    * free (False): a candidate is stored when it finishes, and the next
      iteration starts in its slot with whatever is stored at that moment.
    """

    #: A sandbox evaluation directory (``<tmp>/ambidex-evolve-PID-PIDNS-random``) in a
    #: traceback or an error: a different name every run, so it is replaced before the text
    #: is stored (and shown to the LLM among the recent errors).
    _EVAL_DIR = re.compile(r"(?:/[^/\s'\"]+)*/ambidex-evolve-\d+-\d+-[A-Za-z0-9_]+")
    _PENDING = "pending_contexts"

    def __init__(
        self,
        target: Target,
        db: ProgramDatabase,
        sandbox: Sandbox,
        proposer: Proposer,
        iterations: int,
        parallel: int,
        seed: int,
        islands: int,
        on_progress: Callable[[EvolveProgress], None] | None,
        deterministic: bool = True,
        stored: Iterable[int] = (),
    ) -> None:
        """Set up a run of ``db``, whose programs are of the iterations in ``stored``."""
        self.target = target
        self.db = db
        self.sandbox = sandbox
        self.proposer = proposer
        self.iterations = iterations
        self.parallel = parallel
        self.seed = seed
        self.islands = islands
        self.on_progress = on_progress
        self.deterministic = deterministic
        # The programs table is the truth (not the meta count): every iteration is one row.
        done = {i for i in stored if i > 0}
        self.done = len(done)
        self.resumed_from = self.done
        self.todo = [i for i in range(1, iterations + 1) if i not in done]
        self.beyond: list[int] = []  # the K iterations after the last, sampled in order only
        nxt = iterations
        while len(self.beyond) < parallel:
            nxt += 1
            if nxt not in done:
                self.beyond.append(nxt)
        self.pending: dict[int, dict[str, Any]] = {}  # sampled, not stored: iteration -> sample
        self.in_flight = 0
        self.succeeded = 0
        self.failed = 0
        self.failures: dict[str, int] = {}
        self.started = time.perf_counter()

    async def go(self, db_path: Path) -> EvolveResult:
        initial = await self._initial()
        ticker = asyncio.ensure_future(self._tick())
        try:
            await (self._in_order() if self.deterministic else self._free())
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await self._report()
        return EvolveResult(
            best=await to_thread(self.db.best),
            initial=initial,
            iterations=self.iterations,
            done=self.done,
            succeeded=self.succeeded,
            failed=self.failed,
            elapsed_s=time.perf_counter() - self.started,
            db_path=db_path,
            resumed_from=self.resumed_from,
            failures=dict(self.failures),
        )

    async def _initial(self) -> Program:
        """The initial program, evaluated once and seeded into every island."""
        history = await to_thread(self.db.history, limit=1)
        if history:
            return history[0]
        tgt = self.target
        result = await self.sandbox.evaluate(
            tgt.source,
            evaluator=tgt.spec.evaluator,
            target=tgt.name,
            evaluator_source=tgt.source,
            evaluator_path=str(tgt.path),
        )
        if not result.ok:
            raise EvolveError(
                f"the initial program of {tgt.path} fails its own evaluation ({result.kind}): "
                f"{result.error}\n{result.stderr[-2000:]}"
            )
        if tgt.spec.metric not in result.metrics:
            raise EvolveError(
                f"{tgt.path}: {tgt.spec.evaluator}() returned {sorted(result.metrics)}, "
                f"not the metric {tgt.spec.metric!r}"
            )
        return await _finish_first(to_thread(self._seed, result.metrics))

    def _seed(self, metrics: dict[str, float]) -> Program:
        """Store the program as written in every island (blocking: on an I/O thread)."""
        tgt = self.target
        first: Program | None = None
        for island in range(self.islands):
            program = self.db.add(
                Program(
                    code=tgt.code,
                    metrics=metrics,
                    score=metrics[tgt.spec.metric],
                    ok=True,
                    island=island,
                    iteration=0,
                    proposer="initial",
                    note="the program as written",
                    parent_id=None if first is None else first.id,
                )
            )
            first = first or program
        assert first is not None
        return first

    async def _in_order(self) -> None:
        """Store in iteration order; start the (j+K)-th iteration to do when the j-th is stored."""
        k, order, n = self.parallel, self.todo + self.beyond, len(self.todo)
        saved = await to_thread(self.db.get_meta, self._PENDING) or {}
        tasks: dict[asyncio.Task[Program], int] = {}  # -> position in order
        finished: dict[int, Program] = {}  # position -> candidate waiting for its predecessors

        async def begin(pos: int, saved_sample: Any = None) -> None:
            i = order[pos]
            ctx = await self._context(i, saved_sample)
            if ctx is None:
                ctx = await self._context(i, await self._sample(i))
            assert ctx is not None
            if pos < n:
                tasks[asyncio.ensure_future(self._candidate(i, ctx))] = pos

        async def start() -> None:
            for pos in range(min(k, len(order))):  # all see the same prefix: what is stored now
                await begin(pos, saved.get(str(order[pos])) if isinstance(saved, dict) else None)
            await to_thread(self.db.set_meta, self._PENDING, self._pending_meta())

        async def advance(applied: int) -> int:
            """Store what is next in order; after each, begin the iteration K later."""
            while applied in finished:
                await self._store(finished.pop(applied))
                if applied + k < len(order):
                    await begin(applied + k)
                    await to_thread(self.db.set_meta, self._PENDING, self._pending_meta())
                applied += 1
                self.in_flight = len(tasks)
                await self._report()
            return applied

        applied = 0
        try:
            await _finish_first(start())
            while tasks:
                self.in_flight = len(tasks)
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    finished[tasks.pop(task)] = task.result()  # a coordinator bug surfaces here
                self.in_flight = len(tasks)
                applied = await _finish_first(advance(applied))
        finally:
            await self._cancel(tasks)

    async def _free(self) -> None:
        """Store each candidate when it finishes; start the next iteration in its slot."""
        todo = iter(self.todo)
        tasks: dict[asyncio.Task[Program], int] = {}  # -> iteration
        # Samples of an in-order run are not followed here.
        await to_thread(self.db.set_meta, self._PENDING, {})

        async def store(done: list[asyncio.Task[Program]]) -> None:
            for task in done:
                del tasks[task]
                self.in_flight = len(tasks)
                await self._store(task.result())  # a coordinator bug surfaces here
                await self._report()

        try:
            while True:
                while len(tasks) < self.parallel and (i := next(todo, None)) is not None:
                    ctx = await self._context(i, await self._sample(i))
                    assert ctx is not None
                    tasks[asyncio.ensure_future(self._candidate(i, ctx))] = i
                self.in_flight = len(tasks)
                if not tasks:
                    return
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                await _finish_first(store(sorted(done, key=tasks.__getitem__)))
        finally:
            await self._cancel(tasks)

    @staticmethod
    async def _cancel(tasks: dict[asyncio.Task[Program], int]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _rng(self, i: int, stream: str) -> random.Random:
        """Iteration ``i``'s own random stream: ``sample`` (parent, inspirations) or ``propose``.

        Two streams, so a sample restored after a resume leaves the proposer's
        draws where they would have been.
        """
        return random.Random(f"{self.seed}:{i}:{stream}")

    async def _sample(self, i: int) -> dict[str, Any]:
        """What iteration ``i`` is shown, drawn from the database as it is now."""
        return await to_thread(self._draw, i)

    def _draw(self, i: int) -> dict[str, Any]:
        """Iteration ``i``'s sample (blocking: on an I/O thread).

        Ids and error texts, JSON-ready for the meta. The errors are the
        island's last failures, so they too depend on nothing but what is stored.
        """
        island = i % self.islands
        parent, inspirations = self.db.sample(island, self._rng(i, "sample"))
        return {
            "seed": self.seed,
            "parent": parent.id,
            "inspirations": [p.id for p in inspirations],
            "errors": self.db.recent_errors(island, 3),
        }

    async def _context(self, i: int, sample: Any) -> ProposalContext | None:
        """The proposal context of a sample (None if it is unusable: another seed, a lost id).

        In order, the sample is also kept in ``self.pending`` until iteration
        ``i`` is stored. The programs are read back by id either way, so a
        fresh sample and one restored after a resume give the same context.
        """
        if not isinstance(sample, dict) or sample.get("seed") != self.seed:
            return None
        try:
            parent, inspirations = await to_thread(self._programs, sample)
            errors = [str(e) for e in sample["errors"]]
        except (KeyError, TypeError):
            return None
        if self.deterministic:
            self.pending[i] = sample
        spec = self.target.spec
        return ProposalContext(
            target_name=self.target.name,
            goal=spec.goal,
            metric=spec.metric,
            maximize=spec.maximize,
            parent=parent,
            inspirations=inspirations,
            errors=errors,
            alternatives=spec.alternatives,
            rng=self._rng(i, "propose"),
        )

    def _programs(self, sample: dict[str, Any]) -> tuple[Program, list[Program]]:
        """A sample's parent and inspirations, read back by id (blocking: on an I/O thread).

        Raises:
            KeyError: an id is missing from the sample or the database.
            TypeError: the sample's ids are not a list.
        """
        parent = self.db.get(sample["parent"])
        return parent, [self.db.get(pid) for pid in sample["inspirations"]]

    def _pending_meta(self) -> dict[str, Any]:
        return {str(i): sample for i, sample in sorted(self.pending.items())}

    async def _store(self, program: Program) -> None:
        """Add a finished candidate, with the count of iterations done, in one transaction."""
        meta: dict[str, Any] = {"iterations_done": self.done + 1}
        if self.deterministic:
            self.pending.pop(program.iteration, None)
            meta[self._PENDING] = self._pending_meta()
        stored = await to_thread(self.db.add, program, meta=meta)  # may fail it: a NaN score
        self.done += 1
        if stored.ok:
            self.succeeded += 1
        else:
            self.failed += 1
            kind = stored.note.split(":", 1)[0] if stored.note else "failed"
            first = kind not in self.failures
            self.failures[kind] = self.failures.get(kind, 0) + 1
            _log_failure(stored, kind, first)

    @classmethod
    def _scrub(cls, text: str) -> str:
        """``text`` with sandbox evaluation directories named ``<sandbox>``."""
        return cls._EVAL_DIR.sub("<sandbox>", text) if "ambidex-evolve-" in text else text

    async def _candidate(self, i: int, ctx: ProposalContext) -> Program:
        """Iteration ``i``: propose a change of ``ctx.parent``, check it, evaluate it."""
        if _observe.on:  # its span, with the proposal and the evaluation as children
            from ambidex.evolve._tracing import traced_candidate

            return await traced_candidate(self, i, ctx)
        return await self._make_candidate(i, ctx)

    async def _make_candidate(self, i: int, ctx: ProposalContext) -> Program:
        tgt, spec = self.target, self.target.spec
        parent = ctx.parent
        base = Program(
            code=parent.code,
            metrics={},
            score=None,
            ok=False,
            parent_id=parent.id,
            island=i % self.islands,
            iteration=i,
            proposer=self.proposer.name,
        )
        try:
            if _observe.on:
                from ambidex.evolve._tracing import traced_propose

                proposal = await traced_propose(self.proposer, ctx)
            else:
                proposal = await self.proposer.propose(ctx)
        except Exception as exc:  # the proposer's own failure (network, server) is a failed try
            return replace(
                base,
                error=f"proposal failed: {describe_exception(exc)}",
                note="proposal: the proposer raised",
            )
        if proposal.code is None:
            return replace(
                base,
                error=proposal.error or "the proposer gave no code",
                note="proposal: " + (proposal.note or "no applicable change"),
            )
        reason = tgt.check(proposal.code)
        if reason is not None:
            return replace(base, code=proposal.code, error=reason, note="proposal: not applicable")
        if _observe.on:
            from ambidex.evolve._tracing import traced_evaluate

            result = await traced_evaluate(self, proposal.code)
        else:
            result = await self._evaluate(proposal.code)
        ok = result.ok and spec.metric in result.metrics
        error, kind = result.error, result.kind
        if result.ok and not ok:
            error = f"bad metrics: no {spec.metric!r} in {sorted(result.metrics)}"
            kind = "bad_metrics"
        return replace(
            base,
            code=proposal.code,
            metrics=result.metrics,
            score=result.metrics.get(spec.metric) if ok else None,
            ok=ok,
            error=None if ok or error is None else self._scrub(error),
            stderr=self._scrub(result.stderr),
            note=proposal.note if ok else f"{kind}: {proposal.note}",
        )

    async def _evaluate(self, code: str) -> EvalResult:
        """The candidate ``code`` evaluated in the sandbox, under the ``sandbox`` limit."""
        tgt, spec = self.target, self.target.spec
        async with current_runtime().limit("sandbox"):
            source = tgt.with_code(code)
            if current_runtime().cpu_features.distributed:
                # The evaluation runs as a cpu call: its sandbox is on whichever node runs it.
                return await _evaluate_remotely.aio(_sandbox_options(self.sandbox), source, tgt)
            return await self.sandbox.evaluate(
                source,
                evaluator=spec.evaluator,
                target=tgt.name,
                evaluator_source=tgt.source,
                evaluator_path=str(tgt.path),
            )

    def _progress(self, best: Program | None) -> EvolveProgress:
        return EvolveProgress(
            iterations=self.iterations,
            done=self.done,
            in_flight=self.in_flight,
            succeeded=self.succeeded,
            failed=self.failed,
            best_score=None if best is None else best.score,
            best_id=None if best is None else best.id,
            elapsed_s=time.perf_counter() - self.started,
        )

    async def _report(self) -> None:
        if self.on_progress is not None:
            best = await to_thread(self.db.best)
            self.on_progress(self._progress(best))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(_PROGRESS_EVERY_S)
            await self._report()


def _log_failure(program: Program, kind: str, first: bool) -> None:
    """A failed candidate: the first of each kind at INFO, the rest at DEBUG (many may fail)."""
    level = logging.INFO if first else logging.DEBUG
    if not log.isEnabledFor(level):  # one per candidate: nothing formatted unless asked
        return
    error = (program.error or "").strip().splitlines()
    log.log(
        level,
        "candidate %d failed (%s%s): %s",
        program.iteration,
        kind,
        ", the first of its kind" if first else "",
        error[-1] if error else "no error message",
    )


def _sandbox_options(box: Sandbox) -> dict[str, Any]:
    return {
        "timeout_s": box.timeout_s,
        "cpu_s": box.cpu_s,
        "memory_mb": box.memory_mb,
        "max_processes": box.max_processes,
        "network": box.network,
        "extra_read_paths": box.extra_read_paths,
    }


@cpu
def _evaluate_remotely(options: dict[str, Any], source: str, tgt: Target) -> EvalResult:
    """One sandboxed evaluation in a cpu worker (a Ray task on the ray backend)."""
    return asyncio.run(
        Sandbox(**options).evaluate(
            source,
            evaluator=tgt.spec.evaluator,
            target=tgt.name,
            evaluator_source=tgt.source,
            evaluator_path=str(tgt.path),
        )
    )
