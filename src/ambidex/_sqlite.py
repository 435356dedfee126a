"""Opening a SQLite file the way every ambidex store does (one copy of the pragmas).

The LLM response cache, the workflow checkpoints, the evolution database and the
simulation record each keep a SQLite file that several threads use through one
connection. (The job store goes through SQLAlchemy, which sets the same pragmas
on its own connections.)
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

__all__ = ["open_sqlite"]


def open_sqlite(
    path: str | os.PathLike[str],
    *,
    wal: bool = True,
    autocommit: bool = True,
    timeout_s: float = 10.0,
) -> sqlite3.Connection:
    """A connection to ``path`` (its directory made), usable from any thread.

    Args:
        path: the database file.
        wal: write-ahead logging with ``synchronous=NORMAL``: readers never block
            the writer, and a commit costs no fsync (a power cut may lose the last
            commits, never corrupt the file).
        autocommit: each statement commits unless a ``BEGIN`` is open (otherwise
            the sqlite3 module's implicit, deferred transactions).
        timeout_s: how long a statement waits for another connection's lock.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path,
        timeout=timeout_s,
        check_same_thread=False,
        isolation_level=None if autocommit else "DEFERRED",
    )
    try:
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn
