"""The batched write path for delivery records: insert many, apply many outcomes.

Senders and bulk sends go through here, one statement per batch on PostgreSQL, so the
cost of a record is a few microseconds of database work rather than a round trip.
"""

from __future__ import annotations

import enum
import functools
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import orjson
from psycopg.types.json import Jsonb
from sqlalchemy import Connection, bindparam, func, insert, select, text, update
from sqlalchemy.dialects import postgresql

from noti.store import content, tables, tokens
from noti.store.db import upsert_insert
from noti.store.tables import FINAL_STATUSES, NotificationStatus, utcnow

CREATED = "created"  # the roll-up row counting every record written
_FINAL_VALUES = tuple(sorted(status.value for status in FINAL_STATUSES))


@dataclass(frozen=True, slots=True)
class RecordUpdate:
    """What one delivery attempt did to a record."""

    id: uuid.UUID
    status: NotificationStatus
    retry_count: int = 0
    apns_id: str | None = None
    apns_reason: str | None = None
    status_code: int | None = None
    sent_at: datetime | None = None
    apns_unique_id: str | None = None  # apns-unique-id (sandbox only)
    # When APNs says the token stopped being valid (a 410's timestamp): a device registered
    # after it keeps its new registration and stays active.
    invalidated_at: datetime | None = None
    # The record's created_at, to the ms (rounded down, as its message carries it), when known: the update
    # then looks in that day's partition only, not in every one (PostgreSQL). None: looked up by id alone.
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    """A record an outcome was applied to (it was not final before)."""

    id: uuid.UUID
    app: str
    device_id: int | None
    created_at: datetime
    status: NotificationStatus
    campaign: str | None = None
    token_id: int | None = None  # sent to a token of another kind (device_tokens), not the device token


def hour_bucket(moment: datetime) -> datetime:
    """The start of the UTC hour ``moment`` falls in: the roll-up's granularity."""
    return moment.replace(minute=0, second=0, microsecond=0)


def _bump_counts(connection: Connection, counts: Counter[tuple[datetime, str, str]]) -> None:
    if not counts:
        return
    # Sorted, so concurrent writers lock roll-up rows in the same order and never deadlock.
    rows = [
        {"bucket": bucket, "app": app, "status": status, "count": count}
        for (bucket, app, status), count in sorted(counts.items())
    ]
    connection.execute(
        _upsert_adding(connection.dialect.name, tables.notification_counts, ("bucket", "app", "status")), rows
    )


@functools.cache
def _upsert_adding(dialect: str, table: Any, key: tuple[str, ...]) -> Any:
    """INSERT of counter rows that adds ``count`` to a row already there. Built once: constructing
    an upsert costs more than the cached compile it leads to."""
    statement: Any = upsert_insert(dialect, table)
    return statement.on_conflict_do_update(
        index_elements=list(key), set_={"count": table.c.count + statement.excluded.count}
    )


def insert_notifications(
    connection: Connection, rows: Sequence[Mapping[str, Any]], *, skip_existing: bool = False,
    writer: str | None = None,
) -> set[uuid.UUID]:  # fmt: skip
    """Insert delivery records in one batch and return the ids written.

    Each row needs at least id, device_token and app. With ``skip_existing`` a row whose id
    is already stored is left alone (a resumed fan-out writes its records again). Writers
    that may race to write the same ids (two fan-outs of one campaign) name themselves the
    same ``writer``: on PostgreSQL they then take turns, as the partitioned table cannot
    refuse an id stored on another day (the first one's records are then seen and skipped).
    """
    if not rows:
        return set()
    if writer is not None and connection.dialect.name == "postgresql":
        # Its own statement, before the insert: READ COMMITTED gives the insert a snapshot taken
        # after the lock, so it sees what the writer before committed.
        connection.execute(_WRITER_LOCK, {"writer": writer})
    now = utcnow()
    prepared = _same_columns([{"created_at": now, **row} for row in rows])
    if skip_existing and connection.dialect.name == "postgresql":
        written = _insert_new_postgresql(connection, prepared)
        prepared = [row for row in prepared if row["id"] in written]
    elif skip_existing:
        statement: Any = upsert_insert("sqlite", tables.notifications).on_conflict_do_nothing(index_elements=["id"])
        written = {row[0] for row in connection.execute(statement.returning(tables.notifications.c.id), prepared)}
        prepared = [row for row in prepared if row["id"] in written]
    else:
        connection.execute(insert(tables.notifications), prepared)
        written = {row["id"] for row in prepared}
    _bump_counts(connection, Counter((hour_bucket(row["created_at"]), row["app"], CREATED) for row in prepared))
    return written


_WRITER_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:writer, 0))")


def _same_columns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows that all give the same columns: one batched INSERT binds every row to the first row's
    columns, so a column only some rows give takes its default (or NULL) in the others."""
    names = dict.fromkeys(name for row in rows for name in row)
    if all(len(row) == len(names) for row in rows):
        return rows
    table = tables.notifications
    fills = {name: _scalar_default(table.c[name]) for name in names}
    return [row if len(row) == len(names) else {**fills, **row} for row in rows]


def _insert_new_postgresql(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> set[uuid.UUID]:
    """INSERT ... SELECT FROM unnest(<an array per column that varies>) of the ids not stored yet, RETURNING id.

    One short statement however many rows: a multi-row VALUES list with RETURNING is a new
    query text for psycopg to parse in Python every time (about 80 ms per 1,000 records).
    """
    table = tables.notifications
    names = list(dict.fromkeys(name for row in rows for name in row))
    fills = {name: _scalar_default(table.c[name]) for name in names}
    for column in table.c:  # columns no row gives take their default, as an ORM insert would
        if column.name not in fills and _scalar_default(column) is not None:
            names.append(column.name)
            fills[column.name] = _scalar_default(column)
    columns = {name: [row.get(name, fills[name]) for row in rows] for name in names}
    # A value every row shares (a campaign's content, app, status, dates) is bound once, not as an array
    # of copies: dumping those arrays was most of a fan-out's CPU. ``id`` always varies (unnest needs one).
    varying = tuple(n for n in names if n == "id" or not _all_same(columns[n], n in _JSON_COLUMNS))
    shared = tuple(n for n in names if n not in varying)
    statement = _unnest_insert(varying, shared)
    values = {f"c{i}": [_bindable(v, name in _JSON_COLUMNS) for v in columns[name]] for i, name in enumerate(varying)}
    values.update({f"k{i}": _bindable(columns[name][0], name in _JSON_COLUMNS) for i, name in enumerate(shared)})
    return {row[0] for row in connection.execute(statement, values)}


def _all_same(values: Sequence[Any], is_json: bool) -> bool:
    """Whether every row gives one value, so it may be bound once. For JSON by its text: 1, 1.0 and true
    are equal to Python but are three values to store."""
    first = values[0]
    if not is_json:
        return all(value == first for value in values)
    try:
        text = orjson.dumps(first)
        return all(value is first or orjson.dumps(value) == text for value in values)
    except TypeError:  # a value orjson cannot write (an integer past 64 bits): bind each row's own
        return False


def _scalar_default(column: Any) -> Any:
    default = column.default
    return default.arg if default is not None and default.is_scalar else None


def _bindable(value: Any, is_json: bool) -> Any:
    if value is None:
        return None
    if is_json:  # every value of a JSON column, a sound's name (a JSON string) too
        return Jsonb(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


@functools.cache
def _unnest_insert(names: tuple[str, ...], shared: tuple[str, ...] = ()) -> Any:
    """The insert of ``names`` from one array each and ``shared`` from one value each (``:c<i>``, ``:k<i>``)."""
    table = tables.notifications
    dialect = postgresql.dialect()
    arrays = ", ".join(
        f"CAST(:c{i} AS {table.c[name].type.compile(dialect=dialect)}[])" for i, name in enumerate(names)
    )
    scalars = "".join(
        f", CAST(:k{i} AS {table.c[name].type.compile(dialect=dialect)})" for i, name in enumerate(shared)
    )
    columns = ", ".join((*names, *shared))
    # A partitioned table's primary key is (id, created_at) (migration 0009), so a conflict on it
    # misses an id stored on another day: NOT EXISTS looks the id up in every partition. Writers of
    # one id are serialized before this (idempotency_keys, one operator fanning out a campaign).
    return text(
        f"INSERT INTO notifications ({columns}) SELECT v.*{scalars} FROM unnest({arrays}) AS v({', '.join(names)})"
        " WHERE NOT EXISTS (SELECT 1 FROM notifications AS n WHERE n.id = v.id) ON CONFLICT DO NOTHING RETURNING id"
    )


def claim_idempotency_keys(connection: Connection, fingerprints: Mapping[str, str]) -> dict[str, str]:
    """The request fingerprint each key stands for: stored now for a new key, read for one seen before.

    A key seen before with another fingerprint is a different request reusing the key.
    Concurrent claims of one new key are decided by the insert: one stores, the other reads.
    """
    if not fingerprints:
        return {}
    now = utcnow()
    statement: Any = upsert_insert(connection.dialect.name, tables.idempotency_keys)
    statement = statement.on_conflict_do_nothing(index_elements=["key"]).returning(tables.idempotency_keys.c.key)
    rows = [{"key": key, "fingerprint": value, "created_at": now} for key, value in fingerprints.items()]
    stored = set(connection.execute(statement, rows).scalars())
    claimed = dict(fingerprints)
    seen_before = [key for key in fingerprints if key not in stored]
    if seen_before:
        query = select(tables.idempotency_keys.c.key, tables.idempotency_keys.c.fingerprint).where(
            tables.idempotency_keys.c.key.in_(seen_before)
        )
        claimed.update({row.key: row.fingerprint for row in connection.execute(query)})
    return claimed


_PG_SET = """
    UPDATE notifications AS n
       SET status = v.status, retry_count = v.retry_count, apns_id = v.apns_id,
           apns_reason = v.apns_reason, status_code = v.status_code, sent_at = v.sent_at,
           apns_unique_id = v.apns_unique_id
      FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS varchar[]), CAST(:retries AS int[]),
                  CAST(:apns_ids AS varchar[]), CAST(:reasons AS varchar[]), CAST(:codes AS smallint[]),
                  CAST(:sent AS timestamptz[]), CAST(:unique_ids AS varchar[]), CAST(:created AS timestamptz[]))
           AS v(id, status, retry_count, apns_id, apns_reason, status_code, sent_at, apns_unique_id, created_at)
     WHERE n.id = v.id AND n.status NOT IN :final
"""
_PG_RETURNING = " RETURNING n.id, n.app, n.device_id, n.created_at, n.status, n.campaign, n.token_id"
_PG_APPLY = text(_PG_SET + _PG_RETURNING).bindparams(bindparam("final", expanding=True))
# With each record's created_at (to the ms): the batch's span as constants prunes the partitions when the
# statement is planned, each row's ms narrows its probe to its own partition as the join runs.
_PG_APPLY_DATED = text(
    _PG_SET
    + "   AND n.created_at >= :lo AND n.created_at < :hi"
    + "   AND n.created_at >= v.created_at AND n.created_at < v.created_at + interval '1 millisecond'"
    + _PG_RETURNING
).bindparams(bindparam("final", expanding=True))
_ONE_MS = timedelta(milliseconds=1)
_Item = TypeVar("_Item")


def _apply_postgresql(connection: Connection, outcomes: Sequence[RecordUpdate]) -> list[Applied]:
    dated = [o for o in outcomes if o.created_at is not None]
    undated = [o for o in outcomes if o.created_at is None]
    applied = []
    for day in _by_day(dated, lambda o: o.created_at):
        applied += _run_apply(connection, _PG_APPLY_DATED, day, _span(o.created_at for o in day))
    if dated:
        # One a dated look-up missed is final already (a redelivery) or was dated wrongly: looked up by id
        # alone, so a wrong date costs a probe of every partition, never the outcome.
        hit = {a.id for a in applied}
        undated += [o for o in dated if o.id not in hit]
    if undated:
        applied += _run_apply(connection, _PG_APPLY, undated, {})
    return applied


def _by_day(items: Iterable[_Item], created_at: Callable[[_Item], datetime | None]) -> list[list[_Item]]:
    """``items`` by the UTC day of their created_at, one day's partition each: a batch's span then never
    stretches over the days between a fresh record and an old one's retry (a plan could scan them)."""
    days: dict[date, list[_Item]] = {}
    for item in items:
        moment = created_at(item)
        if moment is not None:
            days.setdefault(moment.astimezone(UTC).date(), []).append(item)
    return [days[day] for day in sorted(days)]


def _span(moments: Iterable[datetime | None]) -> dict[str, datetime]:
    """The bounds (lo, hi) of the statement: from the first moment to just past the last one's ms."""
    known = [moment for moment in moments if moment is not None]
    return {"lo": min(known), "hi": max(known) + _ONE_MS}


def _run_apply(
    connection: Connection, statement: Any, outcomes: Sequence[RecordUpdate], extra: Mapping[str, Any]
) -> list[Applied]:
    result = connection.execute(
        statement,
        {
            "ids": [o.id for o in outcomes],
            "statuses": [o.status.value for o in outcomes],
            "retries": [o.retry_count for o in outcomes],
            "apns_ids": [o.apns_id for o in outcomes],
            "reasons": [o.apns_reason for o in outcomes],
            "codes": [o.status_code for o in outcomes],
            "sent": [o.sent_at for o in outcomes],
            "unique_ids": [o.apns_unique_id for o in outcomes],
            "created": [o.created_at for o in outcomes],
            "final": list(_FINAL_VALUES),
            **extra,
        },
    )
    return [
        Applied(
            row.id, row.app, row.device_id, row.created_at, NotificationStatus(row.status), row.campaign, row.token_id
        )
        for row in result
    ]


def _apply_generic(connection: Connection, outcomes: Sequence[RecordUpdate]) -> list[Applied]:
    statement = (
        update(tables.notifications)
        .where(tables.notifications.c.id == bindparam("b_id"), tables.notifications.c.status.notin_(FINAL_STATUSES))
        .values(
            status=bindparam("b_status"),
            retry_count=bindparam("b_retry_count"),
            apns_id=bindparam("b_apns_id"),
            apns_reason=bindparam("b_apns_reason"),
            status_code=bindparam("b_status_code"),
            sent_at=bindparam("b_sent_at"),
            apns_unique_id=bindparam("b_apns_unique_id"),
        )
        .returning(
            tables.notifications.c.id,
            tables.notifications.c.app,
            tables.notifications.c.device_id,
            tables.notifications.c.created_at,
            tables.notifications.c.status,
            tables.notifications.c.campaign,
            tables.notifications.c.token_id,
        )
    )
    applied = []
    for o in outcomes:
        row = connection.execute(
            statement,
            {
                "b_id": o.id,
                "b_status": o.status,
                "b_retry_count": o.retry_count,
                "b_apns_id": o.apns_id,
                "b_apns_reason": o.apns_reason,
                "b_status_code": o.status_code,
                "b_sent_at": o.sent_at,
                "b_apns_unique_id": o.apns_unique_id,
            },
        ).one_or_none()
        if row is not None:
            applied.append(
                Applied(row.id, row.app, row.device_id, row.created_at, row.status, row.campaign, row.token_id)
            )
    return applied


def apply_outcomes(connection: Connection, outcomes: Sequence[RecordUpdate]) -> list[Applied]:
    """Write outcomes in one batch and return the records they changed.

    A record that is already final is left alone (a redelivered message must not undo or
    repeat it). Devices follow: ``invalid_token`` deactivates the device — unless APNs dated
    the invalidation (410 ``timestamp``) before the device last registered its token — and
    ``sent`` stamps its ``last_notification_at``. Call inside a transaction (``engine.begin()``).
    """
    if not outcomes:
        return []
    # One outcome per record: the last one in the batch wins.
    latest = list({o.id: o for o in outcomes}.values())
    if connection.dialect.name == "postgresql":
        applied = _apply_postgresql(connection, latest)
    else:
        applied = _apply_generic(connection, latest)
    _update_devices(connection, applied, {o.id: o.invalidated_at for o in latest if o.invalidated_at is not None})
    finished = [a for a in applied if a.status.is_final]
    _bump_counts(connection, Counter((hour_bucket(a.created_at), a.app, a.status.value) for a in finished))
    _bump_campaign_counts(connection, Counter((a.campaign, a.status.value) for a in finished if a.campaign))
    return applied


def _bump_campaign_counts(connection: Connection, counts: Counter[tuple[str, str]]) -> None:
    if not counts:
        return
    # Sorted, and after the hourly roll-up in every writer: rows are locked in one order, no deadlocks.
    rows = [{"campaign": campaign, "status": status, "count": n} for (campaign, status), n in sorted(counts.items())]
    connection.execute(_upsert_adding(connection.dialect.name, tables.campaign_counts, ("campaign", "status")), rows)


def campaign_counts(connection: Connection, campaign: str) -> dict[str, int]:
    """How many of a campaign's records reached each final status (exact: counted as they were written)."""
    query = select(tables.campaign_counts.c.status, tables.campaign_counts.c.count).where(
        tables.campaign_counts.c.campaign == campaign
    )
    return {status: int(count) for status, count in connection.execute(query)}


def _latest(moments: Iterable[tuple[int | None, datetime]]) -> dict[int, datetime]:
    """The latest moment per key (keys that are None left out)."""
    latest: dict[int, datetime] = {}
    for key, moment in moments:
        if key is not None:
            latest[key] = max(moment, latest.get(key, moment))
    return latest


def _update_devices(
    connection: Connection, applied: Iterable[Applied], invalidated_at: Mapping[uuid.UUID, datetime]
) -> None:
    now = utcnow()
    applied = list(applied)
    sent = sorted({a.device_id for a in applied if a.device_id is not None and a.status is NotificationStatus.SENT})
    # A 410 for a push-to-start, update or VoIP token retires that token, not the device.
    dead_tokens = [a for a in applied if a.token_id is not None and a.status is NotificationStatus.INVALID_TOKEN]
    if dead_tokens:
        tokens.retire_tokens(
            connection,
            [a.token_id for a in dead_tokens if a.token_id is not None and a.id not in invalidated_at],
            _latest((a.token_id, invalidated_at[a.id]) for a in dead_tokens if a.id in invalidated_at),
        )
    dead = [
        a
        for a in applied
        if a.device_id is not None and a.token_id is None and a.status is NotificationStatus.INVALID_TOKEN
    ]
    undated = sorted({a.device_id for a in dead if a.device_id is not None and a.id not in invalidated_at})
    # A dated invalidation (410) only wins over a registration made before it; the latest date per device.
    dated = _latest((a.device_id, invalidated_at[a.id]) for a in dead if a.id in invalidated_at)
    if sent:
        connection.execute(update(tables.devices).where(tables.devices.c.id.in_(sent)).values(last_notification_at=now))
    if undated:
        connection.execute(
            update(tables.devices).where(tables.devices.c.id.in_(undated)).values(is_active=False, updated_at=now)
        )
    if dated:
        statement = (
            update(tables.devices)
            .where(
                tables.devices.c.id == bindparam("b_device"),
                (tables.devices.c.registered_at.is_(None))
                | (tables.devices.c.registered_at <= bindparam("b_invalidated_at")),
            )
            .values(is_active=False, updated_at=now)
        )
        # Sorted like the other updates, so concurrent writers lock devices in one order.
        rows = [{"b_device": device, "b_invalidated_at": moment} for device, moment in sorted(dated.items())]
        connection.execute(statement, rows)


def final_ids(
    connection: Connection, ids: Sequence[uuid.UUID], created_at: Mapping[uuid.UUID, datetime] | None = None
) -> set[uuid.UUID]:
    """Which of ``ids`` already have a final record (redelivered messages to ack, not resend).

    ``created_at``: the records' created_at to the ms (rounded down) where known; on PostgreSQL those
    are looked up in their own partition rather than in every one. (Most claimed entries are not final,
    so a miss is not looked up again by id alone: that would probe every partition for each of them.)
    """
    if not ids:
        return set()
    created_at = created_at or {}
    dated = [id for id in ids if id in created_at] if connection.dialect.name == "postgresql" else []
    undated = [id for id in ids if id not in created_at] if dated else list(ids)
    found: set[uuid.UUID] = set()
    for day in _by_day(dated, created_at.get):
        moments = [created_at[id] for id in day]
        values = {"ids": day, "created": moments, "final": list(_FINAL_VALUES), **_span(moments)}
        found.update(row[0] for row in connection.execute(_PG_FINAL_DATED, values))
    if undated:
        rows = connection.execute(
            select(tables.notifications.c.id).where(
                tables.notifications.c.id.in_(undated), tables.notifications.c.status.in_(FINAL_STATUSES)
            )
        )
        found.update(row[0] for row in rows)
    return found


_PG_FINAL_DATED = text(
    """
    SELECT n.id FROM notifications AS n
      JOIN unnest(CAST(:ids AS uuid[]), CAST(:created AS timestamptz[])) AS v(id, created_at) ON n.id = v.id
     WHERE n.created_at >= :lo AND n.created_at < :hi
       AND n.created_at >= v.created_at AND n.created_at < v.created_at + interval '1 millisecond'
       AND n.status IN :final
    """
).bindparams(bindparam("final", expanding=True))


def status_counts(
    connection: Connection, since: datetime | None = None, until: datetime | None = None
) -> dict[str, int]:
    """Counts from the hourly roll-up: ``created`` and each final status, for whole hours in range."""
    query = select(tables.notification_counts.c.status, func.sum(tables.notification_counts.c.count)).group_by(
        tables.notification_counts.c.status
    )
    if since is not None:
        query = query.where(tables.notification_counts.c.bucket >= hour_bucket(since))
    if until is not None:
        query = query.where(tables.notification_counts.c.bucket <= hour_bucket(until))
    return {status: int(total) for status, total in connection.execute(query)}


_COPY_DEFAULTS: dict[str, Any] = {"push_type": "alert", "priority": 10, "retry_count": 0}
_JSON_COLUMNS = frozenset({"data", "sound", "tags", content.EXTRA})
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_NEEDS_ESCAPE = re.compile(r"[\\\n\r\t]")


def _copy_text(value: Any, is_json: bool = False) -> str:
    """One value in COPY's text format."""
    if value is None:
        return "\\N"
    if is_json:
        return orjson.dumps(value).decode().translate(_COPY_ESCAPES)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        value = value.value
    return str(value).translate(_COPY_ESCAPES)


def _copy_column(values: list[Any], is_json: bool) -> list[str]:
    """A column's values in COPY's text format; the common kinds (text needing no escapes, ids,
    numbers) are converted in bulk, since a bulk send formats 10,000 of each."""
    kinds = set(map(type, values))
    if not is_json and len(kinds) == 1:
        kind = kinds.pop()
        if kind is str and not _NEEDS_ESCAPE.search("".join(values)):
            return values
        if kind is int or kind is uuid.UUID:
            return list(map(str, values))
    return [_copy_text(value, is_json) for value in values]


def copy_notifications(
    connection: Connection, rows: Sequence[Mapping[str, Any]], *, shared: Mapping[str, Any] | None = None
) -> set[Any]:
    """Like :func:`insert_notifications` for new ids only, but streamed with COPY on PostgreSQL.

    ``shared`` holds the columns every row has in common (a bulk send's content), formatted
    once rather than per row. Several times faster for big batches; an id already stored is
    an error, so use it only with fresh ids (UUIDs or their strings). Elsewhere it is
    ``insert_notifications``. Returns the ids as given.
    """
    shared = dict(shared or {})
    if connection.dialect.name != "postgresql" or not rows:
        prepared = [{**shared, **row} for row in rows]
        for row in prepared:
            if isinstance(row["id"], str):
                row["id"] = uuid.UUID(row["id"])
        insert_notifications(connection, prepared)
        return {row["id"] for row in rows}
    now = utcnow()
    row_columns = list(dict.fromkeys(name for row in rows for name in row))
    fallback = {**_COPY_DEFAULTS, "created_at": now, **shared}
    shared_columns = [name for name in fallback if name not in row_columns]
    # Each line ends with the columns every row shares, formatted once.
    end = "".join("\t" + _copy_text(fallback[name], name in _JSON_COLUMNS) for name in shared_columns) + "\n"
    raw = {name: [row.get(name, fallback.get(name)) for row in rows] for name in row_columns}
    columns = [_copy_column(values, name in _JSON_COLUMNS) for name, values in raw.items()]
    data = end.join(map("\t".join, zip(*columns, strict=True))) + end
    apps = raw["app"] if "app" in raw else [fallback["app"]] * len(rows)
    if "created_at" in raw:
        pairs = zip(raw["created_at"], apps, strict=True)
        counts = Counter((hour_bucket(created), app, CREATED) for created, app in pairs)
    else:
        bucket = hour_bucket(now)
        counts = Counter({(bucket, app, CREATED): n for app, n in Counter(apps).items()})
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY notifications ({', '.join(row_columns + shared_columns)}) FROM STDIN") as copy:
        copy.write(data.encode())
    _bump_counts(connection, counts)
    return {row["id"] for row in rows}
