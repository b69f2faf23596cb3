"""Outages of the gateway's store and Redis: every answer comes within the documented bound, 503 with
Retry-After while it lasts, and the same gateway serves again once the server is back.

Each test has a PostgreSQL and a Redis of its own (``private_postgres``, ``private_redis``): it stops,
hangs (SIGSTOP) or kills them, which the session's shared servers must never see.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import redis

from harness.gateway import APP, gateway_settings, serve_test_apps
from harness.services import PostgresServer, RedisServer, private_postgres, private_redis
from noti.gateway.app import create_app
from noti.gateway.auth import Scope, create_api_key
from noti.store.db import Bounds, make_engine

# What the README promises for the default settings; the bounds themselves give 8 s.
ANSWER_BOUND = 10.0
TOKEN = "ab" * 32


@dataclass
class Outage:
    postgres: PostgresServer
    database_url: str
    redis: RedisServer


@pytest.fixture
def servers() -> Iterator[Outage]:
    with private_postgres() as (postgres, url), private_redis() as redis_server:
        yield Outage(postgres, url, redis_server)


@asynccontextmanager
async def gateway_on(servers: Outage) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway as `noti gateway` builds it (its own engine and Redis client), rate limit on, one device."""
    engine = make_engine(servers.database_url, pool_size=1)
    key = create_api_key(engine, "backend", [Scope.SEND, Scope.READ])
    engine.dispose()
    serve_test_apps(redis.Redis.from_url(servers.redis.url))  # as the operator publishes its credentials' routes
    app = create_app(gateway_settings(servers.database_url, servers.redis.url, gateway_rate_limit=1000))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw", headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    ) as http:  # fmt: skip
        assert (await http.post("/api/devices/", json={"device_token": TOKEN, "app": APP})).status_code == 201
        assert (await http.post("/api/notifications/", json={"device_token": TOKEN, "body": "x"})).status_code == 202
        yield http


async def timed(request: Callable[[], object]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await request()  # type: ignore[misc]
    return response, time.monotonic() - started


async def answers_during_outage(http: httpx.AsyncClient) -> list[tuple[str, httpx.Response, float]]:
    """Sends, device lists and stats at once, each with its answer and how long it took."""
    requests = {
        **{f"send {n}": lambda n=n: http.post("/api/notifications/", json={"device_token": TOKEN, "body": f"{n}"})
           for n in range(5)},
        "device list": lambda: http.get("/api/devices/"),
        "stats": lambda: http.get("/api/notifications/stats/"),
        "bulk send": lambda: http.post("/api/notifications/bulk/", json={"device_tokens": [TOKEN], "body": "b"}),
    }  # fmt: skip
    results = await asyncio.gather(*(timed(request) for request in requests.values()))
    return [(name, response, seconds) for name, (response, seconds) in zip(requests, results, strict=True)]


def assert_unavailable_within_bound(answers: list[tuple[str, httpx.Response, float]], *, needs: set[str]) -> None:
    """Every answer came within the bound; those in ``needs`` are 503 with Retry-After and a message."""
    print("answers:", ", ".join(f"{name} {response.status_code} {seconds:.2f}s" for name, response, seconds in answers))
    for name, response, seconds in answers:
        assert seconds <= ANSWER_BOUND, f"{name} answered after {seconds:.1f} s"
        if name.split()[0] in needs or name in needs:
            assert response.status_code == 503, (name, response.status_code, response.text)
            assert int(response.headers["retry-after"]) >= 1
            assert "unreachable" in response.json()["detail"]
        else:
            assert response.status_code in (200, 202, 503), (name, response.status_code, response.text)


async def assert_serves_again(http: httpx.AsyncClient, within: float = 30.0) -> None:
    """A send is accepted and recorded, and devices are listed, by the same gateway, within ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        sent = await http.post("/api/notifications/", json={"device_token": TOKEN, "body": "after"})
        listed = await http.get("/api/devices/")
        if sent.status_code == 202 and listed.status_code == 200:
            break
        assert sent.status_code == 503 and time.monotonic() < deadline, (sent.status_code, sent.text)
        await asyncio.sleep(0.5)
    record = await http.get(f"/api/notifications/{sent.json()['id']}/")
    assert record.status_code == 200 and record.json()["status"] == "queued"
    assert [d["device_token"] for d in listed.json()["results"]] == [TOKEN]


def test_the_documented_bound_holds_for_the_default_settings() -> None:
    assert Bounds().longest_wait <= ANSWER_BOUND


async def test_a_hung_database_is_answered_503_within_the_bound_and_recovers_by_itself(servers: Outage) -> None:
    async with gateway_on(servers) as http:
        servers.postgres.hang()
        try:
            answers = await answers_during_outage(http)
            await asyncio.sleep(6)  # past the key cache: the key check itself now meets the hung store
            late = await answers_during_outage(http)
        finally:
            servers.postgres.resume()
        assert_unavailable_within_bound(answers, needs={"send", "device list", "stats", "bulk send"})
        assert_unavailable_within_bound(late, needs={"send", "device list", "stats", "bulk send"})
        await assert_serves_again(http)


async def test_a_crowd_of_requests_meeting_a_hung_database_is_answered_within_the_bound(servers: Outage) -> None:
    async with gateway_on(servers) as http:
        servers.postgres.hang()
        try:
            crowd = [*(lambda: http.get("/api/devices/") for _ in range(60)),
                     *(lambda n=n: http.post("/api/notifications/", json={"device_token": TOKEN, "body": f"{n}"})
                       for n in range(60))]  # fmt: skip
            answers = await asyncio.gather(*(timed(request) for request in crowd))
        finally:
            servers.postgres.resume()
        slowest = max(seconds for _, seconds in answers)
        print(f"slowest of {len(answers)}: {slowest:.2f}s")
        assert {response.status_code for response, _ in answers} == {503}
        assert slowest <= ANSWER_BOUND
        await assert_serves_again(http)


async def test_a_stopped_database_is_answered_503_at_once_and_recovers_when_it_starts(servers: Outage) -> None:
    async with gateway_on(servers) as http:
        servers.postgres.stop()
        try:
            answers = await answers_during_outage(http)
        finally:
            servers.postgres.start()
        assert_unavailable_within_bound(answers, needs={"send", "device list", "stats", "bulk send"})
        assert max(seconds for *_, seconds in answers) < 3  # refused connections are no wait
        await assert_serves_again(http)


async def test_a_hung_redis_is_answered_503_within_the_bound_and_recovers_by_itself(servers: Outage) -> None:
    async with gateway_on(servers) as http:
        servers.redis.hang()
        try:
            answers = await answers_during_outage(http)
        finally:
            servers.redis.resume()
        # Sends need Redis for their stream; every route for its rate limit.
        assert_unavailable_within_bound(answers, needs={"send", "bulk send"})
        await assert_serves_again(http)


async def test_a_killed_redis_is_answered_503_and_recovers_when_it_restarts(servers: Outage) -> None:
    async with gateway_on(servers) as http:
        servers.redis.stop(signal.SIGKILL)
        try:
            answers = await answers_during_outage(http)
        finally:
            servers.redis.start()
        assert_unavailable_within_bound(answers, needs={"send", "bulk send"})
        assert max(seconds for *_, seconds in answers) < 3
        await assert_serves_again(http)
