"""Where ambidex keeps its files: ``AMBIDEX_HOME``, else the XDG data directory."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir"]


def data_dir() -> Path:
    """``$AMBIDEX_HOME``, or ``$XDG_DATA_HOME/ambidex``, or ``~/.local/share/ambidex``."""
    home = os.environ.get("AMBIDEX_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "ambidex"
