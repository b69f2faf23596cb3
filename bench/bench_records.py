"""Delivery-record write path on PostgreSQL: inserts/s and outcome updates/s.

Runs the batched path (``noti.store.records``) next to the obvious per-row ORM path in
the same run on the same throwaway server, and prints both with their ratio.
``--partitioned`` instead fills ~30 day partitions and measures the sender's by-id work
(``apply_outcomes`` and ``final_ids`` of 500) with and without each record's created_at,
in CPU time of the PostgreSQL backend and of this process.
Usage: python bench/bench_records.py [--records 100000] [--batch 1000] [--partitioned [--days 30]]
"""

from __future__ import annotations

import argparse
import gc
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from _services import PostgresServer
from sqlalchemy import Connection, Engine, bindparam, text, update
from sqlalchemy.orm import Session

from noti.queue import epoch_ms, from_epoch_ms
from noti.store import migrate, records, retention
from noti.store.db import make_engine
from noti.store.models import Notification, NotificationStatus
from noti.store.records import RecordUpdate


def _rows(count: int) -> list[dict[str, object]]:
    return [
        {
            "id": uuid.uuid4(),
            "device_token": f"{i:064x}",
            "app": "com.example.bench",
            "campaign": "default/bench",
            "title": "Sale",
            "body": "Everything must go",
            "data": {"deeplink": f"app://item/{i}"},
            "status": NotificationStatus.QUEUED,
        }
        for i in range(count)
    ]


def _timed(label: str, count: int, run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    rate = count / (time.perf_counter() - started)
    print(f"  {label:<44} {rate:>10,.0f} records/s")
    return rate


def _batched(engine: Engine, rows: list[dict[str, object]], batch: int) -> tuple[float, float]:
    def insert() -> None:
        for start in range(0, len(rows), batch):
            with engine.begin() as connection:
                records.insert_notifications(connection, rows[start : start + batch])

    now = datetime.now(UTC)
    outcomes = [
        RecordUpdate(row["id"], NotificationStatus.SENT, apns_id=str(uuid.uuid4()), status_code=200, sent_at=now)  # type: ignore[arg-type]
        for row in rows
    ]

    def apply() -> None:
        for start in range(0, len(outcomes), batch):
            with engine.begin() as connection:
                records.apply_outcomes(connection, outcomes[start : start + batch])

    return (
        _timed("noti.store.records.insert_notifications", len(rows), insert),
        _timed("noti.store.records.apply_outcomes", len(rows), apply),
    )


def _per_row_orm(engine: Engine, rows: list[dict[str, object]], batch: int) -> tuple[float, float]:
    def insert() -> None:
        for start in range(0, len(rows), batch):
            with Session(engine) as session, session.begin():
                for row in rows[start : start + batch]:
                    session.add(Notification(**row))

    def apply() -> None:
        now = datetime.now(UTC)
        for start in range(0, len(rows), batch):
            with engine.begin() as connection:
                for row in rows[start : start + batch]:
                    connection.execute(
                        update(Notification)
                        .where(Notification.id == row["id"])
                        .values(status=NotificationStatus.SENT, apns_id=str(uuid.uuid4()), status_code=200, sent_at=now)
                    )

    return _timed("per-row ORM add / UPDATE (peer)", len(rows), insert), _timed(
        "per-row UPDATE statements (peer)", len(rows), apply
    )


def _sent(id: uuid.UUID, now: datetime, created_at: datetime | None) -> RecordUpdate:
    return RecordUpdate(id, NotificationStatus.SENT, status_code=200, sent_at=now, created_at=created_at)


def _backend_cpu(connection: Connection) -> float:
    """CPU seconds the connection's PostgreSQL backend has run (/proc/<pid>/schedstat, ns precision)."""
    pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    connection.commit()
    with open(f"/proc/{pid}/schedstat") as stat:
        return int(stat.read().split()[0]) / 1e9


def _fill_days(engine: Engine, days: int, per_day: int) -> None:
    """A partition for each of the last ``days`` days, with ``per_day`` queued records (server-side, fast)."""
    now = datetime.now(UTC)
    with engine.begin() as connection:
        for back in range(days):
            day = now - timedelta(days=back, hours=1)
            connection.execute(text(retention.create_partition_sql(day.date())))
            connection.execute(
                text(
                    "INSERT INTO notifications (id, device_token, app, status, push_type, priority, retry_count,"
                    " queued_at, created_at)"
                    " SELECT gen_random_uuid(), lpad(to_hex(i), 64, '0'), 'com.example.bench', 'queued', 'alert',"
                    " 10, 0, :day, :day + i * interval '1 ms' FROM generate_series(1, :n) AS i"
                ),
                {"day": day, "n": per_day},
            )
    # Hint bits set and statistics taken now, not by whichever case first scans the fresh rows.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE notifications"))


_Batch = list[tuple[uuid.UUID, datetime]]


def _run(connection: Connection, name: str, chunk: _Batch, dated: bool) -> tuple[float, float]:
    """CPU (PostgreSQL backend, this process) of ``name`` over one batch, in its own transaction."""
    now = datetime.now(UTC)
    gc.collect()  # a collection the case before left due would otherwise be charged to this one
    server, client = _backend_cpu(connection), time.process_time()
    with connection.begin():
        if name == "final_ids":
            records.final_ids(connection, [id for id, _ in chunk], dict(chunk) if dated else None)
        else:
            outcomes = [_sent(id, now, created if dated else None) for id, created in chunk]
            applied = records.apply_outcomes(connection, outcomes)
            assert len(applied) == len(chunk), "an outcome missed its record"
    return _backend_cpu(connection) - server, time.process_time() - client


def _partitioned(engine: Engine, days: int, per_day: int, batch: int, rounds: int) -> None:
    _fill_days(engine, days, per_day)
    pick = text("SELECT id, created_at FROM notifications WHERE created_at >= :since AND created_at < :until"
                " ORDER BY random() LIMIT :n")  # fmt: skip
    now = datetime.now(UTC)
    with engine.connect() as connection:
        parts = len(retention.partitions(connection))
        # Records of the latest day (the sender's case): each batch is used once, by one case.
        wanted = 3 * rounds * batch + batch  # the last batch warms up
        fresh = connection.execute(pick, {"since": now - timedelta(hours=2), "until": now, "n": wanted})
        # ... and, for the mixed case, one retry per batch of a record 3 days old.
        old = connection.execute(pick, {"since": now - timedelta(days=3, hours=2), "until": now - timedelta(days=2),
                                        "n": rounds})  # fmt: skip
        # What a message carries: whole ms, as the sender reads it back (from_epoch_ms(epoch_ms(...))).
        rows, retries = ([(row.id, from_epoch_ms(epoch_ms(row.created_at))) for row in found] for found in (fresh, old))
    print(f"PostgreSQL, {parts} day partitions ({days} of them with {per_day:,} records), batches of {batch}:")
    mixed = [item for r in range(rounds) for item in [*rows[(2 * rounds + r) * batch :][: batch - 1], retries[r]]]
    cases = [
        ("by id alone", False, rows[: rounds * batch]),
        ("by id + created_at", True, rows[rounds * batch : 2 * rounds * batch]),
        ("dated, 1 from 3 days back", True, mixed),
    ]
    for name in ("final_ids", "apply_outcomes"):
        totals = {label: [0.0, 0.0] for label, _, _ in cases}
        with engine.connect() as connection:
            _run(connection, name, rows[-batch:], True)  # warm: statements compiled, caches filled
            # Round by round, each case in turn: the updates leave dead rows behind, which slow whatever
            # comes after them, so no case may go last.
            for r in range(rounds):
                for label, dated, work in cases:
                    server, client = _run(connection, name, work[r * batch : (r + 1) * batch], dated)
                    totals[label][0] += server
                    totals[label][1] += client
        for label, (server, client) in totals.items():
            print(f"  {name:<15} {label:<26} PostgreSQL CPU {server / rounds * 1000:6.1f} ms,"
                  f" client CPU {client / rounds * 1000:5.1f} ms per {batch} (mean of {rounds})")  # fmt: skip
    with engine.connect() as connection:
        chunk = rows[:batch]
        moments = [created for _, created in chunk]
        explain = text("EXPLAIN " + records._PG_FINAL_DATED.text).bindparams(bindparam("final", expanding=True))
        plan = connection.execute(
            explain,
            {"ids": [id for id, _ in chunk], "created": moments, "lo": min(moments),
             "hi": max(moments) + timedelta(milliseconds=1), "final": ["sent"]},
        ).scalars()  # fmt: skip
        scanned = sum("on notifications_p" in line for line in plan)
        print(f"  partitions the dated final_ids plan reaches: {scanned} (of {parts})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--peer-records", type=int, default=20_000, help="the slow peer runs on fewer records")
    parser.add_argument("--partitioned", action="store_true", help="the by-id lookups over day partitions")
    parser.add_argument("--days", type=int, default=30, help="day partitions filled (--partitioned)")
    parser.add_argument("--per-day", type=int, default=20_000, help="records per filled day (--partitioned)")
    parser.add_argument("--rounds", type=int, default=10, help="batches measured per case (--partitioned)")
    args = parser.parse_args()

    server = PostgresServer(durable=True)
    try:
        server.init()
        server.start()
        engine = make_engine(server.create_database("bench"), pool_size=2)
        migrate.upgrade(engine)
        if args.partitioned:
            _partitioned(engine, args.days, args.per_day, 500 if args.batch == 1000 else args.batch, args.rounds)
            return
        print(f"PostgreSQL (fsync on) write path, {args.records:,} records in batches of {args.batch}:")
        ours = _batched(engine, _rows(args.records), args.batch)
        with engine.begin() as connection:
            connection.execute(text("TRUNCATE notifications, notification_counts"))
        peer = _per_row_orm(engine, _rows(args.peer_records), args.batch)
        print(f"  inserts: {ours[0]:,.0f}/s (target 20,000/s) = {ours[0] / peer[0]:.1f}x the per-row peer")
        print(f"  outcome updates: {ours[1]:,.0f}/s (target 20,000/s) = {ours[1] / peer[1]:.1f}x the per-row peer")
        engine.dispose()
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
