"""Engines: a pooled connection whose server went away while it sat idle is replaced before use; no wait for
a server, hung or busy, outlasts its bound."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from harness.services import private_postgres
from noti.store.db import Bounds, make_engine


def test_a_connection_that_lost_its_server_while_idle_is_replaced_before_use(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=1, ping_after_idle=0.2)
    try:
        with engine.connect() as connection:
            first = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        admin = make_engine(database_url, pool_size=1)
        with admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        admin.dispose()
        time.sleep(0.3)
        with engine.connect() as connection:  # no error: the idle connection was pinged and replaced
            second = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert second != first
        with engine.connect() as connection:  # just used: handed out again without a ping
            assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() == second
    finally:
        engine.dispose()


def test_a_statement_past_its_timeout_and_a_lock_wait_past_its_own_are_ended_by_the_server(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=2, bounds=Bounds(statement=1.0, lock=0.3))
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="statement timeout"), engine.connect() as connection:
            connection.execute(text("SELECT pg_sleep(5)"))
        assert time.monotonic() - started < 2
        with engine.begin() as holder:
            holder.execute(text("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE"))
            started = time.monotonic()
            with pytest.raises(OperationalError, match="lock timeout"), engine.connect() as connection:
                connection.execute(text("SELECT count(*) FROM api_keys"))
            assert time.monotonic() - started < 1
    finally:
        engine.dispose()


def test_a_hung_server_ends_every_wait_within_its_bound_and_the_engine_recovers_after_it() -> None:
    bounds = Bounds(connect=2.0, statement=1.0, pool=0.5)
    with private_postgres() as (server, url):
        engine = make_engine(url, pool_size=1, bounds=bounds, ping_after_idle=0.2)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            server.hang()
            try:
                for _ in range(3):  # a pooled connection (pinged: idle), then new ones that cannot connect
                    started = time.monotonic()
                    with pytest.raises(OperationalError), engine.connect() as connection:
                        connection.execute(text("SELECT 1"))
                    assert time.monotonic() - started <= bounds.longest_wait
                    time.sleep(0.3)
            finally:
                server.resume()
            with engine.connect() as connection:  # the same engine, no restart
                assert connection.execute(text("SELECT 1")).scalar_one() == 1
        finally:
            engine.dispose()
