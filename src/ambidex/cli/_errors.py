"""One way for the newer commands to fail: one red ``error:`` line on stderr, an exit code."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["fail"]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` as one red line on stderr; return the Exit to raise."""
    Console(stderr=True).print(
        f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True
    )
    return typer.Exit(code)
