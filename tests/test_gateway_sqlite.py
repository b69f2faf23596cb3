"""The gateway on SQLite (the ``noti dev`` store): the same routes work end to end."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings

from harness.gateway import APP, bulk_batches, check_bulk_registration, gateway_settings, serve_test_apps, stream_of
from noti.gateway.app import create_app
from noti.gateway.auth import Scope, create_api_key
from noti.store import migrate
from noti.store.db import make_engine


@pytest.fixture
async def sqlite_client(tmp_path: Path, clean_redis: redis.Redis, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    url = f"sqlite:///{tmp_path}/noti.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    key = create_api_key(engine, "dev", [Scope.SEND, Scope.READ])
    serve_test_apps(clean_redis)
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
    assert clean_redis.xlen(stream_of(APP, "sandbox")) == 5


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=bulk_batches)
async def test_bulk_registration_of_any_mix_on_sqlite_stores_exactly_the_valid_devices(
    sqlite_client: httpx.AsyncClient, batch: list[tuple[bool, Any]]
) -> None:
    await check_bulk_registration(sqlite_client, batch, next(_example_apps))


_example_apps = ((f"com.example.lite{n}a", f"com.example.lite{n}b") for n in itertools.count())


async def test_bulk_registration_of_10000_devices_with_owners_on_sqlite(sqlite_client: httpx.AsyncClient) -> None:
    devices = [{"device_token": f"{n:064x}", "app": APP, "owner": f"user-{n % 2500}"} for n in range(10_000)]
    first = (await sqlite_client.post("/api/devices/bulk/", json={"devices": devices})).json()
    assert (first["created"], first["updated"], first["failed"]) == (10_000, 0, 0)
    again = (await sqlite_client.post("/api/devices/bulk/", json={"devices": devices[:10]})).json()
    assert (again["created"], again["updated"]) == (0, 10)
    owned = (await sqlite_client.get("/api/devices/", params={"owner": "user-7"})).json()["results"]
    assert [d["device_token"] for d in owned] == [f"{n:064x}" for n in (7, 2507, 5007, 7507)]
