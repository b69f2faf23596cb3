"""Input a careless or hostile client sends: refused with a 422 naming the field, never a 500, never stored."""

from __future__ import annotations

import httpx
import redis
from gateway_fixtures import StoreGateway
from sqlalchemy import func, select

from noti.store.models import Device, Notification

TOKEN = "ab" * 32
BAD_APPS = ["com.example probe", "a\r\nX-Injected: 1", "x}:tx{", "a<script>alert(1)</script>", "a/../../etc/passwd"]


def fields(response: httpx.Response) -> set[str]:
    assert response.status_code == 422, response.text
    return {error["field"] for error in response.json()["errors"]}


def stored(store: StoreGateway, table: type[Device] | type[Notification]) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


async def test_an_app_that_is_no_bundle_id_is_refused_in_bodies_and_filters(
    any_store: StoreGateway, clean_redis: redis.Redis
) -> None:
    async with any_store.client(any_store.new_key()) as http:
        for app in BAD_APPS:
            assert fields(await http.post("/api/devices/", json={"device_token": TOKEN, "app": app})) == {"body.app"}
            send = {"device_token": TOKEN, "app": app, "body": "x"}
            assert fields(await http.post("/api/notifications/", json=send)) == {"body.app"}
            bulk = {"device_tokens": [TOKEN], "app": app, "body": "x"}
            assert fields(await http.post("/api/notifications/bulk/", json=bulk)) == {"body.app"}
            for path in ("/api/devices/", "/api/notifications/", f"/api/devices/{TOKEN}/"):
                assert fields(await http.get(path, params={"app": app})) == {"query.app"}
    assert stored(any_store, Device) == stored(any_store, Notification) == 0
    assert clean_redis.keys("noti:*") == []
