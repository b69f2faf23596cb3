"""Retention on PostgreSQL: a day of records dropped as a partition while sends go on.

Loads one day of ``--records`` delivery records (40 days old) into its day partition, then
runs ``noti.store.retention.run_retention`` while a sender thread keeps writing records and
their outcomes one at a time (insert, then UPDATE by id, as the gateway and the senders do).
Prints how long the drop took and the send latency before, during and after it. For scale,
it then trims ``--batched`` old records from the default partition with the batched delete
SQLite and stray records get, and prints its rate.
Usage: python bench/bench_retention.py [--records 1000000] [--batched 100000]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from datetime import timedelta

from _services import PostgresServer
from sqlalchemy import Engine, text

from noti.store import migrate, records, retention
from noti.store.db import make_engine
from noti.store.models import NotificationStatus, utcnow
from noti.store.records import RecordUpdate

POLICY = retention.RetentionPolicy(records_age=timedelta(days=30))


def _load(engine: Engine, start: str, count: int) -> None:
    """``count`` records of about 550 bytes spread over the day from ``start``."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO notifications (id, device_token, app, campaign, title, body, data, push_type, priority,"
                " status, retry_count, apns_id, status_code, created_at, queued_at, sent_at)"
                " SELECT gen_random_uuid(), lpad(to_hex(i), 64, '0'), 'com.example.bench', 'default/bench',"
                " 'Flash sale: everything must go today',"
                " 'Up to 70% off on the items in your wish list, while stocks last',"
                " jsonb_build_object('deeplink', 'app://item/' || i, 'campaign_id', 'c-20261021'), 'alert', 10,"
                " 'sent', 0, gen_random_uuid()::text, 200, t, t, t + interval '40 ms'"
                " FROM generate_series(1, :n) AS i, LATERAL (SELECT CAST(:start AS timestamptz)"
                " + ((i - 1) * (interval '86400 s' / :n)) AS t) AS moment"
            ),
            {"n": count, "start": start},
        )
        connection.execute(text("ANALYZE notifications"))


class Sends(threading.Thread):
    """Single sends, one after another: each an insert and an outcome, timed end to end."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.samples: list[tuple[float, float]] = []  # (started, seconds)
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.perf_counter()
            id = uuid.uuid4()
            try:
                with self.engine.begin() as connection:
                    records.insert_notifications(
                        connection, [{"id": id, "device_token": "ab" * 32, "app": "com.example.bench"}]
                    )
                with self.engine.begin() as connection:
                    records.apply_outcomes(connection, [RecordUpdate(id, NotificationStatus.SENT, sent_at=utcnow())])
            except BaseException as exc:  # a send that fails during the drop is the finding
                self.errors.append(exc)
            self.samples.append((started, time.perf_counter() - started))
            time.sleep(0.002)

    def between(self, start: float, end: float) -> list[float]:
        return [seconds for started, seconds in self.samples if start <= started < end]


def _latency(label: str, samples: list[float]) -> None:
    if not samples:
        print(f"  {label:<28} no sends")
        return
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"  {label:<28} {len(samples):>5} sends  p50 {statistics.median(samples) * 1000:6.2f} ms"
        f"  p99 {p99 * 1000:6.2f} ms  max {ordered[-1] * 1000:7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batched", type=int, default=100_000)
    args = parser.parse_args()

    server = PostgresServer()
    server.init()
    server.start()
    try:
        engine = make_engine(server.create_database("bench_retention"), pool_size=4)
        migrate.upgrade(engine)
        day = (utcnow() - timedelta(days=40)).date()
        retention.ensure_partition(engine, day, POLICY)
        loading = time.perf_counter()
        _load(engine, retention.day_start(day).isoformat(), args.records)
        with engine.connect() as connection:
            size = connection.execute(
                text("SELECT pg_total_relation_size(CAST(:p AS regclass))"), {"p": retention.partition_name(day)}
            ).scalar_one()
        print(f"retention on PostgreSQL: one day of {args.records:,} records in {retention.partition_name(day)}")
        print(f"  loaded in {time.perf_counter() - loading:.1f} s, {size / 2**20:,.0f} MiB with its indexes")

        sends = Sends(engine)
        sends.start()
        time.sleep(3)
        drop_started = time.perf_counter()
        cpu_started = time.process_time()
        report = retention.run_retention(engine, POLICY)
        drop_ended = time.perf_counter()
        cpu = time.process_time() - cpu_started
        time.sleep(3)
        sends.stopping.set()
        sends.join()

        print(f"  retention run: {report.summary()}")
        print(f"  wall {drop_ended - drop_started:.3f} s (this process's CPU {cpu:.3f} s)")
        print("send latency (insert + outcome, one at a time):")
        _latency("before the drop (3 s)", sends.between(0, drop_started))
        _latency("during the drop", sends.between(drop_started, drop_ended))
        _latency("after the drop (3 s)", sends.between(drop_ended, float("inf")))
        print(f"  failed sends: {len(sends.errors)}" + (f" ({sends.errors[0]!r})" if sends.errors else ""))

        # The batched delete, for scale: records of a day with no partition sit in the default one.
        # A DELETE only marks rows dead: the disk comes back (to the table, not the system) once
        # VACUUM has cleaned the heap and every index, so that is timed too.
        stray = (utcnow() - timedelta(days=50)).replace(hour=0, minute=0, second=0, microsecond=0)
        _load(engine, stray.isoformat(), args.batched)
        started = time.perf_counter()
        batched = retention.run_retention(engine, POLICY)
        seconds = time.perf_counter() - started
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            vacuum_started = time.perf_counter()
            connection.execute(text(f"VACUUM {retention.DEFAULT_PARTITION}"))
            vacuum = time.perf_counter() - vacuum_started
            left = connection.execute(
                text("SELECT pg_total_relation_size(CAST(:p AS regclass))"), {"p": retention.DEFAULT_PARTITION}
            ).scalar_one()
        rate = batched.records_deleted / (seconds + vacuum)
        print(
            f"batched delete (SQLite's way, and the default partition's): {batched.records_deleted:,} records"
            f" deleted in {seconds:.2f} s, then VACUUM {vacuum:.2f} s; {left / 2**20:,.0f} MiB still held by the"
            f" table; {rate:,.0f} records/s in all,"
            f" so a day of {args.records:,} that way is ~{args.records / rate:.0f} s"
            f" vs {drop_ended - drop_started:.2f} s as a partition, whose disk goes back at once"
        )
        engine.dispose()
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
