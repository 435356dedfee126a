"""Agents and functions the workflow tests (and their YAML files) refer to by import path.

Importing this module has no side effects: YAML files name its members as
``wf_agents:FuelAgent``, and cpu workers may import it by name.
"""

from __future__ import annotations

import asyncio

import pydantic

import ambidex as ax


class FuelIn(pydantic.BaseModel):
    litres: float


class FuelOut(pydantic.BaseModel):
    kg_co2: float
    label: str


class FuelAgent(ax.Agent[FuelIn, FuelOut]):
    """2.5 kg of CO2 per litre."""

    async def run(self, input: FuelIn) -> FuelOut:
        await asyncio.sleep(0)
        return FuelOut(kg_co2=input.litres * 2.5, label=f"{input.litres:g} l")


class GridIn(pydantic.BaseModel):
    region: str


class GridOut(pydantic.BaseModel):
    factor: float


class GridAgent(ax.Agent[GridIn, GridOut]):
    """A plain ``def run``: runs on the I/O threads."""

    def run(self, input: GridIn) -> GridOut:
        return GridOut(factor=2.0 if input.region == "EU" else 3.0)


class ReportIn(pydantic.BaseModel):
    kg: float
    factor: float
    note: str = ""


class ReportOut(pydantic.BaseModel):
    total: float
    text: str


class ReportAgent(ax.Agent[ReportIn, ReportOut]):
    async def run(self, input: ReportIn) -> ReportOut:
        total = input.kg * input.factor
        return ReportOut(total=total, text=f"{input.note}: {total:g} kg")


class LifecycleAgent(ax.Agent[FuelIn, float]):
    """Counts its setups and teardowns on the class (instances are made by the workflow)."""

    log: list[str] = []

    async def setup(self) -> None:
        type(self).log.append("setup")

    async def run(self, input: FuelIn) -> float:
        type(self).log.append("run")
        return input.litres

    async def teardown(self) -> None:
        type(self).log.append("teardown")


def shout(text: str) -> str:
    """A sync function node (runs on the I/O threads)."""
    return text.upper()


def label_of(kg: float) -> str:
    """Annotated: returns a str (for type-mismatch checks)."""
    return f"{kg:g} kg"


def anything(kg):  # type: ignore[no-untyped-def]
    """Not annotated: its output type is unknown, so it is not checked."""
    return kg
