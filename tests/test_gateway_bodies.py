"""A request's key and size are judged before its body is read; a body that is too big or too slow is refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi import FastAPI
from sqlalchemy import Engine

from harness.gateway import Keys, gateway_settings, serve_test_apps
from noti.gateway.app import create_app

Message = dict[str, Any]


async def call(app: FastAPI, headers: dict[str, str], chunks: Iterator[bytes | None]) -> tuple[int, dict[str, str],
                                                                                               Any, int]:  # fmt: skip
    """POST to the app as a client would that sends ``chunks`` (None: a pause longer than any test waits).

    Returns the status, headers, JSON body and how many chunks the app read.
    """
    read = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal read
        chunk = next(chunks, b"")
        if chunk is None:
            await asyncio.sleep(3600)
        read += 1
        return {"type": "http.request", "body": chunk, "more_body": chunk != b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/notifications/", "raw_path": b"/api/notifications/", "query_string": b"", "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()], "client": ("127.0.0.1", 5000),
        "server": ("gw", 80),
    }  # fmt: skip
    await asyncio.wait_for(app(scope, receive, send), 10)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    answer_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], answer_headers, json.loads(body), read


@pytest.fixture
async def app(clean_db: Engine, clean_redis: redis.Redis, database_url: str, redis_url: str) -> Any:
    serve_test_apps(clean_redis)
    settings = gateway_settings(database_url, redis_url, gateway_max_body_bytes=2048, gateway_body_seconds=0.5)
    gateway = create_app(settings, engine=clean_db)
    async with gateway.router.lifespan_context(gateway):
        yield gateway


async def test_a_request_without_a_valid_key_is_refused_before_its_body_is_read(app: FastAPI, keys: Keys) -> None:
    huge = {"content-type": "application/json", "content-length": "50000000"}
    status, _, answer, read = await call(app, huge, iter([None]))  # the body never comes: it is never awaited
    assert (status, read) == (401, 0) and "API key" in answer["detail"]
    status, _, _, read = await call(app, {**huge, "authorization": "Bearer noti_ffffffffffff_nope"}, iter([None]))
    assert (status, read) == (401, 0)


async def test_a_body_over_the_limit_is_refused_by_its_length_or_as_it_grows(app: FastAPI, keys: Keys) -> None:
    key = {"authorization": f"Bearer {keys.sender}", "content-type": "application/json"}
    status, headers, answer, read = await call(app, {**key, "content-length": "50000000"}, iter([None]))
    assert (status, read) == (413, 0) and "NOTI_GATEWAY_MAX_BODY_BYTES" in answer["detail"]
    assert headers["connection"] == "close"
    status, _, _, read = await call(app, key, iter([b"x" * 1500, b"x" * 1500, None]))  # chunked, no length
    assert (status, read) == (413, 2)


async def test_a_body_that_trickles_in_is_cut_off(app: FastAPI, keys: Keys) -> None:
    key = {"authorization": f"Bearer {keys.sender}", "content-type": "application/json"}
    status, _, answer, _ = await call(app, key, iter([b'{"device_token": ', None]))
    assert status == 408 and "0.5 s" in answer["detail"]


async def test_a_body_within_bounds_reaches_its_route_whole(app: FastAPI, keys: Keys) -> None:
    key = {"authorization": f"Bearer {keys.sender}", "content-type": "application/json"}
    body = json.dumps({"device_token": "ab" * 32, "title": "hi", "app": "com.example.app"}).encode()
    status, _, answer, _ = await call(app, key, iter([body[:20], body[20:]]))
    assert status == 202 and answer["status"] == "queued"
