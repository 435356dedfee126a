"""The command line's logging: one format on stderr, one level option, one variable.

``ambidex --log-level LEVEL COMMAND`` (or ``AMBIDEX_LOG_LEVEL``) sets the level
of every command; ``serve`` and ``worker`` also take ``--log-level`` after
their name. The default is ``warning``, and ``info`` for ``serve`` and
``worker``, whose start-up and failing jobs are worth a line each.

With tracing on (``AMBIDEX_OTEL=1``), a line logged while a span is current
ends with `` trace_id=<32 hex> span_id=<16 hex>``, the ids to look the trace up
by in the tracing backend; other lines are unchanged.
"""

from __future__ import annotations

import enum
import logging
from typing import Annotated

import typer

__all__ = [
    "LOG_FORMAT",
    "LogLevel",
    "LogLevelOption",
    "TraceIdFormatter",
    "choose_level",
    "chosen_level",
    "setup_logging",
]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TraceIdFormatter(logging.Formatter):
    """A formatter adding `` trace_id=... span_id=...`` to lines logged inside a span.

    The ids are the ``trace_id`` and ``span_id`` attributes ``ax.instrument()``
    puts on every log record (empty outside a span); with tracing off, or outside
    a span, a line is exactly what the format alone makes. They end the line's
    first part, before an exception's traceback.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The format applied to ``record``, then the ids of its span if it has one."""
        line = super().formatMessage(record)
        trace_id = getattr(record, "trace_id", "")
        if not trace_id:
            return line
        return f"{line} trace_id={trace_id} span_id={getattr(record, 'span_id', '')}"


class LogLevel(enum.StrEnum):
    """How much a command logs."""

    debug = "debug"  # everything, with uvicorn's access log
    info = "info"  # start-up, jobs that fail or retry, schedules that fire
    warning = "warning"  # failures and problems only
    error = "error"  # the command's own failures only


LogLevelOption = Annotated[
    LogLevel | None,
    typer.Option(
        envvar="AMBIDEX_LOG_LEVEL",
        case_sensitive=False,
        help="How much to log on stderr (default: warning; info for serve and worker).",
        show_default=False,
    ),
]

_chosen: LogLevel | None = None


def choose_level(level: LogLevel | None) -> None:
    """Remember the level given to ``ambidex`` itself (None: none was given) and apply it."""
    global _chosen
    _chosen = level
    setup_logging(level or LogLevel.warning)


def chosen_level() -> LogLevel | None:
    """The level given as ``ambidex --log-level`` or ``AMBIDEX_LOG_LEVEL``, if any."""
    return _chosen


def setup_logging(level: LogLevel, replace: bool = False) -> None:
    """Log at ``level`` and above to stderr, in ``LOG_FORMAT`` (with trace ids), from every logger.

    Handlers the root logger has already (a test's log capture, when a command
    runs in the test's process) are kept unless ``replace``: ``serve`` and
    ``worker`` replace any a workload module set up, so that one format holds.
    """
    root = logging.getLogger()
    if replace or not root.handlers:
        handler = logging.StreamHandler()  # stderr
        handler.setFormatter(TraceIdFormatter(LOG_FORMAT))
        logging.basicConfig(handlers=[handler], force=True)
    root.setLevel(getattr(logging, level.value.upper()))
