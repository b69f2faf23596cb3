"""Migrations go up and down cleanly on PostgreSQL and SQLite, and match the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from harness.services import PostgresServer
from noti.store import migrate
from noti.store.db import make_engine
from noti.store.models import Base

TABLES = {"api_keys", "device_owners", "devices", "notifications", "notification_counts"}


@pytest.fixture(params=["postgresql", "sqlite"])
def blank_engine(request: pytest.FixtureRequest, postgres_server: PostgresServer, tmp_path: Path) -> Engine:
    if request.param == "postgresql":
        url = postgres_server.create_database(f"migrations_{tmp_path.name[-12:].lower().replace('-', '_')}")
    else:
        url = f"sqlite:///{tmp_path}/noti.db"
    return make_engine(url, pool_size=1)


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_creates_schema_matching_models(blank_engine: Engine) -> None:
    migrate.upgrade(blank_engine)
    assert _tables(blank_engine) == TABLES
    assert migrate.current_revision(blank_engine) == migrate.head_revision()
    with blank_engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_downgrade_to_base_removes_everything_and_upgrade_again_works(blank_engine: Engine) -> None:
    migrate.upgrade(blank_engine)
    migrate.downgrade(blank_engine, "base")
    assert _tables(blank_engine) == set()
    assert migrate.current_revision(blank_engine) is None
    migrate.upgrade(blank_engine)
    assert _tables(blank_engine) == TABLES
