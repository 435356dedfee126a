"""``--workloads`` of the PostgreSQL workers of ``test_workflow_durability`` (in Python)."""

from __future__ import annotations

from durable_flow_nodes import build

import ambidex as ax

ax.jobs.default_registry().register_workflow(build(), max_attempts=3)
