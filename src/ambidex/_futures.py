"""Settling an ``asyncio`` future from a call's outcome, whatever the call raised."""

from __future__ import annotations

import asyncio
from typing import Any

from ambidex._text import describe_exception

__all__ = ["settle"]


def settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    """Give ``fut`` the call's result (``ok``) or its exception; nothing if it is done.

    A future cannot hold ``StopIteration`` (``set_exception`` raises TypeError,
    and the caller would wait forever); as in a generator (PEP 479), it becomes
    a RuntimeError that carries it.
    """
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    elif isinstance(value, StopIteration):
        error = RuntimeError(describe_exception(value))
        error.__cause__ = value
        fut.set_exception(error)
    else:
        fut.set_exception(value)
