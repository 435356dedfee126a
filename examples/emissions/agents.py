"""Agents of the emissions example: fuel use, grid factor, and an LLM-written report.

* ``FuelAgent`` (async, on the event loop): litres of fuel -> kg CO2.
* ``GridFactorAgent`` (blocking, on the I/O threads): looks the grid's emission
  factor up in a SQLite table built from ``grid_factors.csv``.
* ``ReportAgent`` (async): adds the two up and asks an OpenAI-compatible LLM
  for a short summary: the one at ``OPENAI_BASE_URL`` (or OpenAI's, given
  ``OPENAI_API_KEY``); with neither set, ambidex's mock LLM, started for the
  run (``examples/_llm.py``).

Factors are illustrative round figures, not an emissions inventory.
"""

from __future__ import annotations

import contextlib
import csv
import sqlite3
from pathlib import Path
from typing import Literal

import pydantic

import ambidex as ax
from examples._llm import example_llm

_FUEL_KG_PER_LITRE = {"diesel": 2.68, "petrol": 2.31, "lpg": 1.56}
_GRID_CSV = Path(__file__).with_name("grid_factors.csv")


class FuelInput(pydantic.BaseModel):
    litres: float = pydantic.Field(ge=0)
    fuel: Literal["diesel", "petrol", "lpg"] = "diesel"


class FuelResult(pydantic.BaseModel):
    fuel: str
    litres: float
    kg_per_litre: float
    kg_co2: float


class FuelAgent(ax.Agent[FuelInput, FuelResult]):
    """Combustion emissions of a fuel."""

    async def run(self, input: FuelInput) -> FuelResult:
        factor = _FUEL_KG_PER_LITRE[input.fuel]
        return FuelResult(
            fuel=input.fuel, litres=input.litres, kg_per_litre=factor, kg_co2=input.litres * factor
        )


class GridInput(pydantic.BaseModel):
    region: str
    kwh: float = pydantic.Field(default=0.0, ge=0)


class GridResult(pydantic.BaseModel):
    region: str
    kwh: float
    kg_per_kwh: float
    kg_co2: float


class GridFactorAgent(ax.Agent[GridInput, GridResult]):
    """Electricity emissions from a grid factor table (a blocking SQLite lookup)."""

    kind = "blocking"

    def setup(self) -> None:
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.execute("create table grid (region text primary key, kg_per_kwh real)")
        with _GRID_CSV.open() as f:
            rows = [(r["region"], float(r["kg_per_kwh"])) for r in csv.DictReader(f)]
        self.db.executemany("insert into grid values (?, ?)", rows)

    def run(self, input: GridInput) -> GridResult:
        row = self.db.execute(
            "select kg_per_kwh from grid where region = ?", (input.region.upper(),)
        ).fetchone()
        if row is None:
            known = [r[0] for r in self.db.execute("select region from grid order by region")]
            raise ValueError(
                f"no grid factor for region {input.region!r} (known: {', '.join(known)})"
            )
        factor = float(row[0])
        return GridResult(
            region=input.region.upper(), kwh=input.kwh, kg_per_kwh=factor, kg_co2=input.kwh * factor
        )

    def teardown(self) -> None:
        self.db.close()


class ReportInput(pydantic.BaseModel):
    fuel: FuelResult
    grid: GridResult
    title: str = "Emissions report"


class Report(pydantic.BaseModel):
    title: str
    total_kg_co2: float
    summary: str
    llm_tokens: int


class ReportAgent(ax.Agent[ReportInput, Report]):
    """Totals the emissions and has an LLM write the summary."""

    timeout_s = 120

    async def setup(self) -> None:
        self.resources = contextlib.AsyncExitStack()
        self.llm = await self.resources.enter_async_context(example_llm(temperature=0))

    async def run(self, input: ReportInput) -> Report:
        total = input.fuel.kg_co2 + input.grid.kg_co2
        prompt = (
            f"Write two sentences for a report titled {input.title!r}. "
            f"Fuel: {input.fuel.litres:g} litres of {input.fuel.fuel} = {input.fuel.kg_co2:.1f} kg CO2. "
            f"Electricity: {input.grid.kwh:g} kWh in {input.grid.region} = {input.grid.kg_co2:.1f} kg CO2. "
            f"Total: {total:.1f} kg CO2."
        )
        answer = await self.llm.chat(prompt)
        return Report(
            title=input.title,
            total_kg_co2=round(total, 3),
            summary=answer.text,
            llm_tokens=answer.usage.total_tokens,
        )

    async def teardown(self) -> None:
        await self.resources.aclose()  # the client, and the mock LLM if one was started
