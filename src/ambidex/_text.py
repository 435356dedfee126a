"""Text that is always safe to show and to store, whatever user code hands us.

An exception raised by user code may have a ``__str__`` that raises (or
returns something other than a string), and a message may hold a NUL byte
(PostgreSQL ``text`` cannot store one) or a lone surrogate (not UTF-8: SQLite,
JSON answers and HTML pages cannot encode it). These helpers turn any of that
into plain, printable text, so that formatting one unit's failure can never
become a failure of the code that reports it.
"""

from __future__ import annotations

import re
import traceback

__all__ = ["describe_exception", "exception_message", "format_traceback", "plain_text", "shorten"]

# NUL and the UTF-16 surrogate range: what neither UTF-8 nor PostgreSQL text can hold.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return "\\x00" if char == "\x00" else f"\\u{ord(char):04x}"


def plain_text(value: object) -> str:
    r"""``value`` as text that every database, JSON answer and HTML page can hold.

    A NUL byte becomes the four characters ``\\x00`` and a lone surrogate its
    ``\\udcxx`` escape; anything else is left as it is. A value that is not a
    string is converted with ``str`` (or ``repr`` if that fails).
    """
    if isinstance(value, str):
        text = value
    else:
        try:
            shown: object = str(value)
        except BaseException:  # user code: anything may come out of __str__
            shown = None
        # (str() of an object whose __str__ returns bytes raises TypeError: caught above)
        text = shown if isinstance(shown, str) else _fallback_repr(value)
    return _UNSTORABLE.sub(_escape, text) if _UNSTORABLE.search(text) else text


def _fallback_repr(value: object) -> str:
    try:
        text = repr(value)
        if isinstance(text, str):
            return text
    except BaseException:  # user code again
        pass
    return f"<unprintable {type(value).__name__} object>"


def exception_message(exc: BaseException) -> str:
    """``str(exc)`` as plain text, or ``<unprintable Type object>`` when that raises."""
    try:
        message = str(exc)
    except BaseException:  # user code: anything may come out of __str__
        return f"<unprintable {plain_text(type(exc).__name__)} object>"
    return plain_text(message)


def describe_exception(exc: BaseException) -> str:
    """``"Type: message"`` for an exception, never raising, whatever its ``__str__`` does.

    An exception whose ``str()`` is empty is shown by its type alone; one
    whose ``str()`` raises is shown as ``Type: <unprintable Type object>``.
    """
    name = plain_text(type(exc).__name__)
    message = exception_message(exc)
    return f"{name}: {message}" if message else name


def shorten(text: str, max_chars: int) -> str:
    """``text`` cut to about ``max_chars``: its head and tail, and how much was left out."""
    if len(text) <= max_chars:
        return text
    keep = max(max_chars // 2 - 40, 1)
    cut = len(text) - 2 * keep
    return f"{text[:keep]}\n... ({cut} characters left out) ...\n{text[-keep:]}"


def format_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` as text, never raising.

    ``traceback.format_exception`` itself raises for an exception whose
    ``__notes__``, ``__cause__`` or ``__context__`` are properties that raise;
    then the frames alone are shown, then just the description.
    """
    try:
        return "".join(traceback.format_exception(exc))
    except BaseException:  # user code: the formatting itself ran it
        pass
    try:
        frames = "".join(traceback.format_tb(exc.__traceback__))
    except BaseException:  # ditto
        frames = ""
    return (
        f"Traceback (most recent call last):\n{frames}{describe_exception(exc)}\n"
        "(the rest of this traceback could not be formatted)\n"
    )
