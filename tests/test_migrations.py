"""Migrations go up and down cleanly on PostgreSQL and SQLite, and match the models."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, delete, func, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from harness.services import PostgresServer
from noti.store import migrate, records
from noti.store.db import make_engine
from noti.store.models import Base, Device, Notification

TABLES = {
    "api_keys", "campaign_counts", "device_owners", "devices", "idempotency_keys", "notifications",
    "notification_counts", "broadcast_channels",
}  # fmt: skip


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


def test_records_outlive_their_device_and_downgrade_clears_dangling_ids(blank_engine: Engine) -> None:
    migrate.upgrade(blank_engine)
    with blank_engine.begin() as connection:
        device_id = connection.execute(
            insert(Device).values(app="com.example", device_token="ab" * 32).returning(Device.id)
        ).scalar_one()
        connection.execute(
            insert(Notification),
            [
                {"id": uuid.uuid4(), "device_id": device_id, "device_token": "ab" * 32, "app": "com.example"},
                {"id": uuid.uuid4(), "device_id": None, "device_token": "cd" * 32, "app": "com.example"},
            ],
        )
        connection.execute(delete(Device))
        # No foreign key: the records keep the id of the device they went to.
        assert connection.execute(select(func.count()).where(Notification.device_id == device_id)).scalar() == 1
    migrate.downgrade(blank_engine, "0002")
    with blank_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM notifications")).scalar() == 2
        assert connection.execute(text("SELECT count(device_id) FROM notifications")).scalar() == 0
    migrate.upgrade(blank_engine)
    assert migrate.current_revision(blank_engine) == migrate.head_revision()


def test_idempotency_keys_stay_unique_and_records_without_one_do_not_collide(blank_engine: Engine) -> None:
    migrate.upgrade(blank_engine)
    record = {"device_token": "ab" * 32, "app": "com.example", "idempotency_key": None}
    with blank_engine.begin() as connection:
        connection.execute(insert(Notification), [{**record, "id": uuid.uuid4()} for _ in range(3)])
        connection.execute(insert(Notification), [{**record, "id": uuid.uuid4(), "idempotency_key": "k:1"}])
    with pytest.raises(IntegrityError), blank_engine.begin() as connection:
        connection.execute(insert(Notification), [{**record, "id": uuid.uuid4(), "idempotency_key": "k:1"}])


def test_campaign_counts_start_from_the_records_already_stored(blank_engine: Engine) -> None:
    migrate.upgrade(blank_engine, "0004")
    statuses = ["sent", "sent", "failed", "queued", "invalid_token"]
    with blank_engine.begin() as connection:
        connection.execute(
            insert(Notification),
            [
                {"id": uuid.uuid4(), "device_token": "ab" * 32, "app": "a", "campaign": "ns/c", "status": status}
                for status in statuses
            ]
            + [{"id": uuid.uuid4(), "device_token": "ab" * 32, "app": "a", "campaign": None, "status": "sent"}],
        )
    migrate.upgrade(blank_engine)
    with blank_engine.connect() as connection:
        assert records.campaign_counts(connection, "ns/c") == {"sent": 2, "failed": 1, "invalid_token": 1}
