"""The admin UI's sessions, forms and headers, as a browser (or an attacker's page) would meet them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from fastapi import FastAPI
from sqlalchemy import Engine, func, select
from starlette.datastructures import Headers

from harness.gateway import APP, Keys, gateway_settings, serve_test_apps, stream_of
from noti.gateway.admin.dashboard import bars
from noti.gateway.admin.guard import cross_origin
from noti.gateway.admin.views import date_range, short_token
from noti.gateway.app import create_app
from noti.gateway.auth import Scope, create_api_key, revoke_api_key
from noti.gateway.schemas import Counts
from noti.store import migrate, records
from noti.store.db import make_engine
from noti.store.models import Device, NotificationStatus
from noti.store.records import RecordUpdate

TOKEN = "ab" * 32
HERE = "http://gateway"


@pytest.fixture
async def admin_app(
    clean_db: Engine, clean_redis: redis.Redis, database_url: str, redis_url: str
) -> AsyncIterator[FastAPI]:
    """The gateway with no key cache, so a revocation counts at once."""
    serve_test_apps(clean_redis)
    client = aioredis.Redis.from_url(redis_url)
    settings = gateway_settings(database_url, redis_url, gateway_key_cache_seconds=0)
    app = create_app(settings, engine=clean_db, redis=client)
    async with app.router.lifespan_context(app):
        yield app
    await client.aclose()


def browser(app: FastAPI, base_url: str = HERE) -> httpx.AsyncClient:
    """A client that, like a browser, sends its own Origin on every form post."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=base_url, headers={"Origin": base_url}, follow_redirects=False
    )


async def log_in(http: httpx.AsyncClient, key: str) -> httpx.Response:
    return await http.post("/admin/login", data={"username": "ops", "password": key})


def device_form(token: str, tags: str = "") -> dict[str, str]:
    return {"app": APP, "device_token": token, "platform": "ios", "tags": tags, "is_active": "y", "save": "Save"}


def devices(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(Device)).scalar_one())


async def test_read_only_key_is_told_the_admin_scope_is_needed(admin_app: FastAPI, keys: Keys) -> None:
    async with browser(admin_app) as http:
        refused = await log_in(http, keys.reader)
        assert refused.status_code == 400
        assert "lacks the admin scope" in refused.text
        assert "--scopes admin" in refused.text
        unknown = await log_in(http, "noti_nope_nope")
        assert "Invalid credentials" in unknown.text and "lacks the admin scope" not in unknown.text
        assert (await log_in(http, keys.admin)).status_code == 302


async def test_session_cookie_is_secure_over_https_only(admin_app: FastAPI, keys: Keys) -> None:
    async with browser(admin_app, "https://gateway") as http:
        cookie = (await log_in(http, keys.admin)).headers["set-cookie"]
        assert "secure" in cookie.lower() and "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    async with browser(admin_app) as http:
        # Over plain http the header of an unknown client is not believed (only trusted proxies, through uvicorn);
        # the login still works from the https page such a proxy serves.
        http.headers.update({"X-Forwarded-Proto": "https", "Origin": "https://gateway"})
        answer = await log_in(http, keys.admin)
        assert answer.status_code == 302
        assert "secure" not in answer.headers["set-cookie"].lower()


async def test_cross_origin_post_with_a_session_is_refused_and_creates_nothing(
    admin_app: FastAPI, keys: Keys, clean_db: Engine
) -> None:
    async with browser(admin_app) as http:
        await log_in(http, keys.admin)
        for origin in ("https://evil.example", "null", None):  # another site, a sandboxed page, no Origin at all
            if origin is None:
                del http.headers["Origin"]
            else:
                http.headers["Origin"] = origin
            answer = await http.post("/admin/device/create", data=device_form(TOKEN))
            assert answer.status_code == 403
            assert "came from another site" in answer.text
        assert devices(clean_db) == 0
        http.headers["Origin"] = HERE
        saved = await http.post("/admin/device/create", data=device_form(TOKEN, "vip, beta"))
        assert saved.status_code == 302
    with clean_db.connect() as connection:
        assert connection.execute(select(Device.device_token, Device.tags)).one() == (TOKEN, ["vip", "beta"])


async def test_device_form_refuses_what_the_api_refuses(admin_app: FastAPI, keys: Keys, clean_db: Engine) -> None:
    async with browser(admin_app) as http:
        await log_in(http, keys.admin)
        short = await http.post("/admin/device/create", data=device_form("0123456789"))
        assert short.status_code == 400
        assert "64" in short.text and "hex" in short.text.lower()  # the API's own message about APNs tokens
        too_long_tag = await http.post("/admin/device/create", data=device_form(TOKEN, "x" * 65))
        assert too_long_tag.status_code == 400
        assert "at most 64 characters" in too_long_tag.text
        assert devices(clean_db) == 0
        upper = await http.post("/admin/device/create", data=device_form(TOKEN.upper()))
        assert upper.status_code == 302
    with clean_db.connect() as connection:
        assert connection.execute(select(Device.device_token)).scalar_one() == TOKEN  # stored as the API stores it


async def test_owner_form_refuses_an_external_id_the_api_refuses(admin_app: FastAPI, keys: Keys) -> None:
    async with browser(admin_app) as http:
        await log_in(http, keys.admin)
        # PostgreSQL text cannot hold NUL: the API refuses it in external ids, so does the admin.
        form = {"external_id": "ann\x00", "name": "Ann", "email": "", "is_active": "y", "save": "Save"}
        refused = await http.post("/admin/device-owner/create", data=form)
        assert refused.status_code == 400 and "String should match pattern" in refused.text
        assert (await http.post("/admin/device-owner/create", data={**form, "external_id": "ann"})).status_code == 302


async def test_logout_and_revocation_end_the_session(admin_app: FastAPI, keys: Keys, clean_db: Engine) -> None:
    async with browser(admin_app) as http:
        await log_in(http, keys.admin)
        assert (await http.get("/admin/")).status_code == 200
        stolen = dict(http.cookies)
        assert (await http.get("/admin/logout")).status_code == 302
    async with browser(admin_app) as replay:
        replay.cookies.update(stolen)
        answer = await replay.get("/admin/")
        assert answer.status_code == 302 and answer.headers["location"].endswith("/admin/login")

    async with browser(admin_app) as http:
        await log_in(http, keys.admin)
        assert (await http.get("/admin/device/list")).status_code == 200
        revoke_api_key(clean_db, "ops")
        answer = await http.get("/admin/device/list")
        assert answer.status_code == 302 and answer.headers["location"].endswith("/admin/login")


async def test_admin_pages_cannot_be_framed(admin_app: FastAPI, keys: Keys) -> None:
    async with browser(admin_app) as http:
        for answer in (
            await http.get("/admin/login"),
            await http.post("/admin/login", headers={"Origin": "https://x"}),
        ):
            assert answer.headers["x-frame-options"] == "DENY"
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


async def test_admin_answers_only_to_its_configured_hosts(
    clean_db: Engine, clean_redis: redis.Redis, database_url: str, redis_url: str
) -> None:
    settings = gateway_settings(database_url, redis_url, gateway_admin_hosts="admin.example.com")
    client = aioredis.Redis.from_url(redis_url)
    app = create_app(settings, engine=clean_db, redis=client)
    async with browser(app, "http://admin.example.com") as http:
        assert (await http.get("/admin/login")).status_code == 200
        assert (await http.get("/admin/login", headers={"Host": "evil.example"})).status_code == 400
        assert (
            await http.get("/api/docs/", headers={"Host": "evil.example"})
        ).status_code == 200  # the API is not the admin


def test_state_changes_need_the_admin_own_origin() -> None:
    own = "http://gw:8000"
    assert cross_origin("GET", Headers({}), own) is None
    assert cross_origin("POST", Headers({"origin": "http://gw:8000"}), own) is None
    assert cross_origin("POST", Headers({"referer": "http://gw:8000/admin/device/create"}), own) is None
    assert cross_origin("POST", Headers({"origin": "https://gw:8000"}), own) is None  # an https proxy not trusted
    assert cross_origin("DELETE", Headers({"origin": "http://gw:8001"}), own) == "http://gw:8001"
    assert cross_origin("POST", Headers({"origin": "http://gw.evil:8000"}), own) == "http://gw.evil:8000"
    assert cross_origin("POST", Headers({"origin": "null"}), own) == "null"
    assert cross_origin("POST", Headers({}), own) == "unknown"


def test_tokens_are_shortened_to_first_8_and_last_4() -> None:
    assert short_token("0123456789abcdef" * 4) == "01234567…cdef"
    assert short_token("short") == "short"


def test_date_range_reads_utc_and_names_a_bad_bound() -> None:
    since, until, problem = date_range("2026-12-01T09:30", "2026-12-01T11:00+01:00")
    assert since == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    assert until == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert problem is None
    assert date_range("yesterday", None)[2] == "From: 'yesterday' is not a date and time such as 2026-12-01T09:30"
    assert date_range("2026-12-02T00:00", "2026-12-01T00:00")[2] == "From must not be after To"


def test_chart_bars_scale_to_the_busiest_hour() -> None:
    def counts(total: int, sent: int) -> Counts:
        return Counts(
            total=total, sent=sent, failed=0, invalid_token=0, in_flight=total - sent, success_rate=None,
            invalid_token_rate=None,
        )  # fmt: skip

    hour = datetime(2026, 12, 1, tzinfo=UTC)
    quiet, busy, empty = bars([(hour, counts(5, 5)), (hour, counts(20, 10)), (hour, counts(0, 0))])
    assert (quiet.sent, busy.sent, busy.in_flight, empty.sent) == (25.0, 50.0, 50.0, 0.0)


def test_cookie_is_secure_behind_a_trusted_https_proxy(live_gateway: str, keys: Keys) -> None:
    """uvicorn believes X-Forwarded-Proto from NOTI_GATEWAY_FORWARDED_ALLOW_IPS (loopback by default)."""
    port = live_gateway.rsplit(":", 1)[1]
    with httpx.Client(base_url=live_gateway, follow_redirects=False) as http:
        proxied = {"X-Forwarded-Proto": "https", "Origin": f"https://127.0.0.1:{port}"}
        answer = http.post("/admin/login", data={"username": "ops", "password": keys.admin}, headers=proxied)
        assert answer.status_code == 302
        assert "secure" in answer.headers["set-cookie"].lower()
        plain = http.post(
            "/admin/login", data={"username": "ops", "password": keys.admin}, headers={"Origin": live_gateway}
        )
        assert plain.status_code == 302
        assert "secure" not in plain.headers["set-cookie"].lower()


async def test_dashboard_lists_and_resend_work_on_sqlite(
    tmp_path: Path, clean_redis: redis.Redis, redis_url: str
) -> None:
    """The ``noti dev`` store: the roll-up's hours come back without an offset there."""
    url = f"sqlite:///{tmp_path}/noti.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    admin_key = create_api_key(engine, "ops", [Scope.ADMIN])
    failed_id = uuid.uuid4()
    with engine.begin() as connection:
        records.insert_notifications(connection, [{"id": failed_id, "device_token": TOKEN, "app": APP, "title": "t"}])
        records.apply_outcomes(
            connection, [RecordUpdate(failed_id, NotificationStatus.FAILED, apns_reason="InternalServerError")]
        )
    serve_test_apps(clean_redis)
    client = aioredis.Redis.from_url(redis_url)
    app = create_app(gateway_settings(url, redis_url), engine=engine, redis=client)
    try:
        async with app.router.lifespan_context(app), browser(app) as http:
            await log_in(http, admin_key)
            board = await http.get("/admin/")
            assert board.status_code == 200
            assert board.text.count('class="noti-hour"') == 24
            assert 'data-total="1"' in board.text
            listed = await http.get("/admin/notification/list", params={"since": "2000-01-01T00:00"})
            assert "InternalServerError" in listed.text and f"{TOKEN[:8]}…{TOKEN[-4:]}" in listed.text
            resent = await http.post(f"/admin/notification/resend/{failed_id}")
            assert resent.status_code == 303
            assert clean_redis.xlen(stream_of(APP, "sandbox")) == 1
    finally:
        await client.aclose()
        engine.dispose()


async def test_the_tokens_page_lists_a_devices_tokens_by_kind(admin_app: FastAPI, keys: Keys, clean_db: Engine) -> None:
    from noti.store.models import TokenKind
    from noti.store.tokens import TokenFields, upsert_tokens

    with clean_db.begin() as connection:
        device = connection.execute(
            Device.__table__.insert().values(app=APP, device_token=TOKEN, tags=[]).returning(Device.id)
        ).scalar_one()
        upsert_tokens(connection, [
            TokenFields(device, TokenKind.PUSH_TO_START, "5a" * 80, "DeliveryAttributes"),
            TokenFields(device, TokenKind.UPDATE, "7c" * 80, "DeliveryAttributes", "A-17"),
            TokenFields(device, TokenKind.VOIP, "9e" * 32),
        ])  # fmt: skip
    async with browser(admin_app) as http:
        await log_in(http, keys.admin)
        page = await http.get("/admin/device-token/list")
        assert page.status_code == 200
        for shown in ("push_to_start", "update", "voip", "DeliveryAttributes", "A-17", short_token("5a" * 80)):
            assert shown in page.text
        only_voip = await http.get("/admin/device-token/list", params={"kind": "voip"})
        assert short_token("9e" * 32) in only_voip.text and short_token("5a" * 80) not in only_voip.text
