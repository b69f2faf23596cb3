"""The gateway on SQLite (the ``noti dev`` store): the same routes work end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from gateway_support import APP, gateway_settings

from noti.gateway.app import create_app
from noti.gateway.auth import Scope, create_api_key
from noti.queue import StreamKeys
from noti.store import migrate
from noti.store.db import make_engine


@pytest.fixture
async def sqlite_client(tmp_path: Path, clean_redis: redis.Redis, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    url = f"sqlite:///{tmp_path}/noti.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    key = create_api_key(engine, "dev", [Scope.SEND, Scope.READ])
    client = aioredis.Redis.from_url(redis_url)
    app = create_app(gateway_settings(url, redis_url), engine=engine, redis=client)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw", headers={"Authorization": f"Bearer {key}"}
        ) as http,
    ):
        yield http
    await client.aclose()
    engine.dispose()


async def test_devices_sends_bulk_history_and_stats_work_on_sqlite(
    sqlite_client: httpx.AsyncClient, clean_redis: redis.Redis
) -> None:
    http = sqlite_client
    for n in range(3):
        device = {"device_token": f"{n:064x}", "app": APP, "owner": "ann", "tags": ["vip"] if n else []}
        assert (await http.post("/api/devices/", json=device)).status_code == 201
    tagged = (await http.get("/api/devices/", params={"tag": "vip"})).json()["results"]
    assert [d["device_token"] for d in tagged] == [f"{1:064x}", f"{2:064x}"]

    single = await http.post("/api/notifications/", json={"device_token": f"{0:064x}", "body": "hi"})
    assert single.status_code == 202
    bulk = await http.post("/api/notifications/bulk/", json={"owner_ids": ["ann"], "body": "all"})
    assert bulk.status_code == 202 and bulk.json()["count"] == 3
    replay = [
        await http.post(
            "/api/notifications/", json={"device_token": f"{1:064x}", "body": "x"}, headers={"Idempotency-Key": "a"}
        )
        for _ in range(2)
    ]
    assert [r.status_code for r in replay] == [202, 200]

    history = (await http.get("/api/notifications/", params={"limit": 2})).json()
    assert len(history["results"]) == 2 and history["next_cursor"]
    rest_response = await http.get("/api/notifications/", params={"cursor": history["next_cursor"]})
    rest = rest_response.json()
    assert len(history["results"]) + len(rest["results"]) == 5
    stats = (await http.get("/api/notifications/stats/")).json()
    assert stats["overall"]["total"] == 5 and stats["overall"]["in_flight"] == 5
    assert clean_redis.xlen(StreamKeys(APP, "sandbox").transactional_stream) == 5
