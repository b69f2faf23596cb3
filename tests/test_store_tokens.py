"""Tokens by kind in the store, on PostgreSQL and SQLite: idempotent upserts, and 410s by token."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select, update

from noti.live_activities import Targets, still_running
from noti.store import migrate, records
from noti.store.db import make_engine
from noti.store.models import Device, DeviceToken, Notification, NotificationStatus, TokenKind, utcnow
from noti.store.records import RecordUpdate
from noti.store.tokens import TokenFields, end_activities, kind_problem, upsert_tokens

APP = "com.example.app"


@pytest.fixture(params=["postgresql", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgresql":
        yield request.getfixturevalue("clean_db")
        return
    engine = make_engine(f"sqlite:///{tmp_path}/noti.db")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def _device(engine: Engine, token: str = "ab" * 32) -> int:
    with engine.begin() as connection:
        return int(
            connection.execute(
                insert(Device).values(app=APP, device_token=token, tags=[]).returning(Device.id)
            ).scalar_one()
        )


def test_one_token_per_device_kind_and_slot_and_a_repeat_is_no_new_token(store: Engine) -> None:
    device = _device(store)
    tokens = [
        TokenFields(device, TokenKind.PUSH_TO_START, "11" * 80, "Match"),
        TokenFields(device, TokenKind.PUSH_TO_START, "22" * 80, "Delivery"),
        TokenFields(device, TokenKind.UPDATE, "33" * 80, "Match", "m-1"),
        TokenFields(device, TokenKind.UPDATE, "44" * 80, "Match", "m-2"),
        TokenFields(device, TokenKind.VOIP, "55" * 32),
    ]
    with store.begin() as connection:
        first = upsert_tokens(connection, tokens)
    with store.begin() as connection:
        again = upsert_tokens(connection, [*tokens[:4], TokenFields(device, TokenKind.VOIP, "66" * 32)])
    assert [s.created for s in first] == [True] * 5 and [s.created for s in again] == [False] * 5
    assert [s.id for s in first] == [s.id for s in again]
    with store.connect() as connection:
        assert connection.execute(select(DeviceToken.token).where(DeviceToken.kind == TokenKind.VOIP)).scalar() == (
            "66" * 32
        )  # the device's new VoIP token replaced the old one


def test_a_dated_410_retires_a_token_registered_before_it_and_keeps_one_registered_after(store: Engine) -> None:
    device = _device(store)
    with store.begin() as connection:
        old, fresh = upsert_tokens(connection, [
            TokenFields(device, TokenKind.UPDATE, "33" * 80, "Match", "m-1"),
            TokenFields(device, TokenKind.UPDATE, "44" * 80, "Match", "m-2"),
        ])  # fmt: skip
        connection.execute(update(DeviceToken).where(DeviceToken.id == old.id).values(
            registered_at=utcnow() - timedelta(hours=2)))  # fmt: skip
    ids = [uuid.uuid4(), uuid.uuid4()]
    with store.begin() as connection:
        records.insert_notifications(connection, [
            {"id": ids[0], "device_id": device, "token_id": old.id, "device_token": "33" * 80, "app": APP,
             "status": NotificationStatus.QUEUED},
            {"id": ids[1], "device_id": device, "token_id": fresh.id, "device_token": "44" * 80, "app": APP,
             "status": NotificationStatus.QUEUED},
        ])  # fmt: skip
        an_hour_ago = utcnow() - timedelta(hours=1)
        records.apply_outcomes(connection, [
            RecordUpdate(id, NotificationStatus.INVALID_TOKEN, apns_reason="Unregistered", status_code=410,
                         invalidated_at=an_hour_ago) for id in ids
        ])  # fmt: skip
    with store.connect() as connection:
        active = dict(connection.execute(select(DeviceToken.id, DeviceToken.is_active)).all())
        statuses = set(connection.execute(select(Notification.status)).scalars())
        device_active = connection.execute(select(Device.is_active)).scalar_one()
    assert active == {old.id: False, fresh.id: True}
    assert statuses == {NotificationStatus.INVALID_TOKEN} and device_active  # the device token is not the one gone


@pytest.mark.parametrize(
    ("kind", "attributes_type", "activity_id", "field"),
    [
        (TokenKind.PUSH_TO_START, None, None, "attributes_type"),
        (TokenKind.PUSH_TO_START, "Match", "m-1", "activity_id"),
        (TokenKind.UPDATE, "Match", None, "activity_id"),
        (TokenKind.UPDATE, None, "m-1", "attributes_type"),
        (TokenKind.VOIP, None, "m-1", "activity_id"),
    ],
)
def test_a_token_without_what_identifies_its_kind_is_refused(
    kind: TokenKind, attributes_type: str | None, activity_id: str | None, field: str
) -> None:
    problem = kind_problem(kind, attributes_type, activity_id)
    assert problem is not None and problem[0] == field


def test_each_kind_is_sent_with_its_push_type() -> None:
    assert {kind: kind.push_type for kind in TokenKind} == {
        TokenKind.PUSH_TO_START: "liveactivity", TokenKind.UPDATE: "liveactivity", TokenKind.VOIP: "voip",
    }  # fmt: skip


def test_an_ended_activity_keeps_its_first_end_and_stays_ended_when_its_token_is_registered_again(
    store: Engine,
) -> None:
    device = _device(store)
    fields = TokenFields(device, TokenKind.UPDATE, "7c" * 80, "DeliveryAttributes", "A-1")
    with store.begin() as connection:
        (stored,) = upsert_tokens(connection, [fields])
        end_activities(connection, [stored.id])
    with store.connect() as connection:
        first = connection.execute(select(DeviceToken.ended_at)).scalar_one()
    with store.begin() as connection:
        end_activities(connection, [stored.id])  # an end sent again
        upsert_tokens(connection, [fields])  # a late registration of the ended activity's token
    with store.connect() as connection:
        row = connection.execute(select(DeviceToken.ended_at, DeviceToken.is_active)).one()
    assert first is not None and row.ended_at == first and row.is_active is True  # kept, not deleted


def test_an_update_to_an_ended_activity_is_refused_and_an_end_may_go_again() -> None:
    @dataclass
    class Row:
        id: int
        ended_at: object

    ended, running = Row(1, utcnow()), Row(2, None)
    update_one = Targets(event="update", activity_id="A-1")
    assert still_running(update_one, [ended])[0] == []
    assert "has ended" in (still_running(update_one, [ended])[1] or "")
    assert still_running(update_one, [ended, running]) == ([running], None)
    assert still_running(Targets(event="end", activity_id="A-1"), [ended]) == ([ended], None)
