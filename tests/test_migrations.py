"""Migrations go up and down cleanly on PostgreSQL and SQLite, and match the models."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, delete, func, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from harness.services import PostgresServer
from noti.store import migrate, records, retention
from noti.store.db import make_engine
from noti.store.models import Base, Device, Notification

TABLES = {
    "api_keys", "broadcast_channels", "campaign_counts", "device_owners", "device_tokens", "devices",
    "idempotency_keys", "notifications", "notification_counts",
}  # fmt: skip


@pytest.fixture(params=["postgresql", "sqlite"])
def blank_engine(request: pytest.FixtureRequest, postgres_server: PostgresServer, tmp_path: Path) -> Engine:
    if request.param == "postgresql":
        url = postgres_server.create_database(f"migrations_{tmp_path.name[-12:].lower().replace('-', '_')}")
    else:
        url = f"sqlite:///{tmp_path}/noti.db"
    return make_engine(url, pool_size=1)


def _tables(engine: Engine) -> set[str]:
    """The tables of the models (the partitions of notifications are its storage, not tables of their own)."""
    return {name for name in inspect(engine).get_table_names() if not retention.is_partition(name)} - {
        "alembic_version"
    }


def _models_only(name: str | None, type_: str, _parent: object) -> bool:
    return not (type_ == "table" and name is not None and retention.is_partition(name))


def test_upgrade_creates_schema_matching_models(blank_engine: Engine) -> None:
    migrate.upgrade(blank_engine)
    assert _tables(blank_engine) == TABLES
    assert migrate.current_revision(blank_engine) == migrate.head_revision()
    with blank_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_name": _models_only})
        diff = compare_metadata(context, Base.metadata)
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
        assert records.claim_idempotency_keys(connection, {"k:1": "first"}) == {"k:1": "first"}
    # A second claim of the key, even with another request, gets the first one's: one owner per key.
    with blank_engine.begin() as connection:
        assert records.claim_idempotency_keys(connection, {"k:1": "second"}) == {"k:1": "first"}
    with pytest.raises(IntegrityError), blank_engine.begin() as connection:
        connection.execute(
            text("INSERT INTO idempotency_keys (key, fingerprint, created_at) VALUES ('k:1', 'x', now())")
            if connection.dialect.name == "postgresql"
            else text("INSERT INTO idempotency_keys (key, fingerprint, created_at) VALUES ('k:1', 'x', '2026-01-01')")
        )


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


def test_existing_records_move_onto_day_partitions_and_back(postgres_server: PostgresServer, tmp_path: Path) -> None:
    engine = make_engine(postgres_server.create_database(f"partitions_{tmp_path.name[-12:].lower()}"), pool_size=1)
    migrate.upgrade(engine, "0006")
    now = datetime.now(UTC)
    ages = {"today": 0, "last week": 6, "last quarter": 100}  # beyond the partitions made: the default one
    ids = {name: uuid.uuid4() for name in ages}
    with engine.begin() as connection:
        connection.execute(
            insert(Notification),
            [
                {"id": ids[name], "device_token": "ab" * 32, "app": "com.example",
                 "created_at": now - timedelta(days=days), "idempotency_key": f"k:{name}"}
                for name, days in ages.items()
            ],
        )  # fmt: skip
    migrate.upgrade(engine)
    with engine.connect() as connection:
        where = {
            name: connection.execute(
                text("SELECT tableoid::regclass::text FROM notifications WHERE id = :id"), {"id": id}
            ).scalar_one()
            for name, id in ids.items()
        }
        assert where["today"] == retention.partition_name(now.date())
        assert where["last week"] == retention.partition_name((now - timedelta(days=6)).date())
        assert where["last quarter"] == retention.DEFAULT_PARTITION
        days = {p.start.date() for p in retention.partitions(connection)}
        assert (now + timedelta(days=3)).date() in days  # partitions ahead exist before their records
        key = connection.execute(
            text("SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_index x JOIN pg_attribute a"
                 " ON a.attrelid = x.indrelid AND a.attnum = ANY(x.indkey)"
                 " WHERE x.indrelid = 'notifications'::regclass AND x.indisprimary")
        ).scalar_one()  # fmt: skip
        assert key == ["created_at", "id"]
    migrate.downgrade(engine, "0006")
    with engine.connect() as connection:
        assert not retention.is_partitioned(connection)
        stored = dict(connection.execute(text("SELECT id, idempotency_key FROM notifications")).all())
        assert stored == {id: f"k:{name}" for name, id in ids.items()}
    # Before 0009 the idempotency key of a record was unique: it is again.
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(
            insert(Notification).values(
                id=uuid.uuid4(), device_token="ab" * 32, app="com.example", idempotency_key="k:today"
            )
        )
    engine.dispose()
