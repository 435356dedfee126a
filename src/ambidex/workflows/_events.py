"""Workflow events: what happened to which node, and when."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

__all__ = ["EventKind", "EventListener", "NodeStatus", "WorkflowEvent"]


class NodeStatus(enum.Enum):
    """Where a node is in a run."""

    PENDING = "pending"  # waiting for its dependencies
    QUEUED = "queued"  # dependencies done, waiting for a free slot (max_parallel)
    RUNNING = "running"  # started
    SUCCEEDED = "succeeded"  # finished with an output
    FAILED = "failed"  # raised (after its retries)
    SKIPPED = "skipped"  # its condition was false, or a dependency failed or was skipped
    CANCELLED = "cancelled"  # the run stopped before it could finish


class EventKind(enum.Enum):
    """What an event reports."""

    RUN_STARTED = "run_started"  # the run began (node is None)
    QUEUED = "queued"  # the node's dependencies are done
    STARTED = "started"  # the node began to run (again, on a retry)
    FINISHED = "finished"  # the node succeeded (or was restored from a checkpoint)
    FAILED = "failed"  # the node failed for good
    RETRYING = "retrying"  # an attempt failed and another will follow
    SKIPPED = "skipped"  # the node will not run
    CANCELLED = "cancelled"  # the node was cancelled because the run failed
    RUN_FINISHED = "run_finished"  # the run ended (node is None; see error)


@dataclass(frozen=True)
class WorkflowEvent:
    """One thing that happened in a run."""

    kind: EventKind
    run_id: str
    node: str | None
    elapsed_s: float
    """Seconds since the run started."""
    duration_s: float | None = None
    """For FINISHED/FAILED: how long the node ran (all attempts)."""
    attempt: int = 1
    error: str | None = None
    reason: str | None = None
    """Why a node was skipped or restored, in words."""

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "kind": self.kind.value,
            "run_id": self.run_id,
            "node": self.node,
            "elapsed_s": round(self.elapsed_s, 6),
            "duration_s": None if self.duration_s is None else round(self.duration_s, 6),
            "attempt": self.attempt,
            "error": self.error,
            "reason": self.reason,
        }


class EventListener(Protocol):
    """A callback for events; it runs on the workflow's loop, so keep it quick."""

    def __call__(self, event: WorkflowEvent, /) -> None: ...
