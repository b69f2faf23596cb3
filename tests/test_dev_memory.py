"""When a dev stack gives a burst's memory back: once it went quiet after enough work, never while idle."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import literal_column, select

from noti.dev.memory import CHECK_SECONDS, release_due, release_engine, release_memory
from noti.store.db import make_engine


def test_memory_is_given_back_once_the_stack_goes_quiet_after_a_burst() -> None:
    assert not release_due(work_since_release=30.0, last_interval_work=4.0, interval=CHECK_SECONDS)  # still busy
    assert release_due(work_since_release=30.0, last_interval_work=0.01, interval=CHECK_SECONDS)


def test_an_idle_stack_or_a_single_send_costs_no_release() -> None:
    assert not release_due(work_since_release=0.03, last_interval_work=0.03, interval=CHECK_SECONDS)
    assert not release_due(work_since_release=0.2, last_interval_work=0.0, interval=CHECK_SECONDS)


def test_a_release_runs_every_compactor() -> None:
    ran: list[str] = []
    release_memory([lambda: ran.append("redis"), lambda: ran.append("sqlite")])
    assert ran == ["redis", "sqlite"]


def test_a_released_sqlite_engine_keeps_no_statement_with_its_values_and_still_works(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'noti.db'}")
    tokens = [f"{i:064x}" for i in range(1000)]
    query = select(literal_column("1")).where(literal_column("'x'").in_(tokens))
    with engine.connect() as connection:
        assert connection.execute(query).all() == []
    assert len(engine._compiled_cache) > 0  # type: ignore[attr-defined,arg-type]
    assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]

    release_engine(engine)

    assert len(engine._compiled_cache) == 0  # type: ignore[attr-defined,arg-type]
    assert engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    with engine.connect() as connection:
        assert connection.execute(select(literal_column("1"))).scalar() == 1
    engine.dispose()
