"""The span of an agent's call (GenAI ``invoke_agent``); imported only while tracing is on.

``Agent.arun`` validates its input and sets the agent up, then calls ``run``
where its kind says inside a span ``invoke_agent <agent name>``
(``gen_ai.operation.name`` = ``invoke_agent``, ``gen_ai.agent.name``), whose
children are the runtime's span of that call and, below it, the LLM calls
``run`` makes. Names and attributes: docs/observability.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ambidex import _otel

if TYPE_CHECKING:
    from ambidex.agents._agent import Agent
    from ambidex.runtime import TaskFunction

__all__ = ["traced_invoke"]


async def traced_invoke(agent: Agent[Any, Any], task: TaskFunction[..., Any], value: Any) -> Any:
    """``await task.aio(value)`` (the agent's ``run``) inside its ``invoke_agent`` span."""
    attributes = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": agent.name,
        "ambidex.kind": task.kind,
    }
    with _otel.span(f"invoke_agent {agent.name}", attributes):
        return await task.aio(value)
