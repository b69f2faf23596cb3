"""The admin UI in headless Chromium: log in with an admin key, open notifications, filter by status."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import pytest
from gateway_support import APP
from sqlalchemy import Engine

from noti.gateway.auth import Scope, create_api_key
from noti.store import records
from noti.store.models import NotificationStatus
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
            "status": NotificationStatus.QUEUED,
        }
        for n in range(len(outcomes) + 2)
    ]
    with engine.begin() as connection:
        records.insert_notifications(connection, rows)
        records.apply_outcomes(
            connection,
            [
                RecordUpdate(row["id"], status, apns_reason="BadDeviceToken" if status != "sent" else None)
                for row, status in zip(rows, outcomes, strict=False)
            ],
        )


def test_admin_login_notifications_list_and_status_filter_in_chromium(live_gateway: str, clean_db: Engine) -> None:
    _need_chromium()
    from playwright.sync_api import sync_playwright

    seed(clean_db)
    admin_key = create_api_key(clean_db, "ops", [Scope.ADMIN])
    reader_key = create_api_key(clean_db, "dashboard", [Scope.READ])
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{live_gateway}/admin/notification/list")
            assert "/admin/login" in page.url  # not logged in: sent to the login page

            for wrong in ("noti_nope_nope", reader_key):  # a made-up key, then a key without the admin scope
                page.fill("input[name=username]", "ops")
                page.fill("input[name=password]", wrong)
                page.click("button[type=submit]")
                assert "/admin/login" in page.url

            page.fill("input[name=username]", "ops")
            page.fill("input[name=password]", admin_key)
            page.click("button[type=submit]")
            page.goto(f"{live_gateway}/admin/notification/list")
            page.wait_for_selector("table")
            badges = page.locator("td span.badge")
            assert sorted(badges.all_inner_texts()) == sorted(
                ["sent"] * 3 + ["failed"] * 2 + ["invalid_token"] + ["queued"] * 2
            )
            assert page.locator("span.badge.bg-green").count() == 3

            page.get_by_role("link", name="failed", exact=True).first.click()
            page.wait_for_url("**status=failed**")
            assert page.locator("td span.badge").all_inner_texts() == ["failed", "failed"]
            time.sleep(0.2)  # let the fonts settle for the screenshot
            page.screenshot(path=str(ARTIFACTS / "admin-notifications-failed.png"), full_page=True)

            page.locator("a[href*='/admin/notification/details/']").first.click()
            page.wait_for_url("**/details/**")
            assert "BadDeviceToken" in page.content()
        finally:
            browser.close()


def test_swagger_ui_and_redoc_render_offline_in_chromium(live_gateway: str) -> None:
    _need_chromium()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            outside: list[str] = []
            blocked: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(live_gateway) else outside.append(r.url))
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
        finally:
            browser.close()
