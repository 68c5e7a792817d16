"""Engines and sessions: SQLite (WAL, busy timeout, writes as BEGIN IMMEDIATE) or PostgreSQL by URL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_DB = "sqlite:///annotations.db"
SQLITE_BUSY_MS = 30_000
T = TypeVar("T")


def normalize_url(url: str) -> URL:
    """`postgresql://` -> psycopg 3 driver; a bare path -> a SQLite file."""
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    if u.drivername.startswith("sqlite") and u.database in (None, "", ":memory:"):
        raise ValueError("SQLite needs a file (several connections share it): use sqlite:///path/to.db")
    return u


def _sqlite_engine(url: URL, immediate: bool, pool_size: int) -> Engine:
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_MS / 1000, "check_same_thread": False},
        pool_size=pool_size,
        max_overflow=pool_size,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite's own is deferred and late)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A write transaction takes the write lock up front: no lock upgrade, no SQLITE_BUSY deadlock,
        # and the read-check-write of a claim or a label is atomic against every other writer.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """One database: `read()` and `write()` sessions; `write()` commits, retries transient lock errors."""

    def __init__(self, url: str, pool_size: int = 20) -> None:
        self.url = normalize_url(url)
        self.is_sqlite = self.url.drivername.startswith("sqlite")
        if self.is_sqlite:
            Path(self.url.database or "").parent.mkdir(parents=True, exist_ok=True)
            self.engine = _sqlite_engine(self.url, immediate=False, pool_size=pool_size)
            self.write_engine = _sqlite_engine(self.url, immediate=True, pool_size=pool_size)
        else:
            self.engine = create_engine(
                self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
            self.write_engine = self.engine
        # SQLite: one writer at a time anyway; queue writers of this process on a lock instead of letting
        # them poll the file lock (SQLite's busy handler sleeps and retries: unfair, long tails).
        self._write_lock: threading.Lock | None = threading.Lock() if self.is_sqlite else None
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as s:
            yield s

    @contextmanager
    def write(self) -> Iterator[Session]:
        if self._write_lock is None:
            with self._write() as s, s.begin():
                yield s
            return
        with self._write_lock, self._write() as s, s.begin():
            yield s

    def transact(self, fn: Callable[[Session], T], attempts: int = 5) -> T:
        """Run fn in a write transaction; retry on lock timeouts, deadlocks and serialization failures."""
        for attempt in range(attempts):
            try:
                with self.write() as s:
                    return fn(s)
            except OperationalError as exc:
                if attempt == attempts - 1 or not _transient(exc):
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema up to `revision` (alembic; safe to run on every start)."""
        from alembic import command

        cfg = alembic_config()
        with self.write_engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    def dispose(self) -> None:
        self.engine.dispose()
        if self.write_engine is not self.engine:
            self.write_engine.dispose()


def _transient(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    code = getattr(exc.orig, "sqlstate", None)
    return "locked" in text or "busy" in text or code in ("40001", "40P01")


def alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg
