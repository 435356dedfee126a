"""What a running node can ask about itself: its idempotency key.

The scheduler sets a context variable at the start of each node's task, so
the node's own code (async, on the I/O threads, or an agent's ``run``), and
its input callable, can read it without an extra parameter::

    async def charge(order: Order) -> Receipt:
        key = ax.workflows.current_node_key()     # "<run id>:<node>"
        return await payments.charge(order, idempotency_key=key)

The key is ``f"{run_id}:{node}"``: the same for every attempt of the node
within a run, for a resumed run (same run id), and for every attempt of a
workflow job (whose run id is the job's id). An ``@ax.cpu`` node runs in
another process, where the variable is not set: read the key in its input
callable (``input=lambda o: {..., "key": ax.workflows.current_node_key()}``).
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["current_node_key", "node_key"]

node_key: ContextVar[str | None] = ContextVar("ambidex_workflow_node_key", default=None)
"""Set by the scheduler in each node's task (see ``current_node_key``)."""


def current_node_key() -> str:
    """The idempotency key of the workflow node running now: ``"<run id>:<node>"``.

    Stable across the node's retries, across resumes of its run, and across the
    attempts of a workflow job (the run id is then the job id), so an outside
    system that deduplicates by it performs the node's side effect once even
    when the node runs again after a crash.

    Raises:
        LookupError: not called from within a workflow node (or from an
            ``@ax.cpu`` node's worker process, where the key is not set).
    """
    key = node_key.get()
    if key is None:
        raise LookupError(
            "current_node_key() was called outside a workflow node (in an @ax.cpu node, "
            "read it in the node's input callable and pass it as an argument)"
        )
    return key
