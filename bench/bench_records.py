"""Delivery-record write path on PostgreSQL: inserts/s and outcome updates/s.

Runs the batched path (``noti.store.records``) next to the obvious per-row ORM path in
the same run on the same throwaway server, and prints both with their ratio.
Usage: python bench/bench_records.py [--records 100000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from _services import PostgresServer
from sqlalchemy import Engine, text, update
from sqlalchemy.orm import Session

from noti.store import migrate, records
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--peer-records", type=int, default=20_000, help="the slow peer runs on fewer records")
    args = parser.parse_args()

    server = PostgresServer(durable=True)
    try:
        server.init()
        server.start()
        engine = make_engine(server.create_database("bench"), pool_size=2)
        migrate.upgrade(engine)
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
