"""The single send's plain path (noti.gateway.plain_send) answers every request as the FastAPI route does."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import fastapi.routing
import httpx
import orjson
import pytest
import redis
import redis.asyncio as aioredis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from harness.contents import contents, sendable
from harness.gateway import APP, Keys, gateway_settings
from noti.gateway.app import create_app
from noti.gateway.plain_send import PlainSend

TOKEN = "c3" * 32


def _client(app: FastAPI, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway", headers={"Authorization": f"Bearer {key}"}
    )


@pytest.fixture
async def fastapi_only(
    gateway_app: FastAPI, clean_db: Engine, database_url: str, redis_url: str
) -> AsyncIterator[FastAPI]:
    """A second gateway on the same store and Redis, without the plain path: every send takes the FastAPI route."""
    client = aioredis.Redis.from_url(redis_url)
    app = create_app(gateway_settings(database_url, redis_url), engine=clean_db, redis=client)
    app.router.routes[:] = [route for route in app.router.routes if not isinstance(route, PlainSend)]
    async with app.router.lifespan_context(app):
        yield app
    await client.aclose()


async def test_a_well_formed_send_is_served_without_fastapis_dependency_solving(
    gateway_app: FastAPI, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    solved: list[object] = []
    original = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        solved.append(kwargs.get("dependant"))
        return await original(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    async with _client(gateway_app, keys.sender) as http:
        plain = await http.post("/api/notifications/", json={"device_token": TOKEN, "app": APP, "title": "Hi"})
        assert plain.status_code == 202, plain.text
        assert solved == []
        other_form = await http.post("/api/notifications", json={"device_token": TOKEN, "app": APP, "title": "Hi"})
        assert other_form.status_code == 202 and solved == []
        idempotent = await http.post(
            "/api/notifications/",
            json={"device_token": TOKEN, "app": APP, "title": "Hi"},
            headers={"Idempotency-Key": "k"},
        )
        assert idempotent.status_code == 202 and len(solved) == 1, (
            idempotent.text
        )  # not plain: the FastAPI route answered


async def test_the_plain_path_counts_in_the_send_routes_metrics(gateway_app: FastAPI, keys: Keys) -> None:
    async with _client(gateway_app, keys.sender) as http:
        sent = await http.post("/api/notifications/", json={"device_token": TOKEN, "app": APP, "title": "Hi"})
        assert sent.status_code == 202, sent.text
        metrics = (await http.get("/metrics")).text
    assert 'noti_gateway_requests_total{method="POST",route="/api/notifications/",status="202"} 1.0' in metrics


_CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "application/problem+json",
     "text/plain", "application/x-www-form-urlencoded", None]
)  # fmt: skip
_BROKEN_BODIES = st.sampled_from(
    [b"", b"{", b"[1]", b"7", b"null", b'{"device_token": "xyz"}', b'{"device_token": "%s"}',
     b'{"device_token": "%s", "app": "com.example.app", "data": {"x": NaN}}',
     b'{"device_token": "%s", "priority": 7}', b'{"device_token": "%s", "colour": "red"}',
     b'{"device_token": "%s", "title": "\xff"}', b'{"device_token": "%s", "data": ' + b'[' * 400 + b']' * 400 + b'}']
)  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A send request as a client may make it: mostly well-formed, sometimes broken in body, headers or query."""
    if draw(st.integers(0, 3)):
        body = orjson.dumps({"device_token": TOKEN, "app": APP, **sendable(draw(contents()))})
    else:
        body = draw(_BROKEN_BODIES).replace(b"%s", TOKEN.encode())
    content_type = draw(_CONTENT_TYPES) if draw(st.booleans()) else "application/json"
    return {
        "body": body,
        "content_type": content_type,
        "query": draw(st.sampled_from(["", "", "", "bogus=1", "app=x"])),
        "idempotent": draw(st.booleans()) and draw(st.booleans()),
        "reader": draw(st.integers(0, 9)) == 0,  # a key without the send scope: 403
        "path": draw(st.sampled_from(["/api/notifications/", "/api/notifications/", "/api/notifications"])),
    }


async def _answer(app: FastAPI, keys: Keys, request: dict[str, Any]) -> tuple[int, Any, str | None]:
    headers = {"Idempotency-Key": str(uuid.uuid4())} if request["idempotent"] else {}
    if request["content_type"] is not None:
        headers["Content-Type"] = request["content_type"]
    url = request["path"] + (f"?{request['query']}" if request["query"] else "")
    async with _client(app, keys.reader if request["reader"] else keys.sender) as http:
        response = await http.post(url, content=request["body"], headers=headers)
    answer = response.json()
    if isinstance(answer, dict):
        answer.pop("id", None)  # a new id for every send
    return response.status_code, answer, response.headers.get("Idempotent-Replayed")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests())
async def test_every_request_is_answered_as_the_fastapi_route_answers_it(
    gateway_app: FastAPI, fastapi_only: FastAPI, keys: Keys, clean_redis: redis.Redis, request: dict[str, Any]
) -> None:
    plain = await _answer(gateway_app, keys, request)
    routed = await _answer(fastapi_only, keys, request)
    assert plain == routed, request
