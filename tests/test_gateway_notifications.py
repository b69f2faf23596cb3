"""``/api/notifications/``: single and bulk sends reach the record table and the credential's stream."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import fastapi.dependencies.utils
import httpx
import pytest
import redis
from sqlalchemy import Engine, func, select, update

from harness.gateway import APP, credential_of, serve, stream_of
from noti.queue import QueuedNotification, epoch_ms
from noti.store.models import Notification

STREAM = stream_of(APP, "sandbox")


def token(n: int) -> str:
    return f"{n:064x}"


async def register(client: httpx.AsyncClient, n: int, **extra: object) -> None:
    response = await client.post("/api/devices/", json={"device_token": token(n), "app": APP, **extra})
    assert response.status_code == 201, response.text


def stream_messages(r: redis.Redis, stream: str = STREAM) -> list[QueuedNotification]:
    return [QueuedNotification.decode(fields) for _, fields in r.xrange(stream)]


def record_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(Notification)).scalar_one())


async def test_send_writes_a_queued_record_and_adds_it_to_the_transactional_stream(
    client: httpx.AsyncClient, clean_db: Engine, clean_redis: redis.Redis
) -> None:
    await register(client, 1)
    response = await client.post(
        "/api/notifications/",
        json={"device_token": token(1), "title": "Hi", "body": "There", "badge": 3, "data": {"order": 7}},
    )
    assert response.status_code == 202, response.text
    id = uuid.UUID(response.json()["id"])
    assert response.json()["status"] == "queued"

    with clean_db.connect() as connection:
        record = connection.execute(select(Notification).where(Notification.id == id)).one()
    assert (record.status, record.app, record.title, record.badge, record.data) == (
        "queued",
        APP,
        "Hi",
        3,
        {"order": 7},
    )
    assert record.queued_at is not None and record.device_id is not None
    [message] = stream_messages(clean_redis)
    assert (message.id, message.device_token, message.app, message.device_id) == (id, token(1), APP, record.device_id)
    assert message.content["title"] == "Hi" and message.content["data"] == {"order": 7}

    read = await client.get(f"/api/notifications/{id}/")
    assert read.status_code == 200 and read.json()["status"] == "queued"
    assert response.json()["credential"] == read.json()["credential"] == record.credential == credential_of(APP)
    missing = await client.get(f"/api/notifications/{uuid.uuid4()}")
    assert missing.status_code == 404


async def test_unregistered_token_needs_an_app_and_inactive_devices_are_refused(
    client: httpx.AsyncClient, clean_redis: redis.Redis
) -> None:
    unknown = await client.post("/api/notifications/", json={"device_token": token(5), "body": "x"})
    assert unknown.status_code == 422
    assert "register it or give app" in unknown.json()["detail"]

    with_app = await client.post("/api/notifications/", json={"device_token": token(5), "app": APP, "body": "x"})
    assert with_app.status_code == 202
    production = await client.post(
        "/api/notifications/",
        json={"device_token": token(5), "app": APP, "environment": "production", "body": "x"},
    )
    assert production.status_code == 202
    assert len(stream_messages(clean_redis)) == 1
    assert len(stream_messages(clean_redis, stream_of(APP, "production"))) == 1

    await register(client, 6, is_active=False)
    inactive = await client.post("/api/notifications/", json={"device_token": token(6), "body": "x"})
    assert inactive.status_code == 422 and "inactive" in inactive.json()["detail"]


async def test_oversize_payload_is_refused_before_it_is_queued(
    client: httpx.AsyncClient, clean_db: Engine, clean_redis: redis.Redis
) -> None:
    await register(client, 1)
    big = {"device_token": token(1), "body": "x", "data": {"blob": "y" * 4100}}
    response = await client.post("/api/notifications/", json=big)
    assert response.status_code == 422
    assert "4096" in response.json()["detail"]
    voip = await client.post("/api/notifications/", json={**big, "push_type": "voip"})
    assert voip.status_code == 202
    assert record_count(clean_db) == 1 and len(stream_messages(clean_redis)) == 1


async def test_idempotency_key_returns_the_first_id_without_a_second_send(
    client: httpx.AsyncClient, clean_db: Engine, clean_redis: redis.Redis
) -> None:
    await register(client, 1)
    body = {"device_token": token(1), "body": "once"}
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post("/api/notifications/", json=body, headers=headers)
    again = await client.post("/api/notifications", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["id"] == again.json()["id"]
    # The same key for another request is refused, and sends nothing.
    changed = await client.post("/api/notifications/", json={**body, "body": "twice"}, headers=headers)
    assert changed.status_code == 422
    assert changed.json()["errors"] == [
        {
            "field": "header.Idempotency-Key",
            "message": "this key was used for a different request; a new request needs a new key",
        }
    ]
    as_bulk = await client.post("/api/notifications/bulk/", json={"device_tokens": [token(1)]}, headers=headers)
    assert as_bulk.status_code == 422
    assert record_count(clean_db) == 1 and len(stream_messages(clean_redis)) == 1

    # racing retries: one record, one message
    racing = await asyncio.gather(
        *(client.post("/api/notifications/", json=body, headers={"Idempotency-Key": "order-43"}) for _ in range(20))
    )
    assert sorted(r.status_code for r in racing) == [200] * 19 + [202]
    assert len({r.json()["id"] for r in racing}) == 1
    assert record_count(clean_db) == 2
    assert len(stream_messages(clean_redis)) == 2
    with clean_db.connect() as connection:
        keys = set(connection.execute(select(Notification.idempotency_key)).scalars())
    assert {k.split(":", 1)[1] for k in keys} == {"order-42", "order-43"}


async def test_concurrent_single_sends_each_get_their_own_record_and_message(
    client: httpx.AsyncClient, clean_db: Engine, clean_redis: redis.Redis
) -> None:
    for n in range(5):
        await register(client, n)
    responses = await asyncio.gather(
        *(client.post("/api/notifications/", json={"device_token": token(n % 5), "body": str(n)}) for n in range(200))
    )
    assert {r.status_code for r in responses} == {202}
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 200
    assert record_count(clean_db) == 200
    assert {str(m.id) for m in stream_messages(clean_redis)} == ids


async def test_bulk_to_tokens_and_owners_writes_one_record_per_device_and_lists_the_misses(
    client: httpx.AsyncClient, clean_db: Engine, clean_redis: redis.Redis
) -> None:
    for n in range(4):
        await register(client, n, owner="alice" if n < 2 else "bob")
    await register(client, 9, is_active=False)
    response = await client.post(
        "/api/notifications/bulk",
        json={"device_tokens": [token(0), token(1), token(2), token(9), token(77)], "title": "Sale"},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["count"] == 3
    assert {n["device_token"] for n in body["notifications"]} == {token(0), token(1), token(2)}
    assert (body["not_found"], body["inactive"]) == ([token(77)], [token(9)])
    # The answer, the records and the stream agree on every id; ids are random (version 4) UUIDs.
    answered = {uuid.UUID(n["id"]): n["device_token"] for n in body["notifications"]}
    assert all(id.version == 4 and str(id) in {n["id"] for n in body["notifications"]} for id in answered)
    with clean_db.connect() as connection:
        stored = {r.id: r for r in connection.execute(select(Notification))}
    queued = {m.id: m for m in stream_messages(clean_redis)}
    assert set(answered) == set(stored) == set(queued)
    for id, device_token in answered.items():
        assert stored[id].device_token == queued[id].device_token == device_token
        assert stored[id].device_id == queued[id].device_id is not None
        assert (stored[id].status, stored[id].title, queued[id].content["title"]) == ("queued", "Sale", "Sale")

    by_owner = await client.post("/api/notifications/bulk/", json={"owners": ["alice", "nobody"], "body": "hi"})
    assert by_owner.status_code == 202
    assert by_owner.json()["count"] == 2 and by_owner.json()["not_found"] == ["nobody"]
    await register(client, 0xABCDEF)
    upper = await client.post("/api/notifications/bulk/", json={"device_tokens": [token(0xABCDEF).upper()]})
    assert upper.json()["notifications"][0]["device_token"] == token(0xABCDEF) != token(0xABCDEF).upper()
    assert record_count(clean_db) == 6
    assert len(stream_messages(clean_redis)) == 6

    retried = [
        await client.post(
            "/api/notifications/bulk/", json={"owners": ["bob"], "body": "b"}, headers={"Idempotency-Key": "k1"}
        )
        for _ in range(2)
    ]
    assert retried[0].json()["notifications"] == retried[1].json()["notifications"]
    other_audience = await client.post(
        "/api/notifications/bulk/", json={"owners": ["alice"], "body": "b"}, headers={"Idempotency-Key": "k1"}
    )
    assert other_audience.status_code == 422 and "Idempotency-Key" in other_audience.json()["detail"]
    reordered = [
        await client.post(
            "/api/notifications/bulk/", json={"device_tokens": tokens, "body": "c"}, headers={"Idempotency-Key": "k2"}
        )
        for tokens in ([token(0), token(1)], [token(1), token(0), token(1)])
    ]
    assert [r.status_code for r in reordered] == [202, 202]
    assert reordered[0].json()["notifications"] == reordered[1].json()["notifications"]
    assert record_count(clean_db) == 10 and len(stream_messages(clean_redis)) == 10


async def test_bulk_to_owners_takes_their_earlier_name_owner_ids_too(client: httpx.AsyncClient) -> None:
    await register(client, 7, owner="dora")
    earlier = await client.post("/api/notifications/bulk/", json={"owner_ids": ["dora", "nobody"], "body": "hi"})
    assert earlier.status_code == 202, earlier.text
    assert earlier.json()["count"] == 1 and earlier.json()["not_found"] == ["nobody"]
    both = await client.post("/api/notifications/bulk/", json={"owners": ["dora"], "owner_ids": ["dora"]})
    assert both.status_code == 422


async def test_bulk_takes_one_audience_of_at_most_ten_thousand(client: httpx.AsyncClient) -> None:
    both = await client.post("/api/notifications/bulk/", json={"device_tokens": [token(1)], "owners": ["a"]})
    assert both.status_code == 422 and "exactly one" in both.json()["detail"]
    too_many = await client.post("/api/notifications/bulk/", json={"device_tokens": [token(1)] * 10_001})
    assert too_many.status_code == 422
    assert too_many.json()["errors"][0]["field"] == "body.device_tokens"


async def test_history_filters_by_status_token_campaign_and_time_with_cursor_pages(
    client: httpx.AsyncClient, clean_db: Engine
) -> None:
    for n in range(3):
        await register(client, n)
    ids = []
    for n in range(9):
        response = await client.post("/api/notifications/", json={"device_token": token(n % 3), "body": str(n)})
        ids.append(response.json()["id"])
    base = datetime(2026, 1, 1, tzinfo=UTC)
    with clean_db.begin() as connection:
        for n, id in enumerate(ids):
            connection.execute(
                update(Notification)
                .where(Notification.id == uuid.UUID(id))
                .values(
                    created_at=base + timedelta(minutes=n),
                    status="sent" if n % 2 else "queued",
                    campaign="shop/launch" if n == 4 else None,
                )
            )

    async def listed(**params: object) -> list[str]:
        response = await client.get("/api/notifications/", params=params)
        assert response.status_code == 200, response.text
        return [n["id"] for n in response.json()["results"]]

    newest_first = list(reversed(ids))
    assert await listed() == newest_first
    assert await listed(status="sent") == [ids[n] for n in (7, 5, 3, 1)]
    assert await listed(device_token=token(1)) == [ids[n] for n in (7, 4, 1)]
    assert await listed(campaign="shop/launch") == [ids[4]]
    window = {"since": (base + timedelta(minutes=2)).isoformat(), "until": (base + timedelta(minutes=5)).isoformat()}
    assert await listed(**window) == [ids[4], ids[3], ids[2]]

    seen: list[str] = []
    params: dict[str, object] = {"limit": 4}
    while True:
        page = (await client.get("/api/notifications/", params=params)).json()
        seen += [n["id"] for n in page["results"]]
        if not page["next_cursor"]:
            break
        params = {"limit": 4, "cursor": page["next_cursor"]}
    assert seen == newest_first

    bad = await client.get("/api/notifications/", params={"status": "lost"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.status"


async def test_history_refuses_page_and_page_size_naming_each_and_pointing_at_cursor(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/notifications/", params={"page": 2, "page_size": 10, "status": "sent"})
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == ["query.page", "query.page_size"]
    assert all("?cursor=" in e["message"] and "?limit=" in e["message"] for e in errors)
    stats = await client.get("/api/notifications/stats/", params={"from": "2026-01-01"})
    assert stats.status_code == 422
    assert stats.json()["errors"][0] == {
        "field": "query.from",
        "message": "unknown query parameter: this route takes since, until",
    }


async def test_a_send_without_a_json_content_type_is_told_to_send_one(client: httpx.AsyncClient) -> None:
    body = b'{"device_token": "' + token(1).encode() + b'", "app": "com.example.app", "body": "hi"}'
    response = await client.post("/api/notifications/", content=body, headers={"content-type": "text/plain"})
    assert response.status_code == 422
    assert "content-type: application/json (this one came as text/plain)" in response.json()["detail"]


async def test_a_send_no_credential_serves_is_refused_at_the_door_and_nothing_is_written(
    client: httpx.AsyncClient, clean_db: Engine, clean_redis: redis.Redis
) -> None:
    await register(client, 7)
    await client.post("/api/devices/", json={"device_token": token(8), "app": "com.nope"})
    asks = [
        {"device_token": token(9), "app": "com.nope", "body": "x"},  # an unregistered token
        {"device_token": token(8), "body": "x"},  # a device of an app nobody serves
    ]
    for ask in asks:
        refused = await client.post("/api/notifications/", json=ask)
        assert refused.status_code == 422, refused.text
        assert "no credential serves app com.nope in environment sandbox" in refused.json()["detail"]
    bulk = await client.post("/api/notifications/bulk/", json={"device_tokens": [token(7), token(8)], "body": "x"})
    assert bulk.status_code == 422 and "no credential serves app com.nope" in bulk.json()["detail"]
    by_owner = await client.post("/api/notifications/bulk/", json={"owner_ids": ["x"], "app": "com.nope", "body": "x"})
    assert by_owner.status_code == 422
    assert record_count(clean_db) == 0
    assert [key for key in clean_redis.scan_iter("noti:*:tx")] == []


async def test_each_send_goes_to_the_credential_serving_its_app_and_says_which(
    client: httpx.AsyncClient, clean_db: Engine, clean_redis: redis.Redis
) -> None:
    served_by = serve(clean_redis, "com.tenant.app", credential="team-b/push")
    await register(client, 10)
    await client.post("/api/devices/", json={"device_token": token(11), "app": "com.tenant.app"})
    bulk = await client.post("/api/notifications/bulk/", json={"device_tokens": [token(10), token(11)], "body": "x"})
    assert bulk.status_code == 202, bulk.text
    credentials = {item["device_token"]: item["credential"] for item in bulk.json()["notifications"]}
    assert credentials == {token(10): credential_of(APP), token(11): served_by}
    assert [m.device_token for m in stream_messages(clean_redis)] == [token(10)]
    assert [m.device_token for m in stream_messages(clean_redis, "noti:{team-b/push}:tx")] == [token(11)]
    history = (await client.get("/api/notifications/", params={"app": "com.tenant.app"})).json()["results"]
    assert [item["credential"] for item in history] == [served_by]


async def test_every_queued_message_dates_its_record_exactly(
    client: httpx.AsyncClient, clean_db: Engine, clean_redis: redis.Redis
) -> None:
    # The sender finds a record by id and created_at (one day's partition): a message dated otherwise would
    # make its outcome look in the wrong place. Single, idempotent single, bulk (COPY) and idempotent bulk.
    for n in range(3):
        await register(client, n)
    sends = [
        await client.post("/api/notifications/", json={"device_token": token(0), "body": "one"}),
        await client.post(
            "/api/notifications/", json={"device_token": token(1), "body": "two"}, headers={"Idempotency-Key": "s"}
        ),
        await client.post("/api/notifications/bulk", json={"device_tokens": [token(0), token(2)], "body": "all"}),
        await client.post(
            "/api/notifications/bulk", json={"device_tokens": [token(1), token(2)]}, headers={"Idempotency-Key": "b"}
        ),
    ]
    assert [response.status_code for response in sends] == [202] * 4
    with clean_db.connect() as connection:
        rows = connection.execute(select(Notification.id, Notification.created_at)).all()
    stored = {row.id: row.created_at for row in rows}
    queued = {message.id: message.created_at for message in stream_messages(clean_redis)}
    assert len(stored) == len(queued) == 6
    assert queued == {id: epoch_ms(created) for id, created in stored.items()}


async def test_a_send_is_answered_without_a_worker_thread_hand_off(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every dependency of the send route runs on the event loop: a plain-function dependency would make
    FastAPI hand each request to a worker thread and back (issue 13: single sends/s per worker)."""
    handed_off: list[object] = []

    async def recording(func: object, *args: object, **kwargs: object) -> object:
        handed_off.append(func)
        return func(*args, **kwargs)  # type: ignore[operator]

    monkeypatch.setattr(fastapi.dependencies.utils, "run_in_threadpool", recording)
    await register(client, 1)
    handed_off.clear()
    response = await client.post("/api/notifications/", json={"device_token": token(1), "title": "Hi"})
    assert response.status_code == 202, response.text
    assert handed_off == []
