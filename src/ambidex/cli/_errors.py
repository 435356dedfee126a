"""How every command fails: one red ``error:`` line on stderr, and an exit code.

Exit codes: 2 for a mistake of the user's (a bad option, file, path, input or
environment variable), 1 when the program itself fails (a model or workload
that raises, a database that goes away), 130 for Ctrl-C.
"""

from __future__ import annotations

import errno
import os

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["fail", "one_line", "os_error_code", "print_error"]

#: OSError numbers that say the path given was wrong, not that the program failed.
_PATH_MISTAKES = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENAMETOOLONG,
        errno.EEXIST,
    }
)


def print_error(message: str) -> None:
    """Print ``error: message`` as one red line on stderr; the message is not markup."""
    Console(stderr=True).print(
        f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True
    )


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` as one red line on stderr; return the Exit to raise."""
    print_error(message)
    return typer.Exit(code)


def one_line(exc: BaseException) -> str:
    """``exc``'s message as one line: a database driver's message without its appendix.

    SQLAlchemy wraps a driver's error in a message of several lines that ends
    with a link to its documentation; the driver's own first line says it all.
    """
    original = getattr(exc, "orig", None)  # sqlalchemy.exc.DBAPIError
    text = str(original if isinstance(original, BaseException) else exc)
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        where = exc.filename
        if where is None:  # socket.create_server appends "(while attempting to bind ...)"
            text = exc.strerror.split(" (while attempting")[0]
        elif exc.errno in (errno.EEXIST, errno.ENOTDIR) and os.path.isfile(where):
            text = f"{where} is a file, not a directory"  # a folder in the path is a file
        else:
            text = f"{exc.strerror}: {where}"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def os_error_code(exc: OSError) -> int:
    """2 when ``exc`` says a path the user gave is wrong (missing, not a directory, read-only)."""
    return 2 if exc.errno in _PATH_MISTAKES else 1
