"""API keys: bearer auth that never tells whether a key exists, scopes, revocation, rate limit, the CLI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import redis
from click.testing import CliRunner
from fastapi import FastAPI
from sqlalchemy import Engine, select

from harness.gateway import APP, Keys, gateway_settings
from noti.cli import cli
from noti.gateway.app import create_app
from noti.gateway.auth import FailedAuthLimiter, Scope, create_api_key, revoke_api_key
from noti.settings import get_settings
from noti.store.models import ApiKey

UNAUTHORIZED = {"detail": "missing or invalid API key: send Authorization: Bearer <key>"}


@asynccontextmanager
async def started(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` with its lifespan run (batcher, rate limiter), as uvicorn would run it."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http,
    ):
        yield http


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_every_kind_of_bad_key_gets_the_same_401(gateway_app: FastAPI, keys: Keys, clean_db: Engine) -> None:
    revoked = create_api_key(clean_db, "old", [Scope.READ])
    revoke_api_key(clean_db, "old")
    prefix = keys.reader.split("_")[1]
    attempts = [
        {},
        {"Authorization": keys.reader},  # no scheme
        {"Authorization": f"Basic {keys.reader}"},
        bearer("garbage"),
        bearer(f"noti_{prefix}_wrong-secret"),  # a real prefix, a wrong secret
        bearer("noti_ffffffffffff_unknown"),
        bearer(revoked),
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway_app), base_url="http://gw") as http:
        for headers in attempts:
            response = await http.get("/api/devices/", headers=headers)
            assert response.status_code == 401, headers
            assert response.json() == UNAUTHORIZED
            assert response.headers["www-authenticate"] == "Bearer"
        ok = await http.get("/api/devices/", headers=bearer(keys.reader))
        assert ok.status_code == 200


async def test_scopes_decide_what_a_key_may_do(gateway_app: FastAPI, keys: Keys) -> None:
    device = {"device_token": "ab" * 32, "app": APP}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway_app), base_url="http://gw") as http:
        refused = await http.post("/api/devices/", json=device, headers=bearer(keys.reader))
        assert refused.status_code == 403
        assert refused.json() == {"detail": "this API key lacks the 'send' scope"}
        assert (await http.post("/api/devices/", json=device, headers=bearer(keys.admin))).status_code == 201
        assert (await http.get("/api/notifications/stats/", headers=bearer(keys.admin))).status_code == 200


async def test_key_is_stored_hashed_and_revocation_takes_effect(
    clean_db: Engine, clean_redis: redis.Redis, database_url: str, redis_url: str
) -> None:
    key = create_api_key(clean_db, "ci", [Scope.READ])
    with clean_db.connect() as connection:
        row = connection.execute(select(ApiKey)).one()
    assert key.startswith(f"noti_{row.prefix}_") and key.split("_", 2)[2] not in row.key_hash
    async with started(
        create_app(gateway_settings(database_url, redis_url, gateway_key_cache_seconds=0), engine=clean_db)
    ) as http:
        assert (await http.get("/api/devices/", headers=bearer(key))).status_code == 200
        assert revoke_api_key(clean_db, row.prefix) == 1
        assert (await http.get("/api/devices/", headers=bearer(key))).status_code == 401
    with clean_db.connect() as connection:
        assert connection.execute(select(ApiKey.last_used_at)).scalar_one() is not None


async def test_rate_limit_answers_429_with_retry_after(
    clean_db: Engine, clean_redis: redis.Redis, database_url: str, redis_url: str, keys: Keys
) -> None:
    settings = gateway_settings(database_url, redis_url, gateway_rate_limit=1, gateway_rate_burst=3)
    async with started(create_app(settings, engine=clean_db)) as http:
        codes = [(await http.get("/api/devices/", headers=bearer(keys.reader))).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = await http.get("/api/devices/", headers=bearer(keys.reader))
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "rate limit" in limited.json()["detail"]
        # another key has its own bucket
        assert (await http.get("/api/devices/", headers=bearer(keys.sender))).status_code == 200


async def test_an_address_sending_unknown_keys_is_held_off_without_lookups(
    clean_db: Engine, clean_redis: redis.Redis, database_url: str, redis_url: str, keys: Keys
) -> None:
    settings = gateway_settings(database_url, redis_url, gateway_auth_failure_rate=0.5, gateway_auth_failure_burst=5)
    async with started(create_app(settings, engine=clean_db)) as http:
        ok = await http.get("/api/devices/", headers=bearer(keys.reader))  # verified now: cached from here on
        assert ok.status_code == 200
        codes = [(await http.get("/api/devices/", headers=bearer(f"noti_{n:012x}_guess"))).status_code
                 for n in range(7)]  # fmt: skip
        assert codes == [401] * 5 + [429] * 2
        held = await http.get("/api/devices/", headers=bearer("noti_ffffffffffff_guess"))
        assert held.status_code == 429 and int(held.headers["retry-after"]) >= 1
        assert "failed API key checks" in held.json()["detail"]
        # A key this gateway already verified is not held up by its address' failures.
        assert (await http.get("/api/devices/", headers=bearer(keys.reader))).status_code == 200


def test_failed_checks_are_counted_per_address_and_refill() -> None:
    now = [0.0]
    limiter = FailedAuthLimiter(rate=1.0, burst=2, clock=lambda: now[0])
    limiter.failed("10.0.0.1")
    limiter.failed("10.0.0.1")
    assert limiter.wait("10.0.0.1") == 1 and limiter.wait("10.0.0.2") == 0
    now[0] = 1.0
    assert limiter.wait("10.0.0.1") == 0
    assert FailedAuthLimiter(rate=0, burst=1).wait("any") == 0  # off


def test_apikey_cli_creates_lists_and_revokes(
    clean_db: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTI_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        created = runner.invoke(cli, ["apikey", "create", "--name", "billing", "--scopes", "send,read"])
        assert created.exit_code == 0, created.output
        key = created.stdout.strip().splitlines()[0]
        prefix = key.split("_")[1]
        listed = runner.invoke(cli, ["apikey", "list"])
        assert prefix in listed.stdout and "billing" in listed.stdout and "send,read" in listed.stdout
        assert key not in listed.stdout
        bad = runner.invoke(cli, ["apikey", "create", "--name", "x", "--scopes", "send,root"])
        assert bad.exit_code == 2 and "unknown scope 'root'" in bad.output
        assert runner.invoke(cli, ["apikey", "revoke", "billing"]).exit_code == 0
        assert "revoked" in runner.invoke(cli, ["apikey", "list"]).stdout
        assert runner.invoke(cli, ["apikey", "revoke", "billing"]).exit_code == 1
    finally:
        get_settings.cache_clear()
