"""Engines: a pooled connection whose server went away while it sat idle is replaced before use."""

from __future__ import annotations

import time

from sqlalchemy import text

from noti.store.db import make_engine


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
