"""How many CPUs this process may actually use, and pool sizes derived from it.

``os.cpu_count()`` counts the machine's CPUs, not the ones this process may run
on: a container limited by an affinity mask or a cgroup CPU quota sees them
all. Sizing a process pool from it oversubscribes the CPUs we are given.
Guessing physical cores as ``cpu_count() // 2`` is wrong too (hyper-threads
are schedulable CPUs, and many machines have none), so we do not.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = [
    "cgroup_cpu_quota",
    "default_cpu_workers",
    "default_io_threads",
    "default_io_threads_max",
    "usable_cpus",
]

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def cgroup_cpu_quota(root: Path = _CGROUP_ROOT) -> float | None:
    """The cgroup CPU quota in CPUs (e.g. 1.5), or None when there is none.

    Reads cgroup v2 ``cpu.max`` ("max 100000" or "150000 100000") and falls back
    to cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``.
    """
    try:
        fields = (root / "cpu.max").read_text().split()
        if len(fields) == 2 and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup quota."""
    cpus = _affinity_cpus()
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _from_env(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a positive integer") from None
    if value < 1:
        raise ValueError(f"{name}={raw!r}: expected a positive integer")
    return value


def default_io_threads(cpus: int | None = None) -> int:
    """Threads for blocking calls: ``AMBIDEX_IO_THREADS`` or 4 per usable CPU, 8 to 64.

    Blocking calls mostly wait (a socket, a disk, a database driver), so the
    pool holds more threads than CPUs; the bound keeps a runaway fan-out from
    creating thousands of threads.
    """
    env = _from_env("AMBIDEX_IO_THREADS")
    if env is not None:
        return env
    return min(64, max(8, 4 * (cpus or usable_cpus())))


IO_THREADS_MAX = 256
"""Default bound on the I/O pool when elastic calls grow it (``AMBIDEX_IO_THREADS_MAX``)."""


def default_io_threads_max(io_threads: int) -> int:
    """How far elastic calls may grow the I/O pool: ``AMBIDEX_IO_THREADS_MAX`` or 256.

    Never below ``io_threads`` (a smaller value means no growth). Elastic calls
    are a workflow's blocking nodes: they wait (a sleep, a socket, a driver), so
    how many may run at once does not depend on the CPUs, and the bound is a
    fixed number rather than a multiple of them. What a thread costs: an idle
    pool thread adds ~17 KiB of resident memory (measured on CPython 3.11,
    Linux x86-64: 256 threads parked on a lock, +4.3 MiB RSS) and reserves its
    stack's 8 MiB (``ulimit -s``) of address space, ~12 MiB of virtual memory in
    all, not resident. So 256 extra threads cost ~4 MiB and a few ms to start,
    and stay far from the usual limits on threads (``pids.max`` of a container
    is often 1,024 or more); a bound of thousands would let one wide layer of a
    workflow use up a container's threads.
    """
    env = _from_env("AMBIDEX_IO_THREADS_MAX")
    return max(io_threads, env if env is not None else IO_THREADS_MAX)


def default_cpu_workers(cpus: int | None = None) -> int:
    """Worker processes for cpu work: ``AMBIDEX_CPU_WORKERS`` or one per usable CPU."""
    env = _from_env("AMBIDEX_CPU_WORKERS")
    if env is not None:
        return env
    return cpus or usable_cpus()
