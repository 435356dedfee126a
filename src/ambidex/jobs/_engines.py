"""Database engines of the job store, one function per engine, chosen by URL.

SQLite (the default) keeps everything in one file with write-ahead logging:
readers never wait for the writer, and a committed job survives a ``kill -9``
of the process (``synchronous=NORMAL`` loses nothing on a process crash, only,
at worst, the last transactions on a power cut). Write transactions start with
``BEGIN IMMEDIATE`` so two writers queue on ``busy_timeout`` instead of
failing with "database is locked" when one upgrades a read.

PostgreSQL is for many worker processes on many machines; claims use
``FOR UPDATE SKIP LOCKED`` (see ``_store``). Its driver (psycopg 3) is imported
only when a ``postgresql://`` URL is used: ``pip install 'ambidex[postgres]'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event

from ambidex._paths import data_dir

__all__ = ["BUSY_TIMEOUT_MS", "Engines", "default_db_path", "normalize_url", "open_engines"]

BUSY_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class Engines:
    """The engines a store uses: writes go to ``write``, plain reads to ``read``."""

    url: str
    dialect: str
    write: Engine
    read: Engine

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.write.dispose()
        if self.read is not self.write:
            self.read.dispose()


def default_db_path() -> Path:
    """``<data dir>/jobs.sqlite`` (``AMBIDEX_HOME`` or the XDG data directory)."""
    return data_dir() / "jobs.sqlite"


def normalize_url(db: str | Path | None) -> str:
    """A SQLAlchemy URL from what a user typed: None, a file path, or a database URL.

    Raises:
        ValueError: a URL of a database ambidex does not support.
    """
    if db is None:
        return f"sqlite:///{default_db_path()}"
    text = str(db)
    if "://" not in text:
        return f"sqlite:///{Path(text).expanduser().resolve()}"
    scheme, _, rest = text.partition("://")
    if scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        return f"postgresql+psycopg://{rest}"
    if scheme == "sqlite":
        path = text.removeprefix("sqlite://").removeprefix("/")
        if not path or path == ":memory:":
            raise ValueError(
                f"job database {text!r} is in memory: jobs would not survive the process "
                "and no other process could see them; name a file (sqlite:///FILE)"
            )
        return text
    raise ValueError(
        f"unsupported job database {text!r}: expected a file path, sqlite:///FILE "
        "or postgresql://USER@HOST:PORT/DB"
    )


def open_engines(db: str | Path | None) -> Engines:
    """Create the engines for ``db`` (see ``normalize_url``); the database is not touched yet."""
    url = normalize_url(db)
    if url.startswith("sqlite"):
        return _sqlite(url)
    return _postgres(url)


def _sqlite(url: str) -> Engines:
    path = url.removeprefix("sqlite:///")
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)

    def make(immediate: bool) -> Engine:
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
            pool_size=8 if immediate else 16,
            max_overflow=8,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event issue BEGIN instead of the driver.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.close()

        if immediate:

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        # The read engine begins no transaction: each read is one SELECT, which
        # SQLite runs atomically on its own.

        return engine

    return Engines(url=url, dialect="sqlite", write=make(True), read=make(False))


def _postgres(url: str) -> Engines:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ValueError(
            "the PostgreSQL job store needs psycopg: pip install 'ambidex[postgres]'"
        ) from None
    engine = create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
    return Engines(url=url, dialect="postgresql", write=engine, read=engine)
