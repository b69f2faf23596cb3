"""Engines and sessions for PostgreSQL (psycopg 3, pooled) and SQLite."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, NoSuchModuleError

SUPPORTED_URLS = "postgresql://user:password@host/database or sqlite:///path/to/noti.db"


class DatabaseUnavailable(RuntimeError):
    """The store cannot be reached or used; the message is safe to print (no password)."""


class DatabaseURLError(DatabaseUnavailable):
    """The database URL names no store Noti can use (a typo, or MySQL); the message says what to give."""


def normalize_url(url: str | URL) -> URL:
    """Use psycopg 3 for PostgreSQL whatever driver the URL names (``postgres://`` included)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        # Not parsed, so its password cannot be hidden: show none of it.
        raise DatabaseURLError(f"the database URL is not a URL: give {SUPPORTED_URLS}") from None
    if parsed.drivername in {"postgres", "postgresql", "postgresql+psycopg2"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "sqlite"):
        raise DatabaseURLError(
            f"Noti keeps its data in PostgreSQL or SQLite, not {backend} "
            f"({parsed.render_as_string(hide_password=True)}): give {SUPPORTED_URLS}"
        )
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL with its password hidden, for messages and logs."""
    return normalize_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the gateway read while the sender writes; busy_timeout rides out short write locks.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Check a pooled connection's liveness at checkout only when it sat idle ``idle_seconds``.

    A connection checked in a moment ago has just worked; one that waited may have lost its
    server (a restart, a timeout), and is then replaced before anyone uses it, as
    ``pool_pre_ping`` would.
    """

    @event.listens_for(engine, "checkin")
    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool discards the connection and checks out another
            raise DisconnectionError from exc


def make_engine(
    url: str | URL, *, pool_size: int = 10, echo: bool = False, create: bool = True,
    ping_after_idle: float | None = None,
) -> Engine:  # fmt: skip
    """An engine for ``url``: pooled psycopg 3 on PostgreSQL, WAL-mode SQLite otherwise.

    Pooled connections are checked before each use, or with ``ping_after_idle`` only once they
    sat idle that many seconds: a busy caller (the gateway's send path) then pays no round trip
    per checkout. With ``create=False`` (read-only commands) a missing SQLite file is an error,
    not a new database.
    """
    parsed = normalize_url(url)
    try:
        return _engine(parsed, pool_size=pool_size, echo=echo, create=create, ping_after_idle=ping_after_idle)
    except (ImportError, NoSuchModuleError) as exc:
        raise DatabaseURLError(f"cannot use {safe_url(parsed)} ({exc}): give {SUPPORTED_URLS}") from None


def _engine(parsed: URL, *, pool_size: int, echo: bool, create: bool, ping_after_idle: float | None) -> Engine:
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            if not create and not Path(database).is_file():
                raise DatabaseUnavailable(
                    f"no Noti database at {Path(database).resolve()}: run `noti migrate` (or start `noti dev`) "
                    "first, or point NOTI_DATABASE_URL at one"
                )
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, echo=echo, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=ping_after_idle is None,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "application_name": "noti"},
        # jsonb gives a float such as 1e20 back as the integer 100000000000000000000, which no
        # queue message can carry: orjson reads it as the float it was sent as.
        json_deserializer=orjson.loads,
    )
    if ping_after_idle is not None:
        _ping_when_idle(engine, ping_after_idle)
    return engine


def upsert_insert(dialect: str, table: Any) -> Any:
    """An INSERT of ``table`` that takes ON CONFLICT clauses, in ``dialect``'s form (PostgreSQL or SQLite)."""
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return (postgresql_insert if dialect == "postgresql" else sqlite_insert)(table)
