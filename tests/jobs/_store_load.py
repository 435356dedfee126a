"""A seeded mixed load on one job store, and the check that every job ended exactly once.

Used by ``test_store_model.py``, and run as a script for the load's other
processes::

    python _store_load.py DB SEED NAME THREADS DURATION_S OUT.json

The script opens its own ``JobStore`` on ``DB``, prints ``ready``, waits for a
line on stdin (the go), runs ``THREADS`` actors for ``DURATION_S`` seconds and
writes what they were told (``LoadLog``) to ``OUT.json``.

Each actor (a thread, a worker of its own name) draws its operations from a
``random.Random`` seeded with ``SEED``, its process and thread: submits
(priorities, short delays, attempt limits, idempotency keys shared by every
actor), claims with short leases, finishes of the jobs it holds (succeeded,
failed, cancelled, failed with a retry; some after their lease lapsed),
heartbeats, cancels of jobs any actor submitted, reads (get, list, counts),
lease recovery, prune, and now and then a release. Which operation each actor
runs is fixed by the seed; how they interleave is not.

Every answer that says a job ended is logged: a finish that returned True, a
``recover_expired`` that failed a job, a cancel that answered ``cancelled``, a
read that saw a finished job. ``check_histories`` then holds the store's
events against them.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ambidex.jobs import Job, JobStatus, JobStore, RetryPolicy
from ambidex.jobs._records import IdempotencyConflict, LeaseReport, NewJob, Outcome
from ambidex.jobs._statements import LOST_ERROR

TERMINAL = {"succeeded", "failed", "cancelled"}
KEYS = 24  # idempotency keys shared by every actor, so their submits collide
MAX_DELAY_S = 0.2  # delays and retry backoffs stay short: the drain waits them out
MAX_LEASE_S = 0.6
PRUNE_AFTER_S = 1.0  # jobs that ended in the load's first half go; the rest stay, for the check


@dataclass
class LoadLog:
    """What one process's actors were told by the store."""

    submitted: list[str] = field(default_factory=list)
    """Jobs a submit answered with (stored then, or found by its idempotency key)."""
    keyed: list[list[str]] = field(default_factory=list)
    """[key, job id] for every keyed submit answered with a job."""
    finished: list[list[Any]] = field(default_factory=list)
    """[job id, worker, attempt, kind] for every finish that returned True
    (kind: succeeded, failed, cancelled, or retrying: a failure with a retry, which the
    store ends as cancelled when a cancel was asked for meanwhile)."""
    refused: int = 0
    """Finishes that returned False (the worker's lease on that attempt was gone)."""
    lost_failed: list[str] = field(default_factory=list)
    """Jobs a ``recover_expired`` failed (out of attempts)."""
    cancelled: list[str] = field(default_factory=list)
    """Jobs a cancel answered as cancelled."""
    seen_ended: list[list[str]] = field(default_factory=list)
    """[job id, status] for every finished job a read (get, list) returned."""
    pruned: int = 0
    releases: int = 0
    ops: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def merge(self, other: LoadLog) -> None:
        for name, value in asdict(other).items():
            mine = getattr(self, name)
            if isinstance(mine, list):
                mine.extend(value)
            elif isinstance(mine, dict):
                for k, n in value.items():
                    mine[k] = mine.get(k, 0) + n
            else:
                setattr(self, name, mine + value)


class _OnLoop:
    """The store, its hot calls made as the job service makes them: coroutines on a loop.

    On PostgreSQL, ``JobStore.on_loop`` gives the hot calls (submit, claim,
    finish, heartbeat, get, keyed, capped and retried ones included) as
    coroutines on psycopg's async connections (``_pg_hot``); every other
    method is the store's own, as for any actor.
    One actor (one thread) uses it, with a loop of its own.
    """

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._loop: asyncio.AbstractEventLoop | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _hot(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        call = self._store.on_loop(fn, args, kwargs)
        if call is None:
            return fn(*args, **kwargs)
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(call())

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()

    def submit(self, workload: str, input: Any, **options: Any) -> Job:
        options["retry"] = options.get("retry") or RetryPolicy()  # as JobStore.submit
        (answer,) = self.submit_batch([NewJob(workload, input, **options)])
        if isinstance(answer, BaseException):
            raise answer
        return answer.job

    def submit_batch(self, new_jobs: list[NewJob]) -> list[Any]:
        return self._hot(self._store.submit_batch, new_jobs)

    def claim(self, worker: str, **options: Any) -> list[Job]:
        return self._hot(self._store.claim, worker, **options)

    def heartbeat(self, worker: str, job_ids: list[str], **options: Any) -> LeaseReport:
        return self._hot(self._store.heartbeat, worker, job_ids, **options)

    def get(self, job_id: str) -> Job | None:
        return self._hot(self._store.get, job_id)

    def finish(
        self, job_id: str, worker: str, attempt: int, status: JobStatus, **options: Any
    ) -> bool:
        outcome = Outcome(job_id, worker, attempt, status, **options)
        return self._hot(self._store.finish_many, [outcome])[0]


class _Actor:
    def __init__(self, store: JobStore, seed: str, worker: str, log: LoadLog, lock: threading.Lock):
        self.store = store
        self.rng = random.Random(f"{seed}/{worker}")
        self.worker = worker
        self.log = log
        self.lock = lock  # guards ``log`` (shared by the threads of a process)
        self.held: list[tuple[str, int]] = []  # (job id, attempt) claimed, maybe lapsed
        self.known: list[str] = []  # job ids this actor submitted or read
        self.released = False
        self.ops: Counter[str] = Counter()

    def note(self, name: str, item: Any) -> None:
        with self.lock:
            getattr(self.log, name).append(item)

    def saw(self, job: Any) -> None:
        if job.status.value in TERMINAL:
            self.note("seen_ended", [job.id, job.status.value])

    def run(self, until: float) -> None:
        ops = [
            (self.submit, 26),
            (self.claim, 22),
            (self.finish, 26),
            (self.heartbeat, 5),
            (self.cancel, 6),
            (self.read, 8),
            (self.recover, 4),
            (self.prune, 2),
            (self.release, 1),
        ]
        funcs = [f for f, _ in ops]
        weights = [w for _, w in ops]
        try:
            while time.time() < until:
                op = self.rng.choices(funcs, weights)[0]
                self.ops[op.__name__] += 1
                op()
        except Exception as exc:  # reported, and the test fails on it
            self.note("errors", f"{self.worker}: {type(exc).__name__}: {exc}")
        with self.lock:
            for k, n in self.ops.items():
                self.log.ops[k] = self.log.ops.get(k, 0) + n

    def submit(self) -> None:
        rng = self.rng
        delay = rng.choice([0.0, 0.0, 0.0, rng.uniform(0.01, MAX_DELAY_S)])
        kwargs: dict[str, Any] = {
            "max_attempts": rng.randint(1, 3),
            "priority": rng.choice([0, 0, 1, 2]),
            "run_at": time.time() + delay if delay else None,
        }
        workload, value = rng.choice(["a", "b"]), rng.randrange(1000)
        key = None
        if rng.random() < 0.25:
            n = rng.randrange(KEYS)
            key = f"key-{n}"
            workload, value = "a", n  # the key's job: same workload and input everywhere
            if rng.random() < 0.1:
                value = -1  # another input under the key: the second of the two is refused
        try:
            job = self.store.submit(workload, value, idempotency_key=key, **kwargs)
        except IdempotencyConflict as exc:  # the key names a job of another input
            first, refused_key = exc.job, exc.key
        else:
            if (job.workload, job.input) != (workload, value):
                raise AssertionError(f"a submit answered with another job: {job}")
            self.note("submitted", job.id)  # made now, or the key's job: a set, in the check
            if key is not None:
                self.note("keyed", [key, job.id])
            self.known.append(job.id)
            return
        if refused_key != key or first.input == value:
            raise AssertionError(f"refused a submit its key's job matches: {key} {first}")
        self.note("submitted", first.id)

    def claim(self) -> None:
        lease_s = self.rng.uniform(0.1, MAX_LEASE_S)
        limit = self.rng.randint(1, 3)
        workloads = self.rng.choice([None, None, ["a"], ["b"]])
        for job in self.store.claim(self.worker, lease_s=lease_s, limit=limit, workloads=workloads):
            self.held.append((job.id, job.attempts))
            self.known.append(job.id)

    def finish(self) -> None:
        if not self.held:
            return
        job_id, attempt = self.held.pop(self.rng.randrange(len(self.held)))
        how = self.rng.choice(["succeeded", "succeeded", "failed", "cancelled", "retry"])
        status = JobStatus.FAILED if how == "retry" else JobStatus(how)
        retry_in_s = self.rng.uniform(0.0, MAX_DELAY_S) if how == "retry" else None
        if self.store.finish(
            job_id,
            self.worker,
            attempt,
            status,
            result={"by": self.worker} if how == "succeeded" else None,
            error=None if how == "succeeded" else "RuntimeError: load",
            retry_in_s=retry_in_s,
        ):
            self.note("finished", [job_id, self.worker, attempt, "retrying" if retry_in_s else how])
        else:
            with self.lock:
                self.log.refused += 1

    def heartbeat(self) -> None:
        if not self.held:
            return
        report = self.store.heartbeat(
            self.worker, [j for j, _ in self.held], lease_s=self.rng.uniform(0.1, MAX_LEASE_S)
        )
        # a job no longer held stays in ``held``: its finish is a stale one, refused
        for job_id in report.cancel_requested:
            attempt = next(a for j, a in self.held if j == job_id)
            self.held.remove((job_id, attempt))
            if self.store.finish(job_id, self.worker, attempt, JobStatus.CANCELLED):
                self.note("finished", [job_id, self.worker, attempt, "cancelled"])

    def cancel(self) -> None:
        if not self.known:
            return
        job = self.store.cancel(self.rng.choice(self.known))
        if job is not None and job.status is JobStatus.CANCELLED:
            self.note("cancelled", job.id)

    def read(self) -> None:
        which = self.rng.random()
        if which < 0.4 and self.known:
            job = self.store.get(self.rng.choice(self.known))
            if job is not None:
                self.saw(job)
        elif which < 0.9:
            for job in self.store.list(limit=20).jobs:
                self.saw(job)
                if self.rng.random() < 0.2:
                    self.known.append(job.id)
        else:
            self.store.counts()
        del self.known[:-500]

    def recover(self) -> None:
        _, failed = self.store.recover_expired()
        for job_id in failed:
            self.note("lost_failed", job_id)

    def prune(self) -> None:
        n = self.store.prune(PRUNE_AFTER_S)
        with self.lock:
            self.log.pruned += n

    def release(self) -> None:
        if self.released:  # once per actor: no job comes near MAX_RELEASES
            return
        self.released = True
        self.store.release(self.worker)
        with self.lock:
            self.log.releases += 1


def run_actors(store: JobStore, seed: str, name: str, threads: int, until: float) -> LoadLog:
    """Run ``threads`` actors on ``store`` until the time ``until``; what they were told."""
    log = LoadLog()
    lock = threading.Lock()
    # Every other actor makes its hot calls on a loop of its own (PostgreSQL's hot
    # path, ``_pg_hot``), the others through SQLAlchemy: both paths in one load.
    on_loops = [_OnLoop(store) for _ in range(threads // 2)]
    stores: list[Any] = [on_loops[i // 2] if i % 2 else store for i in range(threads)]
    actors = [_Actor(stores[i], seed, f"{name}-t{i}", log, lock) for i in range(threads)]
    runners = [threading.Thread(target=a.run, args=(until,)) for a in actors]
    for t in runners:
        t.start()
    for t in runners:
        t.join()
    for on_loop in on_loops:
        on_loop.close()
    return log


def drain(store: JobStore, log: LoadLog, *, deadline_s: float = 20.0) -> None:
    """Run every job left to its end (leases lapse, delays come due), logging as the actors do."""
    give_up = time.time() + deadline_s
    while True:
        counts = store.counts()
        if counts[JobStatus.QUEUED] == 0 and counts[JobStatus.RUNNING] == 0:
            return
        if time.time() > give_up:
            raise AssertionError(f"jobs still open after the drain: {counts}")
        _, failed = store.recover_expired()
        log.lost_failed.extend(failed)
        claimed = store.claim("drain", lease_s=30.0, limit=200)
        for job in claimed:
            if store.finish(job.id, "drain", job.attempts, JobStatus.SUCCEEDED, result="drained"):
                log.finished.append([job.id, "drain", job.attempts, "succeeded"])
        if not claimed:
            time.sleep(0.05)  # a delay or a lease to run out


def check_histories(store: JobStore, log: LoadLog) -> dict[str, int]:
    """Every job ended exactly once, as its caller was told; raise AssertionError if not.

    Returns a few counts of what was checked.
    """
    assert not log.errors, log.errors
    present: dict[str, Any] = {}
    cursor = None
    while True:
        page = store.list(limit=1000, cursor=cursor)
        present.update((j.id, j) for j in page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            break
    submitted = set(log.submitted)
    acks: dict[str, list[tuple[int, str]]] = {}
    for job_id, _, attempt, kind in log.finished:
        acks.setdefault(job_id, []).append((attempt, kind))
    twice = [
        (j, a) for j, got in acks.items() for a, n in Counter(a for a, _ in got).items() if n > 1
    ]
    assert not twice, f"one attempt's outcome recorded twice: {twice[:5]}"
    lost_failed = Counter(log.lost_failed)
    assert all(n == 1 for n in lost_failed.values()), "a job failed as lost twice"
    cancelled = set(log.cancelled)
    seen_ended = {job_id for job_id, _ in log.seen_ended}

    # jobs gone: pruned, so ended before, and someone was told so
    gone = submitted - present.keys()
    assert len(gone) == log.pruned, f"{len(gone)} jobs gone, {log.pruned} pruned"
    for job_id in gone:
        kinds = [kind for _, kind in acks.get(job_id, [])]
        ends = sum(k in TERMINAL for k in kinds) + lost_failed[job_id]
        assert ends <= 1, f"{job_id} ended {ends} times"
        told = ends == 1 or job_id in cancelled or job_id in seen_ended
        # (a failure with a retry that ended cancelled is told as "retrying")
        assert told or "retrying" in kinds, f"{job_id} was pruned but no one saw it end"
    for job_id, status in log.seen_ended:
        if job_id in present:
            assert present[job_id].status.value == status, f"{job_id} seen {status}, then not"
    for job_id in cancelled:
        if job_id in present:
            assert present[job_id].status is JobStatus.CANCELLED, f"{job_id} uncancelled"

    # jobs here: one history each, ending once, as it was acknowledged
    assert set(present) <= submitted, "a job no submit acknowledged"
    keyed: dict[str, set[str]] = {}
    for key, job_id in log.keyed:
        keyed.setdefault(key, set()).add(job_id)
    for key, ids in keyed.items():
        live = [i for i in ids if i in present]
        assert len(live) <= 1, f"idempotency key {key} names {live}"
    events_checked = 0
    for job in present.values():
        events = store.events(job.id, limit=100_000)
        events_checked += len(events)
        _replay(
            job, [(e.kind, e.data) for e in events], acks.get(job.id, []), lost_failed, cancelled
        )
    return {
        "jobs": len(submitted),
        "present": len(present),
        "pruned": len(gone),
        "events": events_checked,
        "finished": len(log.finished),
        "refused": log.refused,
    }


def _replay(
    job: Any,
    events: list[tuple[str, dict[str, Any]]],
    acks: list[tuple[int, str]],
    lost_failed: Counter[str],
    cancelled: set[str],
) -> None:
    """Walk one job's events through the queue's states; each step must be allowed."""
    where = f"job {job.id}: {[k for k, _ in events]}"
    assert events, where
    assert events[0][0] == "submitted", where
    state, attempts, lost, told, ends = "queued", 0, 0, 0, []
    for kind, data in events[1:]:
        assert state != "ended", f"{where}: {kind} after the end"
        if kind == "started":
            assert state == "queued", where
            attempts += 1
            assert data["attempt"] == attempts, where
            state = "running"
        elif kind == "retrying":
            assert state == "running", where
            assert data["attempt"] == attempts, where
            assert (attempts, "retrying") in acks, f"{where}: a retry no finish was told of"
            told += 1
            state = "queued"
        elif kind == "requeued":
            assert state == "running", where
            if data["attempt"] == attempts:  # its lease lapsed
                lost += 1
            else:  # its worker gave it back: not an attempt
                assert data["attempt"] == attempts - 1, where
                attempts -= 1
            state = "queued"
        elif kind == "cancel_requested":
            assert state == "running", where
        elif kind in TERMINAL:
            if state == "queued":
                assert kind == "cancelled", where
            else:
                assert data.get("attempt") == attempts, where
            if data.get("error") == LOST_ERROR:
                lost += 1
            ends.append((kind, data))
            state = "ended"
        else:
            raise AssertionError(f"{where}: unexpected event {kind}")
    assert len(ends) == 1, f"{where}: {len(ends)} ends"
    kind, data = ends[0]
    assert job.status.value == kind, where
    assert (job.attempts, job.lost) == (attempts, lost), f"{where}: {job}"
    # the end was acknowledged to exactly one caller, the one that made it
    if data.get("error") == LOST_ERROR:
        assert lost_failed[job.id] == 1, where
    elif "attempt" in data:  # a worker's outcome
        assert lost_failed[job.id] == 0, where
        retry_cancelled = kind == "cancelled" and str(data.get("error")).startswith(
            "cancelled by request; its last attempt failed"
        )
        told_kind = "retrying" if retry_cancelled else kind
        assert (data["attempt"], told_kind) in acks, f"{where}: ended, no finish was told: {acks}"
        told += 1
    else:  # cancelled while queued
        assert kind == "cancelled", where
        assert lost_failed[job.id] == 0, where
        assert job.id in cancelled, f"{where}: cancelled, no cancel was told so"
    assert lost_failed[job.id] <= 1, where
    # and every finish the store accepted is in the history
    assert told == len(acks), f"{where}: finishes told {acks}"


def main(argv: list[str]) -> int:
    db, seed, name, threads, duration_s, out = argv
    with JobStore(db) as store:
        print("ready", flush=True)
        sys.stdin.readline()  # the go: every process starts together
        log = run_actors(store, seed, name, int(threads), time.time() + float(duration_s))
    Path(out).write_text(json.dumps(asdict(log)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
