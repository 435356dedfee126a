"""Agents: async-first units of work with typed input and output and a sync face."""

from ambidex.agents._agent import Agent, AgentInputError, AgentOutputError

__all__ = ["Agent", "AgentInputError", "AgentOutputError"]
