"""The runtime core: loop thread, I/O threads, cpu processes, limits, the decorators."""

import sys
import types
import typing
import warnings

from ambidex._backoff import Backoff
from ambidex._clock import Clock, current_clock, use_clock
from ambidex.runtime._backends import Shared
from ambidex.runtime._core import Runtime, current_runtime
from ambidex.runtime._cpus import cgroup_cpu_quota, usable_cpus
from ambidex.runtime._facade import sync_facade
from ambidex.runtime._gather import agather, gather
from ambidex.runtime._limits import CapacityLimit, Rate, RateLimit
from ambidex.runtime._offload import to_elastic_thread, to_reserved_thread, to_thread
from ambidex.runtime._stats import KindStatistics, RuntimeStatistics
from ambidex.runtime._task import Kind as TaskKind
from ambidex.runtime._task import TaskFunction, TaskOptions, blocking, cpu, io
from ambidex.runtime._threads import elastic_threads

if typing.TYPE_CHECKING:
    from ambidex.runtime._metrics import RuntimeCollector

__all__ = [
    "Backoff",
    "CapacityLimit",
    "Clock",
    "KindStatistics",
    "Rate",
    "RateLimit",
    "Runtime",
    "RuntimeCollector",
    "RuntimeStatistics",
    "Shared",
    "TaskFunction",
    "TaskKind",
    "TaskOptions",
    "agather",
    "blocking",
    "cgroup_cpu_quota",
    "cpu",
    "current_clock",
    "current_runtime",
    "elastic_threads",
    "gather",
    "io",
    "sync_facade",
    "to_elastic_thread",
    "to_reserved_thread",
    "to_thread",
    "usable_cpus",
    "use_clock",
]


def __getattr__(name: str) -> typing.Any:
    """``RuntimeCollector``, imported on first use (prometheus_client takes ~0.1 s to import)."""
    if name == "RuntimeCollector":
        from ambidex.runtime._metrics import RuntimeCollector

        return RuntimeCollector
    raise AttributeError(f"module 'ambidex.runtime' has no attribute {name!r}")


_RUNTIME_DEPRECATED = "ax.runtime() is deprecated; use ax.current_runtime()"


def runtime() -> Runtime:
    """Deprecated: the old name of :func:`current_runtime`, kept for one release.

    Warns ``DeprecationWarning`` (once per call site, under the default filters).
    """
    warnings.warn(_RUNTIME_DEPRECATED, DeprecationWarning, stacklevel=2)
    return current_runtime()


class _Package(types.ModuleType):
    """This package, which ``ax.runtime()`` calls for one release.

    ``ax.runtime`` was a function that hid this package of the same name, which
    is why ``import ambidex`` had to import the package eagerly: importing it
    later sets ``ambidex.runtime`` to the package, over the function. Making the
    package callable keeps ``ax.runtime()`` working (with a warning) whichever
    of the two ``ax.runtime`` is, so ``ambidex`` can load it on first use.
    """

    def __call__(self) -> Runtime:
        warnings.warn(_RUNTIME_DEPRECATED, DeprecationWarning, stacklevel=2)
        return current_runtime()


sys.modules[__name__].__class__ = _Package
