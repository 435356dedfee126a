"""Recurring jobs: a cron expression fires a workload, once per tick, however many workers run.

A schedule is declared on a workload (``@ax.jobs.workload(schedule="*/5 * * * *")``),
on a registry (``registry.schedule(...)``) or on the command line
(``ambidex serve --schedule 'report=0 * * * *'``). Every manager that knows a
schedule watches its ticks; firing a tick is one transaction that moves the
schedule's ``last_tick`` forward only if no one has yet (``JobStore.fire_schedule``),
so several workers sharing a PostgreSQL database fire each tick once.

Cron expressions are read by croniter and evaluated in UTC: five fields
(minute hour day month weekday), or six with seconds last
(``*/10 * * * * *``: every 10 seconds), or ``@hourly``, ``@daily``...

Misfires: a tick that passed while no process ran the schedule is fired once
when one starts, if no more than ``misfire_grace_s`` (default 300 s) late;
several missed ticks become that one run; a tick later than the grace is
skipped, and the skip is logged. (A tick seen within a second of its time is
on time, whatever the grace: ``misfire_grace_s=0`` means "never catch up".)
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ambidex._job_model import iso

__all__ = ["Schedule", "Scheduler", "parse_schedule_option"]

log = logging.getLogger("ambidex.jobs")

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_MAX_SLEEP_S = 30.0  # re-read the clock at least this often (it may jump)
_ON_TIME_S = 1.0


def _croniter() -> Any:
    from croniter import croniter

    return croniter


def check_cron(cron: str) -> str:
    """``cron`` stripped, if croniter can read it.

    Raises:
        ValueError: naming the expression and what a valid one looks like.
    """
    expression = " ".join(cron.split())
    croniter = _croniter()
    if not expression or not croniter.is_valid(expression):
        raise ValueError(
            f"invalid cron expression {cron!r}: expected five fields 'minute hour day month "
            "weekday' (e.g. '*/5 * * * *'), six with seconds last, or @hourly/@daily/@weekly"
        )
    try:  # valid, but does a tick ever come? ('* * 31 2 *': the 31st of February)
        croniter(expression, time.time()).get_next(float)
        croniter(expression, time.time()).get_prev(float)
    except Exception:
        raise ValueError(f"cron expression {cron!r} never fires: no date matches it") from None
    return expression


@dataclass(frozen=True)
class Schedule:
    """Fire ``workload`` with ``input`` at every tick of ``cron`` (UTC).

    Args:
        cron: the cron expression (see the module docstring).
        input: the job's input (validated against the workload when registered).
        name: the schedule's name, unique in the store (default: the workload's name).
        workload: the workload to run (default: the one it is declared on).
        misfire_grace_s: a missed tick is fired if no later than this.
        priority: the priority of the jobs it makes.
    """

    cron: str
    input: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    workload: str | None = None
    misfire_grace_s: float = 300.0
    priority: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "cron", check_cron(self.cron))
        if self.name is not None and not _NAME.match(self.name):
            raise ValueError(
                f"schedule name {self.name!r}: use 1 to 200 letters, digits and _ . : -"
            )
        if not self.misfire_grace_s >= 0:
            raise ValueError(f"misfire_grace_s must be >= 0, got {self.misfire_grace_s!r}")

    def latest_tick(self, now: float) -> float:
        """The last tick at or before ``now`` (epoch seconds)."""
        return float(_croniter()(self.cron, now + 1e-3).get_prev(float))

    def next_tick(self, after: float) -> float:
        """The first tick after ``after``."""
        return float(_croniter()(self.cron, after).get_next(float))


def parse_schedule_option(text: str) -> tuple[str, Schedule]:
    """``NAME=CRON`` or ``NAME=CRON;{JSON input}`` from the command line.

    NAME is the workload to fire (and the schedule's name).

    Raises:
        ValueError: naming what is wrong with ``text``.
    """
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"--schedule {text!r}: expected WORKLOAD=CRON, e.g. 'report=0 * * * *'")
    cron, _, raw_input = rest.partition(";")
    data: Any = {}
    if raw_input.strip():
        import json

        try:
            data = json.loads(raw_input)
        except ValueError as exc:
            raise ValueError(
                f"--schedule {text!r}: the input after ';' is not JSON: {exc}"
            ) from None
        if not isinstance(data, dict):
            raise ValueError(f"--schedule {text!r}: the input after ';' must be a JSON object")
    try:
        return name, Schedule(cron, data, name=name, workload=name)
    except ValueError as exc:
        raise ValueError(f"--schedule {text!r}: {exc}") from None


Fire = Callable[[Schedule, float, bool], Awaitable[None]]
"""Fires (or, with False, skips) a schedule's tick in the store."""


class Scheduler:
    """Watches the ticks of some schedules and fires each once it is due.

    ``fire(schedule, tick, run)`` records the tick in the store (with a job
    when ``run``); the store makes sure each tick is recorded once across
    every scheduler sharing it.
    """

    def __init__(self, schedules: list[Schedule], last_ticks: dict[str, float], fire: Fire) -> None:
        self.schedules = schedules
        self._last = dict(last_ticks)
        self._fire = fire

    async def run(self) -> None:
        """Fire due ticks until cancelled."""
        while True:
            now = time.time()
            for schedule in self.schedules:
                await self._check(schedule, now)
            wake = min(s.next_tick(now) for s in self.schedules)
            await asyncio.sleep(min(max(wake - time.time(), 0.0), _MAX_SLEEP_S))

    async def _check(self, schedule: Schedule, now: float) -> None:
        name = schedule.name or ""
        due = schedule.latest_tick(now)
        last = self._last.get(name, due)
        if due <= last:
            return
        late_s = now - due
        # A tick seen within _ON_TIME_S of its time was not missed (the loop wakes
        # a little late); the grace is for ticks that passed while nothing ran.
        run = late_s <= schedule.misfire_grace_s + _ON_TIME_S
        missed = self._count_ticks(schedule, last, due)
        if not run:
            log.warning(
                "schedule %s: skipped the tick of %s, %.0f s late (misfire_grace_s is %g)",
                name,
                iso(due),
                late_s,
                schedule.misfire_grace_s,
            )
        elif missed > 1:
            log.info("schedule %s: %d missed ticks fired once, at %s", name, missed, iso(due))
        try:
            await self._fire(schedule, due, run)
        except Exception:
            log.exception("schedule %s: firing the tick of %s failed; retrying", name, iso(due))
            return
        self._last[name] = due

    @staticmethod
    def _count_ticks(schedule: Schedule, after: float, until: float, cap: int = 1000) -> int:
        count, tick = 0, after
        while count < cap:
            tick = schedule.next_tick(tick)
            if tick > until:
                break
            count += 1
        return count
