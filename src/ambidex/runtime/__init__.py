"""The runtime core: loop thread, I/O threads, cpu processes, limits, the decorators."""

from ambidex.runtime._backoff import Backoff
from ambidex.runtime._core import Runtime, runtime
from ambidex.runtime._cpus import usable_cpus
from ambidex.runtime._gather import agather, gather
from ambidex.runtime._limits import CapacityLimit, Rate, RateLimit
from ambidex.runtime._stats import KindStatistics, RuntimeStatistics
from ambidex.runtime._task import TaskFunction, TaskOptions, blocking, cpu, io

__all__ = [
    "Backoff",
    "CapacityLimit",
    "KindStatistics",
    "Rate",
    "RateLimit",
    "Runtime",
    "RuntimeStatistics",
    "TaskFunction",
    "TaskOptions",
    "agather",
    "blocking",
    "cpu",
    "gather",
    "io",
    "runtime",
    "usable_cpus",
]
