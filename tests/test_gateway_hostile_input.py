"""Input a careless or hostile client sends: refused with a 422 naming the field, never a 500, never stored."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from sqlalchemy import func, select

from harness.gateway import APP, StoreGateway
from noti.gateway.pagination import encode_cursor
from noti.gateway.schemas import json_problem
from noti.store import records
from noti.store.models import Device, Notification, NotificationStatus
from noti.store.records import RecordUpdate

TOKEN = "ab" * 32
BAD_APPS = ["com.example probe", "a\r\nX-Injected: 1", "x}:tx{", "a<script>alert(1)</script>", "a/../../etc/passwd"]


def fields(response: httpx.Response) -> set[str]:
    assert response.status_code == 422, response.text
    return {error["field"] for error in response.json()["errors"]}


def raw(**fields: str) -> str:
    """A JSON body from each field's JSON text (some of it JSON only Python reads, such as NaN)."""
    return "{" + ", ".join(f'"{name}": {value}' for name, value in fields.items()) + "}"


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
    assert clean_redis.keys("noti:*") == [b"noti:routes"]  # the routes the fixture published, nothing else


@pytest.mark.parametrize("field", ["data", "content_state", "attributes"])
@pytest.mark.parametrize("depth", [33, 254, 330, 5000])
async def test_nesting_beyond_the_limit_is_refused_naming_the_field(
    any_store: StoreGateway, field: str, depth: int
) -> None:
    deep = "[" * (depth - 1) + "]" * (depth - 1)
    body = raw(device_token=f'"{TOKEN}"', app=f'"{APP}"', **{field: f'{{"k": {deep}}}'})
    async with any_store.client(any_store.new_key()) as http:
        answer = await http.post("/api/notifications/", content=body, headers={"content-type": "application/json"})
        at_limit = raw(device_token=f'"{TOKEN}"', app=f'"{APP}"', **{field: f'{{"k": {"[" * 31 + "]" * 31}}}'})
        accepted = await http.post(
            "/api/notifications/", content=at_limit, headers={"content-type": "application/json"}
        )
    # Python's JSON parser itself gives up somewhere past 1,000 levels: then the body as a whole is refused.
    assert fields(answer) == ({f"body.{field}"} if depth < 1000 else {"body"})
    assert "nest at most 32 levels" in answer.json()["detail"]
    assert accepted.status_code == 202, accepted.text
    assert stored(any_store, Notification) == 1


async def test_a_deep_sound_dict_is_refused_naming_the_field(any_store: StoreGateway) -> None:
    body = raw(device_token=f'"{TOKEN}"', app=f'"{APP}"', sound=f'{{"name": {"[" * 300 + "]" * 300}}}')
    async with any_store.client(any_store.new_key()) as http:
        answer = await http.post("/api/notifications/", content=body, headers={"content-type": "application/json"})
    assert fields(answer) == {"body.sound"}


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
async def test_nan_and_infinity_in_custom_data_are_refused_on_both_stores(any_store: StoreGateway, number: str) -> None:
    body = raw(device_token=f'"{TOKEN}"', app=f'"{APP}"', data=f'{{"score": [1, {number}]}}')
    async with any_store.client(any_store.new_key()) as http:
        answer = await http.post("/api/notifications/", content=body, headers={"content-type": "application/json"})
        bulk = raw(device_tokens=f'["{TOKEN}"]', data=f'{{"score": {number}}}')
        bulk_answer = await http.post(
            "/api/notifications/bulk/", content=bulk, headers={"content-type": "application/json"}
        )
    assert fields(answer) == fields(bulk_answer) == {"body.data"}
    assert "NaN and Infinity" in answer.json()["detail"]
    assert stored(any_store, Notification) == 0


def nested_lists(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_json_problem_allows_32_levels_and_walks_any_depth_without_recursion() -> None:
    assert json_problem({"a": nested_lists(31)}) is None
    assert json_problem({"a": nested_lists(32)}) == "objects and arrays may nest at most 32 levels deep"
    assert json_problem(nested_lists(100_000)) is not None  # no RecursionError
    assert json_problem({"wide": list(range(10_000)), "text": "é" * 1000, "n": 1.5, "ok": None}) is None


@pytest.mark.parametrize(
    "value", [{"x": float("nan")}, [1, [float("inf")]], {"k": -float("inf")}, {"a\x00": 1}, {"a": ["b\x00"]}]
)
def test_json_problem_refuses_what_json_or_postgresql_cannot_hold(value: object) -> None:
    assert json_problem(value) is not None


async def test_every_pattern_the_schema_shows_is_anchored(gateway_app: FastAPI) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway_app), base_url="http://gw") as http:
        schema = (await http.get("/api/schema/")).json()
    patterns: list[str] = []
    pending: list[Any] = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                patterns.append(node["pattern"])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    assert len(patterns) >= 5
    assert [p for p in patterns if not (p.startswith("^") and p.endswith("$"))] == []


@pytest.mark.parametrize("collapse_id", ["é" * 32, "a\r\nb", " padded", "tab\there", ""])
async def test_a_collapse_id_that_is_no_ascii_header_is_refused(any_store: StoreGateway, collapse_id: str) -> None:
    async with any_store.client(any_store.new_key()) as http:
        send = {"device_token": TOKEN, "app": APP, "collapse_id": collapse_id}
        answer = await http.post("/api/notifications/", json=send)
        bulk = await http.post("/api/notifications/bulk/", json={"device_tokens": [TOKEN], "collapse_id": collapse_id})
        fine = await http.post("/api/notifications/", json={**send, "collapse_id": "order 42"})
    assert fields(answer) == fields(bulk) == {"body.collapse_id"}
    assert "visible ASCII" in answer.json()["detail"]
    assert fine.status_code == 202
    assert stored(any_store, Notification) == 1


CALENDAR_ENDS = [
    ("until", "0001-01-01T00:00:00Z"),
    ("since", "9999-12-31T23:30:00Z"),
    ("since", "0001-01-01T00:30:00+01:00"),  # the offset crosses into year 0
    ("until", "9999-12-31T23:00:00-02:00"),  # and into year 10000
    ("since", "0001-01-01T05:00:00"),
]


@pytest.mark.parametrize(("parameter", "moment"), CALENDAR_ENDS)
async def test_times_at_the_calendar_s_ends_are_refused_naming_the_parameter(
    any_store: StoreGateway, parameter: str, moment: str
) -> None:
    async with any_store.client(any_store.new_key()) as http:
        for path in ("/api/notifications/stats/", "/api/notifications/"):
            answer = await http.get(path, params={parameter: moment})
            assert fields(answer) == {f"query.{parameter}"}, path
            assert "between 0001-01-02 and 9999-12-30" in answer.json()["detail"]
        cursor = encode_cursor(moment, str(uuid.uuid4()))
        assert fields(await http.get("/api/notifications/", params={"cursor": cursor})) == {"query.cursor"}


async def test_the_widest_window_the_calendar_allows_is_answered(any_store: StoreGateway) -> None:
    async with any_store.client(any_store.new_key()) as http:
        window = {"since": "0001-01-02T00:00:00Z", "until": "9999-12-30T00:00:00Z"}
        stats = await http.get("/api/notifications/stats/", params=window)
        listed = await http.get("/api/notifications/", params=window)
        at_the_end = encode_cursor("9999-12-30T00:00:00+00:00", str(uuid.uuid4()))
        paged = await http.get("/api/notifications/", params={"cursor": at_the_end})
    assert (stats.status_code, listed.status_code, paged.status_code) == (200, 200, 200), stats.text
    assert stats.json()["window"]["total"] == 0


@pytest.mark.parametrize("change", [{"is_active": None}, {"platform": None}, {"tags": None}])
async def test_patching_a_device_field_to_null_is_refused_and_changes_nothing(
    any_store: StoreGateway, change: dict[str, None]
) -> None:
    async with any_store.client(any_store.new_key()) as http:
        await http.post("/api/devices/", json={"device_token": TOKEN, "app": APP, "tags": ["vip"]})
        answer = await http.patch(f"/api/devices/{TOKEN}/", json=change)
        detached = await http.patch(f"/api/devices/{TOKEN}/", json={"owner": None})  # the one field null may clear
        device = (await http.get(f"/api/devices/{TOKEN}/")).json()
    assert fields(answer) == {f"body.{name}" for name in change}
    assert detached.status_code == 200, detached.text
    assert (device["is_active"], device["platform"], device["tags"], device["owner"]) == (True, "ios", ["vip"], None)


@pytest.mark.parametrize(
    "cursor", ["W3RydWVd", "W2ZhbHNlXQ", "WzEuNV0", "Wy0xXQ", "WyIxIl0"]
)  # [true] [false] [1.5] [-1] ["1"]
async def test_a_device_cursor_that_is_no_device_id_is_refused(any_store: StoreGateway, cursor: str) -> None:
    async with any_store.client(any_store.new_key()) as http:
        assert fields(await http.get("/api/devices/", params={"cursor": cursor})) == {"query.cursor"}


HOSTILE_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/api/notifications/", {"content": raw(device_token=f'"{TOKEN}"', app='"com.example probe"')}),
    ("POST", "/api/notifications/", {"content": raw(device_token=f'"{TOKEN}"', data="[" * 254 + "]" * 254)}),
    (
        "POST",
        "/api/notifications/",
        {"content": raw(device_token=f'"{TOKEN}"', data='{"k": ' + "[" * 400 + "]" * 400 + "}")},
    ),
    ("POST", "/api/notifications/", {"content": raw(device_token=f'"{TOKEN}"', data="[" * 5000 + "]" * 5000)}),
    ("POST", "/api/notifications/", {"content": raw(device_token=f'"{TOKEN}"', data='{"x": NaN}')}),
    ("POST", "/api/notifications/", {"content": raw(device_token=f'"{TOKEN}"', title='"\\ud800"')}),
    ("POST", "/api/notifications/", {"content": raw(device_token=f'"{TOKEN}"', data=f'{{"big": {2**70}}}')}),
    ("POST", "/api/notifications/", {"content": raw(device_token=f'"{TOKEN}"', collapse_id='"' + "é" * 32 + '"')}),
    ("POST", "/api/notifications/", {"content": "{"}),
    (
        "POST",
        "/api/notifications/bulk/",
        {"content": raw(device_tokens=f'["{TOKEN}"]', content_state="[" * 300 + "]" * 300)},
    ),
    ("POST", "/api/devices/", {"content": raw(device_token=f'"{TOKEN}"', app='"x}:tx{"')}),
    ("PATCH", f"/api/devices/{TOKEN}/", {"content": '{"is_active": null}'}),
    ("GET", "/api/devices/", {"params": {"cursor": "W3RydWVd"}}),
    ("GET", "/api/notifications/stats/", {"params": {"until": "0001-01-01T00:00:00Z"}}),
    ("GET", "/api/notifications/stats/", {"params": {"since": "9999-12-31T23:30:00Z"}}),
    ("GET", "/api/notifications/", {"params": {"cursor": encode_cursor("9999-12-31T23:59:00-05:00", "x")}}),
]


async def test_client_errors_answer_4xx_and_leave_no_traceback_in_the_log(
    any_store: StoreGateway, caplog: pytest.LogCaptureFixture
) -> None:
    async with any_store.client(any_store.new_key()) as http:
        await http.post("/api/devices/", json={"device_token": TOKEN, "app": APP})
        caplog.clear()
        for method, path, request in HOSTILE_REQUESTS:
            answer = await http.request(method, path, headers={"content-type": "application/json"}, **request)
            assert answer.status_code in (404, 422), (method, path, answer.text)
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    assert sum(len(r.getMessage()) for r in caplog.records) < 2_000


@pytest.mark.parametrize(
    ("field", "value"), [("title", '"\\ud800"'), ("thread_id", '"a\\udfff"'), ("data", f'{{"big": {2**70}}}')]
)
async def test_what_json_cannot_encode_is_refused_naming_its_field(
    any_store: StoreGateway, field: str, value: str
) -> None:
    async with any_store.client(any_store.new_key()) as http:
        body = raw(device_token=f'"{TOKEN}"', app=f'"{APP}"', **{field: value})
        answer = await http.post("/api/notifications/", content=body, headers={"content-type": "application/json"})
    assert fields(answer) == {f"body.{field}"}


def timestamps(document: Any) -> list[str]:
    """Every value of a key ending in _at, or since/until, anywhere in an answer."""
    found: list[str] = []
    pending = [document]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            found += [v for k, v in node.items() if (k.endswith("_at") or k in {"since", "until"}) and v is not None]
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found


async def test_every_timestamp_in_every_answer_carries_its_offset(any_store: StoreGateway) -> None:
    async with any_store.client(any_store.new_key()) as http:
        answers = [await http.post("/api/devices/", json={"device_token": TOKEN, "app": APP})]
        sent = await http.post("/api/notifications/", json={"device_token": TOKEN, "body": "x"})
        with any_store.engine.begin() as connection:  # as a sender would leave it
            records.apply_outcomes(connection, [RecordUpdate(uuid.UUID(sent.json()["id"]), NotificationStatus.SENT)])
        answers += [
            await http.get(f"/api/devices/{TOKEN}/"),
            await http.patch(f"/api/devices/{TOKEN}/", json={"tags": ["a"]}),
            await http.get("/api/devices/"),
            await http.get(f"/api/notifications/{sent.json()['id']}/"),
            await http.get("/api/notifications/"),
            await http.get("/api/notifications/stats/", params={"since": "2026-01-01T00:00:00"}),
        ]
    found = [moment for answer in answers for moment in timestamps(answer.json())]
    assert len(found) >= 12
    assert [m for m in found if datetime.fromisoformat(m).tzinfo is None] == []
