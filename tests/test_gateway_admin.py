"""The admin UI in headless Chromium, with a screenshot of each page in test-artifacts/."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Page, sync_playwright
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from harness.gateway import APP, stream_of
from noti.gateway.auth import Scope, create_api_key
from noti.store import records
from noti.store.models import Device, DeviceToken, Notification, NotificationStatus, TokenKind
from noti.store.records import RecordUpdate

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]  # fmt: skip


def _need_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        # A missing browser fails the test, never skips it: scripts/test.sh installs it.
        pytest.fail("Debian's chromium is needed for the admin UI test: apt-get install -y chromium")


def seed(engine: Engine) -> None:
    outcomes = [NotificationStatus.SENT] * 3 + [NotificationStatus.FAILED] * 2 + [NotificationStatus.INVALID_TOKEN]
    rows = [
        {
            "id": uuid.uuid4(),
            "device_token": f"{n:064x}",
            "app": APP,
            "title": f"Order {n} shipped",
            "body": "Your parcel is on its way",
            "campaign": "shop/winter-sale" if n % 2 else None,
            "status": NotificationStatus.QUEUED,
        }
        for n in range(len(outcomes) + 2)
    ]
    reasons = {
        NotificationStatus.FAILED: "ServiceUnavailable: APNs answered 503 eight times",
        "invalid_token": "BadDeviceToken",
    }
    with engine.begin() as connection:
        records.insert_notifications(connection, rows)
        records.apply_outcomes(
            connection,
            [
                RecordUpdate(row["id"], status, apns_reason=reasons.get(status))
                for row, status in zip(rows, outcomes, strict=False)
            ],
        )
        connection.execute(
            insert(Device),
            [
                {"app": APP, "device_token": f"{n:064x}", "tags": ["vip", "beta"] if n % 2 else [], "is_active": n != 5}
                for n in range(8)
            ],
        )


@contextmanager
def _chromium(base: str, width: int, *, quiet: bool = True) -> Iterator[tuple[Page, list[str]]]:
    """A headless Chromium page of ``width`` px, and the URLs it asked for outside ``base`` (a CDN would show).

    With ``quiet`` the pages may log no error to the console (a script error, a policy blocking an asset).
    """
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            outside: list[str] = []
            errors: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(base) else outside.append(r.url))
            # A refused login or form answers 400 by design; any other error is the page's fault.
            page.on(
                "console",
                lambda m: (
                    errors.append(f"{m.text} {m.location['url']}")
                    if m.type == "error" and "status of 400" not in m.text
                    else None
                ),
            )
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page, outside
            assert not quiet or errors == [], errors
        finally:
            browser.close()


def _log_in(page: Page, base: str, key: str) -> None:
    page.goto(f"{base}/admin/login")
    page.fill("input[name=username]", "ops")
    page.fill("input[name=password]", key)
    page.click("button[type=submit]")


def _shot(page: Page, name: str) -> None:
    time.sleep(0.2)  # let the fonts settle for the screenshot
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def _fits(page: Page, width: int) -> None:
    """Every column of the page's table is on screen: no horizontal scrolling, no header past the edge."""
    overflow = page.evaluate(
        "() => [...document.querySelectorAll('.table-responsive')].map(e => e.scrollWidth - e.clientWidth)"
    )
    assert all(extra <= 0 for extra in overflow), overflow
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width
    for header in page.locator("thead th").all():
        box = header.bounding_box()
        assert box is not None and box["x"] + box["width"] <= width, header.inner_text()


def test_login_tells_why_a_key_is_refused_in_chromium(live_gateway: str, clean_db: Engine) -> None:
    _need_chromium()
    admin_key = create_api_key(clean_db, "ops", [Scope.ADMIN])
    reader_key = create_api_key(clean_db, "dashboard", [Scope.READ])
    with _chromium(live_gateway, 1400) as (page, outside):
        page.goto(f"{live_gateway}/admin/notification/list")
        assert "/admin/login" in page.url  # not logged in: sent to the login page
        assert page.get_by_text("An API key with the admin scope").is_visible()
        _shot(page, "admin-login.png")

        _log_in(page, live_gateway, "noti_nope_nope")
        assert "Invalid credentials" in page.locator("#login-error").inner_text()
        _log_in(page, live_gateway, reader_key)
        assert "lacks the admin scope" in page.locator("#login-error").inner_text()
        _shot(page, "admin-login-refused.png")

        _log_in(page, live_gateway, admin_key)
        page.wait_for_selector("#counts")
        assert page.url.rstrip("/").endswith("/admin")
        assert outside == []


def seed_history(engine: Engine) -> tuple[int, int]:
    """A day of sends before this hour, all sent but every seventh failed; returns (sent, failed)."""
    now = datetime.now(UTC)
    rows, outcomes = [], []
    for hours_ago in range(1, 24):
        for n in range(5 + (hours_ago * 7) % 23):
            id = uuid.uuid4()
            created = now - timedelta(hours=hours_ago)
            rows.append({"id": id, "device_token": f"{n:064x}", "app": APP, "title": "News", "created_at": created})
            outcomes.append(RecordUpdate(id, NotificationStatus.FAILED if n % 7 == 6 else NotificationStatus.SENT))
    with engine.begin() as connection:
        records.insert_notifications(connection, rows)
        records.apply_outcomes(connection, outcomes)
    failed = sum(outcome.status == NotificationStatus.FAILED for outcome in outcomes)
    return len(rows) - failed, failed


@pytest.mark.parametrize("width", [1400, 1920])
def test_dashboard_shows_counts_rates_last_day_and_queues_in_chromium(
    live_gateway: str, clean_db: Engine, clean_redis: redis.Redis, width: int
) -> None:
    _need_chromium()
    seed(clean_db)
    sent, failed = seed_history(clean_db)
    sent, failed, invalid = sent + 3, failed + 2, 1  # with seed()'s
    clean_redis.xadd(stream_of(APP), {"v": "1"})
    admin_key = create_api_key(clean_db, "ops", [Scope.ADMIN])
    with _chromium(live_gateway, width) as (page, outside):
        _log_in(page, live_gateway, admin_key)
        # The landing page is the dashboard: counts, rates, the last 24 hours and the queues.
        page.wait_for_selector("#counts")
        shown = {key: page.locator(f"[data-count={key}] .h1").inner_text() for key in ("total", "sent", "failed")}
        assert shown == {"total": f"{sent + failed + invalid + 2:,}", "sent": f"{sent:,}", "failed": f"{failed:,}"}
        assert page.locator("[data-count=in_flight] .h1").inner_text() == "2"
        finished = sent + failed + invalid
        assert page.locator("[data-rate=success] .h1").inner_text() == f"{100 * sent / finished:.1f} %"
        assert page.locator("[data-rate=invalid_token] .h1").inner_text() == f"{100 * invalid / finished:.1f} %"
        hours = page.locator(".noti-hour")
        assert hours.count() == 24
        assert hours.last.get_attribute("data-total") == "8"  # this hour: seed()'s records
        assert all(int(hours.nth(n).get_attribute("data-total") or 0) > 0 for n in range(1, 24))
        assert stream_of(APP) in page.locator("#queues").inner_text()
        _shot(page, f"admin-dashboard-{width}.png")
        _fits(page, width)
        assert outside == []  # nothing from a CDN


@pytest.mark.parametrize("width", [1400, 1920])
def test_lists_and_details_fit_the_screen_in_chromium(live_gateway: str, clean_db: Engine, width: int) -> None:
    _need_chromium()
    seed(clean_db)
    admin_key = create_api_key(clean_db, "ops", [Scope.ADMIN])
    with _chromium(live_gateway, width) as (page, outside):
        _log_in(page, live_gateway, admin_key)
        page.wait_for_selector("#counts")
        page.goto(f"{live_gateway}/admin/notification/list")
        page.wait_for_selector("table")
        badges = page.locator("td span.badge")
        assert sorted(badges.all_inner_texts()) == sorted(
            ["sent"] * 3 + ["failed"] * 2 + ["invalid_token"] + ["queued"] * 2
        )
        token = page.locator(".noti-token").first
        assert len(token.inner_text()) == 13 and "…" in token.inner_text()
        assert len(token.get_attribute("title") or "") == 64  # the full token on hover
        assert page.get_by_text("ServiceUnavailable: APNs answered 503 eight times").first.is_visible()
        _shot(page, f"admin-notifications-{width}.png")
        _fits(page, width)

        page.get_by_role("link", name="failed", exact=True).first.click()
        page.wait_for_url("**status=failed**")
        assert page.locator("td span.badge").all_inner_texts() == ["failed", "failed"]
        _shot(page, f"admin-notifications-failed-{width}.png")

        # The date range: nothing was created tomorrow; everything since yesterday.
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
        yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
        page.fill("#range-since", tomorrow)
        page.locator("#date-range button[type=submit]").click()
        page.wait_for_url("**since=**")
        assert page.locator("td span.badge").count() == 0
        page.fill("#range-since", yesterday)
        page.locator("#date-range button[type=submit]").click()
        page.wait_for_load_state()
        assert page.locator("td span.badge").all_inner_texts() == ["failed", "failed"]  # status filter kept

        page.locator("a[href*='/admin/notification/details/']").first.click()
        page.wait_for_url("**/details/**")
        assert "ServiceUnavailable" in page.content()
        _shot(page, f"admin-notification-details-{width}.png")
        _fits(page, width)

        page.goto(f"{live_gateway}/admin/device/list")
        page.wait_for_selector("table")
        assert page.locator(".noti-token").count() == 8
        assert page.get_by_text("vip, beta").first.is_visible()
        _shot(page, f"admin-devices-{width}.png")
        _fits(page, width)
        assert outside == []  # nothing from a CDN


def test_channels_are_listed_with_their_app_storage_and_manager_in_chromium(
    live_gateway: str, clean_db: Engine
) -> None:
    from noti.store.channels import add_channel

    _need_chromium()
    add_channel(clean_db, app=APP, environment="sandbox", channel_id="dHN/wjvVEe+ZSa6FUvKcOQ==", storage_policy=1,
                name="match-42", labels={"event": "final"}, source="shop/match-42")  # fmt: skip
    add_channel(clean_db, app=APP, environment="production", channel_id="AAAAAAAAAAAAAAAAAAAAAA==", storage_policy=0)
    admin_key = create_api_key(clean_db, "ops", [Scope.ADMIN])
    with _chromium(live_gateway, 1400) as (page, outside):
        _log_in(page, live_gateway, admin_key)
        page.wait_for_selector("#counts")
        page.goto(f"{live_gateway}/admin/broadcast-channel/list")
        page.wait_for_selector("table")
        newest_first = ["AAAAAAAAAAAAAAAAAAAAAA==", "dHN/wjvVEe+ZSa6FUvKcOQ=="]
        assert page.locator(".noti-channel").all_inner_texts() == newest_first
        assert page.get_by_text("most recent message").is_visible() and page.get_by_text("event=final").is_visible()
        assert page.get_by_text("shop/match-42").is_visible()
        _shot(page, "admin-channels-1400.png")
        _fits(page, 1400)
        assert outside == []


def test_resend_of_a_failed_notification_sends_a_new_one_in_chromium(
    live_gateway: str, clean_db: Engine, clean_redis: redis.Redis
) -> None:
    _need_chromium()
    seed(clean_db)
    admin_key = create_api_key(clean_db, "ops", [Scope.ADMIN])
    with Session(clean_db) as session:
        failed = session.scalars(select(Notification).where(Notification.status == NotificationStatus.FAILED)).first()
    assert failed is not None
    stream = stream_of(APP)
    with _chromium(live_gateway, 1400) as (page, outside):
        _log_in(page, live_gateway, admin_key)
        page.goto(f"{live_gateway}/admin/notification/details/{failed.id}")
        page.get_by_role("button", name="Resend to this device").click()
        page.wait_for_selector(".toast-body")
        assert "Resent as notification" in page.locator(".toast-body").inner_text()
        new_id = page.url.rstrip("/").rsplit("/", 1)[-1]
        assert new_id != str(failed.id)
        assert page.locator("td span.badge").inner_text() == "queued"
        _shot(page, "admin-notification-resent.png")

        page.goto(f"{live_gateway}/admin/notification/details/{new_id}")
        assert page.get_by_role("button", name="Resend to this device").count() == 0  # queued: nothing to resend
        assert outside == []
    with Session(clean_db) as session:
        again = session.get_one(Notification, uuid.UUID(new_id))
    assert (again.device_token, again.title, again.body) == (failed.device_token, failed.title, failed.body)
    assert again.status == NotificationStatus.QUEUED
    assert clean_redis.xlen(stream) == 1  # on the queue, as a send through the API would be


def _failed_record(engine: Engine, **fields: object) -> uuid.UUID:
    id = uuid.uuid4()
    with engine.begin() as connection:
        row = {"id": id, "app": APP, "status": NotificationStatus.QUEUED, **fields}
        records.insert_notifications(connection, [row])
        failed = RecordUpdate(id, NotificationStatus.FAILED, apns_reason="ServiceUnavailable")
        records.apply_outcomes(connection, [failed])
    return id


def test_resend_of_a_failed_voip_push_goes_to_the_same_voip_token_in_chromium(
    live_gateway: str, clean_db: Engine, clean_redis: redis.Redis
) -> None:
    _need_chromium()
    voip_token = "9e" * 32
    with Session(clean_db) as session, session.begin():
        device = Device(app=APP, device_token="0a" * 32)
        session.add(device)
        session.flush()
        token = DeviceToken(device_id=device.id, kind=TokenKind.VOIP, slot="", token=voip_token)
        session.add(token)
        session.flush()
        token_id, device_id = token.id, device.id
    failed = _failed_record(
        clean_db, device_token=voip_token, device_id=device_id, token_id=token_id, push_type="voip", priority=10,
        data={"call": "42"},
    )  # fmt: skip
    admin_key = create_api_key(clean_db, "ops", [Scope.ADMIN])
    with _chromium(live_gateway, 1400) as (page, outside):
        _log_in(page, live_gateway, admin_key)
        page.goto(f"{live_gateway}/admin/notification/details/{failed}")
        page.get_by_role("button", name="Resend to this token").click()
        page.wait_for_selector(".toast-body")
        assert "Resent as notification" in page.locator(".toast-body").inner_text()
        new_id = page.url.rstrip("/").rsplit("/", 1)[-1]
        assert outside == []
    with Session(clean_db) as session:
        again = session.get_one(Notification, uuid.UUID(new_id))
    # The VoIP token by its own path: its token row, its push type, not a device send to the VoIP token.
    assert (again.token_id, again.device_token, again.push_type, again.data) == (
        token_id, voip_token, "voip", {"call": "42"},
    )  # fmt: skip
    assert clean_redis.xlen(stream_of(APP)) == 1


def test_a_failed_broadcast_is_not_resent_and_the_page_says_how_to_broadcast_again_in_chromium(
    live_gateway: str, clean_db: Engine, clean_redis: redis.Redis
) -> None:
    _need_chromium()
    failed = _failed_record(clean_db, device_token="", channel_id="dHN/wjvVEe+ZSa6FUvKcOQ==", push_type="liveactivity")
    admin_key = create_api_key(clean_db, "ops", [Scope.ADMIN])
    with _chromium(live_gateway, 1400) as (page, outside):
        _log_in(page, live_gateway, admin_key)
        page.goto(f"{live_gateway}/admin/notification/details/{failed}")
        assert "broadcast to its channel again with POST /api/broadcasts/" in page.locator("#resend-note").inner_text()
        assert page.get_by_role("button", name="Resend to this device").count() == 0
        # A resend posted all the same is refused with that message, and queues nothing.
        page.evaluate(
            "url => { const f = document.createElement('form'); f.method = 'post'; f.action = url;"
            " document.body.appendChild(f); f.submit(); }",
            f"{live_gateway}/admin/notification/resend/{failed}",
        )
        page.wait_for_selector(".toast-body")
        assert "Not resent: a broadcast is not resent from here" in page.locator(".toast-body").inner_text()
        assert outside == []
    with clean_db.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Notification)).scalar_one() == 1
    assert clean_redis.keys("*stream*") == []


def test_device_form_shows_why_a_token_is_refused_in_chromium(live_gateway: str, clean_db: Engine) -> None:
    _need_chromium()
    admin_key = create_api_key(clean_db, "ops", [Scope.ADMIN])
    with _chromium(live_gateway, 1400) as (page, outside):
        _log_in(page, live_gateway, admin_key)
        page.goto(f"{live_gateway}/admin/device/create")
        page.fill("input[name=app]", APP)
        page.fill("input[name=device_token]", "0123456789")
        page.fill("input[name=tags]", "vip, beta")
        page.get_by_role("button", name="Save", exact=True).click()
        page.wait_for_selector(".invalid-feedback")
        assert "64" in page.locator(".invalid-feedback").first.inner_text()
        _shot(page, "admin-device-refused.png")
        with clean_db.connect() as connection:
            assert connection.execute(select(func.count()).select_from(Device)).scalar_one() == 0

        # Corrected, it saves; and sqladmin's own delete (a DELETE by script) passes the same-origin check.
        page.fill("input[name=device_token]", "AB" * 32)
        page.get_by_role("button", name="Save", exact=True).click()
        page.wait_for_url("**/admin/device/list**")
        assert page.locator(".noti-token").inner_text() == "abababab…abab"
        page.locator("td a[data-bs-target='#modal-delete']").first.click()
        page.wait_for_function("() => document.querySelector('#modal-delete-button').getAttribute('data-url')")
        page.locator("#modal-delete-button").click()
        page.wait_for_function("() => document.querySelectorAll('.noti-token').length === 0")
        assert outside == []
    with clean_db.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Device)).scalar_one() == 0


def test_swagger_ui_and_redoc_render_offline_in_chromium(live_gateway: str) -> None:
    _need_chromium()
    with _chromium(live_gateway, 1400, quiet=False) as (page, outside):
        blocked: list[str] = []
        page.on(
            "requestfailed",
            lambda r: blocked.append(r.url) if (r.failure or "").lower() == "csp" else None,
        )
        page.goto(f"{live_gateway}/api/docs/")
        page.wait_for_selector("text=/api/notifications/bulk/", timeout=20_000)
        page.screenshot(path=str(ARTIFACTS / "swagger-ui.png"))
        page.goto(f"{live_gateway}/api/redoc/")
        page.locator("h2", has_text="Send one notification").first.wait_for(state="attached", timeout=20_000)
        page.screenshot(path=str(ARTIFACTS / "redoc.png"))
        # nothing left the gateway: ReDoc's CDN logo is stopped by the pages' policy in the browser
        assert [url for url in outside if not url.startswith(("data:", "blob:")) and url not in blocked] == []
