"""``/api/devices/``: register by token, filter and page, read, change, delete."""

from __future__ import annotations

import httpx
from gateway_support import APP
from sqlalchemy import Engine, select

from noti.store.models import DeviceOwner

TOKEN = "ab" * 32


def token(n: int) -> str:
    return f"{n:064x}"


async def test_register_creates_owner_then_same_token_updates(client: httpx.AsyncClient, clean_db: Engine) -> None:
    first = await client.post(
        "/api/devices/", json={"device_token": TOKEN.upper(), "app": APP, "owner": "user-1", "tags": ["beta"]}
    )
    assert first.status_code == 201, first.text
    device = first.json()
    assert (device["device_token"], device["owner"], device["tags"], device["is_active"]) == (
        TOKEN, "user-1", ["beta"], True,
    )  # fmt: skip

    again = await client.post(
        "/api/devices/", json={"device_token": TOKEN, "app": APP, "owner": "user-2", "is_active": False}
    )
    assert again.status_code == 200
    assert again.json()["id"] == device["id"]
    assert (again.json()["owner"], again.json()["is_active"], again.json()["tags"]) == ("user-2", False, [])
    with clean_db.connect() as connection:
        owners = set(connection.execute(select(DeviceOwner.external_id)).scalars())
    assert owners == {"user-1", "user-2"}


async def test_apns_tokens_that_are_not_hex_whole_bytes_of_64_plus_are_refused_with_the_reason(
    client: httpx.AsyncClient,
) -> None:
    cases = {
        "ab" * 10: "at least 64",
        "zz" * 32: "only hex digits",
        "a" * 65: "even number",
    }
    for bad, reason in cases.items():
        response = await client.post("/api/devices/", json={"device_token": bad, "app": APP})
        assert response.status_code == 422
        body = response.json()
        assert reason in body["detail"]
        assert body["errors"][0]["field"] == "body"
    android = await client.post(
        "/api/devices/", json={"device_token": "fcm:token-1", "app": APP, "platform": "android"}
    )
    assert android.status_code == 201


async def test_registration_without_app_needs_a_default_app(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/devices/", json={"device_token": TOKEN})
    assert response.status_code == 422
    assert "NOTI_GATEWAY_DEFAULT_APP" in response.json()["detail"]
    assert response.json()["errors"] == [{"field": "body.app", "message": response.json()["errors"][0]["message"]}]


async def test_list_filters_by_owner_platform_active_tag_and_pages_with_a_cursor(client: httpx.AsyncClient) -> None:
    for n in range(7):
        body = {
            "device_token": token(n),
            "app": APP,
            "owner": "even" if n % 2 == 0 else "odd",
            "tags": ["vip"] if n < 3 else [],
            "is_active": n != 6,
        }
        assert (await client.post("/api/devices/", json=body)).status_code == 201

    async def tokens(**params: object) -> list[str]:
        response = await client.get("/api/devices/", params=params)
        assert response.status_code == 200, response.text
        return [d["device_token"] for d in response.json()["results"]]

    assert await tokens(owner="even") == [token(0), token(2), token(4), token(6)]
    assert await tokens(tag="vip") == [token(0), token(1), token(2)]
    assert await tokens(active="false") == [token(6)]
    assert await tokens(platform="android") == []
    assert await tokens(owner="even", active=True, tag="vip") == [token(0), token(2)]

    seen: list[str] = []
    params: dict[str, object] = {"limit": 3}
    while True:
        page = (await client.get("/api/devices", params=params)).json()
        seen += [d["device_token"] for d in page["results"]]
        if page["next_cursor"] is None:
            break
        assert page["next"].startswith("http://gateway/api/devices")
        params = {"limit": 3, "cursor": page["next_cursor"]}
    assert seen == [token(n) for n in range(7)]

    bad = await client.get("/api/devices/", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.cursor"


async def test_read_patch_and_delete_a_device_by_token(client: httpx.AsyncClient) -> None:
    await client.post("/api/devices/", json={"device_token": TOKEN, "app": APP, "tags": ["a"]})
    read = await client.get(f"/api/devices/{TOKEN}/")
    assert read.status_code == 200 and read.json()["tags"] == ["a"]

    patched = await client.patch(f"/api/devices/{TOKEN}", json={"tags": ["b", "c"], "owner": "user-9"})
    assert patched.status_code == 200
    assert (patched.json()["tags"], patched.json()["owner"]) == (["b", "c"], "user-9")
    detached = await client.patch(f"/api/devices/{TOKEN}/", json={"owner": None})
    assert detached.json()["owner"] is None and detached.json()["tags"] == ["b", "c"]

    # the same token in a second app: reads must say which
    await client.post("/api/devices/", json={"device_token": TOKEN, "app": "com.example.other"})
    ambiguous = await client.get(f"/api/devices/{TOKEN}/")
    assert ambiguous.status_code == 409 and "?app=" in ambiguous.json()["detail"]

    deleted = await client.delete(f"/api/devices/{TOKEN}/", params={"app": APP})
    assert deleted.status_code == 204
    gone = await client.get(f"/api/devices/{TOKEN}/", params={"app": APP})
    assert gone.status_code == 404 and gone.json() == {"detail": f"no device with this token for app {APP}"}


async def test_registering_a_token_again_moves_its_registration_time(
    client: httpx.AsyncClient, clean_db: Engine
) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import update

    from noti.store.models import Device

    assert (await client.post("/api/devices/", json={"device_token": TOKEN, "app": APP})).status_code == 201
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    with clean_db.begin() as connection:
        connection.execute(update(Device).values(registered_at=long_ago))
    assert (await client.post("/api/devices/", json={"device_token": TOKEN, "app": APP})).status_code == 200
    with clean_db.connect() as connection:
        registered_at = connection.execute(select(Device.registered_at)).scalar_one()
    # What a later 410 is compared with (noti.store.records): the app's last registration, now.
    assert registered_at is not None and registered_at > long_ago
