"""The gateway under test (a pytest plugin): the app on the session's PostgreSQL and Redis, keys, clients,
and the helpers the gateway tests share."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI
from hypothesis import strategies as st
from sqlalchemy import Engine

from harness.apns import credential_for
from harness.procs import free_port, port_open, wait_until
from noti.gateway.app import create_app
from noti.gateway.auth import Scope, create_api_key
from noti.queue import ENVIRONMENTS, ROUTES, StreamKeys
from noti.routes import CLAIM_ROUTE, Route, route_field
from noti.settings import GatewaySettings, Settings
from noti.store import migrate
from noti.store.db import make_engine

APP = "com.example.app"
SERVED_APPS = (APP, "com.example.other", "com.other.app")  # what the gateway fixtures find served


def credential_of(app: str, environment: str = "sandbox") -> str:
    """The credential serving ``app`` in ``environment`` once ``serve`` published its route."""
    return credential_for(app, environment)


def stream_of(app: str, environment: str = "sandbox") -> str:
    """The transactional stream the gateway queues sends of ``app`` in ``environment`` on."""
    return StreamKeys(credential_of(app, environment)).transactional_stream


def serve(client: redis.Redis, app: str, environment: str = "sandbox", credential: str | None = None) -> str:
    """Publish the route of ``app`` in ``environment`` as the operator does; answers its credential."""
    credential = credential or credential_of(app, environment)
    route = Route(credential, "TESTTEAM01.TESTKEY001")
    client.eval(CLAIM_ROUTE, 1, ROUTES, route_field(app, environment), credential, route.encode(), route.namespace,
                route.apple)  # fmt: skip
    return credential


def serve_test_apps(client: redis.Redis) -> None:
    """Routes for every app the gateway tests send to, in both environments."""
    for app in SERVED_APPS:
        for environment in ENVIRONMENTS:
            serve(client, app, environment)


@dataclass(frozen=True)
class Keys:
    sender: str  # send + read
    reader: str  # read only
    admin: str


def gateway_settings(database_url: str, redis_url: str, **overrides: object) -> GatewaySettings:
    """The gateway's settings for a test: the defaults (the environment unread), on these servers."""
    values: dict[str, object] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "apns_environment": "sandbox",
        "gateway_rate_limit": 0,
        "gateway_auth_failure_rate": 0,  # tests that want it turn it on
        "gateway_session_secret": "test-session-secret",
        "gateway_channel_seconds": 0.5,  # no sender runs for most tests: a channel request fails fast (503)
    }
    values.update(overrides)
    return Settings.defaults(**values).gateway


# --- bulk registration: batches of valid and invalid devices, and what the gateway must make of them ---

BULK_TOKENS = ["ab" * 31 + f"{n:02x}" for n in range(1, 6)]
_APP_SLOTS = ("first", "second")  # replaced by apps of the test's own, so examples never share devices

_valid_device = st.fixed_dictionaries(
    {
        "device_token": st.sampled_from([*BULK_TOKENS, BULK_TOKENS[0].upper()]),
        "app": st.sampled_from(_APP_SLOTS),
    },
    optional={
        "owner": st.sampled_from(["ann", "bob", "carol"]),
        "tags": st.lists(st.sampled_from(["vip", "beta", "trial"]), max_size=3),
        "is_active": st.booleans(),
        "platform": st.just("ios"),
    },
)
_invalid_device: st.SearchStrategy[Any] = st.one_of(
    _valid_device.map(lambda d: {**d, "device_token": "ab" * 10}),  # too short for APNs
    _valid_device.map(lambda d: {**d, "device_token": "zz" * 32}),  # not hex
    _valid_device.map(lambda d: {**d, "colour": "red"}),  # not a device field
    _valid_device.map(lambda d: {**d, "tags": "vip"}),  # not a list
    _valid_device.map(lambda d: {**d, "owner": ""}),
    _valid_device.map(lambda d: {**d, "app": "-not a bundle id"}),
    _valid_device.map(lambda d: {k: v for k, v in d.items() if k != "device_token"}),
    st.sampled_from([7, "device", None, []]),  # not an object at all
)
bulk_batches = st.lists(
    st.one_of(_valid_device.map(lambda d: (True, d)), _invalid_device.map(lambda d: (False, d))),
    min_size=1,
    max_size=25,
)


async def check_bulk_registration(
    http: httpx.AsyncClient, batch: list[tuple[bool, Any]], apps: tuple[str, str]
) -> None:
    """POST the batch to /api/devices/bulk/ and check the answer and the stored devices against it."""
    names = dict(zip(_APP_SLOTS, apps, strict=True))
    items = [{**d, "app": names.get(d["app"], d["app"])} if isinstance(d, dict) and "app" in d else d for _, d in batch]
    response = await http.post("/api/devices/bulk/", json={"devices": items})
    assert response.status_code == 200, response.text
    answer = response.json()
    valid = [i for i, (ok, _) in enumerate(batch) if ok]
    assert [r["index"] for r in answer["results"]] == valid
    assert [e["index"] for e in answer["errors"]] == [i for i, (ok, _) in enumerate(batch) if not ok]
    for error in answer["errors"]:
        assert error["detail"] and error["errors"]
        assert all(item["field"].startswith(f"body.devices.{error['index']}") for item in error["errors"])

    expected: dict[tuple[str, str], dict[str, Any]] = {}
    ids: dict[tuple[str, str], int] = {}
    for result, index in zip(answer["results"], valid, strict=True):
        key = (items[index]["app"], items[index]["device_token"].lower())
        assert (result["app"], result["device_token"]) == key
        assert result["created"] == (key not in expected)  # the first mention creates, later ones update
        assert ids.setdefault(key, result["id"]) == result["id"]
        expected[key] = items[index]
    assert (answer["created"], answer["updated"], answer["failed"]) == (
        len(expected), len(valid) - len(expected), len(batch) - len(valid),
    )  # fmt: skip

    stored = {}
    for app in apps:
        listing = await http.get("/api/devices/", params={"app": app, "limit": 1000})
        for d in listing.json()["results"]:
            stored[(d["app"], d["device_token"])] = (d["owner"], d["tags"], d["is_active"], d["id"])
    assert stored == {
        key: (item.get("owner"), item.get("tags", []), item.get("is_active", True), ids[key])
        for key, item in expected.items()
    }


@pytest.fixture
def keys(clean_db: Engine) -> Keys:
    return Keys(
        sender=create_api_key(clean_db, "backend", [Scope.SEND, Scope.READ]),
        reader=create_api_key(clean_db, "dashboard", [Scope.READ]),
        admin=create_api_key(clean_db, "ops", [Scope.ADMIN]),
    )


@pytest.fixture
async def gateway_app(
    clean_db: Engine, clean_redis: redis.Redis, database_url: str, redis_url: str
) -> AsyncIterator[FastAPI]:
    """The gateway with its lifespan running (so single sends go through the micro-batcher)."""
    serve_test_apps(clean_redis)
    client = aioredis.Redis.from_url(redis_url)
    app = create_app(gateway_settings(database_url, redis_url), engine=clean_db, redis=client)
    async with app.router.lifespan_context(app):
        yield app
    await client.aclose()


@pytest.fixture
async def client(gateway_app: FastAPI, keys: Keys) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the gateway authenticated with the send+read key."""
    transport = httpx.ASGITransport(app=gateway_app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway", headers={"Authorization": f"Bearer {keys.sender}"}
    ) as http:
        yield http


@pytest.fixture
def live_gateway(clean_db: Engine, clean_redis: redis.Redis, database_url: str, redis_url: str) -> Iterator[str]:
    """The gateway on a real uvicorn server on loopback (a browser needs a socket)."""
    serve_test_apps(clean_redis)
    port = free_port()
    app = create_app(gateway_settings(database_url, redis_url), engine=clean_db)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: port_open(port) and server.started, timeout=30, what="gateway")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


@dataclass
class StoreGateway:
    """The gateway (lifespan running) on one store, PostgreSQL or the ``noti dev`` SQLite."""

    store: str
    engine: Engine
    app: FastAPI
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://gateway",
            headers={"Authorization": f"Bearer {key}"},
        )

    def new_key(self, name: str = "backend") -> str:
        return create_api_key(self.engine, name, [Scope.SEND, Scope.READ])

    def key(self, name: str) -> str:
        """The send+read key of this name, made on first use (hypothesis runs examples on one gateway)."""
        if name not in self.keys:
            self.keys[name] = self.new_key(name)
        return self.keys[name]


def store_of(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Engine, str]:
    """The store a fixture parametrized by ``postgresql``/``sqlite`` runs on: the session's clean PostgreSQL,
    or a migrated SQLite file in ``tmp_path`` (the caller disposes of that engine)."""
    if request.param == "postgresql":
        return request.getfixturevalue("clean_db"), request.getfixturevalue("database_url")
    url = f"sqlite:///{tmp_path}/noti.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    return engine, url


@pytest.fixture(params=["postgresql", "sqlite"])
async def any_store(
    request: pytest.FixtureRequest, tmp_path: Path, clean_redis: redis.Redis, redis_url: str
) -> AsyncIterator[StoreGateway]:
    """The gateway on each store in turn: a test using it runs once on PostgreSQL and once on SQLite."""
    engine, url = store_of(request, tmp_path)
    serve_test_apps(clean_redis)
    client = aioredis.Redis.from_url(redis_url)
    app = create_app(gateway_settings(url, redis_url), engine=engine, redis=client)
    async with app.router.lifespan_context(app):
        yield StoreGateway(request.param, engine, app)
    await client.aclose()
    if request.param == "sqlite":
        engine.dispose()
