"""A record keeps all of a notification's content: what is queued again from it says what the first send said."""

from __future__ import annotations

import uuid
from dataclasses import fields
from types import SimpleNamespace
from typing import Any

import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from harness.contents import OPTIONAL, as_json_numbers, contents
from harness.gateway import APP, StoreGateway, credential_of
from noti.apns.payload import NotificationContent, build_headers, payload_dict
from noti.dev.stack import requeue_unfinished
from noti.gateway.auth import Scope, create_api_key
from noti.gateway.schemas import Content
from noti.queue import QueuedNotification, StreamKeys
from noti.store import records
from noti.store.content import COLUMNS, EXTRA_FIELDS, record_columns, record_content
from noti.store.models import Notification, NotificationStatus
from noti.store.records import RecordUpdate

TOKEN = "c3" * 32
KEYS = StreamKeys(credential_of(APP))  # the environment the test gateway sends to by default


def queued_content(content: dict[str, Any]) -> dict[str, Any]:
    """What the gateway queues for a request with ``content``: its fields, the push type always."""
    return NotificationContent.from_dict({"push_type": "alert", **content}).to_dict()


def same_notification(content: dict[str, Any]) -> dict[str, Any]:
    """``content`` without a priority that is its push type's default: it is sent with that priority either way."""
    given = NotificationContent.from_dict(content)
    unset = NotificationContent.from_dict({k: v for k, v in content.items() if k != "priority"})
    if given.effective_priority == unset.effective_priority:
        return unset.to_dict()
    return given.to_dict()


def test_every_content_field_the_api_takes_has_a_place_in_the_record() -> None:
    api = set(Content.model_fields)
    assert api == {f.name for f in fields(NotificationContent)}
    assert set(COLUMNS) | set(EXTRA_FIELDS) == api and not set(COLUMNS) & set(EXTRA_FIELDS)
    assert set(OPTIONAL) == api  # the tests' strategies draw every field


def test_a_notification_that_sets_only_columns_leaves_the_extra_column_empty() -> None:
    assert record_columns({"push_type": "alert", "title": "Hi"})["extra_content"] is None


def test_the_record_keeps_the_priority_apns_is_sent() -> None:
    assert record_columns({"push_type": "background", "data": {"x": 1}})["priority"] == 5
    assert record_columns({"push_type": "liveactivity", "event": "update"})["priority"] == 5
    assert record_columns({"push_type": "liveactivity", "event": "update", "priority": 10})["priority"] == 10
    assert record_columns({"push_type": "alert", "title": "Hi"})["priority"] == 10


@given(contents())
def test_a_content_read_back_from_its_record_sends_the_same_notification(content: dict[str, Any]) -> None:
    queued = queued_content(content)
    read_back = record_content(SimpleNamespace(**record_columns(queued)))
    assert read_back == same_notification(queued)
    first, again = NotificationContent.from_dict(queued), NotificationContent.from_dict(read_back)
    assert build_headers(again, APP) == build_headers(first, APP)
    assert payload_dict(again) == payload_dict(first)


def entries_of(client: redis.Redis, id: uuid.UUID) -> list[QueuedNotification]:
    entries = [QueuedNotification.decode(fields) for _, fields in client.xrange(KEYS.transactional_stream)]
    return [entry for entry in entries if entry.id == id]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(content=contents(st.just(frozenset(OPTIONAL))))
async def test_a_send_with_every_field_set_is_queued_again_unchanged_by_the_dev_restart_and_the_admin_resend(
    any_store: StoreGateway, clean_redis: redis.Redis, redis_url: str, content: dict[str, Any]
) -> None:
    if "ops" not in any_store.keys:
        any_store.keys["ops"] = create_api_key(any_store.engine, "ops", [Scope.ADMIN])
    async with any_store.client(any_store.key("backend")) as http:
        answer = await http.post("/api/notifications/", json={"device_token": TOKEN, "app": APP, **content})
    assert answer.status_code == 202, answer.text
    id = uuid.UUID(answer.json()["id"])
    [sent] = entries_of(clean_redis, id)
    assert sent.content == queued_content(content)
    expected = as_json_numbers(same_notification(sent.content))

    # `noti dev` after a restart: its Redis forgot the queue, the unfinished record is queued again.
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await requeue_unfinished(any_store.engine, client, KEYS, APP) >= 1
    finally:
        await client.aclose()
    _, requeued = entries_of(clean_redis, id)
    assert (requeued.device_token, requeued.app) == (TOKEN, APP)
    assert requeued.created_at == sent.created_at is not None  # dated as stored: its outcome finds the record
    assert as_json_numbers(requeued.content) == expected

    # The admin's resend of the record once it failed: a new notification with the same content.
    with any_store.engine.begin() as connection:
        records.apply_outcomes(connection, [RecordUpdate(id, NotificationStatus.FAILED, apns_reason="Shutdown")])
    async with any_store.client("") as browser:
        browser.headers.pop("Authorization")
        browser.headers["Origin"] = str(browser.base_url).rstrip("/")
        login = await browser.post("/admin/login", data={"username": "ops", "password": any_store.keys["ops"]})
        assert login.status_code == 302, login.text
        resent = await browser.post(f"/admin/notification/resend/{id}")
    assert resent.status_code == 303, resent.text
    new_id = uuid.UUID(resent.headers["location"].rstrip("/").rsplit("/", 1)[-1])
    assert new_id != id
    [again] = entries_of(clean_redis, new_id)
    assert (again.device_token, again.app) == (TOKEN, APP)
    assert as_json_numbers(again.content) == expected
    with any_store.engine.connect() as connection:
        stored = connection.execute(select(Notification.__table__).where(Notification.id == new_id)).one()
    assert as_json_numbers(record_content(stored)) == expected
