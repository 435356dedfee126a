"""Durable workflow jobs: each node is checkpointed in the job store, and a new attempt resumes.

A workflow registered as a workload (``registry.register_workflow``, a YAML
file given to ``--workloads``) runs with ``JobCheckpoints`` as its
``checkpoint=`` and its job's id as the run id, so:

* every node that reaches a final state is written to ``ambidex_workflow_nodes``
  (a succeeded node's output as cloudpickle) and committed **before its
  dependents start** (the scheduler awaits ``asave_node``);
* every attempt of the job after the first (its worker died, its lease lapsed,
  a retry after a failure, a retry by request) restores the nodes that
  succeeded and runs only the rest; the inputs are the job's, validated by the
  workload's model again, so they are the same on every attempt;
* every write names the worker and the attempt of the job it holds, checked on
  the job's locked row in the write's transaction (``JobStore.save_workflow_nodes``):
  a worker that lost the job writes nothing, so it can never overwrite the rows
  of a later attempt, and its run stops (the write raises, the run fails, and
  its outcome is not recorded either, being fenced the same way).

A node's start is written too (``running``), without waiting for it, so the
dashboard shows the nodes running now. The writes of one job go out in order,
those that arrive while one is being written together in the next transaction.

What this guarantees: a node whose checkpoint was committed never runs again
for that job. A node runs again only if its attempt of the job stopped while it
ran (started, not yet committed): at most once more per interrupted attempt,
so once more when a worker dies once. Nodes read a key stable across attempts,
``ax.workflows.current_node_key()`` (``"<job id>:<node>"``), to make their
outside effects idempotent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import cloudpickle

from ambidex._job_errors import JobError
from ambidex._job_model import Job, JobStatus, WorkflowNode
from ambidex._text import describe_exception
from ambidex.jobs._batch import GroupCommit
from ambidex.jobs._statements import MAX_ERROR_CHARS, storable_text
from ambidex.workflows import NodeStatus, StoredRun, Workflow

if TYPE_CHECKING:
    from ambidex.jobs._calls import StoreCalls
    from ambidex.jobs._store import JobStore
    from ambidex.workflows import NodeRun

__all__ = ["JobCheckpoints", "LeaseLostError", "node_table"]

_MAX_BATCH = 256


class LeaseLostError(JobError, RuntimeError):
    """The worker no longer holds the job: the checkpoint was not written (it runs elsewhere)."""


class JobCheckpoints:
    """The ``CheckpointBackend`` of one attempt of a workflow job (see the module docstring).

    Args:
        store: the job store.
        calls: how the worker calls the store (off the event loop).
        job_id: the job, whose id is the run id.
        worker: the worker holding the job.
        attempt: the attempt of the job it holds.
        workflow: the workflow's name.
    """

    def __init__(
        self,
        store: JobStore,
        calls: StoreCalls,
        job_id: str,
        worker: str,
        attempt: int,
        workflow: str,
    ) -> None:
        self.store = store
        self.calls = calls
        self.job_id = job_id
        self.worker = worker
        self.attempt = attempt
        self.workflow = workflow
        self._started_at: dict[str, float] = {}
        # The writes, in order; those that arrive while one is out go in the next.
        self._writes: GroupCommit[dict[str, Any], None] = GroupCommit(
            self._write, _MAX_BATCH, name=f"ambidex-nodes-{job_id}", alone_on_failure=False
        )

    # -- CheckpointBackend -----------------------------------------------------------

    async def aload_run(self, run_id: str) -> StoredRun:
        """The job's finished nodes (none on its first attempt); its inputs are the job's."""
        found = await self.calls(_read_outputs, self.store, self.job_id)
        outputs = {node: output for node, status, output in found if status == "succeeded"}
        return StoredRun(
            run_id=run_id,
            workflow=self.workflow,
            inputs={},
            status="running",
            outputs=outputs,
            node_status={node: status for node, status, _ in found},
        )

    async def astart_run(
        self,
        run_id: str,
        workflow: str,
        inputs: dict[str, Any],
        *,
        resume: bool,
        source: str | None = None,
        nodes: Sequence[str] = (),
    ) -> None:
        """Nothing to record: the job is the run, and its input is stored with it."""

    async def asave_node(self, run_id: str, run: NodeRun) -> None:
        """Write the node's final state; return once it is committed.

        Raises:
            LeaseLostError: the worker no longer holds this attempt of the job.
        """
        now = time.time()
        started = self._started_at.get(run.name)
        if started is None and run.duration_s is not None:
            started = now - run.duration_s
        error = None if run.error is None else describe_exception(run.error)
        succeeded = run.status is NodeStatus.SUCCEEDED
        row = {
            "node": run.name,
            "status": run.status.value,
            "output": run.output if succeeded else None,  # pickled on the store's thread
            "error": storable_text(error, MAX_ERROR_CHARS),
            "attempts": run.attempts,
            "started_at": started,
            "finished_at": now,
        }
        await self._writes.put(row)

    async def afinish_run(self, run_id: str, status: str, error: str | None) -> None:
        """Wait for the writes still going out (node starts); the job's outcome is the run's."""
        await self._writes.aclose()

    # -- node starts (from the workload's event listener) ------------------------------

    def node_started(self, node: str, attempt: int) -> None:
        """Record that ``node`` started (``attempt``: its own, 2 on its first retry); no wait."""
        now = time.time()
        started = self._started_at.setdefault(node, now)
        row = {
            "node": node,
            "status": "running",
            "output": None,
            "error": None,
            "attempts": attempt,
            "started_at": started,
            "finished_at": None,
        }
        # A start not shown is no harm; a lost lease stops the run.
        self._writes.put(row).add_done_callback(_ignore)

    # -- the writes, in order --------------------------------------------------------

    async def _write(self, rows: list[dict[str, Any]]) -> list[LeaseLostError | None]:
        """Write a batch of rows, fenced: each row's answer, a ``LeaseLostError`` if not held."""
        held = await self.calls(
            _write_rows, self.store, self.job_id, self.worker, self.attempt, rows
        )
        if held:
            return [None] * len(rows)
        return [
            LeaseLostError(
                f"worker {self.worker} no longer holds attempt {self.attempt} of "
                f"job {self.job_id} (its lease lapsed; the job runs elsewhere): "
                "the node's checkpoint was not written"
            )
            for _ in rows
        ]


def _ignore(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: asyncio need not warn about it


def _write_rows(
    store: JobStore, job_id: str, worker: str, attempt: int, rows: list[dict[str, Any]]
) -> bool:
    """On a thread: pickle the succeeded nodes' outputs, then write the rows (fenced)."""
    ready = []
    for row in rows:
        row = dict(row)
        if row["status"] == "succeeded":
            try:
                row["output"] = cloudpickle.dumps(row["output"])
            except Exception as exc:  # as CheckpointStore: the node runs again on a resume
                row["output"] = None
                row["status"] = "failed"
                row["error"] = storable_text(
                    f"output could not be stored: {describe_exception(exc)}", MAX_ERROR_CHARS
                )
        ready.append(row)
    return store.save_workflow_nodes(job_id, worker, attempt, ready)


def _read_outputs(store: JobStore, job_id: str) -> list[tuple[str, str, Any]]:
    """On a thread: the finished nodes of a job, succeeded ones with their outputs unpickled."""
    return [
        (node, status, None if blob is None else cloudpickle.loads(blob))
        for node, status, blob in store.workflow_node_outputs(job_id)
    ]


def node_table(job: Job, rows: Iterable[WorkflowNode], wf: Workflow | None) -> list[WorkflowNode]:
    """The nodes of a workflow job to show: the workflow's, in order, with what was recorded.

    A node with no row is ``pending`` (``cancelled`` once the job has ended); a
    ``running`` row of an attempt of the job that is not the one running now
    is ``interrupted``. Rows of nodes the workflow (as registered here) does
    not have come last; without the workflow, the rows alone.
    """
    by_node = {row.node: row for row in rows}
    shown: list[WorkflowNode] = []
    if wf is not None:
        try:
            order = wf.order()
        except Exception:  # a workflow that does not validate: its nodes as declared
            order = list(wf.nodes)
        for name in order:
            after = sorted(wf.nodes[name].deps)
            row = by_node.pop(name, None)
            if row is None:
                status = "cancelled" if job.status.terminal else "pending"
                shown.append(WorkflowNode(node=name, status=status, after=after))
            else:
                shown.append(_as_now(job, row, after))
    shown.extend(_as_now(job, row, []) for row in by_node.values())
    return shown


def _as_now(job: Job, row: WorkflowNode, after: list[str]) -> WorkflowNode:
    status = row.status
    if status == "running" and (
        job.status is not JobStatus.RUNNING
        or row.worker != job.worker
        or row.job_attempt != job.attempts
    ):
        status = "interrupted"
    return WorkflowNode(
        node=row.node,
        status=status,
        after=after,
        attempts=row.attempts,
        job_attempt=row.job_attempt,
        worker=row.worker,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error,
    )
