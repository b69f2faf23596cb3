"""Fixtures of the gateway tests (a pytest plugin): the app on the session's PostgreSQL and Redis, keys, a client."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI
from gateway_support import Keys, gateway_settings
from sqlalchemy import Engine

from harness.procs import free_port, port_open, wait_until
from noti.gateway.app import create_app
from noti.gateway.auth import Scope, create_api_key
from noti.store import migrate
from noti.store.db import make_engine


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


@pytest.fixture(params=["postgresql", "sqlite"])
async def any_store(
    request: pytest.FixtureRequest, tmp_path: Path, clean_redis: redis.Redis, redis_url: str
) -> AsyncIterator[StoreGateway]:
    """The gateway on each store in turn: a test using it runs once on PostgreSQL and once on SQLite."""
    if request.param == "postgresql":
        engine: Engine = request.getfixturevalue("clean_db")
        url: str = request.getfixturevalue("database_url")
    else:
        url = f"sqlite:///{tmp_path}/noti.db"
        engine = make_engine(url)
        migrate.upgrade(engine)
    client = aioredis.Redis.from_url(redis_url)
    app = create_app(gateway_settings(url, redis_url), engine=engine, redis=client)
    async with app.router.lifespan_context(app):
        yield StoreGateway(request.param, engine, app)
    await client.aclose()
    if request.param == "sqlite":
        engine.dispose()
