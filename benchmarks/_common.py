"""Helpers shared by the benchmark scripts: statistics, machine facts, JSON output."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (0 <= q <= 100) of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac


def summarize_ns(samples_ns: list[int]) -> dict[str, float]:
    """Median, p90, p99, mean and min of per-call times, in microseconds."""
    us = sorted(s / 1000.0 for s in samples_ns)
    return {
        "n": len(us),
        "median_us": statistics.median(us),
        "p90_us": percentile(us, 90),
        "p99_us": percentile(us, 99),
        "mean_us": statistics.fmean(us),
        "min_us": us[0],
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out + ("+dirty-src" if dirty else "")


def machine_info() -> dict[str, Any]:
    """Facts about this machine and the software under test."""
    import ambidex as ax

    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": os.cpu_count(),
        "usable_cpus": ax.usable_cpus(),
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "ambidex": ax.__version__,
        "git_commit": _git_commit(),
        "AMBIDEX_LOOP": os.environ.get("AMBIDEX_LOOP", "auto"),
        "uvloop": _version("uvloop"),
        "anyio": _version("anyio"),
        "asgiref": _version("asgiref"),
        "argv": sys.argv,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def ambidex_loop_name() -> str:
    """The loop type ambidex's loop thread uses with the current environment."""
    from ambidex.runtime._loop import new_event_loop

    loop = new_event_loop()
    try:
        return f"{type(loop).__module__}.{type(loop).__name__}"
    finally:
        loop.close()


def write_json(name: str, data: dict[str, Any]) -> Path:
    """Write ``data`` to ``benchmarks/results/<name>.json`` and return the path."""
    data.setdefault("machine", {})["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def verdict(value: float, target: float, higher_is_better: bool) -> bool:
    """True when ``value`` meets ``target``."""
    return value >= target if higher_is_better else value <= target


def print_ratios(
    console: Console,
    ratios: list[dict[str, Any]],
    *,
    title: str = "ratios (medians)",
    value_format: Callable[[float], str] = lambda v: f"{v:.3f}",
) -> None:
    """The ratio rows every script prints: ratio, value, target, met / NOT met / -, note."""
    table = Table(title=title)
    for col in ("ratio", "value", "target", "met", "note"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for r in ratios:
        met = {True: "[green]met[/]", False: "[red]NOT met[/]", None: "-"}[r["met"]]
        table.add_row(r["ratio"], value_format(r["value"]), r["target"], met, r["note"])
    console.print(table)


# -- tracing on: the "traced" rows of bridge.py and fanout.py ----------------------------

_provider: Any = None


def tracing_provider() -> Any:
    """An SDK provider whose spans go to an exporter that drops them; None without the SDK.

    What a traced row measures: ambidex's spans and the SDK's own work per span
    (a ``SimpleSpanProcessor`` hands each to the exporter as it ends), without
    encoding or a network.
    """
    global _provider
    if _provider is None:
        try:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import (
                SimpleSpanProcessor,
                SpanExporter,
                SpanExportResult,
            )
        except ImportError:
            return None

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        _provider = TracerProvider()
        _provider.add_span_processor(SimpleSpanProcessor(Drop()))
    return _provider


@contextlib.contextmanager
def tracing(on: bool = True) -> Iterator[None]:
    """Within the block, ambidex traces (``ax.instrument``) when ``on``."""
    if not on:
        yield
        return
    import ambidex as ax

    ax.instrument(tracer_provider=tracing_provider())
    try:
        yield
    finally:
        ax.uninstrument()
