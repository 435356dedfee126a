"""Response caches keyed on the whole request: in memory (TTL, bounded LRU) and SQLite.

The key is the sha256 of the canonical JSON (sorted keys, no spaces) of the
request body without its streaming switches: model, messages and every
parameter. The same request asked with ``chat`` or ``stream`` shares an entry.
A cache stores the response body as JSON text, so a cached answer cannot be
changed by a caller mutating ``ChatResponse.raw``.

SQLite is blocking, so ``SQLiteCache`` runs every statement on ambidex's I/O
threads; the event loop never waits on the disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ambidex._sqlite import open_sqlite
from ambidex.runtime import current_runtime

__all__ = ["MemoryCache", "ResponseCache", "SQLiteCache", "cache_key"]

log = logging.getLogger("ambidex.llm")

#: Request fields that change how the answer is delivered, not what it is.
_DELIVERY_FIELDS = frozenset({"stream", "stream_options"})


def cache_key(body: Mapping[str, Any]) -> str:
    """The cache key of a request body: sha256 of its canonical JSON, in hex.

    Raises:
        TypeError: when the body holds something JSON cannot encode.
    """
    canonical = json.dumps(
        {k: v for k, v in body.items() if k not in _DELIVERY_FIELDS},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@runtime_checkable
class ResponseCache(Protocol):
    """What the client needs from a cache; implement it to plug in your own store."""

    async def get(self, key: str) -> str | None:
        """The stored response body for ``key``, or None."""
        ...

    async def set(self, key: str, value: str) -> None:
        """Store a response body under ``key``."""
        ...

    async def aclose(self) -> None:
        """Release what the cache holds open (it may reopen on the next use)."""
        ...


def _check_ttl(ttl_s: float | None) -> float | None:
    if ttl_s is not None and not ttl_s > 0:
        raise ValueError(f"ttl_s must be a positive number of seconds or None, got {ttl_s!r}")
    return ttl_s


class MemoryCache:
    """An in-memory LRU cache of at most ``max_entries`` responses, each kept ``ttl_s``.

    Shared safely by every loop and thread using the client. ``ttl_s=None``
    keeps entries until they are evicted.

    Raises:
        ValueError: for a ``max_entries`` below 1 or a ``ttl_s`` that is not positive.
    """

    def __init__(self, max_entries: int = 1024, ttl_s: float | None = 3600.0) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive integer, got {max_entries!r}")
        self.max_entries = max_entries
        self.ttl_s = _check_ttl(ttl_s)
        self._lock = threading.Lock()
        # key -> (expiry on the monotonic clock or None, body)
        self._entries: OrderedDict[str, tuple[float | None, str]] = OrderedDict()

    def get_now(self, key: str) -> str | None:
        """``get`` without awaiting (the memory cache never blocks)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, value = entry
            if expires is not None and expires <= time.monotonic():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def set_now(self, key: str, value: str) -> None:
        """``set`` without awaiting."""
        expires = None if self.ttl_s is None else time.monotonic() + self.ttl_s
        with self._lock:
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    async def get(self, key: str) -> str | None:
        """The stored response body for ``key``, or None if absent or expired."""
        return self.get_now(key)

    async def set(self, key: str, value: str) -> None:
        """Store a response body, evicting the least recently used beyond ``max_entries``."""
        self.set_now(key, value)

    async def aclose(self) -> None:
        """Nothing to release; the entries stay."""

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __repr__(self) -> str:
        return f"MemoryCache(max_entries={self.max_entries}, ttl_s={self.ttl_s})"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_responses (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_s REAL NOT NULL,
    expires_s REAL
)
"""

#: Expired rows are deleted once every this many writes.
_PURGE_EVERY = 256


class SQLiteCache:
    """Responses in a SQLite file: they survive the process and are shared between processes.

    Statements run on ambidex's I/O threads (``ax.current_runtime()``), never on an
    event loop. ``ttl_s=None`` (the default) keeps entries forever. A failed
    read or write (disk full, file locked too long) is logged to the
    ``ambidex.llm`` logger and does not fail the request: a failed read is a
    miss. ``close()`` releases the
    connection; the next use reopens it.

    Raises:
        ValueError: for a ``ttl_s`` that is not positive.
    """

    def __init__(self, path: str | os.PathLike[str], ttl_s: float | None = None) -> None:
        self.path = Path(path)
        self.ttl_s = _check_ttl(ttl_s)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._writes = 0

    def _connection(self) -> sqlite3.Connection:
        # Called with self._lock held, on an I/O thread.
        if self._conn is None:
            conn = open_sqlite(self.path)
            try:
                conn.execute(_SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def get_blocking(self, key: str) -> str | None:
        """``get`` on the calling thread (it blocks on the disk)."""
        with self._lock:
            row = (
                self._connection()
                .execute(
                    "SELECT value FROM llm_responses "
                    "WHERE key = ? AND (expires_s IS NULL OR expires_s > ?)",
                    (key, time.time()),
                )
                .fetchone()
            )
        return None if row is None else str(row[0])

    def set_blocking(self, key: str, value: str) -> None:
        """``set`` on the calling thread (it blocks on the disk)."""
        now = time.time()
        expires = None if self.ttl_s is None else now + self.ttl_s
        with self._lock:
            conn = self._connection()
            conn.execute(
                "INSERT OR REPLACE INTO llm_responses (key, value, created_s, expires_s) "
                "VALUES (?, ?, ?, ?)",
                (key, value, now, expires),
            )
            self._writes += 1
            if self._writes % _PURGE_EVERY == 0:
                conn.execute("DELETE FROM llm_responses WHERE expires_s <= ?", (now,))

    def _set_logged(self, key: str, value: str) -> None:
        try:
            self.set_blocking(key, value)
        except (sqlite3.Error, OSError) as exc:
            log.warning("could not write the LLM response cache %s: %s", self.path, exc)

    def _get_logged(self, key: str) -> str | None:
        try:
            return self.get_blocking(key)
        except (sqlite3.Error, OSError) as exc:
            log.warning("could not read the LLM response cache %s: %s", self.path, exc)
            return None

    async def get(self, key: str) -> str | None:
        """The stored body for ``key``, or None (read on an I/O thread; failures are logged)."""
        value: str | None = await current_runtime().run_in_thread(self._get_logged, (key,), {})
        return value

    async def set(self, key: str, value: str) -> None:
        """Store a response body (written on an I/O thread; failures are logged)."""
        await current_runtime().run_in_thread(self._set_logged, (key, value), {})

    def close(self) -> None:
        """Close the connection; the next use reopens it."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def aclose(self) -> None:
        """``close()`` on an I/O thread."""
        if self._conn is not None:
            await current_runtime().run_in_thread(self.close, (), {})

    def __enter__(self) -> SQLiteCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock:
            row = self._connection().execute("SELECT COUNT(*) FROM llm_responses").fetchone()
        return int(row[0])

    def __repr__(self) -> str:
        return f"SQLiteCache({str(self.path)!r}, ttl_s={self.ttl_s})"
