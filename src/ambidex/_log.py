"""ambidex's loggers: ``get_logger(__name__)``, quiet until the application says otherwise.

A library's convention: the ``ambidex`` logger has a ``NullHandler``, so
nothing ambidex logs reaches stderr through Python's last-resort handler
unless the application configured logging (the ``ambidex`` command does, in one
format, from ``--log-level`` or ``AMBIDEX_LOG_LEVEL``: ``ambidex.cli._logging``).

The handler is added here, on first use, rather than by ``import ambidex``:
a sandboxed evolution candidate imports ambidex for its decorator on every
evaluation and should not pay for the ``logging`` module; everything that
logs imports this module first.

Per-task messages (one per cpu call, one per simulation run) are guarded by
``log.isEnabledFor(level)``, so a hot path formats nothing unless asked to.
"""

from __future__ import annotations

import logging

__all__ = ["get_logger"]

logging.getLogger("ambidex").addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """The logger ``name`` (a module's ``__name__``), under the quiet ``ambidex`` logger."""
    return logging.getLogger(name)
