"""Engines and sessions for PostgreSQL (psycopg 3, pooled) and SQLite."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
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


@dataclass(frozen=True, slots=True)
class Bounds:
    """How long a process waits for PostgreSQL before it gives up with an error (seconds).

    A hung server (stopped, or its host gone) still accepts and acknowledges TCP: only a
    client-side bound on every wait ends it. The server ends statements and lock waits of
    its own first (``statement_timeout``, ``lock_timeout``); ``answer`` is the client's
    bound on any one wait for the server, a second past the statement's.
    """

    connect: float = 3.0
    statement: float = 5.0
    lock: float = 2.0
    pool: float = 2.0

    @classmethod
    def of(cls, settings: Any) -> Bounds:
        """The bounds a process's ``Settings`` name (``NOTI_DATABASE_*_SECONDS``)."""
        return cls(
            connect=settings.database_connect_seconds,
            statement=settings.database_statement_seconds,
            lock=settings.database_lock_seconds,
            pool=settings.database_pool_seconds,
        )

    @property
    def answer(self) -> float:
        return self.statement + 1.0

    @property
    def longest_wait(self) -> float:
        """The longest a caller waits for a connection and one answer on it: the bound on a request's 503."""
        return self.pool + max(self.answer, self.connect)

    def connect_args(self) -> dict[str, Any]:
        """libpq parameters: the connect timeout, and keepalives that find a peer gone while idle."""
        return {
            "connect_timeout": max(2, math.ceil(self.connect)),  # libpq takes whole seconds, psycopg at least 2
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": round(self.answer * 1000),  # unacknowledged data: the host is gone
        }


class NoAnswer(psycopg.OperationalError):
    """PostgreSQL did not answer in time: hung, or its host is gone (the connection was closed)."""


class BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection none of whose waits for the server outlasts ``answer_seconds``.

    On such a timeout the connection is closed (its protocol state is unknown) and the wait
    raises ``OperationalError``: SQLAlchemy then discards the connection, and the caller
    answers as for an unreachable store.
    """

    answer_seconds: float = Bounds().answer

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        try:
            return super().wait(gen, interval, self.answer_seconds if timeout is None else timeout)
        except psycopg.errors._WaitTimeout:
            self.pgconn.finish()
            raise NoAnswer(f"the database did not answer within {self.answer_seconds:g} s; connection closed") from None


def _bounded_connections(engine: Engine, bounds: Bounds) -> None:
    connection_class: type[BoundedConnection] = type(
        "BoundedConnection", (BoundedConnection,), {"answer_seconds": bounds.answer}
    )

    @event.listens_for(engine, "do_connect")
    def connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        return connection_class.connect(*cargs, **cparams)

    # Set per session rather than as the `options` startup parameter, which PgBouncer refuses.
    timeouts = (
        f"SET statement_timeout = {round(bounds.statement * 1000)}; SET lock_timeout = {round(bounds.lock * 1000)}"
    )

    @event.listens_for(engine, "connect")
    def set_timeouts(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(timeouts)
        dbapi_connection.commit()


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
        except NoAnswer:  # a hung server, not a lost one: a new connection would wait as long again
            raise
        except Exception as exc:  # the pool discards the connection and checks out another
            raise DisconnectionError from exc


def make_engine(
    url: str | URL, *, pool_size: int = 10, echo: bool = False, create: bool = True,
    ping_after_idle: float | None = None, bounds: Bounds | None = None,
) -> Engine:  # fmt: skip
    """An engine for ``url``: pooled psycopg 3 on PostgreSQL, WAL-mode SQLite otherwise.

    Pooled connections are checked before each use, or with ``ping_after_idle`` only once they
    sat idle that many seconds: a busy caller (the gateway's send path) then pays no round trip
    per checkout. With ``bounds`` no wait for PostgreSQL lasts longer than they say (services;
    migrations go without). With ``create=False`` (read-only commands) a missing SQLite file is
    an error, not a new database.
    """
    parsed = normalize_url(url)
    try:
        return _engine(
            parsed, pool_size=pool_size, echo=echo, create=create, ping_after_idle=ping_after_idle, bounds=bounds
        )
    except (ImportError, NoSuchModuleError) as exc:
        raise DatabaseURLError(f"cannot use {safe_url(parsed)} ({exc}): give {SUPPORTED_URLS}") from None


def _engine(
    parsed: URL, *, pool_size: int, echo: bool, create: bool, ping_after_idle: float | None, bounds: Bounds | None
) -> Engine:
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
    connect_args: dict[str, Any] = {"connect_timeout": 5, "application_name": "noti"}
    if bounds is not None:
        connect_args.update(bounds.connect_args())
    engine = create_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=ping_after_idle is None,
        pool_recycle=1800,
        pool_timeout=bounds.pool if bounds is not None else 30,
        connect_args=connect_args,
        # jsonb gives a float such as 1e20 back as the integer 100000000000000000000, which no
        # queue message can carry: orjson reads it as the float it was sent as.
        json_deserializer=orjson.loads,
    )
    if bounds is not None:
        _bounded_connections(engine, bounds)
    if ping_after_idle is not None:
        _ping_when_idle(engine, ping_after_idle)
    return engine


def upsert_insert(dialect: str, table: Any) -> Any:
    """An INSERT of ``table`` that takes ON CONFLICT clauses, in ``dialect``'s form (PostgreSQL or SQLite)."""
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return (postgresql_insert if dialect == "postgresql" else sqlite_insert)(table)
