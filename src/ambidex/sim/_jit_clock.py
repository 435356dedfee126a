"""How long a run spent compiling numba kernels, so a report can say so.

The first run of a numba model in a process pays for compiling its kernels, or
for loading them from numba's cache (``cache=True``): seconds, or most of a
second, against milliseconds per step after. A report that shows run times
must say which times include it. numba holds its compiler lock for both, and
announces the lock's holding as ``numba:compiler_lock`` events (its
``numba:compile`` event leaves cache loads out: a Wolf-Sheep run that spent
0.85 s loading its kernels showed 0.0 s there); ``JitClock`` listens for them
while a run lasts. It never imports numba: a model that compiles has imported
it already.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["JitClock"]

_EVENT = "numba:compiler_lock"


class JitClock:
    """Seconds numba compiled or loaded kernels between ``start()`` and ``stop()`` (this process).

    ``stop()`` gives ``None`` when numba was not imported at ``start()`` (nothing
    to measure), else the seconds compiled (``0.0``: none).
    """

    __slots__ = ("_event", "_listener")

    def __init__(self, event: Any, listener: Any) -> None:
        self._event = event
        self._listener = listener

    @classmethod
    def start(cls) -> JitClock:
        """Start listening, if numba is loaded."""
        if "numba" not in sys.modules:
            return cls(None, None)
        import importlib

        event: Any = importlib.import_module("numba.core.event")  # untyped: numba ships no stubs
        listener = event.TimingListener()
        event.register(_EVENT, listener)
        return cls(event, listener)

    def stop(self) -> float | None:
        """Stop listening; the seconds spent compiling or loading (``None``: not measured)."""
        if self._event is None:
            return None
        self._event.unregister(_EVENT, self._listener)
        self._event = None
        return float(self._listener.duration) if self._listener.done else 0.0
