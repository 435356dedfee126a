"""Each caller of a failed turn gets its own copy of the turn's error, saying the same.

``copy.copy`` rebuilds an exception as ``type(exc)(*exc.args)``: for a class whose
``__init__`` formats its message from its arguments, the copy's message was
formatted twice. The store's own ``around`` raises sqlite3 errors and
RuntimeError, which copied faithfully; ``Lane`` takes any ``around``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from ambidex.jobs._lanes import Lane


class TurnRefused(Exception):
    def __init__(self, calls: int) -> None:
        super().__init__(f"{calls} calls refused")
        self.calls = calls


async def test_a_failed_turns_callers_are_told_the_error_it_raised() -> None:
    @contextlib.contextmanager
    def refusing() -> Iterator[None]:
        yield
        raise TurnRefused(1)  # the "COMMIT" fails

    lane = Lane("test-lane", refusing)
    try:
        with pytest.raises(TurnRefused) as told:
            await lane.call(lambda: None)
        # Observed on main: "1 calls refused calls refused".
        assert str(told.value) == "1 calls refused"
    finally:
        lane.close()
