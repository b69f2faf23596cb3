"""``/api/devices/``: register by token, filter and page, read, change, delete."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from sqlalchemy import Engine, func, select

from harness.gateway import APP, Keys, bulk_batches, check_bulk_registration
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


async def test_an_app_that_is_not_a_bundle_id_is_refused(client: httpx.AsyncClient) -> None:
    for app in ["-leading-dash", "com.example.app with spaces", "com/example"]:
        response = await client.post("/api/devices/", json={"device_token": TOKEN, "app": app})
        assert response.status_code == 422, app
        assert response.json()["errors"][0]["field"] == "body.app"


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


async def test_bulk_registration_stores_the_valid_devices_and_reports_each_invalid_one_by_index(
    client: httpx.AsyncClient, clean_db: Engine
) -> None:
    devices = [
        {"device_token": token(1).upper(), "app": APP, "owner": "ann", "tags": ["vip"]},
        {"device_token": "ab" * 10, "app": APP},
        {"device_token": token(2), "app": APP, "owner": "bob", "colour": "red"},
        {"device_token": token(3), "app": APP, "owner": "bob", "is_active": False},
    ]
    response = await client.post("/api/devices/bulk", json={"devices": devices})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["created"], answer["updated"], answer["failed"]) == (2, 0, 2)
    assert [(r["index"], r["device_token"], r["created"]) for r in answer["results"]] == [
        (0, token(1), True), (3, token(3), True),
    ]  # fmt: skip
    short, extra = answer["errors"]
    assert short["index"] == 1 and "at least 64" in short["detail"]
    assert extra["index"] == 2
    assert extra["errors"] == [{"field": "body.devices.2.colour", "message": "Extra inputs are not permitted"}]
    with clean_db.connect() as connection:
        assert set(connection.execute(select(DeviceOwner.external_id)).scalars()) == {"ann", "bob"}

    again = await client.post("/api/devices/bulk/", json={"devices": [{"device_token": token(3), "app": APP}]})
    assert again.json()["results"][0] | {"created": False} == again.json()["results"][0]
    assert again.json()["results"][0]["id"] == answer["results"][1]["id"]
    read = (await client.get(f"/api/devices/{token(3)}/")).json()
    assert (read["owner"], read["is_active"]) == (None, True)  # registering again sets every field, as one by one


async def test_bulk_registration_refuses_a_body_that_is_not_1_to_10000_devices(
    client: httpx.AsyncClient, gateway_app: object, keys: Keys
) -> None:
    one = {"device_token": TOKEN, "app": APP}
    for body, field in [
        ({"devices": []}, "body.devices"),
        ({"devices": [one] * 10_001}, "body.devices"),
        ({"device": [one]}, "body.devices"),
        ([one], "body"),
    ]:
        response = await client.post("/api/devices/bulk/", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == field
    broken = await client.post(
        "/api/devices/bulk/", content=b'{"devices": [', headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422 and broken.json()["errors"][0]["field"] == "body"

    reader = await client.post(
        "/api/devices/bulk/", json={"devices": [one]}, headers={"Authorization": f"Bearer {keys.reader}"}
    )
    assert reader.status_code == 403


async def test_bulk_registration_without_app_uses_the_default_app_or_says_to_give_one(
    client: httpx.AsyncClient,
) -> None:
    answer = (await client.post("/api/devices/bulk/", json={"devices": [{"device_token": TOKEN}]})).json()
    assert answer["failed"] == 1
    assert answer["errors"][0]["errors"][0]["field"] == "body.devices.0.app"
    assert "NOTI_GATEWAY_DEFAULT_APP" in answer["errors"][0]["detail"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=bulk_batches)
async def test_bulk_registration_of_any_mix_stores_exactly_the_valid_devices_last_one_wins(
    client: httpx.AsyncClient, batch: list[tuple[bool, Any]]
) -> None:
    apps = next(_example_apps)
    await check_bulk_registration(client, batch, apps)


_example_apps = ((f"com.example.pg{n}a", f"com.example.pg{n}b") for n in itertools.count())


async def test_bulk_registration_is_in_the_api_schema_with_its_request_and_answer_models(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/api/schema/")).json()
    operation = schema["paths"]["/api/devices/bulk/"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert (body, answer) == (
        {"$ref": "#/components/schemas/DeviceBulkIn"},
        {"$ref": "#/components/schemas/DeviceBulkOut"},
    )
    devices = schema["components"]["schemas"]["DeviceBulkIn"]["properties"]["devices"]
    assert (devices["items"], devices["maxItems"]) == ({"$ref": "#/components/schemas/DeviceIn"}, 10_000)


async def test_paging_like_the_original_api_is_refused_with_a_pointer_to_cursor(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await client.post("/api/devices/", json={"device_token": token(n), "app": APP})
    response = await client.get("/api/devices/", params={"limit": 2, "page": 2})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["query.page"]
    assert "?cursor=" in response.json()["detail"] and "next_cursor" in response.json()["detail"]

    typo = await client.get(f"/api/devices/{token(1)}/", params={"ap": APP})
    assert typo.status_code == 422
    assert typo.json()["errors"] == [{"field": "query.ap", "message": "unknown query parameter: this route takes app"}]
    assert (await client.get(f"/api/devices/{token(1)}/", params={"app": APP})).status_code == 200


async def test_a_body_sent_as_curl_sends_a_form_is_told_to_send_content_type_json(client: httpx.AsyncClient) -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}  # curl -d without -H 'content-type: ...'
    one = orjson.dumps({"device_token": TOKEN, "app": APP})
    for path, body in [("/api/devices/", one), ("/api/devices/bulk/", b'{"devices": [' + one + b"]}")]:
        response = await client.post(path, content=body, headers=form)
        assert response.status_code == 422, path
        message = "send the body as JSON with the header content-type: application/json"
        assert response.json()["errors"] == [
            {"field": "body", "message": f"{message} (this one came as application/x-www-form-urlencoded)"}
        ]
        assert message in response.json()["detail"]
    as_json = await client.post("/api/devices/", content=one, headers={"content-type": "application/json"})
    assert as_json.status_code == 201


async def test_concurrent_bulk_registrations_of_overlapping_devices_and_owners_all_land_without_deadlock(
    client: httpx.AsyncClient,
) -> None:
    def batch(order: int) -> list[dict[str, object]]:
        devices = [{"device_token": token(n), "app": APP, "owner": f"user-{n % 50}"} for n in range(2_000)]
        return devices[::order]

    answers = await asyncio.gather(
        *(client.post("/api/devices/bulk/", json={"devices": batch(order)}) for order in (1, -1, 1, -1))
    )
    assert [a.status_code for a in answers] == [200] * 4
    assert sum(a.json()["created"] for a in answers) == 2_000  # each device created once, by whichever came first
    owned = (await client.get("/api/devices/", params={"owner": "user-7", "limit": 100})).json()["results"]
    assert len(owned) == 40


async def test_bulk_registration_of_10000_devices_creates_their_owners_once(
    client: httpx.AsyncClient, clean_db: Engine
) -> None:
    devices = [{"device_token": token(n), "app": APP, "owner": f"user-{n % 2500}"} for n in range(10_000)]
    first = (await client.post("/api/devices/bulk/", json={"devices": devices})).json()
    assert (first["created"], first["updated"], first["failed"]) == (10_000, 0, 0)
    again = (await client.post("/api/devices/bulk/", json={"devices": devices})).json()
    assert (again["created"], again["updated"]) == (0, 10_000)
    assert [r["id"] for r in again["results"]] == [r["id"] for r in first["results"]]
    with clean_db.connect() as connection:
        assert connection.execute(select(func.count()).select_from(DeviceOwner)).scalar_one() == 2_500


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
