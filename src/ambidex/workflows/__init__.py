"""Workflows: a DAG of agents and functions that starts each node the moment its inputs exist."""

from ambidex.workflows._checkpoint import (
    CheckpointBackend,
    CheckpointStore,
    NodeRecord,
    RunRecord,
    StoredRun,
)
from ambidex.workflows._context import current_node_key
from ambidex.workflows._events import EventKind, NodeStatus, WorkflowEvent
from ambidex.workflows._refs import Condition, Ref
from ambidex.workflows._scheduler import NodeRun, WorkflowResult
from ambidex.workflows._spec import (
    FailurePolicy,
    InputSpec,
    Node,
    Outputs,
    Workflow,
    WorkflowDefinitionError,
    WorkflowError,
)
from ambidex.workflows._validate import check_inputs

__all__ = [
    "CheckpointBackend",
    "CheckpointStore",
    "Condition",
    "EventKind",
    "FailurePolicy",
    "InputSpec",
    "Node",
    "NodeRecord",
    "NodeRun",
    "NodeStatus",
    "Outputs",
    "Ref",
    "RunRecord",
    "StoredRun",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowError",
    "WorkflowEvent",
    "WorkflowResult",
    "check_inputs",
    "current_node_key",
]
