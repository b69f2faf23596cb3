"""Retention: old delivery records go (whole day partitions on PostgreSQL), new ones and the roll-up stay."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, insert, select, text

from harness.services import PostgresServer
from noti.cli import cli
from noti.store import migrate, records, retention
from noti.store.db import make_engine
from noti.store.models import IdempotencyKey, Notification, utcnow
from noti.store.retention import Partition, RetentionPolicy, plan_partitions, run_retention

NOW = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)
POLICY = RetentionPolicy(records_age=timedelta(days=30), rollup_age=timedelta(days=90), partitions_ahead=3)


def _partition(day: date) -> Partition:
    return Partition(retention.partition_name(day), retention.day_start(day), retention.day_start(day) + timedelta(1))


def test_plan_creates_today_and_the_days_ahead_that_are_missing() -> None:
    plan = plan_partitions([_partition(date(2026, 12, 1)), _partition(date(2026, 12, 3))], NOW, POLICY)
    assert plan.create == [date(2026, 12, 2), date(2026, 12, 4)]


def test_plan_drops_only_partitions_wholly_older_than_the_age() -> None:
    days = [date(2026, 10, 30), date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 2)]
    plan = plan_partitions([_partition(day) for day in days], NOW, POLICY)
    # The cutoff is 2026-11-01 12:30: the day it falls in stays until all of it is older.
    assert [p.name for p in plan.drop] == ["notifications_p20261030", "notifications_p20261031"]


def test_policy_refuses_a_rollup_kept_shorter_than_the_records() -> None:
    with pytest.raises(ValueError, match="roll-up"):
        RetentionPolicy(records_age=timedelta(days=30), rollup_age=timedelta(days=7))


def _engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url, pool_size=4)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def _database(postgres_server: PostgresServer, tmp_path: Path) -> str:
    return postgres_server.create_database(f"retention_{tmp_path.name[-12:].lower().replace('-', '_')}")


@pytest.fixture(params=["postgresql", "sqlite"])
def store(request: pytest.FixtureRequest, postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Engine]:
    postgresql = request.param == "postgresql"
    yield from _engine(_database(postgres_server, tmp_path) if postgresql else f"sqlite:///{tmp_path}/noti.db")


@pytest.fixture
def pg_store(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Engine]:
    """PostgreSQL only: SQLite keeps one table, with no partitions."""
    yield from _engine(_database(postgres_server, tmp_path))


def _write(engine: Engine, created_at: datetime, n: int = 3, key: str | None = None) -> list[uuid.UUID]:
    rows = [
        {"id": uuid.uuid4(), "device_token": "ab" * 32, "app": "com.example.app", "created_at": created_at}
        for _ in range(n)
    ]
    with engine.begin() as connection:
        records.insert_notifications(connection, rows)
        if key is not None:
            connection.execute(insert(IdempotencyKey).values(key=key, fingerprint="f", created_at=created_at))
    return [row["id"] for row in rows]


def _stored(engine: Engine) -> set[uuid.UUID]:
    with engine.connect() as connection:
        return set(connection.execute(select(Notification.id)).scalars())


def _partitions(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return [p.name for p in retention.partitions(connection)]


def test_old_records_are_removed_and_new_ones_kept(store: Engine) -> None:
    now = utcnow()
    old = _write(store, now - timedelta(days=45), key="k:old")
    recent = _write(store, now - timedelta(days=29), key="k:recent")
    today = _write(store, now)
    if store.dialect.name == "postgresql":  # the old day gets a partition of its own, as after a migration
        retention.ensure_partition(store, (now - timedelta(days=45)).date(), POLICY)
        assert retention.partition_name((now - timedelta(days=45)).date()) in _partitions(store)
    report = run_retention(store, POLICY, now=now)
    assert _stored(store) == {*recent, *today}
    assert not set(old) & _stored(store)
    assert report.idempotency_keys_deleted == 1
    with store.connect() as connection:
        assert set(connection.execute(select(IdempotencyKey.key)).scalars()) == {"k:recent"}
    if store.dialect.name == "postgresql":
        assert report.partitions_dropped == [retention.partition_name((now - timedelta(days=45)).date())]
        assert report.records_in_dropped_partitions == 3
    else:
        assert report.records_deleted == 3


def test_a_dry_run_removes_nothing_and_says_what_it_would(store: Engine) -> None:
    now = utcnow()
    ids = _write(store, now - timedelta(days=45)) + _write(store, now)
    report = run_retention(store, POLICY, now=now, dry_run=True)
    assert _stored(store) == set(ids)
    assert report.records_deleted + report.records_in_dropped_partitions == 3
    assert "would remove" in report.summary()


def test_stats_of_an_old_window_still_answer_after_its_records_are_gone(store: Engine) -> None:
    now = utcnow()
    old = now - timedelta(days=45)
    _write(store, old, n=4)
    _write(store, now - timedelta(days=120), n=2)  # older than the roll-up's own age
    run_retention(store, POLICY, now=now)
    with store.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Notification)).scalar() == 0
        assert records.status_counts(connection, old - timedelta(hours=1), old + timedelta(hours=1)) == {"created": 4}
        assert records.status_counts(connection, now - timedelta(days=200), now - timedelta(days=100)) == {}


def test_partitions_exist_for_the_days_ahead(pg_store: Engine) -> None:
    now = utcnow()
    later = now + timedelta(days=10)
    report = run_retention(pg_store, POLICY, now=later)
    names = _partitions(pg_store)
    for ahead in range(POLICY.partitions_ahead + 1):
        assert retention.partition_name((later + timedelta(days=ahead)).date()) in names
    assert report.partitions_created  # migration 0009 made a week ahead of now, not of ten days later
    # A record of a day ahead lands in that day's partition, not in the default one.
    _write(pg_store, later + timedelta(days=2), n=1)
    with pg_store.connect() as connection:
        assert connection.execute(text(f"SELECT count(*) FROM {retention.DEFAULT_PARTITION}")).scalar() == 0


def test_records_in_the_default_partition_move_into_their_days_partition(pg_store: Engine) -> None:
    day = (utcnow() + timedelta(days=20)).date()  # beyond what exists: the default partition takes it
    ids = _write(pg_store, retention.day_start(day) + timedelta(hours=5))
    retention.ensure_partition(pg_store, day, POLICY)
    with pg_store.connect() as connection:
        assert connection.execute(text(f"SELECT count(*) FROM {retention.partition_name(day)}")).scalar() == 3
        assert connection.execute(text(f"SELECT count(*) FROM {retention.DEFAULT_PARTITION}")).scalar() == 0
    assert _stored(pg_store) == set(ids)


def test_a_record_id_stored_on_another_day_is_not_written_again(store: Engine) -> None:
    now = utcnow()
    [id] = _write(store, now - timedelta(days=2), n=1)
    again = {"id": id, "device_token": "ab" * 32, "app": "com.example.app"}
    with store.begin() as connection:
        assert records.insert_notifications(connection, [again], skip_existing=True) == set()
    with store.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Notification)).scalar() == 1


def test_lookups_and_updates_by_id_use_an_index(pg_store: Engine) -> None:
    [id] = _write(pg_store, utcnow(), n=1)
    with pg_store.connect() as connection:
        connection.execute(text("SET enable_seqscan = off"))  # on a tiny table a scan is cheaper: ask for the index
        plan = "\n".join(
            connection.execute(text("EXPLAIN UPDATE notifications SET status = 'sent' WHERE id = :id"), {"id": id})
            .scalars()
        )  # fmt: skip
    assert "Index Scan using" in plan and "Seq Scan" not in plan


def test_sends_during_a_drop_keep_working(store: Engine) -> None:
    now = utcnow()
    for days in range(35, 45):
        _write(store, now - timedelta(days=days), n=50)
        if store.dialect.name == "postgresql":
            retention.ensure_partition(store, (now - timedelta(days=days)).date(), POLICY)
    written: list[uuid.UUID] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            try:
                written.extend(_write(store, utcnow(), n=5))
            except BaseException as exc:  # the test reports any failure of a send
                errors.append(exc)
                return

    sender = threading.Thread(target=send)
    sender.start()
    try:
        report = run_retention(store, RetentionPolicy(batch_size=100), now=now)
    finally:
        stop.set()
        sender.join()
    assert errors == []
    assert written and _stored(store) == set(written)
    assert report.records_deleted + report.records_in_dropped_partitions == 500


def test_the_command_reports_what_it_removed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/noti.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    _write(engine, utcnow() - timedelta(days=60), n=2)
    engine.dispose()
    runner = CliRunner()
    dry = runner.invoke(cli, ["retention", "run", "--database-url", url, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would remove" in dry.output and "2 records" in dry.output
    done = runner.invoke(cli, ["retention", "run", "--database-url", url, "--records-days", "45"])
    assert done.exit_code == 0, done.output
    assert "removed" in done.output and "2 records deleted" in done.output


def test_the_command_says_what_to_do_with_an_unmigrated_database(tmp_path: Path) -> None:
    (tmp_path / "noti.db").touch()
    result = CliRunner().invoke(cli, ["retention", "run", "--database-url", f"sqlite:///{tmp_path}/noti.db"])
    assert result.exit_code != 0
    assert "noti migrate" in result.output and "Traceback" not in result.output


async def test_the_dev_stack_runs_retention_periodically(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/noti.db")
    migrate.upgrade(engine)
    _write(engine, utcnow() - timedelta(days=60), n=2)
    kept = _write(engine, utcnow(), n=1)
    running = asyncio.create_task(retention.run_periodically(engine, POLICY, every=0.05))
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if _stored(engine) == set(kept):
                break
    finally:
        running.cancel()
        engine.dispose()
    assert _stored(engine) == set(kept)
