"""The batched write path for delivery records, on real PostgreSQL."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, func, insert, select, text

from noti.queue import epoch_ms, from_epoch_ms
from noti.store import migrate, records, retention
from noti.store.db import make_engine
from noti.store.models import Device, Notification, NotificationStatus
from noti.store.records import RecordUpdate


def _device(engine: Engine, token: str) -> int:
    with engine.begin() as connection:
        result = connection.execute(insert(Device).values(app="com.example", device_token=token))
        return int(result.inserted_primary_key[0])


def _record(device_id: int | None, token: str) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "device_id": device_id,
        "device_token": token,
        "app": "com.example",
        "title": "Hi",
        "body": "There",
        "data": {"k": [1, 2]},
        "sound": {"critical": 1, "name": "alarm.caf", "volume": 0.5},
        "status": NotificationStatus.QUEUED,
    }


def test_insert_many_then_outcomes_update_records_devices_and_counts(clean_db: Engine) -> None:
    ok_device = _device(clean_db, "aa" * 32)
    bad_device = _device(clean_db, "bb" * 32)
    rows = [_record(ok_device, "aa" * 32), _record(bad_device, "bb" * 32), _record(None, "cc" * 32)]
    with clean_db.begin() as connection:
        records.insert_notifications(connection, rows)
    sent_at = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    outcomes = [
        RecordUpdate(rows[0]["id"], NotificationStatus.SENT, apns_id="A-1", status_code=200, sent_at=sent_at),
        RecordUpdate(rows[1]["id"], NotificationStatus.INVALID_TOKEN, apns_reason="Unregistered", status_code=410),
        RecordUpdate(
            rows[2]["id"], NotificationStatus.FAILED, retry_count=5, apns_reason="ServiceUnavailable", status_code=503
        ),
    ]
    with clean_db.begin() as connection:
        applied = records.apply_outcomes(connection, outcomes)
    assert {a.id for a in applied} == {row["id"] for row in rows}

    with clean_db.connect() as connection:
        by_id = {n.id: n for n in connection.execute(select(Notification))}
        devices = {d.id: d for d in connection.execute(select(Device))}
        counts = records.status_counts(connection)
    first = by_id[rows[0]["id"]]
    assert (first.status, first.apns_id, first.sent_at) == ("sent", "A-1", sent_at)
    assert first.data == {"k": [1, 2]}
    assert by_id[rows[2]["id"]].retry_count == 5
    assert devices[ok_device].last_notification_at is not None and devices[ok_device].is_active
    assert devices[bad_device].is_active is False
    assert counts == {"created": 3, "sent": 1, "invalid_token": 1, "failed": 1}


def test_outcome_for_a_final_record_is_ignored(clean_db: Engine) -> None:
    row = _record(None, "dd" * 32)
    with clean_db.begin() as connection:
        records.insert_notifications(connection, [row])
        records.apply_outcomes(connection, [RecordUpdate(row["id"], NotificationStatus.SENT, apns_id="first")])
    with clean_db.begin() as connection:
        again = records.apply_outcomes(
            connection, [RecordUpdate(row["id"], NotificationStatus.FAILED, apns_reason="late")]
        )
        assert again == []
        assert records.final_ids(connection, [row["id"], uuid.uuid4()]) == {row["id"]}
        stored = connection.execute(select(Notification).where(Notification.id == row["id"])).one()
        counts = records.status_counts(connection)
    assert (stored.status, stored.apns_id) == ("sent", "first")
    assert counts == {"created": 1, "sent": 1}


def test_retry_outcome_keeps_record_in_flight(clean_db: Engine) -> None:
    row = _record(None, "ee" * 32)
    with clean_db.begin() as connection:
        records.insert_notifications(connection, [row])
        applied = records.apply_outcomes(
            connection,
            [RecordUpdate(row["id"], NotificationStatus.QUEUED, retry_count=1, apns_reason="TooManyRequests")],
        )
        waiting = connection.execute(select(Notification).where(Notification.id == row["id"])).one()
        # Written, but still in flight: not final, not counted as finished, so a redelivery is still sent.
        assert [(a.id, a.status) for a in applied] == [(row["id"], NotificationStatus.QUEUED)]
        assert (waiting.status, waiting.retry_count, waiting.apns_reason) == ("queued", 1, "TooManyRequests")
        assert records.final_ids(connection, [row["id"]]) == set()
        assert records.status_counts(connection) == {"created": 1}
        records.apply_outcomes(connection, [RecordUpdate(row["id"], NotificationStatus.SENT, retry_count=1)])
        stored = connection.execute(select(Notification).where(Notification.id == row["id"])).one()
        assert records.status_counts(connection) == {"created": 1, "sent": 1}
    assert (stored.status, stored.retry_count) == ("sent", 1)


def test_write_path_works_on_sqlite(tmp_path: object) -> None:
    from noti.store import migrate
    from noti.store.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path}/noti.db")
    migrate.upgrade(engine)
    device = _device(engine, "ff" * 32)
    row = _record(device, "ff" * 32)
    with engine.begin() as connection:
        records.insert_notifications(connection, [row])
        applied = records.apply_outcomes(connection, [RecordUpdate(row["id"], NotificationStatus.INVALID_TOKEN)])
        assert [a.status for a in applied] == [NotificationStatus.INVALID_TOKEN]
        assert connection.execute(select(Device.is_active)).scalar_one() is False
        assert records.status_counts(connection) == {"created": 1, "invalid_token": 1}


@pytest.mark.parametrize("skip_existing", [False, True])
@pytest.mark.parametrize("store", ["postgresql", "sqlite"])
def test_records_giving_different_columns_insert_in_one_batch(
    request: pytest.FixtureRequest, tmp_path: Path, store: str, skip_existing: bool
) -> None:
    if store == "postgresql":
        engine: Engine = request.getfixturevalue("clean_db")
    else:
        engine = make_engine(f"sqlite:///{tmp_path}/noti.db")
        migrate.upgrade(engine)
    titled = {"id": uuid.uuid4(), "device_token": "aa" * 32, "app": "com.example", "title": "t"}
    badged = {"id": uuid.uuid4(), "device_token": "bb" * 32, "app": "com.example", "body": "b", "badge": 1}
    urgent = {"id": uuid.uuid4(), "device_token": "cc" * 32, "app": "com.example", "priority": 5, "data": {"k": 1}}
    with engine.begin() as connection:
        written = records.insert_notifications(connection, [titled, badged, urgent], skip_existing=skip_existing)
    assert written == {titled["id"], badged["id"], urgent["id"]}
    with engine.connect() as connection:
        stored = {r.id: r for r in connection.execute(select(Notification))}
    assert (stored[titled["id"]].title, stored[titled["id"]].body, stored[titled["id"]].priority) == ("t", None, 10)
    assert (stored[badged["id"]].title, stored[badged["id"]].badge, stored[badged["id"]].priority) == (None, 1, 10)
    assert (stored[urgent["id"]].badge, stored[urgent["id"]].priority) == (None, 5)
    with engine.connect() as connection:  # no data is SQL NULL, not JSON null
        assert connection.execute(select(func.count()).where(Notification.data.is_(None))).scalar_one() == 2


def test_insert_with_skip_existing_writes_each_record_once(clean_db: Engine) -> None:
    first, second = _record(None, "12" * 32), _record(None, "34" * 32)
    with clean_db.begin() as connection:
        assert records.insert_notifications(connection, [first], skip_existing=True) == {first["id"]}
    with clean_db.begin() as connection:
        written = records.insert_notifications(connection, [first, second], skip_existing=True)
        assert written == {second["id"]}
        assert records.status_counts(connection) == {"created": 2}
        assert len(connection.execute(select(Notification.id)).all()) == 2


def _stored(engine: Engine) -> list[tuple[Any, ...]]:
    columns = [c for c in Notification.__table__.columns if c.name not in {"id", "created_at", "queued_at"}]
    with engine.connect() as connection:
        rows = connection.execute(select(*columns).order_by(Notification.device_token)).all()
    return [tuple(row) for row in rows]


def test_copy_stores_what_insert_stores_escapes_included(clean_db: Engine, tmp_path: Any) -> None:
    awkward = {
        "title": "tab\there, new\nline, back\\slash, CR\r, \\N and ünïcode ✓",
        "body": None,
        "data": {"path": "C:\\temp\n", "tab": "\t", "n": [1, None, True]},
        "sound": "chime.caf",
        "badge": 3,
        "status": NotificationStatus.QUEUED,
        "campaign": "ns/launch",
    }
    per_row = [
        {"id": uuid.uuid4(), "device_id": 11, "device_token": "aa" * 32, "app": "com.example"},
        {"id": str(uuid.uuid4()), "device_id": None, "device_token": "bb" * 32, "app": "com.other\\app"},
        {"id": uuid.uuid4(), "device_id": 12, "device_token": "cc\t" * 3, "app": "com.example"},
    ]
    # Columns of one plain kind (the bulk path's) are formatted in bulk: check those too.
    plain = [
        {"id": str(uuid.uuid4()), "device_id": 13 + n, "device_token": f"{n:02x}" * 32, "app": "com.example"}
        for n in range(3)
    ]
    with clean_db.begin() as connection:
        copied = records.copy_notifications(connection, per_row, shared=awkward)
        copied |= records.copy_notifications(connection, plain, shared=awkward)
    per_row += plain
    assert copied == {row["id"] for row in per_row}
    expected_engine = make_engine(f"sqlite:///{tmp_path}/expected.db", pool_size=1)
    migrate.upgrade(expected_engine)
    with expected_engine.begin() as connection:
        records.insert_notifications(
            connection, [{**awkward, **row, "id": uuid.UUID(str(row["id"]))} for row in per_row]
        )
    assert _stored(clean_db) == _stored(expected_engine)
    with clean_db.connect() as connection:
        assert records.status_counts(connection) == {"created": 6}


def test_campaign_records_count_once_however_often_their_outcome_is_written(clean_db: Engine) -> None:
    rows = [{**_record(None, f"{n:064x}"), "campaign": "shop/launch"} for n in range(4)]
    rows.append({**_record(None, "ff" * 32), "campaign": None})  # not a campaign's
    with clean_db.begin() as connection:
        records.insert_notifications(connection, rows)
    outcomes = [
        RecordUpdate(rows[0]["id"], NotificationStatus.SENT),
        RecordUpdate(rows[1]["id"], NotificationStatus.INVALID_TOKEN),
        RecordUpdate(rows[2]["id"], NotificationStatus.QUEUED, retry_count=1),  # a retry: not finished
        RecordUpdate(rows[4]["id"], NotificationStatus.SENT),
    ]
    # Written twice, as when a sender dies between writing and acknowledging and another one
    # redelivers the entries: the second write changes nothing, so counts nothing.
    for _ in range(2):
        with clean_db.begin() as connection:
            records.apply_outcomes(connection, outcomes)
    with clean_db.begin() as connection:
        records.apply_outcomes(connection, [RecordUpdate(rows[2]["id"], NotificationStatus.FAILED, retry_count=2)])
    with clean_db.connect() as connection:
        assert records.campaign_counts(connection, "shop/launch") == {"sent": 1, "invalid_token": 1, "failed": 1}
        assert records.campaign_counts(connection, "shop/other") == {}


def test_insert_skipping_existing_stores_what_a_plain_insert_stores(clean_db: Engine, tmp_path: Any) -> None:
    rows = [
        {**_record(None, "aa" * 32), "sound": "chime.caf", "badge": 2, "campaign": "ns/c", "expiration": 1_900_000_000},
        {**_record(7, "bb" * 32), "title": "tab\there \\ 'quoted' ✓", "data": {"list": [1, None, "x"], "n": 1.5}},
        {"id": uuid.uuid4(), "device_token": "cc" * 32, "app": "com.other"},  # the rest from the columns' defaults
    ]
    with clean_db.begin() as connection:
        assert records.insert_notifications(connection, rows, skip_existing=True) == {row["id"] for row in rows}
        assert records.insert_notifications(connection, rows, skip_existing=True) == set()
    expected_engine = make_engine(f"sqlite:///{tmp_path}/expected.db", pool_size=1)
    migrate.upgrade(expected_engine)
    with expected_engine.begin() as connection:
        for row in rows:  # one by one: the rows name different columns
            records.insert_notifications(connection, [row])
    assert _stored(clean_db) == _stored(expected_engine)
    with clean_db.connect() as connection:
        assert records.status_counts(connection) == {"created": 3}


def _store_engine(store: str, request: pytest.FixtureRequest, tmp_path: Any) -> Engine:
    if store == "postgresql":
        engine: Engine = request.getfixturevalue("clean_db")
        return engine
    engine = make_engine(f"sqlite:///{tmp_path}/noti.db")
    migrate.upgrade(engine)
    return engine


def _as_its_message_dates_it(created_at: datetime) -> datetime:
    """A record's created_at as the sender has it: whole ms, from the stream message."""
    return from_epoch_ms(epoch_ms(created_at))


@pytest.mark.parametrize("store", ["postgresql", "sqlite"])
def test_an_outcome_lands_whether_its_message_dated_the_record_or_not(
    store: str, request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    engine = _store_engine(store, request, tmp_path)
    created = datetime.now(UTC).replace(microsecond=654_321)  # not on a whole ms: the message rounds it down
    dated, undated, misdated = rows = [{**_record(None, f"{n:064x}"), "created_at": created} for n in range(3)]
    retried = {**_record(None, "ff" * 32), "created_at": created - timedelta(days=3)}  # a retry, days later
    rows.append(retried)
    with engine.begin() as connection:
        records.insert_notifications(connection, rows)
        known = {row["id"]: _as_its_message_dates_it(row["created_at"]) for row in (dated, undated, retried)}
        assert records.final_ids(connection, [row["id"] for row in rows], known) == set()
    outcomes = [
        RecordUpdate(dated["id"], NotificationStatus.SENT, status_code=200, created_at=known[dated["id"]]),
        RecordUpdate(undated["id"], NotificationStatus.SENT, status_code=200),  # an older writer's message
        # A wrong date (on PostgreSQL: another day's partition) must cost time, never the outcome.
        RecordUpdate(misdated["id"], NotificationStatus.SENT, created_at=known[dated["id"]] - timedelta(days=1)),
        RecordUpdate(retried["id"], NotificationStatus.SENT, retry_count=2, created_at=known[retried["id"]]),
    ]
    with engine.begin() as connection:
        applied = records.apply_outcomes(connection, outcomes)
    assert {a.id for a in applied} == {row["id"] for row in rows}
    with engine.connect() as connection:
        statuses = {row.id: row.status for row in connection.execute(select(Notification.id, Notification.status))}
        assert records.final_ids(connection, list(known), known) == set(known)
        assert records.final_ids(connection, [row["id"] for row in rows]) == {row["id"] for row in rows}
        assert records.status_counts(connection) == {"created": 4, "sent": 4}
    assert set(statuses.values()) == {NotificationStatus.SENT}
    # Applied again (a redelivery), dated or not, a final record is left alone and counted once.
    with engine.begin() as connection:
        assert records.apply_outcomes(connection, outcomes) == []


def test_a_dated_look_up_reaches_only_its_days_partition(clean_db: Engine) -> None:
    with clean_db.begin() as connection:
        assert retention.is_partitioned(connection)
        partitions = len(retention.partitions(connection))
    moment = _as_its_message_dates_it(datetime.now(UTC))
    values = {
        "ids": [uuid.uuid4()], "statuses": ["sent"], "retries": [0], "apns_ids": [None], "reasons": [None],
        "codes": [None], "sent": [None], "unique_ids": [None], "created": [moment], "lo": moment,
        "hi": moment + timedelta(milliseconds=1), "final": ["sent"],
    }  # fmt: skip

    def reached(statement: Any) -> int:
        explain = text("EXPLAIN " + statement.text).bindparams(bindparam("final", expanding=True))
        with clean_db.connect() as connection:
            plan = "\n".join(connection.execute(explain, values).scalars())
        return len(set(re.findall(r"\bnotifications_(?:p\d{8}|default)\b", plan)))

    assert partitions >= 3
    assert reached(records._PG_APPLY_DATED) == 1
    assert reached(records._PG_FINAL_DATED) == 1
    assert reached(records._PG_APPLY) > partitions  # every day's, and the default one


def test_records_whose_data_python_calls_equal_keep_each_its_own(clean_db: Engine) -> None:
    """1, 1.0 and true are one value to Python's == but three in JSON: a batch must not store one for all."""
    for values in ([1, True, 1.0], [{"n": 0}, {"n": False}], [[1], [True]]):
        rows = [{**_record(None, f"{n:064x}"), "data": {"v": value}} for n, value in enumerate(values)]
        with clean_db.begin() as connection:
            connection.execute(text("DELETE FROM notifications"))
            assert len(records.insert_notifications(connection, rows, skip_existing=True)) == len(values)
            query = select(Notification.data).order_by(Notification.device_token)
            stored = [d["v"] for d in connection.execute(query).scalars()]
        assert repr(stored) == repr(values)
