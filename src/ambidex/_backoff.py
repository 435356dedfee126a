"""Exponential backoff with jitter: how long to wait before retry number ``n``.

One policy object for every retry ambidex makes itself (a marked function's
``retries``, a job's ``retries``), so their waits grow the same way. It sits
below every package (public as ``ambidex.runtime.Backoff``) because a job's retry
policy, a wire type the client reads without the runtime, is built on it. Its
own waits (``asleep``, ``sleep``) sleep on ``current_clock()``, which a test's
fake clock skips.

:func:`retry_cannot_help` is the one rule of which failures are never retried,
whatever ``retries`` and ``retry_on`` say: those that say another attempt cannot
succeed.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Literal

from ambidex._clock import current_clock

__all__ = ["Backoff", "retry_cannot_help"]

_rng = random.Random()
# A forked process (a cpu worker, a sandbox) must not wait the same jitter as its parent.
os.register_at_fork(after_in_child=_rng.seed)
_MAX_DOUBLINGS = 60  # 2**60 times any sane base is past every cap: no float overflow


@dataclass(frozen=True)
class Backoff:
    """Waits that double from ``base_s`` up to ``max_s``, with jitter.

    ``jitter="full"`` waits a uniform time in ``[0, ceiling]`` (spreads a herd
    of retries best); ``"equal"`` waits in ``[ceiling / 2, ceiling]`` (never
    much less than the ceiling, for retries a user wants spaced out). The
    ceiling of retry ``n`` (1-based) is ``min(max_s, base_s * 2**(n - 1))``.
    """

    base_s: float = 0.1
    max_s: float = 30.0
    jitter: Literal["full", "equal"] = "full"

    def __post_init__(self) -> None:
        if not self.base_s >= 0 or not self.max_s >= 0:  # NaN fails too
            raise ValueError(
                f"backoff times must be >= 0 seconds, got {self.base_s!r} and {self.max_s!r}"
            )

    def ceiling_s(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (1-based)."""
        return min(self.max_s, self.base_s * 2.0 ** min(max(retry - 1, 0), _MAX_DOUBLINGS))

    def delay_s(self, retry: int, rng: random.Random | None = None) -> float:
        """A wait before retry number ``retry`` (1-based), jittered."""
        ceiling = self.ceiling_s(retry)
        low = ceiling / 2 if self.jitter == "equal" else 0.0
        return (rng or _rng).uniform(low, ceiling)

    async def asleep(self, retry: int, rng: random.Random | None = None) -> float:
        """Wait before retry number ``retry`` (1-based) on the current clock; return the wait."""
        delay = self.delay_s(retry, rng)
        await current_clock().asleep(delay)
        return delay

    def sleep(self, retry: int, rng: random.Random | None = None) -> float:
        """Block this thread before retry number ``retry`` (1-based); return the wait."""
        delay = self.delay_s(retry, rng)
        current_clock().sleep(delay)
        return delay


def retry_cannot_help(exc: BaseException) -> bool:
    """True when ``exc`` says that another attempt cannot succeed: it is never retried.

    An exception says so with a ``retryable`` attribute that is ``False``. The
    LLM client's errors for a configuration that can never work do
    (``LLMConfigError``: no API key, a bad ``base_url`` or option;
    ``LLMHTTPError`` for 401, 403 and 404: a wrong key, a key without access, a
    wrong base URL or an unknown model); so may a user's own exceptions.
    Every retry ambidex makes asks this first: a workflow node's ``retries``,
    a marked function's or an agent's ``retries`` and a job's ``retries``.

    An exception whose ``retryable`` cannot be read (a property that raises)
    has not said so: it is retried as any other, and stays the error reported.
    """
    try:
        return getattr(exc, "retryable", True) is False
    except Exception:
        return False
