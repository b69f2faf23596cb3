"""Retention: delivery records older than an age are removed cheaply, the hourly roll-up kept longer.

On PostgreSQL ``notifications`` is partitioned by range of ``created_at``, one partition a
UTC day (migration 0009), so a day of records goes with one ``DROP TABLE`` instead of a
million deletes; partitions are created a few days ahead, and a default partition catches
any record outside them (it is trimmed by batched deletes). SQLite, and a PostgreSQL table
that is not partitioned, are trimmed by batched deletes. Records are kept at least their
age and at most a day longer (a partition goes once all of its day is older than the age).
The roll-up (``notification_counts``) has its own, longer age, so stats over old windows
still answer after their records are gone.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, delete, select, text
from sqlalchemy.exc import OperationalError

from noti.settings import StoreSettings
from noti.store.models import IdempotencyKey, Notification, NotificationCount, utcnow

log = logging.getLogger(__name__)

TABLE = "notifications"
DEFAULT_PARTITION = "notifications_default"
_PARTITION_NAME = re.compile(r"notifications_p(\d{8})")
_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long what is kept (``noti retention run``, the chart's CronJob, ``noti dev``)."""

    records_age: timedelta = timedelta(days=30)
    rollup_age: timedelta = timedelta(days=400)
    partitions_ahead: int = 3  # days of partitions that exist before their records arrive
    batch_size: int = 5000  # rows per batched delete (one short transaction each)
    lock_timeout: float = 2.0  # seconds a partition drop or creation waits for sends before retrying

    def __post_init__(self) -> None:
        if self.records_age <= timedelta(0) or self.rollup_age <= timedelta(0):
            raise ValueError("retention ages must be positive")
        if self.rollup_age < self.records_age:
            raise ValueError("the roll-up must be kept at least as long as the records it counts")
        if self.partitions_ahead < 1 or self.batch_size < 1:
            raise ValueError("partitions ahead and batch size must be at least 1")


@dataclass(frozen=True, slots=True)
class Partition:
    """One day's partition of ``notifications``: records created in [start, end)."""

    name: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class PartitionPlan:
    create: list[date]
    drop: list[Partition]


@dataclass(slots=True)
class RetentionReport:
    """What a run did (or, dry, would do)."""

    dry_run: bool
    partitioned: bool
    records_cutoff: datetime
    rollup_cutoff: datetime
    partitions_created: list[str] = field(default_factory=list)
    partitions_dropped: list[str] = field(default_factory=list)
    records_in_dropped_partitions: int = 0
    records_deleted: int = 0
    rollup_rows_deleted: int = 0
    idempotency_keys_deleted: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for logs and the command's output."""
        verb = "would remove" if self.dry_run else "removed"
        parts = [
            f"{verb} records created before {self.records_cutoff:%Y-%m-%d %H:%M} UTC:",
            f"{len(self.partitions_dropped)} partitions ({self.records_in_dropped_partitions} records)",
            f"{self.records_deleted} records deleted in batches",
            f"{self.idempotency_keys_deleted} idempotency keys",
            f"{self.rollup_rows_deleted} roll-up rows before {self.rollup_cutoff:%Y-%m-%d}",
        ]
        if self.partitioned:
            created = "would create" if self.dry_run else "created"
            parts.append(f"{created} {len(self.partitions_created)} partitions ahead")
        return " ".join(parts[:1]) + " " + ", ".join(parts[1:]) + f" ({self.seconds:.2f} s)"


def retention_policy(
    settings: StoreSettings, *, records_days: float | None = None, rollup_days: float | None = None
) -> RetentionPolicy:
    """The policy the settings (``NOTI_RETENTION_*``) give, with the ages given here instead where given."""
    return RetentionPolicy(
        records_age=timedelta(days=records_days or settings.retention_records_days),
        rollup_age=timedelta(days=rollup_days or settings.retention_rollup_days),
        partitions_ahead=settings.retention_partitions_ahead,
    )


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def partition_name(day: date) -> str:
    return f"notifications_p{day:%Y%m%d}"


def is_partition(name: str) -> bool:
    """Whether a table name is one of the partitions of ``notifications`` (not a table of the models)."""
    return name == DEFAULT_PARTITION or _PARTITION_NAME.fullmatch(name) is not None


def plan_partitions(existing: Sequence[Partition], now: datetime, policy: RetentionPolicy) -> PartitionPlan:
    """Which days need a partition (today and the days ahead) and which partitions are wholly too old."""
    cutoff = now - policy.records_age
    today = now.astimezone(UTC).date()
    have = {p.start for p in existing}
    create = [
        day
        for day in (today + timedelta(days=n) for n in range(policy.partitions_ahead + 1))
        if day_start(day) not in have
    ]
    drop = sorted((p for p in existing if p.end <= cutoff), key=lambda p: p.start)
    return PartitionPlan(create, drop)


def is_partitioned(connection: Connection) -> bool:
    """Whether ``notifications`` is a partitioned PostgreSQL table (migration 0009)."""
    if connection.dialect.name != "postgresql":
        return False
    return bool(
        connection.execute(
            text("SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(:t))"),
            {"t": TABLE},
        ).scalar()
    )


def partitions(connection: Connection) -> list[Partition]:
    """The day partitions of ``notifications`` (not the default one), oldest first."""
    rows = connection.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:t)"
        ),
        {"t": TABLE},
    )
    found = []
    for name, bound in rows:
        match = _BOUND.search(bound or "")
        if match:  # the default partition's bound is DEFAULT
            start, end = (datetime.fromisoformat(value).astimezone(UTC) for value in match.groups())
            found.append(Partition(name, start, end))
    return sorted(found, key=lambda p: p.start)


def _literal(moment: datetime) -> str:
    return f"'{moment.astimezone(UTC).isoformat()}'"  # built from a datetime, never from input


def create_partition_sql(day: date) -> str:
    """The DDL of one day's partition (also used by migration 0009)."""
    start, end = day_start(day), day_start(day + timedelta(days=1))
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF {TABLE}"
        f" FOR VALUES FROM ({_literal(start)}) TO ({_literal(end)})"
    )


def _with_lock_timeout(engine: Engine, policy: RetentionPolicy, work: Callable[[Connection], _T]) -> _T:
    """Run DDL that needs a lock on ``notifications`` in its own transaction, waiting at most
    ``lock_timeout`` for it so that sends queued behind the DDL never wait longer; retried."""
    attempts = 5
    for attempt in range(attempts):
        try:
            with engine.begin() as connection:
                connection.execute(text(f"SET LOCAL lock_timeout = '{int(policy.lock_timeout * 1000)}ms'"))
                return work(connection)
        except OperationalError as exc:
            if "lock timeout" not in str(exc.orig) or attempt == attempts - 1:
                raise
            log.info("retention: %s busy, retrying", TABLE)
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _columns(connection: Connection) -> str:
    names = connection.execute(
        text(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:t) AND attnum > 0"
            " AND NOT attisdropped ORDER BY attnum"
        ),
        {"t": TABLE},
    ).scalars()
    return ", ".join(f'"{name}"' for name in names)


def _create_partition(connection: Connection, day: date) -> None:
    start, end = _literal(day_start(day)), _literal(day_start(day + timedelta(days=1)))
    in_range = f"created_at >= {start} AND created_at < {end}"
    has_default = connection.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": DEFAULT_PARTITION}).scalar()
    stray = (
        has_default
        and connection.execute(text(f"SELECT EXISTS (SELECT 1 FROM {DEFAULT_PARTITION} WHERE {in_range})")).scalar()
    )
    if not stray:
        connection.execute(text(create_partition_sql(day)))
        return
    # Records of that day already sit in the default partition (the job did not run for a
    # while): a partition cannot be added over them, so they move into it as it is attached.
    name, columns = partition_name(day), _columns(connection)
    connection.execute(text(f"LOCK TABLE {DEFAULT_PARTITION} IN EXCLUSIVE MODE"))
    connection.execute(text(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
    connection.execute(
        text(f"INSERT INTO {name} ({columns}) SELECT {columns} FROM {DEFAULT_PARTITION} WHERE {in_range}")
    )
    connection.execute(text(f"DELETE FROM {DEFAULT_PARTITION} WHERE {in_range}"))
    connection.execute(text(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM ({start}) TO ({end})"))


def _estimated_rows(connection: Connection, name: str) -> int:
    estimate = connection.execute(text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"), {"t": name})
    value = estimate.scalar()
    if value is None or value < 0:  # never analyzed: count it (one day's partition, once)
        return int(connection.execute(text(f"SELECT count(*) FROM {name}")).scalar() or 0)
    return int(value)


def _delete_batches(engine: Engine, statement: Callable[[], Any], count: Callable[[], Any], dry_run: bool) -> int:
    """Delete in short transactions until nothing is left, so writers wait at most one batch."""
    if dry_run:
        with engine.connect() as connection:
            return int(connection.execute(count()).scalar() or 0)
    total = 0
    while True:
        with engine.begin() as connection:
            deleted = connection.execute(statement()).rowcount
        total += deleted
        if deleted == 0:
            return total


def _batched_record_delete(engine: Engine, table: str, cutoff: datetime, batch: int, dry_run: bool) -> int:
    if engine.dialect.name == "postgresql":
        # By ctid: a TID scan of the batch found through the created_at index.
        where = f"created_at < {_literal(cutoff)}"
        return _delete_batches(
            engine,
            lambda: text(
                f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {where} LIMIT {batch}))"
            ),
            lambda: text(f"SELECT count(*) FROM {table} WHERE {where}"),
            dry_run,
        )
    old = select(Notification.id).where(Notification.created_at < cutoff)
    return _delete_batches(
        engine,
        lambda: delete(Notification).where(Notification.id.in_(old.limit(batch))),
        lambda: select(text("count(*)")).select_from(old.subquery()),
        dry_run,
    )


def _delete_idempotency_keys(engine: Engine, cutoff: datetime, batch: int, dry_run: bool) -> int:
    old = select(IdempotencyKey.key).where(IdempotencyKey.created_at < cutoff)
    return _delete_batches(
        engine,
        lambda: delete(IdempotencyKey).where(IdempotencyKey.key.in_(old.limit(batch))),
        lambda: select(text("count(*)")).select_from(old.subquery()),
        dry_run,
    )


def _delete_rollup(engine: Engine, cutoff: datetime, dry_run: bool) -> int:
    old = NotificationCount.bucket < cutoff
    with engine.begin() as connection:
        if dry_run:
            counted = connection.execute(select(text("count(*)")).select_from(NotificationCount).where(old)).scalar()
            return int(counted or 0)
        return int(connection.execute(delete(NotificationCount).where(old)).rowcount)


def _drop_partition(engine: Engine, policy: RetentionPolicy, partition: Partition) -> None:
    def drop(connection: Connection) -> None:
        connection.execute(text(f"DROP TABLE {partition.name}"))

    _with_lock_timeout(engine, policy, drop)


def ensure_partitions(engine: Engine, policy: RetentionPolicy, now: datetime | None = None) -> list[str]:
    """Create the partitions of today and the days ahead that are missing; the names created."""
    now = now or utcnow()
    with engine.connect() as connection:
        if not is_partitioned(connection):
            return []
        plan = plan_partitions(partitions(connection), now, policy)
    for day in plan.create:
        ensure_partition(engine, day, policy)
    return [partition_name(day) for day in plan.create]


def ensure_partition(engine: Engine, day: date, policy: RetentionPolicy) -> None:
    """Give ``day`` its partition, moving in any of its records the default partition holds."""
    with engine.connect() as connection:
        if any(p.start == day_start(day) for p in partitions(connection)):
            return
    _with_lock_timeout(engine, policy, lambda connection: _create_partition(connection, day))


def run_retention(
    engine: Engine, policy: RetentionPolicy, *, now: datetime | None = None, dry_run: bool = False
) -> RetentionReport:
    """Remove records older than ``policy.records_age`` and roll-up rows older than its ``rollup_age``."""
    started = time.perf_counter()
    now = now or utcnow()
    records_cutoff, rollup_cutoff = now - policy.records_age, now - policy.rollup_age
    with engine.connect() as connection:
        partitioned = is_partitioned(connection)
        plan = plan_partitions(partitions(connection), now, policy) if partitioned else PartitionPlan([], [])
        in_dropped = sum(_estimated_rows(connection, p.name) for p in plan.drop)
    report = RetentionReport(dry_run, partitioned, records_cutoff, rollup_cutoff)
    report.records_in_dropped_partitions = in_dropped
    if partitioned:
        report.partitions_created = (
            [partition_name(day) for day in plan.create] if dry_run else ensure_partitions(engine, policy, now)
        )
        for partition in plan.drop:
            if not dry_run:
                _drop_partition(engine, policy, partition)
            report.partitions_dropped.append(partition.name)
    table = DEFAULT_PARTITION if partitioned else TABLE
    with engine.connect() as connection:
        has_table = (
            connection.dialect.name != "postgresql"
            or connection.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}).scalar()
        )
    if has_table:
        report.records_deleted = _batched_record_delete(engine, table, records_cutoff, policy.batch_size, dry_run)
    report.idempotency_keys_deleted = _delete_idempotency_keys(engine, records_cutoff, policy.batch_size, dry_run)
    report.rollup_rows_deleted = _delete_rollup(engine, rollup_cutoff, dry_run)
    report.seconds = time.perf_counter() - started
    log.info("retention: %s", report.summary())
    return report


async def run_periodically(engine: Engine, policy: RetentionPolicy, every: float = 3600.0) -> None:
    """Run retention now and every ``every`` seconds until cancelled (``noti dev``); a failed run is logged."""
    while True:
        try:
            await asyncio.to_thread(run_retention, engine, policy)
        except Exception:  # a busy or unreachable store must not stop the stack: the next run retries
            log.exception("retention run failed")
        await asyncio.sleep(every)
