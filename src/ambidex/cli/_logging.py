"""The command line's logging: one format on stderr, one level option, one variable.

``ambidex --log-level LEVEL COMMAND`` (or ``AMBIDEX_LOG_LEVEL``) sets the level
of every command; ``serve`` and ``worker`` also take ``--log-level`` after
their name. The default is ``warning``, and ``info`` for ``serve`` and
``worker``, whose start-up and failing jobs are worth a line each.
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
    "choose_level",
    "chosen_level",
    "setup_logging",
]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
    """Log at ``level`` and above to stderr, in ``LOG_FORMAT``, from every logger.

    Handlers the root logger has already (a test's log capture, when a command
    runs in the test's process) are kept unless ``replace``: ``serve`` and
    ``worker`` replace any a workload module set up, so that one format holds.
    """
    root = logging.getLogger()
    if replace or not root.handlers:
        logging.basicConfig(format=LOG_FORMAT, force=True)
    root.setLevel(getattr(logging, level.value.upper()))
