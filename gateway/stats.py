"""``/api/notifications/stats/`` counts without scanning the records.

Whole hours come from the hourly roll-up (``notification_counts``, kept by every record
write and every final outcome, both bucketed by the record's creation hour). Only the
partial hours at the edges of a window are counted exactly, from the records' ``created_at``
index: at most two hours of records, however many millions the table holds. Records in
flight (pending, queued, sending) are the created ones minus the final ones.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, func, select

from noti.gateway.schemas import Counts
from noti.store import records
from noti.store.models import FINAL_STATUSES, Notification, NotificationCount, NotificationStatus

HOUR = timedelta(hours=1)


def ceil_hour(moment: datetime) -> datetime:
    floor = records.hour_bucket(moment)
    return floor if floor == moment else floor + HOUR


def counts(totals: Counter[str] | dict[str, int]) -> Counts:
    """The API's view of raw counts (``created`` plus one entry per final status)."""
    created = int(totals.get(records.CREATED, 0))
    sent = int(totals.get(NotificationStatus.SENT.value, 0))
    failed = int(totals.get(NotificationStatus.FAILED.value, 0))
    invalid = int(totals.get(NotificationStatus.INVALID_TOKEN.value, 0))
    finished = sent + failed + invalid
    return Counts(
        total=created,
        sent=sent,
        failed=failed,
        invalid_token=invalid,
        in_flight=max(0, created - finished),
        success_rate=round(sent / finished, 6) if finished else None,
        invalid_token_rate=round(invalid / finished, 6) if finished else None,
    )


def _exact(connection: Connection, since: datetime | None, until: datetime | None) -> Counter[str]:
    """Counts of the records created in [since, until), straight from the table (use on short ranges)."""
    query = select(Notification.status, func.count()).group_by(Notification.status)
    if since is not None:
        query = query.where(Notification.created_at >= since)
    if until is not None:
        query = query.where(Notification.created_at < until)
    totals: Counter[str] = Counter()
    for status, count in connection.execute(query):
        totals[records.CREATED] += count
        if NotificationStatus(status) in FINAL_STATUSES:
            totals[str(NotificationStatus(status).value)] += count
    return totals


def window_totals(connection: Connection, since: datetime | None, until: datetime | None) -> Counter[str]:
    """Raw counts for records created in [since, until); either bound may be open."""
    if since is None and until is None:
        return Counter(records.status_counts(connection))
    first_full = ceil_hour(since) if since is not None else None
    end_full = records.hour_bucket(until) if until is not None else None
    if first_full is not None and end_full is not None and first_full >= end_full:
        return _exact(connection, since, until)  # under two hours: no whole hour inside
    totals: Counter[str] = Counter(
        records.status_counts(connection, first_full, end_full - HOUR if end_full is not None else None)
    )
    if since is not None and first_full != since:
        totals.update(_exact(connection, since, first_full))
    if until is not None and end_full != until:
        totals.update(_exact(connection, end_full, until))
    return totals


def hourly(connection: Connection, until: datetime, hours: int = 24) -> list[tuple[datetime, Counts]]:
    """Counts per hour of the ``hours`` hours up to the one ``until`` falls in, from the roll-up alone."""
    last = records.hour_bucket(until)
    first = last - (hours - 1) * HOUR
    query = (
        select(NotificationCount.bucket, NotificationCount.status, func.sum(NotificationCount.count))
        .where(NotificationCount.bucket >= first, NotificationCount.bucket <= last)
        .group_by(NotificationCount.bucket, NotificationCount.status)
    )
    by_hour: defaultdict[datetime, Counter[str]] = defaultdict(Counter)
    for bucket, status, total in connection.execute(query):
        # SQLite gives the bucket back without its offset: it was written in UTC.
        hour = bucket.replace(tzinfo=UTC) if bucket.tzinfo is None else bucket.astimezone(UTC)
        by_hour[hour][status] += int(total)
    return [(first + n * HOUR, counts(by_hour[first + n * HOUR])) for n in range(hours)]
