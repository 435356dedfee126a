"""Counting how many calls run at once, for tests of thread pools and workflows."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Width:
    """How many calls of a function run at once, at most."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def wrap(self, d: float) -> Callable[[int], int]:
        def call(x: int) -> int:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            try:
                time.sleep(d)
                return x
            finally:
                with self.lock:
                    self.now -= 1

        return call
