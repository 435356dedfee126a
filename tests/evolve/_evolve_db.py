"""Reading an evolution database the way an outside observer would (tests only)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path


def iterations_done(db: Path) -> int:
    """The count of iterations the run has stored (0 while the database is not there yet)."""
    try:
        conn = sqlite3.connect(db, timeout=1)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'iterations_done'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return 0
    return int(json.loads(row[0])) if row else 0
